"""Static fields as model inputs (issue 12, item 5): in training, evaluation and forecast the network sees
cat(state, forcings, static), the same static fields at every step; they are never predicted, never in the targets,
the scores or the exports; and a model is refused where the shards' static.zarr is not the one it learnt from."""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import CHANNELS, PACKAGE, make_dataset, read_log, run_main, write_params

STATIC = ["land_sea_mask", "geopotential_at_surface"]
N_FORCINGS = len(importlib.import_module(f"{PACKAGE}.data.forcings").FORCING_NAMES)


def _module(name: str):
    return importlib.import_module(f"{PACKAGE}.{name}")


def physical_static(lat, lon, shifted: bool = False) -> np.ndarray:
    """The synthetic land-sea mask and orography on the grid [2, H, W]; `shifted` moves the orography a quarter of
    the way round the globe (not an affine change, so normalization cannot undo it)."""
    fields = _module("data.synthetic").static_fields(lat, lon)
    orography = np.roll(fields["geopotential_at_surface"], len(lon) // 4, axis=1) if shifted else (
        fields["geopotential_at_surface"])
    return np.stack([fields["land_sea_mask"], orography])


def write_store(shards: Path, lat, lon, names=STATIC, shifted: bool = False) -> np.ndarray:
    """shards/static.zarr as the static step writes it; returns its normalized fields."""
    fields = physical_static(lat, lon, shifted)[[STATIC.index(n) for n in names]]
    out = _module("data.statics").store_static(shards / "static.zarr", list(names), lat, lon, fields, "test")
    return _module("data.statics").read_static(out)[1]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """Tiny shards with static.zarr, and three trainings from the same seed: with the static fields, with the
    orography moved, without static fields. The first one records what its network saw and returned."""
    root = tmp_path_factory.mktemp("statics")
    data = make_dataset(root)
    lat, lon = _lat_lon(data["shards"])
    fields = write_store(data["shards"], lat, lon)
    moved = make_dataset(root / "moved")
    moved_fields = write_store(moved["shards"], lat, lon, shifted=True)
    seen: list = []
    with pytest.MonkeyPatch.context() as mp:
        network = _module("modelfile").ModelFile.network

        def recorded(spec):
            net = network(spec)
            net.register_forward_hook(lambda _m, args, out: seen.append((args[0].detach().clone(), out.detach())))
            return net

        mp.setattr(_module("modelfile").ModelFile, "network", recorded)
        runs = {"static": _train(root, data, STATIC, "static")}
    runs["moved"] = _train(root, moved, STATIC, "moved")
    runs["none"] = _train(root, data, [], "none")
    return {"root": root, "data": data, "lat": lat, "lon": lon, "fields": fields, "moved_fields": moved_fields,
            "seen": seen, "runs": runs, "params": runs["static"] / "params.yaml"}


def _lat_lon(shards: Path):
    import xarray as xr

    ds = xr.open_zarr(shards / "block_0000.zarr", consolidated=False)
    return ds["latitude"].values, ds["longitude"].values


def _params(root: Path, data: dict, static: list[str], **train_kw) -> Path:
    """root/params.yaml for the tiny data: 4 steps of a 2-step rollout, data.static, a short evaluation."""
    root.mkdir(parents=True, exist_ok=True)
    path = write_params(root, data, **{"rollout_steps": 2, "max_steps": 4, **train_kw})
    params = yaml.safe_load(path.read_text())
    params["data"]["static"] = list(static)
    params["evaluate"] = {"max_lead_hours": 12, "init_every_hours": 24, "allow_dirty": True,
                          "map_leads_hours": [12], "key_leads_hours": [6, 12]}
    path.write_text(yaml.safe_dump(params))
    return path


def _train(root: Path, data: dict, static: list[str], run: str) -> Path:
    """Train in root/run (params, model.pt, log.csv there)."""
    params = _params(root / run, data, static)
    assert run_main(root, data, params, run) == 0
    return root / run


def _losses(run: Path) -> list[float]:
    return [float(row["loss"]) for row in read_log(run / "log.csv")]


# ----------------------------------------------------------------------------------------------------------------
# training


