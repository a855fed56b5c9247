"""The synthetic atmosphere: deterministic from the seed, WeatherBench2 names and magnitudes, cycles, propagation;
and the forcings."""

from __future__ import annotations

import importlib

import numpy as np
import xarray as xr
from conftest import PACKAGE

synthetic = importlib.import_module(f"{PACKAGE}.data.synthetic")
forcings = importlib.import_module(f"{PACKAGE}.data.forcings")
source = importlib.import_module(f"{PACKAGE}.data.source")
config = importlib.import_module(f"{PACKAGE}.config")


def params(seed=0, end="2000-01-20T18:00", **syn):
    return config.validate_params({"seed": seed, "data": {
        "source": "synthetic", "start": "2000-01-01", "end": end, "block_size": 40, "synthetic": syn,
        "splits": {"train": ["2000-01-01", "2000-01-10"], "val": ["2000-01-11", "2000-01-12"],
                   "test": ["2000-01-13", "2000-01-20T18:00"]}}})


def test_deterministic_from_seed(tmp_path):
    a, b, c = (synthetic.generate(params(s)) for s in (0, 0, 1))
    for v in a.data_vars:
        assert a[v].values.tobytes() == b[v].values.tobytes()
        # the weather depends on the seed; the land (static fields) does not
        assert np.array_equal(a[v].values, c[v].values) == (v in synthetic.STATICS)
    synthetic.main(["--params", _write(tmp_path, 0), "--out", str(tmp_path / "s.zarr")])
    stored = xr.open_zarr(tmp_path / "s.zarr", consolidated=False).load()
    for v in a.data_vars:
        assert stored[v].values.tobytes() == a[v].values.tobytes()


def _write(tmp_path, seed):
    import yaml

    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(params(seed).model_dump(mode="json")))
    return str(p)


def test_names_layout_and_magnitudes():
    ds = synthetic.generate(params())
    assert list(ds.data_vars) == ["geopotential", "temperature", "2m_temperature", "land_sea_mask",
                                  "geopotential_at_surface"]
    assert source.canonicalize(ds).sizes == ds.sizes  # already canonical
    assert source.channel_names(source.canonicalize(ds)) == ["geopotential_500", "geopotential_850",
                                                             "temperature_500", "temperature_850", "2m_temperature"]
    assert ds.sizes == {"time": 80, "level": 2, "latitude": 32, "longitude": 64}
    assert all(ds[v].dtype == np.float32 for v in ds.data_vars)
    z500 = ds["geopotential"].sel(level=500)
    assert 5.2e4 < float(z500.mean()) < 5.8e4
    assert 1.1e4 < float(ds["geopotential"].sel(level=850).mean()) < 1.6e4
    for v in ("temperature", "2m_temperature"):
        assert 200 < float(ds[v].min()) and float(ds[v].max()) < 330
    # anomalies of realistic size: ~100 m of 500 hPa height
    anomaly = z500 - z500.mean(("time", "longitude"))
    assert 300 < float(np.sqrt((anomaly**2).mean())) < 3000


def test_features_propagate_east_in_midlatitudes():
    ds = synthetic.generate(params())
    z = ds["geopotential"].sel(level=500)
    z = (z - z.mean("longitude")).sel(latitude=slice(35, 55)).values.astype(np.float64)
    # correlation of z(t+4 steps) with z(t) shifted east by s cells: peaks at a positive shift
    corr = [np.mean(np.roll(z[:-4], s, axis=-1) * z[4:]) for s in range(-8, 9)]
    assert int(np.argmax(corr)) - 8 >= 2


def test_seasonal_and_diurnal_cycles():
    p = params(end="2000-07-31T18:00", nlat=8, nlon=16)
    ds = synthetic.generate(p)
    t2m = ds["2m_temperature"]
    north = t2m.sel(latitude=slice(30, 70)).mean(("latitude", "longitude"))
    assert float(north.sel(time="2000-07").mean()) - float(north.sel(time="2000-01").mean()) > 10
    # diurnal: at one point, the 24 h cycle dominates the 6-hourly series
    point = t2m.isel(latitude=4, longitude=0).sel(time="2000-07").values
    hours = ds.time.sel(time="2000-07").dt.hour.values
    by_hour = [point[hours == h].mean() for h in (0, 6, 12, 18)]
    assert max(by_hour) - min(by_hour) > 3


def test_default_generation_is_fast():
    import time

    p = params(end="2001-03-31T18:00")
    t0 = time.process_time()
    ds = synthetic.generate(p)
    assert ds.sizes["time"] == 1824  # 2000 is a leap year: 456 days x 4
    assert time.process_time() - t0 < 10


def test_static_fields_land_and_orography():
    ds = synthetic.generate(params())
    lsm, orog = ds["land_sea_mask"], ds["geopotential_at_surface"]
    assert lsm.dims == orog.dims == ("latitude", "longitude")  # no time: static
    assert float(lsm.min()) == 0 and float(lsm.max()) == 1
    weights = np.cos(np.deg2rad(ds.latitude))
    assert 0.2 < float(lsm.weighted(weights).mean()) < 0.45  # about the Earth's land fraction
    assert float(orog.min()) == 0 and 1e4 < float(orog.max()) < 3.5e4  # up to ~3 km x g
    assert float(orog.where(lsm == 0).max()) == 0  # no mountains at sea
    # analytic: a finer grid samples the same continents
    lat, lon = synthetic.grid(64, 128)
    fine = synthetic.static_fields(lat, lon)["land_sea_mask"]
    assert abs(float(fine.mean()) - float(lsm.mean())) < 0.03


def test_forcings():
    times = np.array(["2000-06-21T12:00", "2000-12-21T00:00"], dtype="datetime64[ns]")
    lat = np.array([-60.0, 0.0, 23.44, 60.0])
    lon = np.array([0.0, 90.0, 180.0, 270.0])
    f = forcings.forcing_fields(times, lat, lon)
    assert f.shape == (2, 3, 4, 4) and f.dtype == np.float32 and len(forcings.FORCING_NAMES) == 3
    assert f[0, 0, 2, 0] > 0.99  # June solstice noon at Greenwich over the Tropic of Cancer: sun overhead
    assert f[0, 0, :, 2].max() == 0  # midnight at 180 E
    assert f[1, 0, 0, 2] > 0.7  # December, 180E noon, 60S: high sun
    np.testing.assert_allclose(f[:, 1, :, 0], np.sin(np.deg2rad(lat))[None].repeat(2, 0), rtol=1e-6)
    np.testing.assert_allclose(f[:, 2, :, 0], np.cos(np.deg2rad(lat))[None].repeat(2, 0), rtol=1e-6, atol=1e-7)
    assert np.all(f[:, 0] >= 0)


def test_synthetic_shards_keep_the_synthetic_channel_order(tmp_path):
    shard = importlib.import_module(f"{PACKAGE}.data.shard")
    store = tmp_path / "synthetic.zarr"
    synthetic.main(["--params", _write(tmp_path, 0), "--out", str(store)])
    p = params()
    assert shard.plan_blocks(p) == [(0, 40), (40, 80)]
    out = shard.shard_block(p, 1, tmp_path / "block_0001.zarr", source=str(store))
    ds = xr.open_zarr(out, consolidated=False)
    assert list(ds.channel.values) == ["geopotential_500", "geopotential_850", "temperature_500",
                                       "temperature_850", "2m_temperature"]
    ref = synthetic.generate(p)["temperature"].sel(level=850).values[40:80]
    assert np.array_equal(ds["data"].sel(channel="temperature_850").values, ref)
