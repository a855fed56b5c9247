"""The climatology stage: WB2 layout, WB2's running window checked against a plain numpy reference, bounded memory,
and external WB2-layout stores accepted or refused with the fix."""

from __future__ import annotations

import importlib
import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import yaml
from conftest import PACKAGE, PROJECT_ROOT

climatology = importlib.import_module(f"{PACKAGE}.climatology")
store = importlib.import_module(f"{PACKAGE}.climatology_store")
stats = importlib.import_module(f"{PACKAGE}.data.stats")
config = importlib.import_module(f"{PACKAGE}.config")

CHANNELS = ["geopotential_500", "geopotential_850", "2m_temperature"]
LAT = np.array([-67.5, -22.5, 22.5, 67.5])
LON = np.arange(8) * 45.0
HOUR = np.timedelta64(1, "h")
# two winters around two new years: 1999 is not a leap year (its 31 Dec also fills day 366), 2000 is
PERIODS = [("1999-12-18", "2000-01-12T18:00"), ("2000-12-20", "2001-01-08T18:00")]
TRAIN = ("1999-12-18", "2001-01-08T18:00")


def states(times: np.ndarray, lat=LAT, lon=LON) -> np.ndarray:
    """(T, C, H, W) float32: a seasonal and a diurnal cycle, a travelling wave and a little noise."""
    t = times.astype("datetime64[h]").astype(np.int64).astype(np.float64)
    rng = np.random.default_rng(t.astype(np.int64) % 9973)
    year, day = 2 * np.pi * t / (24 * 365.25), 2 * np.pi * t / 24
    wave = np.cos(np.deg2rad(lat))[None, :, None] * np.sin(np.deg2rad(lon)[None, None, :] - 0.05 * t[:, None, None])
    base, amp = np.array([5500.0, 1500.0, 280.0]), np.array([60.0, 30.0, 5.0])
    cycle = np.sin(year)[:, None, None, None] + 0.3 * np.sin(day)[:, None, None, None] + wave[:, None]
    noise = 0.1 * rng.standard_normal((len(t), len(base), len(lat), len(lon)))
    return (base[None, :, None, None] + amp[None, :, None, None] * (cycle + noise)).astype(np.float32)


def times_of(periods, step_hours: int = 6) -> np.ndarray:
    return np.concatenate([np.arange(np.datetime64(a, "ns"), np.datetime64(b, "ns") + HOUR, step_hours * HOUR)
                           for a, b in periods])


def write_shards(root: Path, times: np.ndarray, data: np.ndarray, lat=LAT, lon=LON, block: int = 64) -> Path:
    """Shards in the contract's layout (zarr v3, (time, channel, lat, lon) float32, one step per chunk, no codec)."""
    root.mkdir(parents=True)
    for k, i in enumerate(range(0, len(times), block)):
        ds = xr.Dataset({"data": (("time", "channel", "latitude", "longitude"), data[i : i + block])},
                        coords={"time": times[i : i + block], "channel": np.array(CHANNELS, dtype=object),
                                "latitude": lat, "longitude": lon})
        ds.to_zarr(root / f"block_{k:04d}.zarr", zarr_format=3, consolidated=False,
                   encoding={"data": {"chunks": (1,) + data.shape[1:], "compressors": None}})
    return root


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    times = times_of(PERIODS)
    return write_shards(tmp_path_factory.mktemp("clim") / "shards", times, states(times))


