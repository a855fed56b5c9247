"""Source adapters and sharding (issue 3): every layout gives bit-identical shards; bad sources fail clearly and
delete nothing; coarsening and Pa -> hPa work; the block plan is cheap and complete."""

from __future__ import annotations

import importlib
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from conftest import PACKAGE

source = importlib.import_module(f"{PACKAGE}.data.source")
shard = importlib.import_module(f"{PACKAGE}.data.shard")
config = importlib.import_module(f"{PACKAGE}.config")
DataError = importlib.import_module(f"{PACKAGE}.errors").DataError

START = np.datetime64("2000-01-01T00:00", "ns")
STEP = np.timedelta64(6, "h")
NT, NLAT, NLON = 12, 8, 16
LEVELS = [500, 700, 850]


def canonical(seed: int = 0) -> xr.Dataset:
    """Reference dataset in canonical layout."""
    rng = np.random.default_rng(seed)
    lat = -90 + (np.arange(NLAT) + 0.5) * 180 / NLAT
    lon = np.arange(NLON) * 360.0 / NLON
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return xr.Dataset(
        {
            "geopotential": (("time", "level", "latitude", "longitude"), 5e4 + 1e3 * f(NT, 3, NLAT, NLON)),
            "temperature": (("time", "level", "latitude", "longitude"), 260 + 5 * f(NT, 3, NLAT, NLON)),
            "2m_temperature": (("time", "latitude", "longitude"), 280 + 5 * f(NT, NLAT, NLON)),
        },
        coords={"time": START + np.arange(NT) * STEP, "level": LEVELS, "latitude": lat, "longitude": lon},
    )


def layouts(ds: xr.Dataset) -> dict[str, xr.Dataset]:
    """The real-world variations a source adapter must absorb."""
    flip = ds.isel(latitude=slice(None, None, -1))
    lonlat = ("time", "level", "longitude", "latitude")
    out = {
        "canonical": ds,
        "lon_lat_order": ds.transpose(*lonlat, missing_dims="ignore"),
        "lat_descending": flip,
        "lon_lat_descending": flip.transpose(*lonlat, missing_dims="ignore"),
    }
    # lat/lon/plev names, longitudes -180..180 (rolled so they are ascending there), levels in Pa
    west = ds.assign_coords(longitude=((ds.longitude + 180) % 360) - 180).sortby("longitude")
    west = west.rename({"latitude": "lat", "longitude": "lon", "level": "plev"})
    out["latlon_names_pm180_pa"] = west.assign_coords(plev=west.plev * 100)
    return out


def write_store(ds: xr.Dataset, path: Path) -> str:
    ds.to_zarr(path, mode="w", zarr_format=3, consolidated=False)
    return str(path)


def write_netcdf(ds: xr.Dataset, folder: Path) -> str:
    folder.mkdir(parents=True)
    half = NT // 2
    ds.isel(time=slice(0, half)).to_netcdf(folder / "part_0.nc", engine="h5netcdf")
    ds.isel(time=slice(half, None)).to_netcdf(folder / "part_1.nc", engine="h5netcdf")
    return str(folder / "*.nc")


def params_for(src: str, **data) -> object:
    d = {
        "source": src,
        "variables": ["geopotential", "temperature", "2m_temperature"],
        "levels": [500, 850],
        "start": "2000-01-01",
        "end": "2000-01-03T18:00",
        "block_size": 5,
        "splits": {"train": ["2000-01-01", "2000-01-02T18:00"], "val": ["2000-01-03", "2000-01-03T06:00"],
                   "test": ["2000-01-03T12:00", "2000-01-03T18:00"]},
    }
    d.update(data)
    if ("start" in data or "end" in data) and "splits" not in data:  # splits inside the range, as config requires
        import pandas as pd

        start, end = pd.Timestamp(d["start"]), pd.Timestamp(d["end"])
        iso = lambda t: t.strftime("%Y-%m-%dT%H:%M")  # noqa: E731
        d["splits"] = {"train": [iso(start), iso(start)], "val": [iso(start + pd.Timedelta("1min"))] * 2,
                       "test": [iso(end), iso(end)]}
    return config.validate_params({"seed": 0, "data": d})


def shard_all(params, folder: Path) -> list[Path]:
    out = []
    for i, _ in enumerate(shard.plan_blocks(params)):
        out.append(shard.shard_block(params, i, folder / f"block_{i:04d}.zarr"))
    return out


