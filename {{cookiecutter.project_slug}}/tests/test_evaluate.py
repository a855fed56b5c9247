"""Evaluation: climatology, rollout scoring, the results files, and the CLI end to end on tiny shards."""

from __future__ import annotations

import csv
import importlib
import json
from pathlib import Path

import numpy as np
import pytest

HOUR = np.timedelta64(1, "h")
HEADLINE = ["geopotential_500", "2m_temperature"]


@pytest.fixture(scope="module")
def mods(pkg_name):
    names = ("evaluate", "results", "climatology", "climatology_store", "inference", "data.stats")
    return {name.rsplit(".", 1)[-1]: importlib.import_module(f"{pkg_name}.{name}") for name in names}


@pytest.fixture(scope="module")
def shards(tiny_shards) -> Path:
    return tiny_shards


def test_shard_reader_reads_across_shards(tiny, mods, shards):
    reader = mods["inference"].ShardReader(shards)
    assert len(reader.paths) > 1 and reader.channels == tiny.CHANNELS
    times = np.array(["2000-03-01T06", "2000-01-01T00", "2001-01-20T18"], dtype="datetime64[ns]")
    np.testing.assert_array_equal(reader.read(times), tiny.truth_field(times))
    with pytest.raises(ValueError, match="no time step 2002-01-01"):
        reader.read(np.array(["2002-01-01"], dtype="datetime64[ns]"))


TRAIN = ("2000-01-01", "2000-12-31T18:00")


def uniform_climatology(mods, shards, half_width: int, out: Path):
    """The climatology stage's computation (uniform window, float64) of the tiny shards' train split, as evaluate
    reads it."""
    mods["climatology"].compute_store(mods["stats"].ShardSteps(shards), TRAIN, half_width, "uniform", out, {},
                                      np.float64)  # fmt: skip
    reader = mods["inference"].ShardReader(shards)
    return mods["climatology_store"].Climatology(out, reader.channels, reader.latitude, reader.longitude)


@pytest.fixture(scope="module")
def clim15(mods, shards, tmp_path_factory):
    return uniform_climatology(mods, shards, 15, tmp_path_factory.mktemp("clim") / "c.zarr")


def test_climatology_by_hand(tiny, mods, shards, tmp_path):
    query = np.array(["2001-01-05T06:00", "2001-01-01T00:00", "2001-12-31T18:00"], dtype="datetime64[ns]")
    # window 0: the climatology of a day is the training state of that day of year and hour (one year of data)
    clim0 = uniform_climatology(mods, shards, 0, tmp_path / "c0.zarr")
    expected = tiny.truth_field(np.array(["2000-01-05T06:00", "2000-01-01T00:00"], dtype="datetime64[ns]"))
    np.testing.assert_allclose(clim0.at(query[:2]), expected, rtol=1e-6)
    # window 1: mean of the three neighbouring days at the same hour, circular over the year:
    # 2001-01-01 (day 1) averages 2000-12-31 (day 366), 2000-01-01 and 2000-01-02
    clim1 = uniform_climatology(mods, shards, 1, tmp_path / "c1.zarr")
    days = np.array(["2000-12-31T00", "2000-01-01T00", "2000-01-02T00"], dtype="datetime64[ns]")
    np.testing.assert_allclose(clim1.at(query[1:2])[0], tiny.truth_field(days).astype(np.float64).mean(0), rtol=1e-6)
    # 2001-12-31 is day 365 of a non-leap year: days 364..366 of the training year (WB2 uses dayofyear too)
    days = np.array(["2000-12-29T18", "2000-12-30T18", "2000-12-31T18"], dtype="datetime64[ns]")
    np.testing.assert_allclose(clim1.at(query[2:])[0], tiny.truth_field(days).astype(np.float64).mean(0), rtol=1e-6)


def _score_with(mods, shards, clim, forecaster, batch_size=3):
    reader = mods["inference"].ShardReader(shards)
    ev = mods["evaluate"]
    inits = ev.test_inits(reader, ("2001-01-01", "2001-01-20T18:00"), 24, 6, 4)
    return (
        reader,
        inits,
        clim,
        ev.score(forecaster, reader, inits, 4, 6, clim, batch_size, ["geopotential_500"], [12, 24]),
    )


@pytest.fixture(scope="module")
def oracle(tiny):
    def forecast(x0, init_times, n_steps):
        """A perfect model: the true future states."""
        for s in range(1, n_steps + 1):
            yield tiny.truth_field(init_times + s * 6 * HOUR)

    return forecast