def numpy_reference(times: np.ndarray, data: np.ndarray, half_width: int, shape: str) -> np.ndarray:
    """WB2's `compute_rolling_stat` per hour, in plain numpy: stack the years by day of year, fill a non-leap year's
    day 366 with its day 365, wrap, weighted mean over (window, year) of the values that exist.
    -> (hour, dayofyear, channel, lat, lon) float64, NaN where no state lies in the window."""
    import pandas as pd

    idx = pd.DatetimeIndex(times)
    hours, years = np.unique(idx.hour), np.unique(idx.year)
    if shape == "triangular" and half_width > 0:
        w = half_width
        weights = np.concatenate([np.linspace(0, 1, w + 1), np.linspace(1, 0, w + 1)[1:]])  # create_window_weights
    else:
        weights = np.ones(2 * half_width + 1)
    out = np.full((len(hours), 366) + data.shape[1:], np.nan)
    for hi, hour in enumerate(hours):
        stacked = np.full((len(years), 366) + data.shape[1:], np.nan)
        for yi, year in enumerate(years):
            sel = (idx.hour == hour) & (idx.year == year)
            stacked[yi, idx.day_of_year[sel] - 1] = data[sel]
            if not pd.Timestamp(f"{year}-01-01").is_leap_year:
                stacked[yi, 365] = stacked[yi, 364]
        for day in range(366):
            window = stacked[:, (day + np.arange(-half_width, half_width + 1)) % 366]  # (year, window, ...)
            wts = np.broadcast_to(weights[None, :, None, None, None], window.shape)
            valid = ~np.isnan(window)
            den = (wts * valid).sum(axis=(0, 1))
            if den.max() > 0:
                out[hi, day] = np.where(valid, window * wts, 0).sum(axis=(0, 1)) / den
    return out


def stored(path: Path) -> np.ndarray:
    """(hour, dayofyear, channel, lat, lon) from a store in WB2 layout, by its variables and levels."""
    ds = xr.open_zarr(path)
    z = ds["geopotential"].transpose("hour", "dayofyear", "level", "latitude", "longitude").values
    t2m = ds["2m_temperature"].transpose("hour", "dayofyear", "latitude", "longitude").values
    return np.concatenate([z, t2m[:, :, None]], axis=2)


@pytest.mark.parametrize("shape,half_width", [("triangular", 4), ("uniform", 3), ("triangular", 0)])
def test_computed_matches_numpy_reference(shards, tmp_path, shape, half_width):
    times = times_of(PERIODS)
    out = tmp_path / "climatology.zarr"
    steps = stats.ShardSteps(shards)
    written = climatology.compute_store(steps, TRAIN, half_width, shape, out, {"test": 1})
    expected = numpy_reference(times, states(times).astype(np.float64), half_width, shape)
    got = stored(out)
    assert np.array_equal(np.isnan(got), np.isnan(expected))  # the same keys have data
    assert written == int((~np.isnan(expected[:, :, 0, 0, 0])).sum()) and 0 < written < 4 * 366
    np.testing.assert_allclose(got, expected.astype(np.float32), rtol=2e-7, equal_nan=True)
    # day 366 at 00h: with a window, from 1999's 31 Dec (twice: day 365 and, filled, day 366) and 2000's 30/31 Dec
    assert not np.isnan(got[0, 365]).any()


def test_window_weights_are_wb2s():
    for w in (1, 2, 15, 30):
        wb2 = np.concatenate([np.linspace(0, 1, w + 1), np.linspace(1, 0, w + 1)[1:]])
        ours = climatology.window_weights(w, "triangular")
        np.testing.assert_allclose(ours / ours.sum(), wb2 / wb2.sum(), rtol=1e-14)
    assert climatology.window_weights(3, "uniform").tolist() == [1] * 7
    with pytest.raises(ValueError, match="fit in a year"):
        climatology.window_weights(183, "uniform")