def test_all_layouts_give_bit_identical_shards(tmp_path):
    ds = canonical()
    sources = {name: write_store(d, tmp_path / f"{name}.zarr") for name, d in layouts(ds).items()}
    sources["netcdf_multifile"] = write_netcdf(ds.transpose("time", "level", "longitude", "latitude",
                                                            missing_dims="ignore"), tmp_path / "nc")
    ref = None
    for name, src in sources.items():
        params = params_for(src)
        assert shard.plan_blocks(params) == [(0, 5), (5, 10), (10, 12)]
        paths = shard_all(params, tmp_path / f"shards_{name}")
        data = xr.concat([xr.open_zarr(p, consolidated=False)["data"] for p in paths], "time").load()
        raw = [shard.raw_chunk_files(p)[0].read_bytes() for p in paths]
        if ref is None:
            ref = (data, raw)
            # the values are the source's, in canonical order
            expect = ds["temperature"].sel(level=850).values
            assert np.array_equal(data.sel(channel="temperature_850").values, expect)
            assert list(data.channel.values) == ["geopotential_500", "geopotential_850", "temperature_500",
                                                 "temperature_850", "2m_temperature"]
            assert data.dtype == np.float32 and data.shape == (12, 5, NLAT, NLON)
            continue
        assert data.identical(ref[0]), name
        assert raw == ref[1], name


def test_a_source_path_may_be_a_path_object(tmp_path):
    """open_source takes a pathlib.Path as it takes a string (the benchmark passes one), and a list of either."""
    src = write_store(canonical(), tmp_path / "src.zarr")
    ref = source.open_source(src)
    assert source.open_source(Path(src)).identical(ref)
    assert source.open_source([Path(src)]).identical(ref)


def test_shard_layout_and_attrs(tmp_path):
    params = params_for(write_store(canonical(), tmp_path / "src.zarr"))
    p = shard.shard_block(params, 1, tmp_path / "s" / "block_0001.zarr")
    ds = xr.open_zarr(p, consolidated=False)
    assert ds["data"].dims == ("time", "channel", "latitude", "longitude")
    assert ds["data"].encoding["chunks"] == (1, 5, NLAT, NLON)
    assert ds.attrs["channels"] == list(ds.channel.values)
    assert isinstance(ds.attrs["provenance"], str) and ds.attrs["source"].endswith("src.zarr")
    assert ds.time.values[0] == START + 5 * STEP and ds.sizes["time"] == 5
    files = shard.raw_chunk_files(p)
    assert files is not None and all(f.exists() for f in files)
    assert np.array_equal(np.fromfile(files[2], "<f4").reshape(5, NLAT, NLON), ds["data"][2].values)
    assert not [q for q in p.parent.iterdir() if q.name.startswith(".")], "no temp dirs left behind"


def test_nan_fails_naming_variable_level_time_and_deletes_nothing(tmp_path):
    ds = canonical()
    ds["temperature"][7, LEVELS.index(850), 3, 4] = np.nan
    params = params_for(write_store(ds, tmp_path / "src.zarr"))
    out = tmp_path / "shards"
    good = shard.shard_block(params, 0, out / "block_0000.zarr")
    previous = shard.shard_block(params, 2, out / "block_0001.zarr")  # stands in for an older block_0001
    before = sorted(str(p) for p in out.rglob("*"))
    with pytest.raises(DataError, match=r"NaN in variable 'temperature', level 850 hPa, time 2000-01-02T18:00"):
        shard.shard_block(params, 1, out / "block_0001.zarr")
    assert sorted(str(p) for p in out.rglob("*")) == before, "nothing deleted, nothing half-written"
    assert good.exists() and previous.exists()
    ds["temperature"][7, LEVELS.index(850), 3, 4] = np.inf
    params = params_for(write_store(ds, tmp_path / "src_inf.zarr"))
    with pytest.raises(DataError, match="inf in variable 'temperature'"):
        shard.shard_block(params, 1, out / "block_0009.zarr")


