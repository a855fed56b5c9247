"""Evaluation: climatology, rollout scoring, the results files, and the CLI end to end on tiny shards."""

from __future__ import annotations

import csv
import importlib
import json
from pathlib import Path

import numpy as np
import pytest

CHANNELS = ["geopotential_500", "geopotential_850", "2m_temperature"]
LAT = np.array([-67.5, -22.5, 22.5, 67.5])
LON = np.arange(8) * 45.0
HOUR = np.timedelta64(1, "h")


def truth_field(times: np.ndarray) -> np.ndarray:
    """(T, C, H, W) float32 with a seasonal and a diurnal cycle plus a travelling wave: deterministic, non-trivial."""
    t = (times.astype("datetime64[h]").astype(np.int64)).astype(np.float64)  # hours since 1970
    day = 2 * np.pi * t / 24.0
    year = 2 * np.pi * t / (24.0 * 366)
    phase = np.deg2rad(LON)[None, :] - 0.3 * t[:, None, None] / 6.0  # (T, 1, W) after broadcasting
    wave = np.cos(np.deg2rad(LAT))[None, :, None] * np.sin(phase)
    base = np.array([5500.0, 1500.0, 280.0])
    amp = np.array([50.0, 30.0, 3.0])
    out = base[None, :, None, None] + amp[None, :, None, None] * (
        np.sin(year)[:, None, None, None] + 0.3 * np.sin(day)[:, None, None, None] + wave[:, None]
    )
    return out.astype(np.float32)


def write_shards(root: Path, start: str, end: str, block: int = 300) -> Path:
    """Shards in the contract's layout (zarr v3, (time, channel, lat, lon) float32, one step per chunk, no codec)."""
    import xarray as xr

    times = np.arange(np.datetime64(start, "ns"), np.datetime64(end, "ns") + HOUR, 6 * HOUR)
    data = truth_field(times)
    shards = root / "shards"
    shards.mkdir(parents=True)
    for k, i in enumerate(range(0, len(times), block)):
        ds = xr.Dataset(
            {"data": (("time", "channel", "latitude", "longitude"), data[i : i + block])},
            coords={
                "time": times[i : i + block],
                "channel": np.array(CHANNELS, dtype=object),
                "latitude": LAT,
                "longitude": LON,
            },
            attrs={"channels": CHANNELS, "provenance": "{}", "source": "test"},
        )
        ds.to_zarr(
            shards / f"block_{k:04d}.zarr",
            zarr_format=3,
            consolidated=False,
            encoding={"data": {"chunks": (1, len(CHANNELS), len(LAT), len(LON)), "compressors": None}},
        )
    return shards


@pytest.fixture(scope="module")
def mods(pkg_name):
    return {name: importlib.import_module(f"{pkg_name}.{name}") for name in ("evaluate", "climatology", "forecast")}


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    # train: all of 2000 (a leap year: day of year 1..366), test: January 2001
    return write_shards(tmp_path_factory.mktemp("eval"), "2000-01-01", "2001-01-20T18:00")


def test_shard_reader_reads_across_shards(mods, shards):
    reader = mods["forecast"].ShardReader(shards)
    assert len(reader.paths) > 1 and reader.channels == CHANNELS
    times = np.array(["2000-03-01T06", "2000-01-01T00", "2001-01-20T18"], dtype="datetime64[ns]")
    np.testing.assert_array_equal(reader.read(times), truth_field(times))
    with pytest.raises(ValueError, match="no time step 2002-01-01"):
        reader.read(np.array(["2002-01-01"], dtype="datetime64[ns]"))