def test_memory_does_not_grow_with_the_window_or_the_span(tmp_path, monkeypatch):
    """tracemalloc peak (numpy buffers included) of the whole stage on a 64 x 128 grid: a few fields, whatever the
    window (it would hold 2w + 1 daily fields if it kept the window) or the number of days."""
    lat, lon = np.linspace(-88.6, 88.6, 64), np.arange(128) * 360 / 128
    field = 8 * len(CHANNELS) * len(lat) * len(lon)  # one float64 (channel, lat, lon) field: 196 kB
    monkeypatch.setattr(store, "BLOCK_BYTES", field)  # written one day at a time, as on a 0.25 deg grid
    peaks = {}
    for days in (6, 18):
        times = times_of([("2000-03-01", np.datetime64("2000-03-01") + np.timedelta64(days - 1, "D"))], 24)
        steps = stats.ShardSteps(write_shards(tmp_path / f"s{days}", times, states(times, lat, lon), lat, lon))
        for w in (2, 40):
            tracemalloc.start()
            climatology.compute_store(steps, ("2000", "2001"), w, "triangular", tmp_path / f"c{days}-{w}", {})
            peaks[days, w] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
    assert max(peaks.values()) < 16 * field, {k: v / field for k, v in peaks.items()}  # 81 fields if it held w = 40
    assert max(peaks.values()) < 1.5 * min(peaks.values()), {k: v / field for k, v in peaks.items()}


def params_file(tmp_path: Path, **evaluate) -> Path:
    raw = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    raw["data"].update(start=TRAIN[0], end="2001-02-01", splits={
        "train": list(TRAIN), "val": ["2001-01-09", "2001-01-10"], "test": ["2001-01-11", "2001-02-01"]})
    raw["evaluate"].update(evaluate)
    path = tmp_path / f"params-{len(list(tmp_path.glob('params-*')))}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_stage_writes_wb2_layout_and_evaluate_checks_it(shards, tmp_path):
    out = tmp_path / "data" / "climatology.zarr"
    params = params_file(tmp_path, climatology_window_days=5)
    assert climatology.main(["--params", str(params), "--shards", str(shards), "--out", str(out)]) == 0
    ds = xr.open_zarr(out)
    assert ds["geopotential"].dims == ("hour", "dayofyear", "level", "latitude", "longitude")
    assert ds["2m_temperature"].dims == ("hour", "dayofyear", "latitude", "longitude")
    assert ds["dayofyear"].values.tolist() == list(range(1, 367)) and ds["hour"].values.tolist() == [0, 6, 12, 18]
    assert ds["level"].values.tolist() == [500, 850] and ds["geopotential"].encoding["chunks"][:2] == (1, 1)
    assert json.loads(ds.attrs["forge_climatology"])["window_shape"] == "triangular"

    loaded = config.load_params(params)
    clim = climatology.load(out, loaded, CHANNELS, LAT, LON)
    valid = np.array(["2001-01-11T06:00", "2001-01-02T18:00", "2001-01-11T06:00"], dtype="datetime64[ns]")
    values = clim.at(valid)
    assert values.shape == (3, 3, 4, 8) and values.dtype == np.float32
    np.testing.assert_array_equal(values[0], values[2])
    np.testing.assert_array_equal(values[1], stored(out)[3, 1])  # 18h, day 2
    with pytest.raises(ValueError, match="no value for day of year 100 at 00h"):
        clim.at(np.array(["2001-04-10"], dtype="datetime64[ns]"))
    clim.check(valid)  # evaluate's early check: fine for these, names the first day without data otherwise
    with pytest.raises(ValueError, match="no value for day of year 100 at 18h"):
        clim.check(np.array(["2001-01-02T18:00", "2001-04-10T18:00", "2004-12-31T18:00"], dtype="datetime64[ns]"))
    with pytest.raises(ValueError, match="has hours \\[0, 6, 12, 18\\]; a valid time at 03h"):
        clim.at(np.array(["2001-01-02T03:00"], dtype="datetime64[ns]"))
    # made with other params: evaluate refuses it and names the rerun
    with pytest.raises(ValueError, match="rerun the climatology stage"):
        climatology.load(out, config.load_params(params_file(tmp_path, climatology_window_days=6)), CHANNELS, LAT, LON)
    with pytest.raises(ValueError, match="no climatology. Fix: run the climatology stage"):
        climatology.load(tmp_path / "none.zarr", loaded, CHANNELS, LAT, LON)
    # a failed run (bad external store) keeps the earlier output
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    bad = params_file(tmp_path, climatology=str(tmp_path / "missing.zarr"))
    with pytest.raises(ValueError, match="does not exist"):
        climatology.main(["--params", str(bad), "--shards", str(shards), "--out", str(out)])
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def wb2_store(path: Path, lat: np.ndarray, lon: np.ndarray, value, variables=("geopotential", "temperature",
              "2m_temperature"), levels=(250, 500, 850)) -> Path:
    """An external climatology as WB2 ships it: zarr v2, consolidated, chunks of 3 hours x 3 days, (hour, dayofyear,
    [level], longitude, latitude), more variables and levels than needed; value(var index, level, hour, day, lat, lon)
    -> the field (lat, lon)."""
    hours, days = [0, 6, 12, 18], np.arange(1, 367)
    data_vars = {}
    for k, var in enumerate(variables):
        lev = [None] if var == "2m_temperature" else list(levels)
        cube = np.array([[[value(k, lv, h, d, lat, lon).T for lv in lev] for d in days] for h in hours], np.float32)
        if var == "2m_temperature":
            data_vars[var] = (("hour", "dayofyear", "longitude", "latitude"), cube[:, :, 0])
        else:
            data_vars[var] = (("hour", "dayofyear", "level", "longitude", "latitude"), cube)
    ds = xr.Dataset(data_vars, coords={"hour": hours, "dayofyear": days, "level": list(levels),
                                       "latitude": lat, "longitude": lon})
    encoding = {v: {"chunks": (3, 3) + ds[v].shape[2:]} for v in ds.data_vars}  # as WB2's 0.25 deg store
    ds.to_zarr(path, zarr_format=2, consolidated=True, encoding=encoding)
    return path


