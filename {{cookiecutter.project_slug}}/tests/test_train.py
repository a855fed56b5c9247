"""Training: outputs, gradient accumulation, fine-tuning, corrupt checkpoints, precision and model options.

The helpers at the top (tiny shards written straight to the SHARDS format, params files, running train) are also
used by test_train_distributed.py, test_train_resume.py and test_train_golden.py.
"""

from __future__ import annotations

import csv
import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import PACKAGE

train = importlib.import_module(f"{PACKAGE}.train")
errors = importlib.import_module(f"{PACKAGE}.errors")
checkpoint = importlib.import_module(f"{PACKAGE}.checkpoint")
models = importlib.import_module(f"{PACKAGE}.models")
config = importlib.import_module(f"{PACKAGE}.config")

CHANNELS = ["geopotential_500", "geopotential_850", "temperature_500", "temperature_850", "2m_temperature"]
START = np.datetime64("2000-01-01T00:00", "ns")
STEP = np.timedelta64(6, "h")


# ----------------------------------------------------------------------------------------------------------------
# helpers


def make_dataset(root: Path, nlat: int = 8, nlon: int = 16, ntimes: int = 96, channels=CHANNELS,
                 block: int = 40) -> dict:
    """Tiny deterministic shards (SHARDS format: zarr v3, data (time, channel, lat, lon), one step per chunk,
    uncompressed) and stats.json, independent of the synthetic generator so the golden losses only move when
    training changes. Waves travel eastward (so persistence is beatable) plus a little seeded noise."""
    import xarray as xr

    rng = np.random.default_rng(0)
    lat = np.linspace(-90 + 90 / nlat, 90 - 90 / nlat, nlat)
    lon = np.arange(nlon) * 360.0 / nlon
    t = np.arange(ntimes)[:, None, None]
    phase = np.deg2rad(lon)[None, None, :] * 2 - 0.3 * t
    base = np.cos(np.deg2rad(lat))[None, :, None] * np.cos(phase) + 0.5 * np.sin(np.deg2rad(lat))[None, :, None]
    data = np.stack([(1 + 0.2 * c) * base + 0.1 * c + 0.05 * rng.standard_normal(base.shape)
                     for c in range(len(channels))], axis=1).astype(np.float32)
    data = data * np.array([100.0 + 10 * c for c in range(len(channels))], np.float32)[None, :, None, None]
    times = START + np.arange(ntimes) * STEP
    shards = root / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    for i, s in enumerate(range(0, ntimes, block)):
        ds = xr.Dataset(
            {"data": (("time", "channel", "latitude", "longitude"), data[s:s + block])},
            coords={"time": times[s:s + block], "channel": list(channels), "latitude": lat, "longitude": lon},
            attrs={"channels": list(channels), "provenance": json.dumps({"test": True}), "source": "test"},
        )
        ds.to_zarr(shards / f"block_{i:04d}.zarr", mode="w", zarr_format=3, consolidated=False,
                   encoding={"data": {"chunks": (1, len(channels), nlat, nlon), "compressors": None}})
    n_train = int(ntimes * 0.75)
    train_data = data[:n_train]
    stats = {
        "channels": list(channels),
        "mean": train_data.mean(axis=(0, 2, 3)).tolist(),
        "std": train_data.std(axis=(0, 2, 3)).tolist(),
        "diff_std": np.diff(train_data, axis=0).std(axis=(0, 2, 3)).tolist(),
        "time_step_hours": 6,
        "train": [str(times[0])[:16], str(times[n_train - 1])[:16]],
    }
    (root / "stats.json").write_text(json.dumps(stats))
    return {"shards": shards, "stats": root / "stats.json", "times": times, "n_train": n_train}


def write_params(root: Path, data: dict, model: dict | None = None, **train_kw) -> Path:
    """A params.yaml for the tiny data: template defaults except the grid-independent knobs passed in."""
    times = data["times"]
    iso = lambda t: str(t)[:16]  # noqa: E731
    n = data["n_train"]
    params = {
        "seed": 0,
        "data": {
            "source": "synthetic",
            "start": iso(times[0]),
            "end": iso(times[-1]),
            "splits": {"train": [iso(times[0]), iso(times[n - 1])], "val": [iso(times[n]), iso(times[n + 4])],
                       "test": [iso(times[n + 5]), iso(times[-1])]},
        },
        "model": {"name": "unet", **(model or {})},
        "train": {"batch_size": 4, "max_steps": 6, "warmup_steps": 2, "log_every": 1, "checkpoint_every": 2,
                  "allow_dirty": True, **train_kw},
        "wandb": {"enabled": False},
    }
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def cli_args(root: Path, data: dict, params: Path, run: str = "run") -> list[str]:
    return ["--params", str(params), "--shards", str(data["shards"]), "--stats", str(data["stats"]),
            "--run-dir", str(root / run), "--out", str(root / run / "model.pt"), "--log", str(root / run / "log.csv")]