def test_climatology_by_hand(mods, shards):
    clim_mod = mods["climatology"]
    reader = mods["forecast"].ShardReader(shards)
    train = ("2000-01-01", "2000-12-31T18:00")
    query = np.array(["2001-01-05T06:00", "2001-01-01T00:00", "2001-12-31T18:00"], dtype="datetime64[ns]")
    # window 0: the climatology of a day is the training state of that day of year and hour (one year of data)
    clim0 = clim_mod.compute(reader, train, 0, query[:2])
    expected = truth_field(np.array(["2000-01-05T06:00", "2000-01-01T00:00"], dtype="datetime64[ns]"))
    np.testing.assert_allclose(clim0.at(query[:2]), expected, rtol=1e-6)
    # window 1: mean of the three neighbouring days at the same hour, circular over the year:
    # 2001-01-01 (day 1) averages 2000-12-31 (day 366), 2000-01-01 and 2000-01-02
    clim1 = clim_mod.compute(reader, train, 1, query)
    days = np.array(["2000-12-31T00", "2000-01-01T00", "2000-01-02T00"], dtype="datetime64[ns]")
    np.testing.assert_allclose(clim1.at(query[1:2])[0], truth_field(days).astype(np.float64).mean(0), rtol=1e-6)
    # 2001-12-31 is day 365 of a non-leap year: days 364..366 of the training year (WB2 uses dayofyear too)
    days = np.array(["2000-12-29T18", "2000-12-30T18", "2000-12-31T18"], dtype="datetime64[ns]")
    np.testing.assert_allclose(clim1.at(query[2:])[0], truth_field(days).astype(np.float64).mean(0), rtol=1e-6)


def test_climatology_errors_name_the_fix(mods, shards):
    reader = mods["forecast"].ShardReader(shards)
    with pytest.raises(ValueError, match="data.splits.train"):
        mods["climatology"].compute(reader, ("1990-01-01", "1990-02-01"), 15)


def _score_with(mods, shards, forecaster, batch_size=3):
    reader = mods["forecast"].ShardReader(shards)
    ev = mods["evaluate"]
    inits = ev.test_inits(reader, ("2001-01-01", "2001-01-20T18:00"), 24, 6, 4)
    valid = (inits[:, None] + (np.arange(1, 5) * 6 * HOUR)[None]).ravel()
    clim = mods["climatology"].compute(reader, ("2000-01-01", "2000-12-31T18:00"), 15, valid)
    return (
        reader,
        inits,
        clim,
        ev.score(forecaster, reader, inits, 4, 6, clim, batch_size, ["geopotential_500"], [12, 24]),
    )


def oracle(x0, init_times, n_steps):
    """A perfect model: the true future states."""
    for s in range(1, n_steps + 1):
        yield truth_field(init_times + s * 6 * HOUR)


def test_perfect_model_and_hand_computed_persistence(mods, shards):
    _, inits, clim, scores = _score_with(mods, shards, oracle)
    assert len(inits) == 19 and inits[-1] == np.datetime64("2001-01-19T00:00")  # the last whose 24 h fit the split
    assert scores.leads_hours == [6, 12, 18, 24]
    np.testing.assert_allclose(scores.rmse["model"], 0.0, atol=1e-9)
    np.testing.assert_allclose(scores.bias["model"], 0.0, atol=1e-9)
    np.testing.assert_allclose(scores.acc["model"], 1.0)
    np.testing.assert_allclose(scores.acc["climatology"], 0.0)
    # persistence RMSE at 12 h, computed here from scratch with cos-latitude-like cell weights
    metrics = importlib.import_module(mods["evaluate"].__package__ + ".metrics")
    w = metrics.cell_area_weights(LAT)
    x0, x12 = truth_field(inits), truth_field(inits + 12 * HOUR)
    mse = ((x0.astype(float) - x12) ** 2 * w[None, None, :, None]).mean(axis=(2, 3))  # (init, channel)
    np.testing.assert_allclose(scores.rmse["persistence"][1], np.sqrt(mse.mean(0)), rtol=1e-9)
    # climatology error is that of the climatology lookup
    c = clim.at(inits + 12 * HOUR)
    np.testing.assert_allclose(scores.bias["climatology"][1], ((c - x12) * w[None, None, :, None]).mean((2, 3)).mean(0))
    assert set(scores.maps) == {("geopotential_500", 12), ("geopotential_500", 24)}