def smooth(k, level, hour, day, lat, lon):
    """A value that tells variable, level, hour, day and grid point apart."""
    base = 1000.0 * hour + day + 10 * k + (level / 10 if level is not None else 0.0)
    return base + np.add.outer(np.asarray(lat) / 100.0, np.mod(lon, 360.0) / 1000.0)


def blocky(k, level, hour, day, lat, lon):
    """Constant over each cell of the shards' 45-degree grid: conservative regridding must return that constant."""
    cell = np.add.outer(np.floor((np.asarray(lat) + 90) / 45), 4 * np.floor(np.mod(np.asarray(lon) + 22.5, 360) / 45))
    return 1000.0 * hour + day + 10 * k + (level / 10 if level is not None else 0.0) + cell


def test_external_wb2_store_on_the_shards_grid_is_selected(shards, tmp_path):
    """The shards' grid in WB2's order (latitude north to south, longitude -180..180): an exact selection."""
    external = wb2_store(tmp_path / "1990-2019_6h.zarr", LAT[::-1], np.sort((LON + 180) % 360 - 180), smooth)
    out = tmp_path / "climatology.zarr"
    params = config.load_params(params_file(tmp_path, climatology=str(external)))
    assert climatology.build(params, shards, out) == 4 * 366
    clim = climatology.load(out, params, CHANNELS, LAT, LON)
    got = clim.at(np.array(["2001-03-01T12:00", "2000-12-31T18:00"], dtype="datetime64[ns]"))
    for row, (hour, day) in enumerate([(12, 60), (18, 366)]):
        for c, (k, level) in enumerate([(0, 500), (0, 850), (2, None)]):
            np.testing.assert_allclose(got[row, c], smooth(k, level, hour, day, LAT, LON), rtol=1e-7)
    assert xr.open_zarr(out)["geopotential"].dims == ("hour", "dayofyear", "level", "latitude", "longitude")
    # evaluate may also read the external store directly: the same numbers; chunks of 3 days are read whole
    direct = store.Climatology(external, CHANNELS, LAT, LON)
    np.testing.assert_array_equal(direct.at(np.array(["2001-03-01T12:00"], dtype="datetime64[ns]"))[0], got[0])
    assert direct.grid.regrid is None and direct.days_per_chunk == 3
    assert store.days_per_block((1000, 1000, 1000), 3) == 1 and store.days_per_block((16, 721, 1440), 3) == 3