def test_missing_variable_level_or_time_is_one_clear_error(tmp_path):
    src = write_store(canonical(), tmp_path / "src.zarr")
    with pytest.raises(DataError, match=r"data.variables: 'specific_humidity' not found.*2m_temperature"):
        shard.shard_block(params_for(src, variables=["geopotential", "specific_humidity"]), 0, tmp_path / "a.zarr")
    with pytest.raises(DataError, match=r"level\(s\) \[250\] hPa not found.*\[500, 700, 850\]"):
        shard.plan_blocks(params_for(src, levels=[250, 500]))
    with pytest.raises(DataError, match="time range .* not covered"):
        shard.plan_blocks(params_for(src, end="2000-02-01"))
    with pytest.raises(DataError, match="does not exist"):
        shard.plan_blocks(params_for(str(tmp_path / "nope.zarr")))
    assert not (tmp_path / "a.zarr").exists()


def test_coarsen_stride_and_pa_levels(tmp_path):
    ds = canonical()
    pa = ds.rename({"level": "plev"}).assign_coords(plev=ds.level.values * 100)
    params = params_for(write_store(pa, tmp_path / "src.zarr"), coarsen=2, time_stride=2, block_size=4)
    assert shard.plan_blocks(params) == [(0, 4), (4, 6)]
    paths = shard_all(params, tmp_path / "s")
    data = xr.concat([xr.open_zarr(p, consolidated=False)["data"] for p in paths], "time").load()
    assert data.shape == (6, 5, NLAT // 2, NLON // 2)
    np.testing.assert_array_equal(data.time.values, ds.time.values[::2])
    z = ds["geopotential"].sel(level=500).values[::2].astype(np.float64)
    expect = z.reshape(6, NLAT // 2, 2, NLON // 2, 2).mean(axis=(2, 4)).astype(np.float32)
    assert np.array_equal(data.sel(channel="geopotential_500").values, expect)
    np.testing.assert_allclose(data.latitude.values, ds.latitude.values.reshape(-1, 2).mean(1))
    np.testing.assert_allclose(data.longitude.values, ds.longitude.values.reshape(-1, 2).mean(1))


def test_canonicalize_orders_and_units():
    ds = layouts(canonical())["latlon_names_pm180_pa"]
    c = source.canonicalize(ds)
    assert c["geopotential"].dims == ("time", "level", "latitude", "longitude")
    assert list(c.level.values) == LEVELS and c.level.dtype == np.int64
    assert np.all(np.diff(c.latitude) > 0) and np.all(np.diff(c.longitude) > 0)
    assert c.longitude.min() >= 0 and c.longitude.max() < 360
    assert source.channel_names(c)[:3] == ["geopotential_500", "geopotential_700", "geopotential_850"]


def test_synthetic_plan_is_cheap_and_covers_every_step():
    params = config.validate_params({"seed": 0, "data": {
        "source": "synthetic", "start": "2000-01-01", "end": "2000-01-11T18:00", "block_size": 10,
        "splits": {"train": ["2000-01-01", "2000-01-05"], "val": ["2000-01-06", "2000-01-07"],
                   "test": ["2000-01-08", "2000-01-11T18:00"]}}})
    blocks = shard.plan_blocks(params)  # no data/synthetic.zarr exists here: derived from the dates
    assert blocks[0] == (0, 10) and blocks[-1] == (40, 44) and len(blocks) == 5


def test_cloud_urls_need_their_optional_package(monkeypatch):
    archive = importlib.import_module(f"{PACKAGE}.data.archive")
    monkeypatch.setattr(archive.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match="pip install gcsfs"):
        source.open_source("gs://weatherbench2/datasets/era5/x.zarr")


def test_an_unreachable_url_fails_in_seconds_with_one_line_before_opening(tmp_path, monkeypatch):
    """A shard job on a compute node without network: one line naming the key and the endpoint, within the probe's
    timeout, and nothing opened, whether the URL is the whole source or one entry of a list (the shards' path)."""
    remote = importlib.import_module(f"{PACKAGE}.remote")
    archive = importlib.import_module(f"{PACKAGE}.data.archive")
    for key in ("HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setattr(remote, "PROBE_TIMEOUT_S", 3.0)
    opened, open_zarr = [], archive._open_zarr
    monkeypatch.setattr(archive, "_open_zarr", lambda path: opened.append(path) or open_zarr(path))
    url = "https://forge-offline.invalid/era5/wb2.zarr"
    local = write_store(canonical(), tmp_path / "local.zarr")
    for attempt in (lambda: source.open_source(url), lambda: source.open_canonical(params_for([local, url]))):
        started = time.perf_counter()
        with pytest.raises(DataError) as caught:
            attempt()
        assert time.perf_counter() - started < 8
        message = str(caught.value)
        assert "\n" not in message and f"data.source {url!r}: cannot reach forge-offline.invalid:443" in message
        assert "Fix:" in message
    assert opened == [local]  # the local entry of the list, listed first; never the URL


# ---------------------------------------------------------------------------------------------------------------
# The time axis is checked at planning (issue 12): gaps, duplicates and off-grid times are named with the fix.


def test_gap_fails_at_planning_naming_the_times_and_the_fix(tmp_path):
    ds = canonical().drop_isel(time=[5, 6])  # 2000-01-02T06:00 and T12:00 are missing
    params = params_for(write_store(ds, tmp_path / "src.zarr"))
    with pytest.raises(DataError) as err:
        shard.plan_blocks(params)
    msg = str(err.value)
    assert "misses 2 time step(s): 2000-01-02T06:00 .. 2000-01-02T12:00 (2 steps)" in msg
    assert "no shard was planned" in msg
    assert "set data.start: '2000-01-01T00:00' and data.end: '2000-01-02T00:00'" in msg  # the longest clean stretch
    # following the advice plans cleanly
    fixed = params_for(write_store(ds, tmp_path / "src.zarr"), end="2000-01-02T00:00", splits={
        "train": ["2000-01-01", "2000-01-01T06:00"], "val": ["2000-01-01T12:00", "2000-01-01T12:00"],
        "test": ["2000-01-01T18:00", "2000-01-02T00:00"]})
    assert shard.plan_blocks(fixed) == [(0, 5)]


def test_regular_hole_is_stepped_around_by_a_stride(tmp_path):
    """3-hourly data lacking 03 and 15 UTC every day: the error proposes time_stride 2 (6-hourly), which works."""
    times = np.datetime64("2000-01-01T00:00", "ns") + np.arange(24) * np.timedelta64(3, "h")
    keep = [i for i, t in enumerate(times) if int(str(t)[11:13]) not in (3, 15)]
    ds = xr.concat([canonical().isel(time=[0])] * 24, "time").assign_coords(time=times).isel(time=keep)
    src = write_store(ds, tmp_path / "src.zarr")
    with pytest.raises(DataError, match=r"misses 6 time step\(s\): 2000-01-01T03:00, 2000-01-01T15:00, .*"
                                        r"set data.time_stride: 2 \(every 6 h\), which steps around them"):
        shard.plan_blocks(params_for(src, end="2000-01-03T21:00"))
    params = params_for(src, end="2000-01-03T21:00", time_stride=2)
    assert shard.plan_blocks(params) == [(0, 5), (5, 10), (10, 12)]
    t = source.open_canonical(params)["time"].values
    assert np.all(np.diff(t) == np.timedelta64(6, "h")) and len(t) == 12


def test_duplicates_and_off_grid_times_fail_at_planning_naming_files(tmp_path):
    ds = canonical()
    folder = tmp_path / "nc"
    folder.mkdir()
    ds.isel(time=slice(0, 7)).to_netcdf(folder / "part_0.nc", engine="h5netcdf")
    ds.isel(time=slice(5, None)).to_netcdf(folder / "part_1.nc", engine="h5netcdf")  # overlaps by two steps
    with pytest.raises(DataError, match=r"2 duplicated time step\(s\): 2000-01-02T06:00 .. 2000-01-02T12:00 "
                                        r"\(2 steps\) \(each in more than one of the files .*part_0.nc.*part_1.nc"):
        shard.plan_blocks(params_for(str(folder / "*.nc")))
    times = ds.time.values.copy()
    times[3] += np.timedelta64(1, "h")
    odd = ds.assign_coords(time=times)
    with pytest.raises(DataError, match=r"1 time\(s\) off the 6 h grid: 2000-01-01T19:00"):
        shard.plan_blocks(params_for(write_store(odd, tmp_path / "odd.zarr")))


def test_snakemake_stops_at_planning_before_any_shard_job(tmp_path, project_root):
    import subprocess
    import sys

    import yaml

    src = write_store(canonical().drop_isel(time=[7]), tmp_path / "src.zarr")
    params = params_for(src).model_dump(mode="json")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    run = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "1", "--snakefile",
                          str(project_root / "Snakefile"), "--directory", str(tmp_path), "shards"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode != 0
    assert "misses 1 time step(s): 2000-01-02T18:00" in run.stdout + run.stderr
    assert not (tmp_path / "data").exists()


# ---------------------------------------------------------------------------------------------------------------
# Many files: entries must agree on grid and times; each disagreement names the files.


def test_entries_with_other_grids_or_times_are_refused_naming_them(tmp_path):
    ds = canonical()
    z = write_store(ds[["geopotential"]], tmp_path / "z.zarr")
    coarse = ds[["temperature"]].isel(latitude=slice(0, None, 2))
    t = write_store(coarse, tmp_path / "t.zarr")
    with pytest.raises(DataError, match=r"the latitude of '.*z.zarr' \(8 values.*and '.*t.zarr' \(4 values.*differ"):
        shard.plan_blocks(params_for([z, t], variables=["geopotential", "temperature"]))
    shifted = ds[["temperature"]].assign_coords(time=ds.time + np.timedelta64(3, "h"))
    late = write_store(shifted, tmp_path / "late.zarr")
    with pytest.raises(DataError, match=r"entries '.*z.zarr' .* and '.*late.zarr' .* have different time steps"):
        shard.plan_blocks(params_for([z, late], variables=["geopotential", "temperature"], start="2000-01-01T03:00",
                                     end="2000-01-03T12:00"))
    folder = tmp_path / "nc"
    folder.mkdir()
    ds.isel(time=slice(0, 6)).to_netcdf(folder / "a.nc", engine="h5netcdf")
    ds.isel(time=slice(6, None), longitude=slice(0, 8)).to_netcdf(folder / "b.nc", engine="h5netcdf")
    with pytest.raises(DataError, match=r"the longitude of file '.*a.nc' \(16 values.*and file '.*b.nc' \(8 values"):
        shard.plan_blocks(params_for(str(folder / "*.nc")))


# ---------------------------------------------------------------------------------------------------------------
# Bounded memory: a shard job holds a fixed number of time steps, never the whole block.


def _peak_bytes(fn) -> int:
    import gc
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("grid", ["", "32x17"])
def test_shard_memory_is_flat_in_the_block_size(tmp_path, monkeypatch, grid):
    """Peak traced memory of a shard job grows by (much) less than a step's data per extra step: the block is
    never held whole. The source file is contiguous (one HDF5 chunk of all steps), the worst case for a reader."""
    rng = np.random.default_rng(0)
    nt, nlat, nlon = 12, 73, 144
    times = START + np.arange(nt) * STEP
    ds = xr.Dataset({"temperature": (("time", "level", "latitude", "longitude"),
                                     rng.standard_normal((nt, 3, nlat, nlon)).astype(np.float32)),
                     "2m_temperature": (("time", "latitude", "longitude"),
                                        rng.standard_normal((nt, nlat, nlon)).astype(np.float32))},
                    coords={"time": times, "level": LEVELS, "latitude": np.linspace(-90, 90, nlat),
                            "longitude": np.arange(nlon) * 2.5})
    ds.to_netcdf(tmp_path / "src.nc", engine="h5netcdf")
    step_bytes = 4 * nlat * nlon * 4
    monkeypatch.setattr(shard, "READ_BYTES", step_bytes)  # one step per read
    params = params_for(str(tmp_path / "src.nc"), variables=["temperature", "2m_temperature"], levels=[],
                        end=str(times[-1])[:16], grid=grid, splits={
                            "train": ["2000-01-01", "2000-01-02"], "val": ["2000-01-03", "2000-01-03"],
                            "test": ["2000-01-03T12:00", "2000-01-03T18:00"]})
    ds_c = source.open_canonical(params)
    regrid = importlib.import_module(f"{PACKAGE}.data.regrid")
    resample = regrid.resampler(ds_c.latitude.values, ds_c.longitude.values, 1, grid)
    write = lambda n: shard.write_shard(ds_c, 0, n, tmp_path / f"s{n}.zarr", resample)  # noqa: E731
    write(nt)  # warm up: imports and caches are not what we measure
    small, big = _peak_bytes(lambda: write(3)), _peak_bytes(lambda: write(nt))
    assert big - small < 0.25 * (nt - 3) * step_bytes, (small, big, step_bytes)  # per extra step: < 1/4 step
    # (no absolute bound: a process that ran other tests first holds unrelated buffers, and the difference above
    # already fails when the block is read at once)
    out = xr.open_zarr(tmp_path / f"s{nt}.zarr", consolidated=False)["data"]
    assert out.sizes["time"] == nt and out.sizes["latitude"] == (17 if grid else nlat)