def test_scores_do_not_depend_on_batching(mods, shards):
    a = _score_with(mods, shards, oracle, batch_size=1)[3]
    b = _score_with(mods, shards, oracle, batch_size=7)[3]
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


def test_results_files(mods, shards, tmp_path):
    ev = mods["evaluate"]
    _, _, _, scores = _score_with(mods, shards, oracle)
    out = tmp_path / "results"
    ev.write_results(out, scores, ["geopotential_500", "2m_temperature"], [6, 24, 72], LAT, LON, {"lead_hours": 6})
    result = json.loads((out / "metrics.json").read_text())
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in _walk_numbers(result))
    # key leads that were not evaluated (72 h) are skipped
    assert set(result["rmse"]["geopotential_500"]["model"]) == {"6h", "24h"}
    assert result["rmse"]["geopotential_500"]["model"]["24h"] == 0.0
    assert result["skill_vs_persistence"]["2m_temperature"]["24h"] == 1.0
    with (out / "per_lead.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["lead_hours", "channel", "forecast", "rmse", "acc", "bias"]
    assert len(rows) == 4 * len(CHANNELS) * 3
    for name in ("rmse", "acc"):
        for ch in ("geopotential_500", "2m_temperature"):
            lines = (out / "plots" / f"{name}_{ch}.csv").read_text().splitlines()
            assert lines[0] == "lead_hours,model,persistence,climatology" and len(lines) == 5
    assert sorted(p.name for p in (out / "maps").iterdir()) == ["geopotential_500_12h.png", "geopotential_500_24h.png"]
    first = (out / "metrics.json").read_bytes(), (out / "per_lead.csv").read_bytes()
    ev.write_results(out, scores, ["geopotential_500", "2m_temperature"], [6, 24, 72], LAT, LON, {"lead_hours": 6})
    assert ((out / "metrics.json").read_bytes(), (out / "per_lead.csv").read_bytes()) == first


def test_rounding_is_stable(mods):
    rounded = mods["evaluate"].rounded
    assert rounded(1.23456789) == 1.23457
    assert rounded(-0.0) == 0.0 and str(rounded(-1e-30 * 0)) == "0.0"
    assert rounded(float("nan")) is None
    assert rounded(123456789.0) == 123457000.0


def test_test_split_too_short(mods, shards):
    reader = mods["forecast"].ShardReader(shards)
    with pytest.raises(ValueError, match="max_lead_hours"):
        mods["evaluate"].test_inits(reader, ("2001-01-20", "2001-01-20T18:00"), 24, 6, 4)


# ----------------------------------------------------------------------------------------------------------------
# End to end: a tiny real model file, the CLI, byte-identical reruns, the report


def build_project(pkg_name: str, root: Path, shards: Path) -> dict[str, Path]:
    """params.yaml, stats.json and models/model.pt (a tiny seeded U-Net) beside `shards`, per the contract."""
    import torch

    forcings = importlib.import_module(f"{pkg_name}.data.forcings")
    train_times = np.arange(np.datetime64("2000-01-01", "ns"), np.datetime64("2001-01-01", "ns"), 6 * HOUR)
    x = truth_field(train_times).astype(np.float64)
    stats = {
        "channels": CHANNELS,
        "mean": x.mean(axis=(0, 2, 3)).tolist(),
        "std": x.std(axis=(0, 2, 3)).tolist(),
        "diff_std": np.diff(x, axis=0).std(axis=(0, 2, 3)).tolist(),
        "time_step_hours": 6,
        "train": ["2000-01-01", "2000-12-31T18:00"],
    }
    (root / "stats.json").write_text(json.dumps(stats))
    modelfile = importlib.import_module(f"{pkg_name}.modelfile")
    spec = modelfile.ModelFile(
        model={"name": "unet", "width": 8, "depth": 1, "patch_size": 4}, channels=CHANNELS,
        forcings=list(forcings.FORCING_NAMES), latitude=LAT.tolist(), longitude=LON.tolist(), stats=stats,
        time_step_hours=6, lead_hours=6,
    )
    torch.manual_seed(0)
    net = spec.network()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.05)  # not the zero-initialized head: a model that differs from persistence
    provenance = {"commit": "feedc0de" * 5, "dirty": False}
    spec.with_weights(net.state_dict(), step=7, provenance=provenance).save(root / "models" / "model.pt")
    (root / "params.yaml").write_text(
        "seed: 0\n"
        "data:\n"
        "  splits: {train: ['2000-01-01', '2000-12-31T18:00'], val: ['2001-01-01', '2001-01-05T18:00'],\n"
        "           test: ['2001-01-06', '2001-01-20T18:00']}\n"
        "evaluate:\n"
        "  max_lead_hours: 24\n"
        "  init_every_hours: 24\n"
        "  headline: [geopotential_500, 2m_temperature]\n"
        "  batch_size: 4\n"
        "  key_leads_hours: [6, 24, 72]\n"
        "  map_leads_hours: [24]\n"
        "  allow_dirty: true\n"
    )
    return {
        "params": root / "params.yaml",
        "model": root / "models" / "model.pt",
        "stats": root / "stats.json",
        "shards": shards,
    }


