"""Forecast files in WeatherBench2 layout (names, dims, a round trip through xarray), the CLI, the grid check."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

CHANNELS = ["geopotential_500", "geopotential_850", "temperature_850", "2m_temperature", "mean_sea_level_pressure"]


@pytest.fixture(scope="module")
def fc(pkg_name):
    return importlib.import_module(f"{pkg_name}.forecast")


@pytest.fixture(scope="module")
def export(pkg_name):
    return importlib.import_module(f"{pkg_name}.export")


def _write_store(export, path, fail_after: int | None = None):
    """States (init, lead, channel, lat, lon) written lead by lead into a forecast store (raising midway if asked)."""
    rng = np.random.default_rng(0)
    states = rng.normal(size=(2, 3, len(CHANNELS), 4, 8)).astype(np.float32)
    inits = np.array(["2001-02-01T00", "2001-02-01T12"], dtype="datetime64[ns]")
    lat, lon = np.array([-67.5, -22.5, 22.5, 67.5]), np.arange(8) * 45.0
    with export.forecast_store(path, CHANNELS, inits, [0, 6, 12], lat, lon, {"source": "test"}) as store:
        for lead in range(3):
            if lead == fail_after:
                raise OSError("disk full")
            store.write((slice(0, 2), lead), states[:, lead])
    return states


def test_forecast_store_round_trips_with_wb2_names_dims_and_cf_attributes(export, tmp_path):
    import xarray as xr
    import zarr

    path = tmp_path / "forecast.zarr"
    states = _write_store(export, path)
    assert (path / ".zgroup").exists() and (path / ".zmetadata").exists()  # zarr format 2, consolidated
    assert zarr.open_group(path, mode="r", zarr_format=2)["geopotential"].shape == (2, 3, 2, 4, 8)
    with xr.open_zarr(path) as back:
        assert set(back.data_vars) == {"geopotential", "temperature", "2m_temperature", "mean_sea_level_pressure"}
        assert back["geopotential"].dims == ("time", "prediction_timedelta", "level", "latitude", "longitude")
        assert back["2m_temperature"].dims == ("time", "prediction_timedelta", "latitude", "longitude")
        assert back["level"].values.tolist() == [500, 850]
        assert (back["prediction_timedelta"].values / np.timedelta64(1, "h")).tolist() == [0, 6, 12]
        assert back["time"].values.tolist() == [np.datetime64("2001-02-01T00", "ns").astype(int),
                                                 np.datetime64("2001-02-01T12", "ns").astype(int)]  # fmt: skip
        np.testing.assert_array_equal(back["geopotential"].sel(level=850).values, states[:, :, 1])
        np.testing.assert_array_equal(back["temperature"].sel(level=850).values, states[:, :, 2])
        assert np.isnan(back["temperature"].sel(level=500).values).all()  # not a channel: missing, not zero
        np.testing.assert_array_equal(back["2m_temperature"].values, states[:, :, 3])
        valid = back["time"] + back["prediction_timedelta"]  # WB2's convention
        assert valid.values[1, 2] == np.datetime64("2001-02-02T00")
        # CF attributes
        assert back["geopotential"].attrs == {"units": "m2 s-2", "long_name": "geopotential",
                                              "standard_name": "geopotential"}  # fmt: skip
        assert back["mean_sea_level_pressure"].attrs["standard_name"] == "air_pressure_at_mean_sea_level"
        assert back["latitude"].attrs["units"] == "degrees_north" and back["level"].attrs["units"] == "hPa"
        assert back["time"].attrs["standard_name"] == "forecast_reference_time"
        assert back["prediction_timedelta"].attrs["standard_name"] == "forecast_period"
        assert back.attrs["Conventions"] == "CF-1.8" and back.attrs["source"] == "test"


def test_a_failed_export_keeps_the_previous_file(export, tmp_path):
    path = tmp_path / "forecast.zarr"
    _write_store(export, path)
    before = {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}
    with pytest.raises(OSError, match="disk full"):
        _write_store(export, path, fail_after=1)
    assert {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["forecast.zarr"]  # no temporary left behind


def test_chunks_hold_a_batch_of_initial_times_and_a_block_of_leads(export):
    default = 5 * 32 * 64 * 4  # one state of the default bake: 5 channels on 32 x 64, float32
    assert export.forecast_chunks(8, 13, default) == (8, 13)  # one chunk per batch of 8 and variable, all leads
    assert export.forecast_chunks(8, 41, 70 * 721 * 1440 * 4) == (1, 1)  # 0.25 deg, 70 channels: a state per chunk
    assert export.forecast_chunks(8, 41, export.BUFFER_BYTES // 20) == (8, 2)  # 8 x 2 states fit, 8 x 3 do not
    assert export.forecast_chunks(6, 41, export.BUFFER_BYTES // 5) == (3, 1)  # a divisor of the batch: 3 x 1 fit


def test_lead_buffer_writes_whole_chunks_that_read_back_exactly(export, tmp_path, monkeypatch):
    import xarray as xr
    import zarr

    lat, lon = np.array([-67.5, -22.5, 22.5, 67.5]), np.arange(8) * 45.0
    monkeypatch.setattr(export, "BUFFER_BYTES", 2 * 3 * len(CHANNELS) * 4 * 8 * 4)  # 2 initial times x 3 leads
    states = np.random.default_rng(1).normal(size=(5, 7, len(CHANNELS), 4, 8)).astype(np.float32)
    inits = np.datetime64("2001-02-01", "ns") + np.arange(5) * np.timedelta64(12, "h")
    written = []
    path = tmp_path / "fc.zarr"
    with export.forecast_store(path, CHANNELS, inits, [6 * k for k in range(7)], lat, lon, {}, batch=2) as store:
        assert store.chunks == (2, 3)
        store_write = store.write
        monkeypatch.setattr(store, "write", lambda where, x: (written.append(where), store_write(where, x)))
        buffer = export.LeadBuffer(store, 7)
        for b0 in range(0, 5, 2):  # batches of 2 initial times (the last has 1), leads in order
            rows = slice(b0, min(b0 + 2, 5))
            for lead in range(7):
                buffer((rows,), lead, states[rows, lead])
    # each write is whole chunks: rows of one batch, a block of 3 leads (the last block holds the 7th lead)
    assert [(w[0].start, w[1].start, w[1].stop) for w in written] == [
        (b, l0, min(l0 + 3, 7)) for b in (0, 2, 4) for l0 in (0, 3, 6)]  # fmt: skip
    assert zarr.open_group(path, mode="r", zarr_format=2)["geopotential"].chunks == (2, 3, 2, 4, 8)
    with xr.open_zarr(path) as back:
        np.testing.assert_array_equal(back["geopotential"].sel(level=850).values, states[:, :, 1])
        np.testing.assert_array_equal(back["2m_temperature"].values, states[:, :, 3])
    chunk_files = [p for p in (path / "2m_temperature").iterdir() if not p.name.startswith(".")]
    assert len(chunk_files) == 3 * 3


def test_forecast_cli_writes_one_wb2_file_for_all_initial_times(pkg_name, tiny, tiny_shards, fc, tmp_path,
                                                                 monkeypatch):  # fmt: skip
    import xarray as xr

    inference = importlib.import_module(f"{pkg_name}.inference")
    monkeypatch.chdir(tmp_path)
    files = tiny.build_project(pkg_name, tmp_path, tiny_shards)
    inits = ["2001-01-06T00:00", "2001-01-06T12:00"]
    common = ["--init", *inits, "--steps", "3", *tiny.argv(files)]
    assert fc.main([*common, "--out", "fc.nc"]) == 0
    assert fc.main([*common, "--out", "fc.zarr"]) == 0
    nc, zr = xr.open_dataset(tmp_path / "fc.nc"), xr.open_zarr(tmp_path / "fc.zarr")
    for ds in (nc, zr):
        assert ds["geopotential"].dims == ("time", "prediction_timedelta", "level", "latitude", "longitude")
        assert ds["2m_temperature"].dims == ("time", "prediction_timedelta", "latitude", "longitude")
        assert ds.sizes["time"] == 2 and ds.sizes["prediction_timedelta"] == 4  # leads 0, 6, 12, 18 h
        assert ds["level"].values.tolist() == [500, 850] and ds["2m_temperature"].attrs["units"] == "K"
        assert np.isfinite(ds["geopotential"].values).all()
    np.testing.assert_array_equal(nc["geopotential"].values, zr["geopotential"].values)
    reader = inference.ShardReader(tiny_shards)
    init = np.array(inits, dtype="datetime64[ns]")
    # lead 0 is the initial state; lead 6 h one rollout step of the model, as evaluate computes it
    np.testing.assert_array_equal(nc["2m_temperature"].values[:, 0], reader.read(init)[:, 2])
    model, _, norm = inference.load_forecaster(files["model"])
    first = next(inference.rollout(model, norm, reader.read(init), init, 1, 6, reader.latitude, reader.longitude))
    np.testing.assert_array_equal(nc["2m_temperature"].values[:, 1], first[:, 2])
    nc.close()
    zr.close()
    with pytest.raises(ValueError, match="no time step 2005-01-01"):
        fc.main(["--init", "2005-01-01", "--steps", "1", *tiny.argv(files), "--out", "x.nc"])
    with pytest.raises(ValueError, match=r"\.zarr or \.nc"):
        fc.main(["--init", inits[0], "--steps", "1", *tiny.argv(files), "--out", "x.grib"])
    assert not (tmp_path / "x.nc").exists() and not (tmp_path / "x.grib").exists()


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
    clim_store = importlib.import_module(f"{pkg_name}.climatology_store")
    monkeypatch.chdir(tmp_path)
    files = tiny.build_project(pkg_name, tmp_path, tiny_shards, weight_std=0.3)
    reader = inference.ShardReader(tiny_shards)
    model, meta, norm = inference.load_forecaster(files["model"])
    inits = ev.test_inits(reader, ("2001-01-06", "2001-01-20T18:00"), 12, 6, 4)
    clim = clim_store.Climatology(files["climatology"], reader.channels, reader.latitude, reader.longitude)
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
    np.testing.assert_array_equal(exported[1:], np.stack(scored[chosen]))
    np.testing.assert_array_equal(exported[0], reader.read(inits[2:3])[0])  # lead 0: the initial state
    assert exported.dtype == np.float32 and not np.array_equal(exported[1], exported[0])


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