def test_perfect_model_and_hand_computed_persistence(tiny, oracle, mods, shards, clim15):
    _, inits, clim, scores = _score_with(mods, shards, clim15, oracle)
    assert len(inits) == 19 and inits[-1] == np.datetime64("2001-01-19T00:00")  # the last whose 24 h fit the split
    assert scores.leads_hours == [6, 12, 18, 24]
    np.testing.assert_allclose(scores.rmse["model"], 0.0, atol=1e-9)
    np.testing.assert_allclose(scores.bias["model"], 0.0, atol=1e-9)
    np.testing.assert_allclose(scores.acc["model"], 1.0)
    assert np.isnan(scores.acc["climatology"]).all()  # no anomaly: undefined, not 0
    # persistence RMSE at 12 h, computed here from scratch with cos-latitude-like cell weights
    metrics = importlib.import_module(mods["evaluate"].__package__ + ".metrics")
    w = metrics.cell_area_weights(tiny.LAT)
    x0, x12 = tiny.truth_field(inits), tiny.truth_field(inits + 12 * HOUR)
    mse = ((x0.astype(float) - x12) ** 2 * w[None, None, :, None]).mean(axis=(2, 3))  # (init, channel)
    np.testing.assert_allclose(scores.rmse["persistence"][1], np.sqrt(mse.mean(0)), rtol=1e-9)
    # climatology error is that of the climatology lookup
    c = clim.at(inits + 12 * HOUR)
    np.testing.assert_allclose(scores.bias["climatology"][1], ((c - x12) * w[None, None, :, None]).mean((2, 3)).mean(0))
    assert set(scores.maps) == {("geopotential_500", 12), ("geopotential_500", 24)}


def test_scores_do_not_depend_on_batching(mods, oracle, shards, clim15):
    a = _score_with(mods, shards, clim15, oracle, batch_size=1)[3]
    b = _score_with(mods, shards, clim15, oracle, batch_size=7)[3]
    for name in ("rmse", "acc", "bias"):
        for f in ("model", "persistence", "climatology"):
            np.testing.assert_array_equal(getattr(a, name)[f], getattr(b, name)[f])


def _walk_numbers(obj):
    if isinstance(obj, dict):
        for key, value in obj.items():
            assert isinstance(key, str)
            yield from _walk_numbers(value)
    else:
        yield obj


