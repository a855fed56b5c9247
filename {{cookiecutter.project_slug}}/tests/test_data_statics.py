"""Static fields (issue 12): written once beside the shards, normalized, on the shards' grid; time-invariance and
names checked; the synthetic source has a land-sea mask and orography."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import xarray as xr
from conftest import PACKAGE

statics = importlib.import_module(f"{PACKAGE}.data.statics")
synthetic = importlib.import_module(f"{PACKAGE}.data.synthetic")
regrid = importlib.import_module(f"{PACKAGE}.data.regrid")
shard = importlib.import_module(f"{PACKAGE}.data.shard")
config = importlib.import_module(f"{PACKAGE}.config")
DataError = importlib.import_module(f"{PACKAGE}.errors").DataError

SPLITS = {"train": ["2000-01-01", "2000-01-02"], "val": ["2000-01-03", "2000-01-03"],
          "test": ["2000-01-04", "2000-01-04T18:00"]}
STATIC = ["land_sea_mask", "geopotential_at_surface"]


def params(**data):
    d = {"source": "synthetic", "start": "2000-01-01", "end": "2000-01-04T18:00", "block_size": 8,
         "static": STATIC, "splits": SPLITS, "synthetic": {"nlat": 16, "nlon": 32}}
    d.update(data)
    return config.validate_params({"seed": 0, "data": d})


@pytest.fixture()
def synthetic_store(tmp_path):
    store = tmp_path / "synthetic.zarr"
    synthetic.write(synthetic.generate(params()), store)
    return str(store)


def test_written_once_normalized_and_read_back(tmp_path, synthetic_store):
    out = statics.write_static(params(), tmp_path / "shards" / "static.zarr", source=synthetic_store)
    names, fields = statics.read_static(out)
    assert names == STATIC and fields.dtype == np.float32 and fields.shape == (2, 16, 32)
    np.testing.assert_allclose(fields.mean(axis=(1, 2)), 0, atol=1e-6)
    np.testing.assert_allclose(fields.std(axis=(1, 2)), 1, rtol=1e-5)
    raw = synthetic.static_fields(*synthetic.grid(16, 32))
    for name in STATIC:  # mean and std are stored: the fields in their own units come back
        np.testing.assert_allclose(statics.physical_static(out, name), raw[name], rtol=1e-5, atol=1e-3)
    with pytest.raises(DataError, match=r"no static field 'soil_type'"):
        statics.physical_static(out, "soil_type")
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")], "no temp dirs left"
    with pytest.raises(DataError, match="static fields are on another latitude grid"):
        statics.read_static(out, lat=np.zeros(8), lon=np.zeros(32))
    # the loader's entry point: the fields params asks for, or none
    lat, lon = synthetic.grid(16, 32)
    assert statics.static_inputs(params(), out.parent, lat, lon)[0] == STATIC
    none = statics.static_inputs(params(static=[]), out.parent, lat, lon)
    assert none[0] == [] and none[1].shape == (0, 16, 32)
    with pytest.raises(DataError, match=r"holds \['land_sea_mask', 'geopotential_at_surface'\] but data.static is "
                                        r"\['land_sea_mask'\].*rebuild"):
        statics.static_inputs(params(static=["land_sea_mask"]), out.parent, lat, lon)


@pytest.mark.parametrize("grid, coarsen", [("8x5", 1), ("", 2)])
def test_regridded_like_the_shards(tmp_path, synthetic_store, grid, coarsen):
    p = params(grid=grid, coarsen=coarsen)
    out = statics.write_static(p, tmp_path / "static.zarr", source=synthetic_store)
    shard_out = shard.shard_block(p, 0, tmp_path / "block_0000.zarr", source=synthetic_store)
    grid_of_shards = xr.open_zarr(shard_out, consolidated=False)
    names, fields = statics.read_static(out, lat=grid_of_shards.latitude.values, lon=grid_of_shards.longitude.values)
    lat, lon = synthetic.grid(16, 32)
    expect = regrid.resampler(lat, lon, coarsen, grid)(synthetic.static_fields(lat, lon)["land_sea_mask"][None])[0]
    stored = xr.open_zarr(out, consolidated=False)
    np.testing.assert_allclose(stored["mean"].values[0], expect.mean(), rtol=1e-6)
    np.testing.assert_allclose(fields[0], (expect - expect.mean()) / expect.std(), rtol=1e-4, atol=1e-5)


def test_statics_from_a_separate_file_on_another_grid(tmp_path, synthetic_store):
    """An invariant file on a finer grid (as ERA5's 0.25 deg LSM beside 1.5 deg data) is regridded conservatively
    to the shards' grid; its time axis of one step is dropped."""
    lat, lon = regrid.equiangular(64, 33)
    lsm = synthetic.static_fields(lat, lon)["land_sea_mask"]
    xr.Dataset({"LSM": (("time", "latitude", "longitude"), lsm[None, ::-1])},
               coords={"time": np.array(["1979-01-01"], dtype="datetime64[ns]"), "latitude": lat[::-1],
                       "longitude": lon}).to_netcdf(tmp_path / "e5.oper.invariant.128_172_lsm.nc", engine="h5netcdf")
    p = params(static=["land_sea_mask"], static_source=str(tmp_path / "e5.oper.invariant.*.nc"))
    names, lat_out, lon_out, fields = statics.static_fields(p, source=synthetic_store)
    np.testing.assert_array_equal(lat_out, synthetic.grid(16, 32)[0])
    expect = regrid.Conservative(lat, lon, lat_out, lon_out)(lsm[None])[0]
    np.testing.assert_allclose(fields[0], expect, rtol=1e-12)


def _timed_lsm(tmp_path, change_at: int | None):
    lat, lon = synthetic.grid(16, 32)
    lsm = np.repeat(synthetic.static_fields(lat, lon)["land_sea_mask"][None], 8, axis=0)
    if change_at is not None:
        lsm[change_at, 3, 5] += 0.5
    times = np.datetime64("2000-01-01", "ns") + np.arange(8) * np.timedelta64(6, "h")
    path = tmp_path / f"lsm_{change_at}.nc"
    xr.Dataset({"lsm": (("valid_time", "latitude", "longitude"), lsm)},
               coords={"valid_time": times, "latitude": lat, "longitude": lon}).to_netcdf(path, engine="h5netcdf")
    return str(path)


def test_a_field_that_varies_in_time_is_refused(tmp_path, synthetic_store):
    constant = params(static=["land_sea_mask"], static_source=_timed_lsm(tmp_path, None))
    names, _, _, fields = statics.static_fields(constant, source=synthetic_store)  # repeated in time (CDS): fine
    assert names == ["land_sea_mask"]
    varying = params(static=["land_sea_mask"], static_source=_timed_lsm(tmp_path, 6))
    out = tmp_path / "static.zarr"
    statics.write_static(constant, out, source=synthetic_store)
    before = statics.read_static(out)[1]
    with pytest.raises(DataError, match=r"data.static 'land_sea_mask' varies in time: at 2000-01-02T12:00.* differs "
                                        r"from 2000-01-01T00:00.*by up to 0.5 \(1 grid points\).*data.variables"):
        statics.write_static(varying, out, source=synthetic_store)
    assert np.array_equal(statics.read_static(out)[1], before), "a failure keeps the previous store"


def test_names_are_checked_at_planning(tmp_path):
    # synthetic: checked against the generator's fields, before data/synthetic.zarr exists
    with pytest.raises(DataError, match=r"data.static: 'land_sea_mak' not found. Did you mean 'land_sea_mask'"):
        shard.plan_blocks(params(static=["land_sea_mak"]))
    with pytest.raises(DataError, match=r"'lsm' is an archive name; data.static speaks WeatherBench2 names"):
        shard.plan_blocks(params(static=["lsm"]))
    assert shard.plan_blocks(params()) == [(0, 8), (8, 16)]
    with pytest.raises(Exception, match=r"data.static.*\['2m_temperature'\] are also in data.variables"):
        params(variables=["2m_temperature"], static=["2m_temperature"])


def test_pressure_level_field_is_not_static(tmp_path, synthetic_store):
    with pytest.raises(DataError, match=r"data.static 'geopotential' has pressure levels.*geopotential_at_surface"):
        statics.open_static(params(static=["geopotential"]), source=synthetic_store)


def test_static_command(tmp_path, synthetic_store):
    import yaml

    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params().model_dump(mode="json")))
    out = tmp_path / "static.zarr"
    assert statics.main(["--params", str(path), "--out", str(out), "--source", synthetic_store]) == 0
    assert statics.read_static(out)[0] == STATIC
    path.write_text(yaml.safe_dump(params(static=[]).model_dump(mode="json")))
    with pytest.raises(DataError, match="data.static is empty"):
        statics.main(["--params", str(path), "--out", str(tmp_path / "other.zarr")])
    with pytest.raises(DataError, match=r"no static fields at .*missing.zarr.*run the static step"):
        statics.read_static(tmp_path / "missing.zarr")