def run_main(root: Path, data: dict, params: Path, run: str = "run") -> int:
    """train.main in this process (fast); put back the global torch settings it changes."""
    cwd = os.getcwd()
    deterministic = torch.are_deterministic_algorithms_enabled()
    os.chdir(root)
    try:
        return train.main(cli_args(root, data, params, run))
    finally:
        os.chdir(cwd)
        torch.use_deterministic_algorithms(deterministic)


def subprocess_env(threads: int = 1) -> dict:
    """Environment for `python -m PKG.train` / torchrun children: this package importable, 1 thread, offline."""
    env = dict(os.environ)
    pkg_parent = str(Path(importlib.import_module(PACKAGE).__file__).resolve().parent.parent)
    here_parent = str(Path(importlib.import_module(PACKAGE).__file__).parent.parent)
    env["PYTHONPATH"] = os.pathsep.join([here_parent, pkg_parent, env.get("PYTHONPATH", "")])
    env.update(OMP_NUM_THREADS=str(threads), WANDB_MODE="offline", PYTHONUNBUFFERED="1")
    return env


def train_command(root: Path, data: dict, params: Path, run: str = "run", nproc: int = 0) -> list[str]:
    """`python -m PKG.train ...`, or under torchrun with `nproc` processes."""
    if nproc:
        # `--`: torchrun's parser would otherwise take --log for an abbreviation of its --log-dir
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
                    "-m", f"{PACKAGE}.train", "--"]
    else:
        launcher = [sys.executable, "-m", f"{PACKAGE}.train"]
    return launcher + cli_args(root, data, params, run)


def run_cli(root: Path, data: dict, params: Path, run: str = "run", nproc: int = 0, timeout: int = 300):
    return subprocess.run(train_command(root, data, params, run, nproc), cwd=root, env=subprocess_env(),
                          capture_output=True, text=True, timeout=timeout)


def weights(path: Path) -> dict:
    return torch.load(path, weights_only=True)["state_dict"]


def read_log(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


pytestmark = pytest.mark.filterwarnings("ignore:The data type .* does not have a Zarr V3 specification")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"))


# ----------------------------------------------------------------------------------------------------------------
# tests


def test_train_writes_model_log_and_checkpoints(tmp_path, data):
    params = write_params(tmp_path, data, max_steps=6, checkpoint_every=1, keep_checkpoints=2)
    assert run_main(tmp_path, data, params) == 0
    run = tmp_path / "run"
    model, meta = models.load_model(run / "model.pt")
    assert meta["channels"] == CHANNELS and meta["step"] == 6 and len(meta["latitude"]) == 8
    assert meta["model"]["name"] == "unet" and meta["lead_hours"] == 6 and "provenance" in meta
    rows = read_log(run / "log.csv")
    assert list(rows[0]) == list(train.LOG_COLUMNS)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(float(r[k])) for r in rows for k in train.LOG_COLUMNS)
    assert 0 <= float(rows[-1]["data_wait"]) <= 1 and float(rows[-1]["samples_per_s"]) > 0
    ckpts = checkpoint.list_checkpoints(run / "checkpoints")
    assert [p.name for p in ckpts] == ["step_00000006.pt", "step_00000005.pt"]  # keep_checkpoints: 2
    ck = torch.load(ckpts[0], weights_only=True)
    assert {"state_dict", "optimizer", "scheduler", "step", "rng", "sampler", "provenance"} <= set(ck)
    for k, v in weights(run / "model.pt").items():
        assert torch.equal(v, ck["state_dict"][k])
    # The model learned something: the loss fell.
    assert float(rows[-1]["loss"]) < float(rows[0]["loss"])