def test_results_files(tiny, oracle, mods, shards, clim15, tmp_path):
    res = mods["results"]
    _, _, _, scores = _score_with(mods, shards, clim15, oracle)
    out = tmp_path / "results"
    res.write_results(out, scores, HEADLINE, [6, 24, 72], tiny.LAT, tiny.LON, {"lead_hours": 6})
    result = json.loads((out / "metrics.json").read_text())
    # numbers, except the undefined climatology ACC: null, never a made-up 0
    acc_clim = [result["acc"][ch].pop("climatology") for ch in tiny.CHANNELS]
    assert acc_clim == [{"6h": None, "24h": None}] * len(tiny.CHANNELS)
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in _walk_numbers(result))
    # key leads that were not evaluated (72 h) are skipped
    assert set(result["rmse"]["geopotential_500"]["model"]) == {"6h", "24h"}
    assert result["rmse"]["geopotential_500"]["model"]["24h"] == 0.0
    assert result["skill_vs_persistence"]["2m_temperature"]["24h"] == 1.0
    with (out / "per_lead.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["lead_hours", "channel", "forecast", "rmse", "acc", "bias", "units"]
    assert len(rows) == 4 * len(tiny.CHANNELS) * 3
    assert {r["channel"]: r["units"] for r in rows} == {"geopotential_500": "m2 s-2", "geopotential_850": "m2 s-2",
                                                        "2m_temperature": "K"}  # fmt: skip
    assert {r["acc"] for r in rows if r["forecast"] == "climatology"} == {""}  # undefined: empty, not 0
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["units"] == {"geopotential_500": "m² s⁻²", "geopotential_850": "m² s⁻²", "2m_temperature": "K"}
    for name in ("rmse", "acc"):
        for ch in ("geopotential_500", "2m_temperature"):
            lines = (out / "plots" / f"{name}_{ch}.csv").read_text().splitlines()
            assert lines[0] == "lead_hours,model,persistence,climatology" and len(lines) == 5
    assert sorted(p.name for p in (out / "maps").iterdir()) == ["geopotential_500_12h.png", "geopotential_500_24h.png"]
    first = (out / "metrics.json").read_bytes(), (out / "per_lead.csv").read_bytes()
    res.write_results(out, scores, HEADLINE, [6, 24, 72], tiny.LAT, tiny.LON, {"lead_hours": 6})
    assert ((out / "metrics.json").read_bytes(), (out / "per_lead.csv").read_bytes()) == first


def test_rounding_is_stable(mods):
    rounded = mods["results"].rounded
    assert rounded(1.23456789) == 1.23457
    assert rounded(-0.0) == 0.0 and str(rounded(-1e-30 * 0)) == "0.0"
    assert rounded(float("nan")) is None
    assert rounded(123456789.0) == 123457000.0


def test_initial_times_at_00z_and_12z(mods, shards):
    reader = mods["inference"].ShardReader(shards)
    # a split starting at 06Z: the first initial time is 12Z, then every 12 h
    inits = mods["evaluate"].test_inits(reader, ("2001-01-10T06:00", "2001-01-20T18:00"), 12, 6, 4)
    assert inits[0] == np.datetime64("2001-01-10T12:00") and inits[-1] == np.datetime64("2001-01-19T12:00")
    assert set((inits.astype("datetime64[h]").astype(int) % 24).tolist()) == {0, 12} and len(inits) == 19
    # a spacing that does not divide a day starts at the split's first time
    inits = mods["evaluate"].test_inits(reader, ("2001-01-10T06:00", "2001-01-20T18:00"), 18, 6, 4)
    assert inits[0] == np.datetime64("2001-01-10T06:00") and inits[1] == np.datetime64("2001-01-11T00:00")


def test_test_split_too_short(tiny, mods, shards):
    reader = mods["inference"].ShardReader(shards)
    with pytest.raises(ValueError, match="max_lead_hours"):
        mods["evaluate"].test_inits(reader, ("2001-01-20", "2001-01-20T18:00"), 24, 6, 4)


# ----------------------------------------------------------------------------------------------------------------
# End to end: a tiny real model file, the CLI, byte-identical reruns, the report


def test_evaluate_cli_end_to_end(pkg_name, tiny, mods, shards, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # provenance looks at the working directory (not a git repo here)
    files = tiny.build_project(pkg_name, tmp_path, shards)
    argv = tiny.argv(files)
    assert mods["evaluate"].main([*argv, "--out", "results"]) == 0
    out = tmp_path / "results"
    result = json.loads((out / "metrics.json").read_text())
    assert set(result["rmse"]) == set(tiny.CHANNELS)
    assert set(result["rmse"]["geopotential_500"]["model"]) == {"6h", "24h"}
    assert result["n_inits"] == 14
    rmse = result["rmse"]["geopotential_500"]
    assert rmse["model"]["6h"] != rmse["persistence"]["6h"] and rmse["persistence"]["6h"] > 0
    assert sorted(p.name for p in (out / "plots").iterdir()) == [
        "acc_2m_temperature.csv",
        "acc_geopotential_500.csv",
        "rmse_2m_temperature.csv",
        "rmse_geopotential_500.csv",
    ]
    assert sorted(p.name for p in (out / "maps").iterdir()) == ["2m_temperature_24h.png", "bias_2m_temperature.png",
                                                                "bias_geopotential_500.png", "geopotential_500_24h.png"]
    stamp = json.loads((out / "provenance.json").read_text())
    assert "params_sha256" in stamp and set(stamp["inputs"]) == {str(files["model"]), str(shards), str(files["stats"]),
                                                                 "data/climatology.zarr"}  # the default store
    evaluation = json.loads((out / "evaluation.json").read_text())
    per_init = importlib.import_module(f"{pkg_name}.per_init").read(out / "scores" / "per_init.nc", "per_init")
    assert per_init["mse"].shape == (3, 14, 4, 3) and per_init.lead_hours.values.tolist() == [6, 12, 18, 24]
    assert per_init.channel.values.tolist() == tiny.CHANNELS and per_init.init_time.dtype.kind == "M"
    assert str(per_init.init_time.values[0])[:16] == evaluation["init_times"][0]
    for lead in ("6h", "24h"):  # the per-initial-time MSE's time mean is the headline RMSE
        mse = per_init["mse"].sel(forecast="model", lead_hours=int(lead[:-1]), channel="geopotential_500")
        assert float(np.sqrt(mse.astype(np.float64).mean())) == pytest.approx(rmse["model"][lead], rel=1e-5)
    assert evaluation["model_provenance"]["commit"].startswith("feedc0de")
    assert evaluation["climatology"] == {"climatology": "computed", "train": list(TRAIN), "window_days": 15,
                                         "window_shape": "triangular"}  # what the store was made from
    # identical rerun -> byte-identical metrics files
    assert mods["evaluate"].main([*argv, "--out", "results2"]) == 0
    for name in ("metrics.json", "per_lead.csv", "plots/rmse_geopotential_500.csv", "evaluation.json",
                 "scores/per_init.nc"):
        assert (out / name).read_bytes() == (tmp_path / "results2" / name).read_bytes(), name
    # and the report step builds from it
    report = importlib.import_module(f"{pkg_name}.report")
    assert report.main(["--results", str(out), "--out", str(out / "report.html")]) == 0
    assert "feedc0de" in (out / "report.html").read_text()


def test_evaluate_rejects_unknown_headline(pkg_name, tiny, mods, shards, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = tiny.build_project(pkg_name, tmp_path, shards)
    files["params"].write_text(
        files["params"].read_text().replace("headline: [geopotential_500,", "headline: [geopotential_300,")
    )
    with pytest.raises(ValueError, match=r"evaluate.headline.*geopotential_300.*Fix"):
        mods["evaluate"].main([*tiny.argv(files), "--out", "results"])


def test_evaluate_scores_against_the_given_store_and_refuses_others(pkg_name, tiny, mods, shards, tmp_path,
                                                                    monkeypatch):
    """--climatology is the store evaluate scores against (the WB2 export holds its values); a missing store or one
    made with other params is refused before any output is written, naming the rerun."""
    import xarray as xr

    monkeypatch.chdir(tmp_path)
    files = tiny.build_project(pkg_name, tmp_path, shards)
    with pytest.raises(ValueError, match="nowhere.zarr: no climatology. Fix: run the climatology stage"):
        mods["evaluate"].main([*tiny.argv(files), "--climatology", "nowhere.zarr", "--out", "results"])
    text = files["params"].read_text() + "  climatology_window_days: 3\n  climatology_window_shape: uniform\n"
    files["params"].write_text(text)
    with pytest.raises(ValueError, match="data/climatology.zarr was made from .* rerun the climatology stage"):
        mods["evaluate"].main([*tiny.argv(files), "--out", "results"])  # the default store: window 15
    assert not (tmp_path / "results").exists()
    other = tmp_path / "other.zarr"
    stage = ["--params", str(files["params"]), "--shards", str(shards), "--out", str(other)]
    assert mods["climatology"].main(stage) == 0  # the climatology stage with these params
    assert mods["evaluate"].main([*tiny.argv(files), "--climatology", str(other), "--out", "results"]) == 0
    store = mods["climatology_store"].Climatology(other, tiny.CHANNELS, tiny.LAT, tiny.LON)
    default = mods["climatology_store"].Climatology(files["climatology"], tiny.CHANNELS, tiny.LAT, tiny.LON)
    with xr.open_zarr(tmp_path / "results" / "wb2" / "climatology.zarr") as exported:
        z500 = exported["geopotential"].sel(level=500, dayofyear=19, hour=6).values
    when = np.array(["2001-01-19T06:00"], dtype="datetime64[ns]")  # a valid time scored
    np.testing.assert_allclose(z500, store.at(when)[0, 0], rtol=1e-6)
    assert not np.allclose(z500, default.at(when)[0, 0], rtol=1e-6)  # not the default store's values
    stamp = json.loads((tmp_path / "results" / "provenance.json").read_text())
    assert str(other) in stamp["inputs"]


def _recomputed_rmse(forecast, truth, lead_hours: int, var: str, level=None) -> float:
    """RMSE of a WB2 forecast against WB2 truth, from the files alone: valid-time alignment, cell-area weights from
    the latitudes (bounds at midpoints and the poles), square root of the time-mean of the weighted MSE."""
    fc = forecast[var].sel(prediction_timedelta=np.timedelta64(lead_hours, "h"))
    obs = truth[var].sel(time=fc["time"].values + np.timedelta64(lead_hours, "h"))
    if level is not None:
        fc, obs = fc.sel(level=level), obs.sel(level=level)
    lat = np.deg2rad(forecast["latitude"].values)
    bounds = np.concatenate([[-np.pi / 2], (lat[1:] + lat[:-1]) / 2, [np.pi / 2]])
    w = np.diff(np.sin(bounds))
    err2 = (fc.values.astype(np.float64) - obs.values.astype(np.float64)) ** 2  # (time, lat, lon)
    mse = (err2.mean(axis=-1) * w).sum(axis=-1) / w.sum()
    return float(np.sqrt(mse.mean()))


def test_evaluate_exports_what_it_scores_in_wb2_layout(pkg_name, tiny, mods, shards, tmp_path, monkeypatch):
    import xarray as xr

    monkeypatch.chdir(tmp_path)
    files = tiny.build_project(pkg_name, tmp_path, shards)
    files["params"].write_text(files["params"].read_text().replace("init_every_hours: 24", "init_every_hours: 12"))
    assert mods["evaluate"].main([*tiny.argv(files), "--out", "results"]) == 0
    result = json.loads((tmp_path / "results" / "metrics.json").read_text())
    wb2 = tmp_path / "results" / "wb2"
    assert sorted(p.name for p in wb2.iterdir()) == ["climatology.zarr", "forecast.zarr", "truth.zarr"]
    assert all((wb2 / name / ".zgroup").exists() for name in ("climatology.zarr", "forecast.zarr", "truth.zarr"))
    # chunks of a batch (evaluate.batch_size 4) of initial times x every lead: a few files, not one per state
    import zarr

    assert zarr.open_group(wb2 / "forecast.zarr", mode="r", zarr_format=2)["geopotential"].chunks == (4, 5, 2, 4, 8)
    chunks = {name: sum(not p.name.startswith(".") for p in (wb2 / name / "geopotential").iterdir())
              for name in ("forecast.zarr", "truth.zarr", "climatology.zarr")}  # fmt: skip
    assert chunks == {"forecast.zarr": 7, "truth.zarr": 2, "climatology.zarr": 2}  # not one per (time, lead)
    fc, truth, clim = (xr.open_zarr(wb2 / f"{name}.zarr") for name in ("forecast", "truth", "climatology"))
    assert fc.sizes["time"] == result["n_inits"] == 28  # 00Z and 12Z
    assert set((fc["time"].values.astype("datetime64[h]").astype(int) % 24).tolist()) == {0, 12}
    assert (fc["prediction_timedelta"].values / np.timedelta64(1, "h")).tolist() == [0, 6, 12, 18, 24]
    assert fc["geopotential"].attrs["standard_name"] == "geopotential" and truth["2m_temperature"].attrs["units"] == "K"
    assert clim["geopotential"].dims == ("dayofyear", "hour", "level", "latitude", "longitude")
    # lead 0 is the truth at the initial time
    np.testing.assert_array_equal(fc["geopotential"].isel(prediction_timedelta=0).values,
                                  truth["geopotential"].sel(time=fc["time"].values).values)  # fmt: skip
    rounded = mods["results"].rounded
    for var, level, ch in (("geopotential", 500, "geopotential_500"), ("2m_temperature", None, "2m_temperature")):
        for lead in (6, 24):
            assert rounded(_recomputed_rmse(fc, truth, lead, var, level)) == result["rmse"][ch]["model"][f"{lead}h"]
        # the climatology forecast, recomputed from the exported climatology (WB2: select by day of year and hour)
        valid = fc["time"].values + np.timedelta64(24, "h")
        days, hours = xr.DataArray(valid, dims="time").dt.dayofyear, xr.DataArray(valid, dims="time").dt.hour
        c = clim[var].sel(dayofyear=days, hour=hours).assign_coords(time=fc["time"].values)
        c = c.expand_dims(prediction_timedelta=[np.timedelta64(24, "h")]).transpose("time", "prediction_timedelta", ...)
        as_forecast = xr.Dataset({var: c})
        assert rounded(_recomputed_rmse(as_forecast, truth, 24, var, level)) == result["rmse"][ch]["climatology"]["24h"]
    # and the `forecast` command exports the same states, bit for bit
    init = str(fc["time"].values[5])
    assert importlib.import_module(f"{pkg_name}.forecast").main(
        ["--init", init, "--steps", "4", *tiny.argv(files), "--out", "one.zarr"]) == 0  # fmt: skip
    with xr.open_zarr(tmp_path / "one.zarr") as one:
        for var in fc.data_vars:
            np.testing.assert_array_equal(one[var].values[0], fc[var].values[5])
    for ds in (fc, truth, clim):
        ds.close()


def test_export_off_leaves_no_stale_export(pkg_name, tiny, mods, shards, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = tiny.build_project(pkg_name, tmp_path, shards)
    assert mods["evaluate"].main([*tiny.argv(files), "--out", "results"]) == 0
    assert (tmp_path / "results" / "wb2" / "forecast.zarr").is_dir()
    first = (tmp_path / "results" / "metrics.json").read_bytes()
    files["params"].write_text(files["params"].read_text() + "  export_forecast: false\n")
    assert mods["evaluate"].main([*tiny.argv(files), "--out", "results"]) == 0
    assert list((tmp_path / "results" / "wb2").iterdir()) == []  # no stale export of the earlier run
    assert (tmp_path / "results" / "metrics.json").read_bytes() == first  # exporting does not change the scores