def evaluate_argv(files: dict, shards) -> list[str]:
    return ["--params", str(files["params"]), "--model", str(files["model"]), "--shards", str(shards),
            "--stats", str(files["stats"])]  # fmt: skip


def test_evaluate_cli_end_to_end(pkg_name, mods, shards, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # provenance looks at the working directory (not a git repo here)
    files = build_project(pkg_name, tmp_path, shards)
    argv = evaluate_argv(files, shards)
    assert mods["evaluate"].main([*argv, "--out", "results"]) == 0
    out = tmp_path / "results"
    result = json.loads((out / "metrics.json").read_text())
    assert set(result["rmse"]) == set(CHANNELS) and set(result["rmse"]["geopotential_500"]["model"]) == {"6h", "24h"}
    assert result["n_inits"] == 14
    rmse = result["rmse"]["geopotential_500"]
    assert rmse["model"]["6h"] != rmse["persistence"]["6h"] and rmse["persistence"]["6h"] > 0
    assert sorted(p.name for p in (out / "plots").iterdir()) == [
        "acc_2m_temperature.csv",
        "acc_geopotential_500.csv",
        "rmse_2m_temperature.csv",
        "rmse_geopotential_500.csv",
    ]
    assert sorted(p.name for p in (out / "maps").iterdir()) == ["2m_temperature_24h.png", "geopotential_500_24h.png"]
    stamp = json.loads((out / "provenance.json").read_text())
    assert "params_sha256" in stamp and set(stamp["inputs"]) == {str(files["model"]), str(shards), str(files["stats"])}
    evaluation = json.loads((out / "evaluation.json").read_text())
    assert evaluation["model_provenance"]["commit"].startswith("feedc0de")
    # identical rerun -> byte-identical metrics files
    assert mods["evaluate"].main([*argv, "--out", "results2"]) == 0
    for name in ("metrics.json", "per_lead.csv", "plots/rmse_geopotential_500.csv", "evaluation.json"):
        assert (out / name).read_bytes() == (tmp_path / "results2" / name).read_bytes(), name
    # and the report step builds from it
    report = importlib.import_module(f"{pkg_name}.report")
    assert report.main(["--results", str(out), "--out", str(out / "report.html")]) == 0
    assert "feedc0de" in (out / "report.html").read_text()


def test_evaluate_rejects_unknown_headline(pkg_name, mods, shards, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    files = build_project(pkg_name, tmp_path, shards)
    files["params"].write_text(
        files["params"].read_text().replace("headline: [geopotential_500,", "headline: [geopotential_300,")
    )
    with pytest.raises(ValueError, match=r"evaluate.headline.*geopotential_300.*Fix"):
        mods["evaluate"].main([*evaluate_argv(files, shards), "--out", "results"])