def test_rerun_of_finished_run_changes_nothing(tmp_path, data):
    params = write_params(tmp_path, data, max_steps=4)
    assert run_main(tmp_path, data, params) == 0
    before = weights(tmp_path / "run" / "model.pt")
    assert run_main(tmp_path, data, params) == 0
    after = weights(tmp_path / "run" / "model.pt")
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_grad_accumulation_equals_bigger_batch(tmp_path, data):
    """Global batch = batch_size x grad_accum x processes: 2 x 4 accumulated trains like 1 x 8."""
    (tmp_path / "a").mkdir()
    p = write_params(tmp_path / "a", data, batch_size=4, grad_accum=2, max_steps=4)
    assert run_main(tmp_path / "a", data, p) == 0
    (tmp_path / "b").mkdir()
    q = write_params(tmp_path / "b", data, batch_size=8, grad_accum=1, max_steps=4)
    assert run_main(tmp_path / "b", data, q) == 0
    a, b = weights(tmp_path / "a" / "run" / "model.pt"), weights(tmp_path / "b" / "run" / "model.pt")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k


def test_corrupt_checkpoint_is_skipped_with_a_warning(tmp_path, data):
    params = write_params(tmp_path, data, max_steps=4, checkpoint_every=2)
    assert run_main(tmp_path, data, params) == 0
    ckpt_dir = tmp_path / "run" / "checkpoints"
    newest = checkpoint.list_checkpoints(ckpt_dir)[0]
    assert newest.name == "step_00000004.pt"
    newest.write_bytes(newest.read_bytes()[:1000])  # truncated, as after a crash on a non-atomic filesystem
    with pytest.warns(UserWarning, match="skipping unreadable checkpoint .*step_00000004"):
        state, path = checkpoint.load_latest(ckpt_dir)
    assert path.name == "step_00000002.pt" and state["step"] == 2
    # Training resumes from the older one and finishes.
    params = write_params(tmp_path, data, max_steps=6, checkpoint_every=2)
    with pytest.warns(UserWarning, match="skipping unreadable"):
        assert run_main(tmp_path, data, params) == 0
    assert torch.load(tmp_path / "run" / "model.pt", weights_only=True)["step"] == 6
    assert [int(r["step"]) for r in read_log(tmp_path / "run" / "log.csv")] == [1, 2, 3, 4, 5, 6]