def test_the_network_sees_state_forcings_and_static_and_predicts_the_state_only(world):
    c, f, s = len(CHANNELS), N_FORCINGS, len(STATIC)
    steps = [(x, y) for x, y in world["seen"] if x.shape[0] > 0]
    assert len(steps) == 4 * 2, "4 optimizer steps x 2 rollout steps, each a forward of the network"
    for x, y in steps:
        assert x.shape[1] == c + f + s and y.shape[1] == c, (x.shape, y.shape)
        for sample in x[:, c + f :]:  # the same static fields at every rollout step, for every sample
            np.testing.assert_array_equal(sample.numpy(), world["fields"])
    saved = _module("modelfile").ModelFile.load(world["runs"]["static"] / "model.pt")
    assert saved.static == STATIC and saved.channels == CHANNELS
    np.testing.assert_array_equal(saved.static_fields.numpy(), world["fields"])
    stem = saved.state_dict["stem.0.weight"]  # the first convolution: its inputs are C + F + S channels
    assert stem.shape[1] == c + f + s and saved.state_dict["head.weight"].shape[0] == c
    plain = _module("modelfile").ModelFile.load(world["runs"]["none"] / "model.pt")
    assert plain.static == [] and plain.state_dict["stem.0.weight"].shape[1] == c + f


def test_training_depends_on_the_static_values(world):
    """Same seed, same data, same network shape: only the orography differs. Were the static fields dropped or
    zeroed on the way to the network, the two trainings would be identical."""
    runs = world["runs"]
    with_static, moved, without = (_losses(runs[k]) for k in ("static", "moved", "none"))
    assert len(with_static) == len(moved) == 4
    assert with_static != moved and with_static != without
    load = _module("modelfile").ModelFile.load
    a, b = load(runs["static"] / "model.pt").state_dict, load(runs["moved"] / "model.pt").state_dict
    assert not all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)


def test_training_without_the_static_store_is_a_clear_error(world, tmp_path):
    data = make_dataset(tmp_path)  # no static.zarr beside these shards
    params = _params(tmp_path, data, STATIC)
    with pytest.raises(_module("errors").DataError, match=r"no static fields at .*static.zarr.*run the static step"):
        run_main(tmp_path, data, params, "run")


def test_fine_tuning_checks_the_static_names(world, tmp_path):
    data = world["data"]
    model = world["runs"]["static"] / "model.pt"
    params = _params(tmp_path, data, [], init_from=str(model))
    with pytest.raises(_module("errors").CheckpointMismatchError,
                       match=r"static inputs \(data.static\): checkpoint \['land_sea_mask', "
                             r"'geopotential_at_surface'\] vs params \[\].*data.static"):
        run_main(tmp_path, data, params, "tuned")
    params = _params(tmp_path, data, STATIC, init_from=str(model), max_steps=1)
    assert run_main(tmp_path, data, params, "tuned") == 0  # same static names: fine-tunes


# ----------------------------------------------------------------------------------------------------------------
# inference


def _rollout(model, normalizer, data: dict, steps: int = 2) -> np.ndarray:
    inference = _module("inference")
    reader = inference.ShardReader(data["shards"])
    inits = reader.times[80:82]
    with inference.deterministic():
        return np.stack(list(inference.rollout(model, normalizer, reader.read(inits), inits, steps, 6,
                                               reader.latitude, reader.longitude)))


def test_the_forecast_uses_the_shards_static_fields(world):
    inference, models = _module("inference"), _module("models")
    path = world["runs"]["static"] / "model.pt"
    model, meta, normalizer = inference.load_forecaster(path, shards=world["data"]["shards"])
    assert meta["static"] == STATIC
    forecast = _rollout(model, normalizer, world["data"])
    net = _module("modelfile").ModelFile.load(path).build()
    same = _rollout(models.with_static(net, world["fields"]), normalizer, world["data"])
    np.testing.assert_array_equal(forecast, same)
    other = _rollout(models.with_static(net, world["moved_fields"]), normalizer, world["data"])
    spread = np.abs(other - forecast).max(axis=(0, 1, 3, 4)) / forecast.std(axis=(0, 1, 3, 4))
    assert (spread > 1e-4).all(), f"the static fields barely change the forecast: {spread}"


