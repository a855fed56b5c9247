"""Regridding beyond block means (issue 12): named WB2 grids and grid files, conservative regridding that keeps the
area-weighted global mean, applied inside the shard jobs."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import xarray as xr
from conftest import PACKAGE

regrid = importlib.import_module(f"{PACKAGE}.data.regrid")
shard = importlib.import_module(f"{PACKAGE}.data.shard")
config = importlib.import_module(f"{PACKAGE}.config")
errors = importlib.import_module(f"{PACKAGE}.errors")


def cell_areas(lat: np.ndarray) -> np.ndarray:
    """Relative area of each latitude row: cell edges halfway between centres, clipped at the poles."""
    edges = np.concatenate([[lat[0] - (lat[1] - lat[0]) / 2], (lat[1:] + lat[:-1]) / 2,
                            [lat[-1] + (lat[-1] - lat[-2]) / 2]])
    return np.diff(np.sin(np.deg2rad(np.clip(edges, -90, 90))))


def global_mean(field: np.ndarray, lat: np.ndarray) -> np.ndarray:
    w = cell_areas(lat)
    return (field.mean(axis=-1) * w).sum(axis=-1) / w.sum()


def rough_field(lat, lon, n=2, seed=0):
    """White noise (so only a conservative scheme keeps the mean) on a strong pole-to-equator contrast."""
    rng = np.random.default_rng(seed)
    structure = 10 * np.sin(np.deg2rad(lat))[:, None] ** 2 + np.cos(np.deg2rad(lon))[None, :]
    return structure[None] + rng.standard_normal((n, len(lat), len(lon)))


def test_named_grids_follow_weatherbench2():
    lat, lon = regrid.target_grid("240x121")
    assert len(lat) == 121 and lat[0] == -90 and lat[-1] == 90 and np.allclose(np.diff(lat), 1.5)
    assert len(lon) == 240 and lon[0] == 0 and lon[-1] == 358.5
    assert all(np.array_equal(a, b) for a, b in zip(regrid.target_grid("1.5deg"), (lat, lon), strict=True))
    lat, lon = regrid.target_grid("64x32")  # WB2's 5.625 deg grid: no poles
    assert len(lat) == 32 and lat[0] == -87.1875 and np.allclose(np.diff(lat), 5.625) and len(lon) == 64
    assert np.array_equal(regrid.target_grid("5.625deg")[0], lat)
    assert len(regrid.target_grid("0.25deg")[0]) == 721
    with pytest.raises(errors.DataError, match=r"data.grid '1.5 deg' is neither a grid name nor an existing file"):
        regrid.target_grid("1.5 deg")


def test_grid_file(tmp_path):
    lat = np.linspace(80, -80, 9)  # descending, as many files are
    lon = np.arange(-180, 180, 20.0)
    xr.Dataset(coords={"lat": lat, "lon": lon}).to_netcdf(tmp_path / "grid.nc", engine="h5netcdf")
    got_lat, got_lon = regrid.target_grid(str(tmp_path / "grid.nc"))
    np.testing.assert_array_equal(got_lat, lat[::-1])
    np.testing.assert_array_equal(got_lon, np.sort(np.mod(lon, 360)))


@pytest.mark.parametrize("target", ["240x121", "64x32", "128x64"])
def test_conservative_regridding_keeps_the_area_weighted_global_mean(target):
    lat, lon = regrid.equiangular(720, 361)  # 0.5 deg with poles, like ERA5's layout at lower resolution
    field = rough_field(lat, lon, n=6)
    to_lat, to_lon = regrid.target_grid(target)
    out = regrid.resampler(lat, lon, grid=target)(field)
    assert out.shape == (6, len(to_lat), len(to_lon))
    error = np.abs(global_mean(out, to_lat) - global_mean(field, lat))
    assert np.all(error < 2e-4), error  # the field varies by ~10: a relative 2e-5
    # the check has teeth: sampling the nearest cells (no area averaging) misses the mean by far more
    near = field[:, np.abs(lat[:, None] - to_lat[None]).argmin(0)][..., np.abs(lon[:, None] - to_lon[None]).argmin(0)]
    near_error = np.abs(global_mean(near, to_lat) - global_mean(field, lat))
    assert np.sqrt(np.mean(near_error**2)) > 10 * np.sqrt(np.mean(error**2)), (near_error, error)


def test_nested_grids_are_exact_area_means():
    """128x64 -> 64x32: in latitude each target row holds two source rows (weighted by their areas); in longitude
    both grids have a cell centred on 0 E, so a target cell holds one source cell and half of each neighbour."""
    lat, lon = regrid.equiangular(128, 64)
    field = rough_field(lat, lon, n=1)
    out = regrid.resampler(lat, lon, grid="64x32")(field)
    w = cell_areas(lat).reshape(-1, 2)
    rows = (field[0].reshape(32, 2, 128) * w[:, :, None]).sum(axis=1) / w.sum(axis=1)[:, None]
    expect = 0.5 * rows[:, 0::2] + 0.25 * (np.roll(rows, 1, axis=1)[:, 0::2] + np.roll(rows, -1, axis=1)[:, 0::2])
    inner = slice(1, -1)  # the pole rows are padded as in ESMF's Pole="all"
    np.testing.assert_allclose(out[0, inner], expect[inner], rtol=1e-12, atol=1e-12)


def test_shards_on_a_target_grid(tmp_path):
    rng = np.random.default_rng(1)
    nt = 6
    lat, lon = regrid.equiangular(72, 37)
    times = np.datetime64("2000-01-01", "ns") + np.arange(nt) * np.timedelta64(6, "h")
    ds = xr.Dataset({"2m_temperature": (("time", "latitude", "longitude"),
                                        (280 + 5 * rng.standard_normal((nt, 37, 72))).astype(np.float32))},
                    coords={"time": times, "latitude": lat, "longitude": lon})
    ds.to_zarr(tmp_path / "src.zarr", zarr_format=3, consolidated=False)
    params = config.validate_params({"seed": 0, "data": {
        "source": str(tmp_path / "src.zarr"), "variables": ["2m_temperature"], "grid": "32x17",
        "start": "2000-01-01", "end": "2000-01-02T06:00", "block_size": 4,
        "splits": {"train": ["2000-01-01", "2000-01-01T06:00"], "val": ["2000-01-01T12:00", "2000-01-01T12:00"],
                   "test": ["2000-01-01T18:00", "2000-01-02T06:00"]}}})
    out = shard.shard_block(params, 1, tmp_path / "block_0001.zarr")
    got = xr.open_zarr(out, consolidated=False)["data"]
    to_lat, to_lon = regrid.target_grid("32x17")
    np.testing.assert_array_equal(got.latitude.values, to_lat)
    np.testing.assert_array_equal(got.longitude.values, to_lon)
    src = ds["2m_temperature"].values[4:6].astype(np.float64)
    expect = regrid.Conservative(lat, lon, to_lat, to_lon)(src).astype(np.float32)
    assert np.array_equal(got.values[:, 0], expect)
    np.testing.assert_allclose(global_mean(got.values[:, 0].astype(np.float64), to_lat),
                               global_mean(src, lat), atol=1e-3)


def test_grid_and_coarsen_are_exclusive():
    with pytest.raises(errors.ParamsError, match=r"data.coarsen.*data.grid '240x121' both regrid"):
        config.validate_params({"seed": 0, "data": {
            "grid": "240x121", "coarsen": 6,
            "splits": {"train": ["2000-01-01", "2000-12-31"], "val": ["2001-01-01", "2001-01-31"],
                       "test": ["2001-02-01", "2001-03-31"]}}})