def test_changed_params_start_fresh_instead_of_resuming(tmp_path, data, capsys):
    """runs/train persists between `dvc exp run -S train.lr=...` runs: another run's checkpoints are set aside."""
    params = write_params(tmp_path, data, max_steps=4)
    assert run_main(tmp_path, data, params) == 0
    params = write_params(tmp_path, data, max_steps=4, lr=1e-3)
    assert run_main(tmp_path, data, params) == 0
    err = capsys.readouterr().err
    assert "not resuming" in err and "train.lr: 0.002 -> 0.001" in err
    assert (tmp_path / "run" / "checkpoints.stale" / "step_00000004.pt").exists()
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    assert run_main(fresh, data, write_params(fresh, data, max_steps=4, lr=1e-3)) == 0
    a, b = weights(tmp_path / "run" / "model.pt"), weights(fresh / "run" / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_finetune_from_checkpoint_with_frozen_layers(tmp_path, data):
    params = write_params(tmp_path, data, max_steps=4)
    assert run_main(tmp_path, data, params) == 0
    base = weights(tmp_path / "run" / "model.pt")
    params = write_params(tmp_path, data, max_steps=3, init_from=str(tmp_path / "run" / "model.pt"),
                          freeze=["stem", "down.0"])
    assert run_main(tmp_path, data, params, run="tuned") == 0
    tuned = weights(tmp_path / "tuned" / "model.pt")
    for k in base:
        if k.startswith(("stem", "down.0")):
            assert torch.equal(base[k], tuned[k]), k
    assert not torch.equal(base["head.weight"], tuned["head.weight"])


def test_finetune_mismatch_is_one_clear_error(tmp_path, data):
    params = write_params(tmp_path, data, model={"width": 8}, max_steps=2)
    assert run_main(tmp_path, data, params) == 0
    source = str(tmp_path / "run" / "model.pt")
    # architecture
    params = write_params(tmp_path, data, model={"width": 16}, max_steps=2, init_from=source)
    with pytest.raises(train.CheckpointMismatchError, match=r"model\.width: checkpoint 8 vs params 16"):
        run_main(tmp_path, data, params, run="arch")
    # channels and grid
    other = make_dataset(tmp_path / "other", nlat=4, nlon=16, channels=CHANNELS[:4])
    params = write_params(tmp_path / "other", other, model={"width": 8}, max_steps=2, init_from=source)
    with pytest.raises(train.CheckpointMismatchError) as err:
        run_main(tmp_path / "other", other, params, run="chan")
    assert "channels" in str(err.value) and "grid latitude" in str(err.value) and "Fix:" in str(err.value)
    # missing file
    params = write_params(tmp_path, data, max_steps=2, init_from=str(tmp_path / "nope.pt"))
    with pytest.raises(errors.ForgeError, match="init_from .*nope.pt"):
        run_main(tmp_path, data, params, run="missing")


@pytest.mark.parametrize(
    "model,train_kw",
    [
        ({"name": "vit"}, {}),
        ({"name": "unet"}, {"precision": "bf16", "activation_checkpointing": True}),
        ({"name": "vit"}, {"precision": "bf16", "activation_checkpointing": True, "rollout_steps": 2}),
        ({"name": "unet"}, {"rollout_steps": 3, "grad_clip": 0.0}),
        ({"name": "unet"}, {"num_workers": 1, "grad_accum": 2}),
        ({"name": "unet"}, {"strategy": "fsdp"}),  # plain `python -m`: a 1-process group in memory
    ],
)
def test_model_and_precision_options_train(tmp_path, data, model, train_kw):
    params = write_params(tmp_path, data, model=model, max_steps=3, **train_kw)
    assert run_main(tmp_path, data, params) == 0
    rows = read_log(tmp_path / "run" / "log.csv")
    assert len(rows) == 3 and all(np.isfinite(float(r["loss"])) for r in rows)
    net, meta = models.load_model(tmp_path / "run" / "model.pt")
    assert meta["model"]["name"] == model["name"]


def test_lr_schedule_warmup_then_cosine():
    t = type("T", (), {"warmup_steps": 10, "max_steps": 110})
    f = train.lr_lambda(t)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(60) == pytest.approx(0.5) and f(110) == pytest.approx(0.0)


def test_rng_state_roundtrip_is_weights_only(tmp_path):
    import random

    state = checkpoint.rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    checkpoint.atomic_save({"rng": state}, tmp_path / "rng.pt")
    checkpoint.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True)["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]


def test_requeue_exit_code_is_ex_tempfail():
    assert train.REQUEUE_EXIT_CODE == 75


WANDB_INSTALLED = importlib.util.find_spec("wandb") is not None


def test_wandb_is_installed_when_the_project_enables_it(project_root):
    """A project baked with W&B on depends on wandb; one with W&B off must train without it."""
    enabled = yaml.safe_load((project_root / "params.yaml").read_text())["wandb"]["enabled"]
    assert WANDB_INSTALLED or not enabled, "wandb.enabled is true in params.yaml but wandb is not installed"


def test_wandb_enabled_without_the_package_is_one_clear_error(tmp_path, data, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if it were not installed
    params = write_params(tmp_path, data, max_steps=2)
    raw = yaml.safe_load(params.read_text())
    raw["wandb"] = {"enabled": True, "project": "test"}
    params.write_text(yaml.safe_dump(raw))
    with pytest.raises(errors.ForgeError, match=r"wandb.enabled is true .* Fix: pip install"):
        run_main(tmp_path, data, params)


if WANDB_INSTALLED:  # a project baked with use_wandb=no has no W&B to test; the test above covers that case

    def test_wandb_offline_run_dir_and_config(tmp_path, data, monkeypatch):
        monkeypatch.setenv("WANDB_MODE", "offline")
        monkeypatch.setenv("WANDB_SILENT", "true")
        params = write_params(tmp_path, data, max_steps=2)
        raw = yaml.safe_load(params.read_text())
        raw["wandb"] = {"enabled": True, "project": "test"}
        params.write_text(yaml.safe_dump(raw))
        assert run_main(tmp_path, data, params) == 0
        runs = list((tmp_path / "run" / "wandb").glob("wandb/offline-run-*"))
        assert runs, "no offline W&B run inside the run folder"
        record = next(runs[0].glob("run-*.wandb")).read_bytes()  # the offline run log holds the run config
        assert b"provenance" in record and b"params_sha256" in record and b"lead_hours" in record