def test_external_store_on_another_grid_is_regridded_conservatively(shards, tmp_path):
    """A 22.5-degree global store: each shard cell holds 2 x 2 store cells of the same value -> that value exactly."""
    fine_lat, fine_lon = np.arange(78.75, -80, -22.5), np.arange(16) * 22.5 - 168.75
    external = wb2_store(tmp_path / "fine.zarr", fine_lat, fine_lon, blocky)
    clim = store.Climatology(external, CHANNELS, LAT, LON)
    assert clim.grid.regrid is not None and clim.read_shape == (3, 8, 16)
    got = clim.at(np.array(["2001-07-04T06:00"], dtype="datetime64[ns]"))[0]
    for c, (k, level) in enumerate([(0, 500), (0, 850), (2, None)]):
        np.testing.assert_allclose(got[c], blocky(k, level, 6, 185, LAT, LON), rtol=1e-6)


def test_external_store_refused_with_the_fix(shards, tmp_path):
    lat, lon = np.arange(90, -90.1, -22.5), np.arange(0, 360, 22.5)
    lacking = wb2_store(tmp_path / "lacking.zarr", lat, lon, smooth, variables=("geopotential",), levels=(500, 700))
    with pytest.raises(ValueError) as err:
        store.Climatology(lacking, CHANNELS, LAT, LON)
    message = str(err.value)
    assert "lacking.zarr" in message and "['geopotential_850', '2m_temperature']" in message
    assert "levels [500, 700]" in message and "evaluate.climatology: computed" in message

    tropics = wb2_store(tmp_path / "tropics.zarr", np.arange(-45, 45.1, 22.5), lon, smooth)
    with pytest.raises(ValueError) as err:
        store.Climatology(tropics, CHANNELS, LAT, LON)
    message = str(err.value)
    assert "tropics.zarr" in message and "latitude 5 points -45..45, step 22.5" in message
    assert "does not cover the shards' (latitude 4 points -67.5..67.5, step 45" in message
    half = wb2_store(tmp_path / "half.zarr", lat, np.arange(0, 180, 22.5), smooth)
    with pytest.raises(ValueError, match="longitude 8 points 0..157.5, step 22.5.* does not cover"):
        store.Climatology(half, CHANNELS, LAT, LON)

    not_clim = tmp_path / "not_clim.zarr"
    xr.Dataset({"geopotential": (("time", "latitude", "longitude"), np.zeros((1, 4, 8)))},
               coords={"latitude": LAT, "longitude": LON}).to_zarr(not_clim, zarr_format=2)
    with pytest.raises(ValueError, match="not a climatology in WeatherBench2 layout"):
        store.Climatology(not_clim, CHANNELS, LAT, LON)

    # the stage refuses before it writes: an earlier output survives
    out = tmp_path / "climatology.zarr"
    climatology.build(config.load_params(params_file(tmp_path)), shards, out)
    before = xr.open_zarr(out)["2m_temperature"].isel(hour=0, dayofyear=0).values
    with pytest.raises(ValueError, match="lacks the channels"):
        climatology.build(config.load_params(params_file(tmp_path, climatology=str(lacking))), shards, out)
    np.testing.assert_array_equal(xr.open_zarr(out)["2m_temperature"].isel(hour=0, dayofyear=0).values, before)


def test_no_train_steps_names_the_fix(shards, tmp_path):
    with pytest.raises(ValueError, match="no time steps in the train split .* Fix: check data.splits.train"):
        climatology.compute_store(stats.ShardSteps(shards), ("1990-01-01", "1990-02-01"), 15, "triangular",
                                  tmp_path / "c.zarr", {})
    with pytest.raises(ValueError, match="evaluate.climatology_window_days"):
        config.load_params(params_file(tmp_path, climatology_window_days=183))
