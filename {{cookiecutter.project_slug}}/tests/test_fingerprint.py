"""The source fingerprint: cheap (no data read), deterministic, and changed by any change of the source."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import xarray as xr


@pytest.fixture(scope="module")
def fp(pkg_name):
    return importlib.import_module(f"{pkg_name}.fingerprint")


@pytest.fixture(scope="module")
def errors(pkg_name):
    return importlib.import_module(f"{pkg_name}.errors")


def small_dataset(n: int = 8) -> xr.Dataset:
    times = np.datetime64("2000-01-01", "ns") + np.arange(n) * np.timedelta64(6, "h")
    data = np.arange(n * 4 * 8, dtype=np.float32).reshape(n, 4, 8)
    return xr.Dataset({"2m_temperature": (("time", "latitude", "longitude"), data)},
                      coords={"time": times, "latitude": np.linspace(-60, 60, 4), "longitude": np.arange(8) * 45.0})


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "era5.zarr"
    small_dataset().to_zarr(path, zarr_format=3, consolidated=False, encoding={"2m_temperature": {"chunks": (2, 4, 8)}})
    return path


def test_local_store_is_deterministic_and_sees_one_changed_value(fp, store, tmp_path):
    import zarr

    first = fp.compute(str(store))
    assert first == fp.compute(str(store)) and first["kind"] == "local" and first["files"] > 4
    assert fp.compute(store.name, root=tmp_path)["sha256"] == first["sha256"]  # relative to the project root
    time.sleep(0.01)
    array = zarr.open_array(store / "2m_temperature", mode="r+")
    array[5, 1, 1] = array[5, 1, 1] + 1.0  # one value, one chunk rewritten
    changed = fp.compute(str(store))
    assert changed["sha256"] != first["sha256"] and changed["metadata_sha256"] == first["metadata_sha256"]
    attrs = store / "2m_temperature" / "zarr.json"
    meta = json.loads(attrs.read_text())
    meta["attributes"]["units"] = "degC"
    stat = attrs.stat()
    attrs.write_text(json.dumps(meta))
    os.utime(attrs, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime: the content hash still sees it
    assert fp.compute(str(store))["metadata_sha256"] != changed["metadata_sha256"]


def test_netcdf_glob_and_synthetic(fp, tmp_path):
    for i in range(2):
        small_dataset().to_netcdf(tmp_path / f"part{i}.nc")
    first = fp.compute(str(tmp_path / "part*.nc"))
    assert first["files"] == 2
    small_dataset().to_netcdf(tmp_path / "part2.nc")
    assert fp.compute(str(tmp_path / "part*.nc"))["files"] == 3
    assert fp.compute("synthetic") == fp.compute("synthetic") and fp.compute("synthetic")["kind"] == "synthetic"


def test_missing_local_source_is_one_clear_error(fp, errors, tmp_path):
    with pytest.raises(errors.DataError, match=r"data.source '.*nowhere.zarr': no such file, folder or glob"):
        fp.compute(str(tmp_path / "nowhere.zarr"))


def test_remote_store_uses_versions_and_metadata(fp):
    """An fsspec filesystem (memory:// here, gs:// or s3:// in use): the metadata objects and their versions."""
    import fsspec

    url = "memory://forge-test/era5.zarr"
    small_dataset().to_zarr(url, zarr_format=3, consolidated=False)
    first = fp.compute(url)
    assert first["kind"] == "remote" and first["files"] == 5  # the group's and 4 arrays' zarr.json
    fs = fsspec.filesystem("memory")
    meta = json.loads(fs.cat_file("/forge-test/era5.zarr/2m_temperature/zarr.json"))
    meta["attributes"]["units"] = "degC"
    fs.pipe_file("/forge-test/era5.zarr/2m_temperature/zarr.json", json.dumps(meta).encode())
    assert fp.compute(url)["sha256"] != first["sha256"]


def test_cli_writes_the_same_bytes_until_the_source_changes(fp, store, tmp_path, project_root):
    params = (project_root / "params.yaml").read_text().replace('source: "synthetic"', f'source: "{store}"')
    params = params.replace("variables: []", "variables: [2m_temperature]")
    (tmp_path / "params.yaml").write_text(params)
    out = tmp_path / "fingerprint.json"
    assert fp.main(["--params", str(tmp_path / "params.yaml"), "--out", str(out)]) == 0
    written = out.read_bytes()
    assert fp.main(["--params", str(tmp_path / "params.yaml"), "--out", str(out)]) == 0
    assert out.read_bytes() == written and json.loads(written)["source"] == str(store)
    (store / "extra").write_text("x")
    fp.main(["--params", str(tmp_path / "params.yaml"), "--out", str(out)])
    assert out.read_bytes() != written


def test_a_list_source_is_each_entry_in_order(fp, store, tmp_path, project_root):
    """data.source may be a list (one glob per variable): the CLI fingerprints every entry; changing one entry or
    the order changes the fingerprint."""
    for i in range(2):
        small_dataset().to_netcdf(tmp_path / f"part{i}.nc")
    entries = [str(store), str(tmp_path / "part*.nc")]
    params = (project_root / "params.yaml").read_text().replace('source: "synthetic"', f"source: {json.dumps(entries)}")
    (tmp_path / "params.yaml").write_text(params.replace("variables: []", "variables: [2m_temperature]"))
    out = tmp_path / "fingerprint.json"
    assert fp.main(["--params", str(tmp_path / "params.yaml"), "--out", str(out)]) == 0
    found = json.loads(out.read_text())
    assert found["source"] == entries and found["kind"] == "list" and found["files"] == found["entries"][0]["files"] + 2
    assert [e["sha256"] for e in found["entries"]] == [fp.compute(e)["sha256"] for e in entries]
    assert fp.compute(entries[::-1])["sha256"] != found["sha256"]
    small_dataset().to_netcdf(tmp_path / "part2.nc")
    assert fp.compute(entries)["sha256"] != found["sha256"]


def test_params_are_validated_once_per_content_and_a_bad_file_every_time(pkg_name, fp, tmp_path, project_root):
    """The fingerprint stage (first on every `dvc repro`) stops a bad params.yaml with one clear error, every time;
    a file whose bytes passed before is read without importing the validation (pydantic, numpy: 0.2 s)."""
    code = (f"import sys; from {pkg_name} import fingerprint as f; "
            f"print(f.data_source(sys.argv[1]), '{pkg_name}.config' in sys.modules)")

    def source_of(params):
        env = {**os.environ, "PYTHONPATH": str(project_root / "src")}
        return subprocess.run([sys.executable, "-c", code, str(params)], env=env, capture_output=True, text=True)

    params = tmp_path / "params.yaml"
    good = (project_root / "params.yaml").read_text() + f"# {tmp_path}\n"  # bytes no other test validated
    params.write_text(good)
    assert source_of(params).stdout.split() == ["synthetic", "True"]  # validated
    assert source_of(params).stdout.split() == ["synthetic", "False"]  # known good: read directly
    assert "\n  lr: " in good
    params.write_text(good.replace("\n  lr: ", "\n  lrr: "))
    for _ in range(2):
        bad = source_of(params)
        assert bad.returncode != 0 and "unknown key 'train.lrr'. did you mean 'train.lr'?" in bad.stderr, bad.stderr
    params.write_text(good + "\n")  # another file: validated again
    assert source_of(params).stdout.split() == ["synthetic", "True"]


def test_the_validation_code_is_what_config_imports(pkg_name, fp):
    """A change of any module the validation runs invalidates what was validated with it."""
    deps = importlib.import_module(f"{pkg_name}.deps")
    closure = {p.relative_to(deps.PACKAGE_DIR).as_posix() for p in deps.closure([f"{pkg_name}.config"])}
    assert set(fp.VALIDATION_CODE) == closure
