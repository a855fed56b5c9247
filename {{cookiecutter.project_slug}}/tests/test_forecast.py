"""Forecast files in WeatherBench2 layout (names, dims, a round trip through xarray), the CLI, the grid check."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

CHANNELS = ["geopotential_500", "geopotential_850", "temperature_850", "2m_temperature", "mean_sea_level_pressure"]


@pytest.fixture(scope="module")
def fc(pkg_name):
    return importlib.import_module(f"{pkg_name}.forecast")


def _dataset(fc):
    rng = np.random.default_rng(0)
    states = rng.normal(size=(2, 3, len(CHANNELS), 4, 8)).astype(np.float32)  # (init, lead, channel, lat, lon)
    inits = np.array(["2001-02-01T00", "2001-02-02T00"], dtype="datetime64[ns]")
    lat, lon = np.array([-67.5, -22.5, 22.5, 67.5]), np.arange(8) * 45.0
    return states, fc.to_wb2_dataset(states, CHANNELS, inits, [6, 12, 18], lat, lon, {"source": "test"})


@pytest.mark.parametrize("suffix", [".zarr", ".nc"])
def test_forecast_file_round_trips_with_wb2_names_and_dims(fc, tmp_path, suffix):
    import xarray as xr

    states, ds = _dataset(fc)
    path = fc.write_dataset(ds, tmp_path / f"forecast{suffix}")
    back = xr.open_zarr(path, consolidated=False) if suffix == ".zarr" else xr.open_dataset(path)
    assert set(back.data_vars) == {"geopotential", "temperature", "2m_temperature", "mean_sea_level_pressure"}
    assert back["geopotential"].dims == ("time", "prediction_timedelta", "level", "latitude", "longitude")
    assert back["2m_temperature"].dims == ("time", "prediction_timedelta", "latitude", "longitude")
    assert back["level"].values.tolist() == [500, 850]
    assert back["prediction_timedelta"].dtype.kind == "m"
    assert (back["prediction_timedelta"].values / np.timedelta64(1, "h")).tolist() == [6, 12, 18]
    assert back["time"].values[0] == np.datetime64("2001-02-01T00")
    np.testing.assert_array_equal(back["geopotential"].sel(level=850).values, states[:, :, 1])
    np.testing.assert_array_equal(back["temperature"].sel(level=850).values, states[:, :, 2])
    assert np.isnan(back["temperature"].sel(level=500).values).all()  # not a channel: missing, not zero
    np.testing.assert_array_equal(back["2m_temperature"].values, states[:, :, 3])
    # valid time of WB2's convention
    valid = back["time"] + back["prediction_timedelta"]
    assert valid.values[1, 2] == np.datetime64("2001-02-02T18")
    back.close()


def test_unknown_output_format(fc, tmp_path):
    _, ds = _dataset(fc)
    with pytest.raises(ValueError, match=r"\.zarr or \.nc"):
        fc.write_dataset(ds, tmp_path / "forecast.grib")


def test_forecast_cli_writes_a_wb2_file(pkg_name, tiny, tiny_shards, fc, tmp_path, monkeypatch):
    import xarray as xr

    inference = importlib.import_module(f"{pkg_name}.inference")
    monkeypatch.chdir(tmp_path)
    files = tiny.build_project(pkg_name, tmp_path, tiny_shards)
    common = tiny.argv(files)
    assert fc.main(["--init", "2001-01-06T00:00", "--steps", "3", *common, "--out", "fc.nc"]) == 0
    assert fc.main(["--init", "2001-01-06T00:00", "--steps", "3", *common, "--out", "fc.zarr"]) == 0
    nc, zr = xr.open_dataset(tmp_path / "fc.nc"), xr.open_zarr(tmp_path / "fc.zarr")
    for ds in (nc, zr):
        assert ds["geopotential"].dims == ("time", "prediction_timedelta", "level", "latitude", "longitude")
        assert ds["2m_temperature"].dims == ("time", "prediction_timedelta", "latitude", "longitude")
        assert ds.sizes["prediction_timedelta"] == 3 and ds["level"].values.tolist() == [500, 850]
        assert np.isfinite(ds["geopotential"].values).all()
    np.testing.assert_array_equal(nc["geopotential"].values, zr["geopotential"].values)
    # the same rollout as evaluate's: its first step equals one rollout_step of the model from the init state
    reader = inference.ShardReader(tiny_shards)
    model, _, norm = inference.load_forecaster(files["model"])
    init = np.array(["2001-01-06T00:00"], dtype="datetime64[ns]")
    first = next(inference.rollout(model, norm, reader.read(init), init, 1, 6, reader.latitude, reader.longitude))
    np.testing.assert_array_equal(nc["2m_temperature"].values[0, 0], first[0, 2])
    nc.close()
    with pytest.raises(ValueError, match="no time step 2005-01-01"):
        fc.main(["--init", "2005-01-01", "--steps", "1", *common, "--out", "x.nc"])
    assert not (tmp_path / "x.nc").exists()


def test_a_failed_export_keeps_the_previous_file(fc, tmp_path, monkeypatch):
    _, ds = _dataset(fc)
    path = fc.write_dataset(ds, tmp_path / "forecast.zarr")
    before = sorted(p.relative_to(path) for p in path.rglob("*"))

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(type(ds), "to_zarr", broken)
    with pytest.raises(OSError, match="disk full"):
        fc.write_dataset(ds, path)
    assert sorted(p.relative_to(path) for p in path.rglob("*")) == before
    assert [p.name for p in tmp_path.iterdir()] == ["forecast.zarr"]  # no temporary left behind


def test_one_grid_check_with_one_tolerance(pkg_name):
    inference = importlib.import_module(f"{pkg_name}.inference")
    tol = inference.GRID_TOLERANCE_DEG
    lat, lon = np.array([-45.0, 45.0]), np.array([0.0, 120.0, 240.0])
    a = {"channels": ["z", "t"], "latitude": lat, "longitude": lon}
    assert inference.grid_mismatches(a, {**a, "longitude": lon + 0.9 * tol}, "model", "shards") == []
    # absolute, not relative: 360-ish longitudes get the same tolerance as 0
    far = inference.grid_mismatches(a, {**a, "longitude": lon + 1.5 * tol}, "model", "shards")
    assert len(far) == 1 and far[0].startswith("grid longitude: model 3 points")
    problems = inference.grid_mismatches(a, {"channels": ["t", "z"], "latitude": lat[:1], "longitude": lon},
                                         "model", "shards")  # fmt: skip
    assert [p.split(":")[0] for p in problems] == ["channels", "grid latitude"]


def test_exported_forecast_is_bitwise_what_evaluate_scored(pkg_name, tiny, tiny_shards, fc, tmp_path, monkeypatch):
    """evaluate rolls out evaluate.batch_size initial times together; `forecast` one. The states must agree to the
    bit (the model runs per initial time), for an initial time in the middle of a batch. With a batched model call
    they differ in ~3 % of the values (weight_std=0.3 makes the round-off visible)."""
    import xarray as xr

    ev = importlib.import_module(f"{pkg_name}.evaluate")
    inference = importlib.import_module(f"{pkg_name}.inference")
    clim_mod = importlib.import_module(f"{pkg_name}.climatology")
    monkeypatch.chdir(tmp_path)
    files = tiny.build_project(pkg_name, tmp_path, tiny_shards, weight_std=0.3)
    reader = inference.ShardReader(tiny_shards)
    model, meta, norm = inference.load_forecaster(files["model"])
    inits = ev.test_inits(reader, ("2001-01-06", "2001-01-20T18:00"), 12, 6, 4)
    valid = (inits[:, None] + (np.arange(1, 5) * 6 * tiny.HOUR)[None]).ravel()
    clim = clim_mod.compute(reader, ("2000-01-01", "2000-12-31T18:00"), 15, valid)
    model_forecast = inference.model_forecaster(model, norm, 6, reader.latitude, reader.longitude)
    scored = {}

    def recording(x0, init_times, n_steps):  # what score() scores, kept per initial time
        for s, state in enumerate(model_forecast(x0, init_times, n_steps)):
            for k, t in enumerate(init_times):
                scored.setdefault(t, [None] * n_steps)[s] = state[k].copy()
            yield state

    with inference.deterministic("cpu"):
        ev.score(recording, reader, inits, 4, 6, clim, batch_size=5)
    chosen = inits[2]  # third of the first batch of 5
    argv = ["--init", str(chosen), "--steps", "4", *tiny.argv(files), "--out", "fc.zarr"]
    assert fc.main(argv) == 0
    with xr.open_zarr(tmp_path / "fc.zarr") as ds:
        exported = np.stack(
            [ds["geopotential"].sel(level=500).values[0], ds["geopotential"].sel(level=850).values[0],
             ds["2m_temperature"].values[0]], axis=1)  # fmt: skip
    np.testing.assert_array_equal(exported, np.stack(scored[chosen]))
    assert exported.dtype == np.float32 and not np.array_equal(exported[0], reader.read(inits[2:3])[0])


def test_rollout_does_not_depend_on_the_batch(pkg_name, tiny, tiny_shards, tmp_path):
    inference = importlib.import_module(f"{pkg_name}.inference")
    files = tiny.build_project(pkg_name, tmp_path, tiny_shards, weight_std=0.3)  # round-off visible in the states
    reader = inference.ShardReader(tiny_shards)
    model, _, norm = inference.load_forecaster(files["model"])
    inits = reader.times_in("2001-01-06", "2001-01-08")[:7]
    x0 = reader.read(inits)
    with inference.deterministic("cpu"):
        together = list(inference.rollout(model, norm, x0, inits, 3, 6, reader.latitude, reader.longitude))
        alone = [list(inference.rollout(model, norm, x0[k : k + 1], inits[k : k + 1], 3, 6, reader.latitude,
                                        reader.longitude)) for k in range(len(inits))]  # fmt: skip
    for s in range(3):
        np.testing.assert_array_equal(together[s], np.concatenate([a[s] for a in alone]))