def test_a_model_without_static_fields_ignores_static_zarr(world):
    inference = _module("inference")
    model, meta, normalizer = inference.load_forecaster(world["runs"]["none"] / "model.pt",
                                                        shards=world["data"]["shards"])
    assert meta["static"] == [] and _rollout(model, normalizer, world["data"], 1).shape[2] == len(CHANNELS)


def _shards_with(tmp_path: Path, world: dict, names=None, shifted: bool = False) -> Path:
    """A copy of the world's shards with another static.zarr (names None: none at all)."""
    shards = tmp_path / "shards"
    shutil.copytree(world["data"]["shards"], shards, ignore=shutil.ignore_patterns("static.zarr"))
    if names is not None:
        write_store(shards, world["lat"], world["lon"], names, shifted)
    return shards


@pytest.mark.parametrize("case, pattern", [
    ("missing", r"model.pt was trained with static inputs \['land_sea_mask', 'geopotential_at_surface'\], but "
                r".*shards/static.zarr does not exist. Fix: set data.static: \[land_sea_mask, "
                r"geopotential_at_surface\].*rebuild the shards"),
    ("names", r"static.zarr holds the static fields \['land_sea_mask'\], but .*model.pt was trained with "
              r"\['land_sea_mask', 'geopotential_at_surface'\]. Fix: set data.static"),
    ("values", r"static.zarr: static field 'geopotential_at_surface' differs from the one .*model.pt was trained "
               r"with, by up to [0-9.]+ \(normalized\) at \d+ grid points.*Fix: set data.static"),
])  # fmt: skip
def test_shards_with_other_static_fields_are_refused(world, tmp_path, monkeypatch, case, pattern):
    names, shifted = {"missing": (None, False), "names": (["land_sea_mask"], False), "values": (STATIC, True)}[case]
    shards = _shards_with(tmp_path, world, names, shifted)
    model = world["runs"]["static"] / "model.pt"
    EvaluationError = _module("errors").EvaluationError
    with pytest.raises(EvaluationError, match=pattern):
        _module("inference").load_forecaster(model, shards=shards)
    monkeypatch.chdir(tmp_path)
    common = ["--params", str(world["params"]), "--model", str(model), "--shards", str(shards),
              "--stats", str(world["data"]["stats"])]
    with pytest.raises(EvaluationError, match=pattern):  # both commands, before they write anything
        _module("evaluate").main([*common, "--out", "results"])
    with pytest.raises(EvaluationError, match=pattern):
        _module("forecast").main([*common, "--init", "2000-01-21T00:00", "--out", "fc.zarr"])
    assert not (tmp_path / "results").exists() and not (tmp_path / "fc.zarr").exists()


def test_load_forecaster_needs_the_shards_for_a_model_with_static_fields(world):
    with pytest.raises(_module("errors").EvaluationError, match=r"trained with static inputs .*pass the shards"):
        _module("inference").load_forecaster(world["runs"]["static"] / "model.pt")


def test_evaluate_and_forecast_score_and_export_the_state_channels_only(world, tmp_path, monkeypatch):
    import xarray as xr

    monkeypatch.chdir(tmp_path)
    model = world["runs"]["static"] / "model.pt"
    common = ["--params", str(world["params"]), "--model", str(model),
              "--shards", str(world["data"]["shards"]), "--stats", str(world["data"]["stats"])]
    climatology = tmp_path / "data" / "climatology.zarr"  # the climatology stage first, as the pipeline runs it
    assert _module("climatology").main(["--params", str(world["params"]), "--shards", str(world["data"]["shards"]),
                                        "--out", str(climatology)]) == 0
    assert _module("evaluate").main([*common, "--out", "results"]) == 0
    metrics = json.loads((tmp_path / "results" / "metrics.json").read_text())
    assert set(metrics["rmse"]) == set(CHANNELS) and not set(STATIC) & set(json.dumps(metrics).split('"'))
    with xr.open_zarr(tmp_path / "results" / "wb2" / "forecast.zarr") as exported:
        assert not set(STATIC) & set(exported.data_vars)
    assert _module("forecast").main([*common, "--init", "2000-01-21T00:00", "--steps", "1", "--out", "fc.zarr"]) == 0
    with xr.open_zarr(tmp_path / "fc.zarr") as forecast:
        assert set(forecast.data_vars) == {"geopotential", "temperature", "2m_temperature"}
