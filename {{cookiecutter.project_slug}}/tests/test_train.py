"""Training: outputs, gradient accumulation, fine-tuning, damaged checkpoints, and what each option does.

Each option test asserts the option's effect (bf16 tensors in the forward pass, blocks recomputed in backward,
R network calls per sample, sharded parameters), so it fails if the option were silently ignored.
The helpers come from conftest.py (test_train_golden.py imports four of them from here).
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from conftest import CHANNELS, PACKAGE, make_dataset, read_log, run_main, weights, write_params

train = importlib.import_module(f"{PACKAGE}.train")
errors = importlib.import_module(f"{PACKAGE}.errors")
checkpoint = importlib.import_module(f"{PACKAGE}.checkpoint")
models = importlib.import_module(f"{PACKAGE}.models")
trainlog = importlib.import_module(f"{PACKAGE}.trainlog")
modelfile = importlib.import_module(f"{PACKAGE}.modelfile")
config = importlib.import_module(f"{PACKAGE}.config")

pytestmark = pytest.mark.filterwarnings("ignore:The data type .* does not have a Zarr V3 specification")


@contextlib.contextmanager
def forward_calls():
    """Watch every module forward in this process while the block runs: `entered` counts calls per module class
    (a pre-hook, so it also counts the forwards that activation checkpointing re-runs during backward, which
    stop early once the saved tensors are rebuilt); `outputs` lists (module class, output dtype)."""
    record = SimpleNamespace(entered=Counter(), outputs=[])
    pre = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda module, _inputs: record.entered.update([type(module).__name__]))
    post = torch.nn.modules.module.register_module_forward_hook(
        lambda module, _inputs, out: record.outputs.append(
            (type(module).__name__, out.dtype if isinstance(out, torch.Tensor) else None)))
    try:
        yield record
    finally:
        pre.remove()
        post.remove()


# ----------------------------------------------------------------------------------------------------------------
# outputs


def test_train_writes_model_log_and_checkpoints(tmp_path, data):
    params = write_params(tmp_path, data, max_steps=6, checkpoint_every=1, keep_checkpoints=2)
    assert run_main(tmp_path, data, params) == 0
    run = tmp_path / "run"
    saved = modelfile.ModelFile.load(run / "model.pt")
    assert saved.channels == CHANNELS and saved.step == 6 and len(saved.latitude) == 8
    assert saved.model["name"] == "unet" and saved.lead_hours == 6 and saved.provenance
    model, meta = models.load_model(run / "model.pt")  # the wrapper forecast.py uses
    assert meta == saved.meta() and not model.training
    rows = read_log(run / "log.csv")
    assert list(rows[0]) == list(trainlog.LOG_COLUMNS)
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(float(r[k])) for r in rows for k in trainlog.LOG_COLUMNS)
    assert 0 <= float(rows[-1]["data_wait"]) <= 1 and float(rows[-1]["samples_per_s"]) > 0
    assert all(0 <= float(r["queue_depth"]) for r in rows)  # the loader's queue depth, per log interval
    ckpts = checkpoint.list_checkpoints(run / "checkpoints")
    assert [p.name for p in ckpts] == ["step_00000006.pt", "step_00000005.pt"]  # keep_checkpoints: 2
    ck = torch.load(ckpts[0], weights_only=True)  # the contract: loadable without unpickling code
    assert {"state_dict", "optimizer", "scheduler", "step", "rng", "sampler", "provenance", "sha256"} <= set(ck)
    newest = checkpoint.Checkpoint.from_dict(checkpoint.load_latest(run / "checkpoints")[0], ckpts[0])
    assert newest.model.step == 6 and newest.sampler["world_size"] == 1
    for k, v in saved.state_dict.items():
        assert torch.equal(v, newest.model.state_dict[k])
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


def test_resume_conflicts_ignore_resumable_params():
    base = {"seed": 0, "data": {"splits": {"train": ["2000-01-01", "2000-06-30"], "val": ["2000-07-01", "2000-07-31"],
                                           "test": ["2000-08-01", "2000-08-31"]}}}
    old = config.validate_params(base).model_dump(mode="json")
    logged = config.validate_params({**base, "train": {"log_every": 7, "strategy": "fsdp", "num_workers": 2}})
    assert checkpoint.resume_conflicts(old, logged) == []
    other = config.validate_params({**base, "seed": 1, "train": {"lr": 1e-3, "max_steps": 5000}})
    assert checkpoint.resume_conflicts(old, other) == ["seed: 0 -> 1", "train.lr: 0.002 -> 0.001",
                                                       "train.max_steps: 1200 -> 5000"]  # the schedule depends on it


# ----------------------------------------------------------------------------------------------------------------
# fine-tuning


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
    with pytest.raises(errors.CheckpointMismatchError, match=r"model\.width: checkpoint 8 vs params 16"):
        run_main(tmp_path, data, params, run="arch")
    # channels and grid
    other = make_dataset(tmp_path / "other", nlat=4, nlon=16, channels=CHANNELS[:4])
    params = write_params(tmp_path / "other", other, model={"width": 8}, max_steps=2, init_from=source)
    with pytest.raises(errors.CheckpointMismatchError) as err:
        run_main(tmp_path / "other", other, params, run="chan")
    assert "channels" in str(err.value) and "grid latitude" in str(err.value) and "Fix:" in str(err.value)
    # missing file
    params = write_params(tmp_path, data, max_steps=2, init_from=str(tmp_path / "nope.pt"))
    with pytest.raises(errors.ForgeError, match="init_from .*nope.pt"):
        run_main(tmp_path, data, params, run="missing")


def test_missing_init_from_is_an_error_even_when_a_checkpoint_exists(tmp_path, data):
    params = write_params(tmp_path, data, max_steps=2)
    assert run_main(tmp_path, data, params) == 0
    assert checkpoint.list_checkpoints(tmp_path / "run" / "checkpoints")  # resumable, yet:
    params = write_params(tmp_path, data, max_steps=4, init_from=str(tmp_path / "gone.pt"))
    with pytest.raises(errors.ForgeError, match=r"train.init_from .*gone.pt' does not exist\. Fix:"):
        run_main(tmp_path, data, params)


# ----------------------------------------------------------------------------------------------------------------
# options: each test checks the option's effect


def test_bf16_runs_the_network_in_bfloat16(tmp_path, data):
    seen = {}
    for precision in ("fp32", "bf16"):
        params = write_params(tmp_path, data, max_steps=2, precision=precision)
        with forward_calls() as calls:
            assert run_main(tmp_path, data, params, run=precision) == 0
        seen[precision] = {dtype for name, dtype in calls.outputs if name in ("PeriodicConv2d", "Conv2d")}
    assert seen["bf16"] == {torch.bfloat16}, seen
    assert seen["fp32"] == {torch.float32}, seen
    assert all(v.dtype == torch.float32 for v in weights(tmp_path / "bf16" / "model.pt").values())  # fp32 master


@pytest.mark.parametrize("name,network,block", [("unet", "UNet", "ConvBlock"), ("vit", "ViT", "Block")])
def test_activation_checkpointing_recomputes_blocks_in_backward(tmp_path, data, name, network, block):
    per_call = {}
    for on in (False, True):
        params = write_params(tmp_path, data, model={"name": name}, max_steps=2, activation_checkpointing=on)
        with forward_calls() as calls:
            assert run_main(tmp_path, data, params, run=f"ckpt{on}") == 0
        per_call[on] = calls.entered[block] / calls.entered[network]
    assert per_call[True] == 2 * per_call[False], per_call  # each block once forward, once more in backward
    a, b = weights(tmp_path / "ckptFalse" / "model.pt"), weights(tmp_path / "ckptTrue" / "model.pt")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)  # recomputation changes no result


def test_rollout_loss_covers_r_steps(tmp_path, data):
    network_calls, first_loss = {}, {}
    for r in (1, 2, 3):
        params = write_params(tmp_path, data, max_steps=2, rollout_steps=r, grad_clip=0.0)
        with forward_calls() as calls:
            assert run_main(tmp_path, data, params, run=f"r{r}") == 0
        network_calls[r] = calls.entered["UNet"]
        first_loss[r] = float(read_log(tmp_path / f"r{r}" / "log.csv")[0]["loss"])
    assert network_calls == {1: 2, 2: 4, 3: 6}  # 2 steps x R autoregressive calls
    assert len(set(first_loss.values())) == 3, first_loss  # the loss averages over R steps, not just the first


def test_fsdp_shards_the_parameters(tmp_path, data, monkeypatch):
    """Plain `python -m` with FSDP: a 1-process group in memory; every parameter becomes a sharded DTensor.
    (The 2-process split of each parameter is checked in test_train_distributed.py.)"""
    from torch.distributed.tensor import DTensor, Shard

    wrapped = []

    def spy(net, loss_fn, strategy, d):
        out = original(net, loss_fn, strategy, d)
        wrapped.append({n: p for n, p in net.named_parameters()})
        return out

    original = train.wrap
    monkeypatch.setattr(train, "wrap", spy)
    params = write_params(tmp_path, data, max_steps=2, strategy="fsdp")
    assert run_main(tmp_path, data, params) == 0
    (named,) = wrapped
    assert named and all(isinstance(p, DTensor) and p.placements == (Shard(0),) for p in named.values())
    assert all(isinstance(v, torch.Tensor) and not isinstance(v, DTensor)
               for v in weights(tmp_path / "run" / "model.pt").values())  # the saved model is gathered


def test_compile_option_compiles_the_model(tmp_path, data, monkeypatch):
    """train.compile: the loss module runs through torch.compile (here with the `eager` backend: the same graph
    capture without the minutes of C++ compilation inductor needs on a CPU) and trains like the plain model."""
    import torch._dynamo

    original = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: original(self, **{**kw, "backend": "eager"}))
    losses = {}
    for on in (False, True):
        torch._dynamo.reset()
        torch._dynamo.utils.counters.clear()
        params = write_params(tmp_path, data, max_steps=2, compile=on)
        assert run_main(tmp_path, data, params, run=f"compile{on}") == 0
        assert (torch._dynamo.utils.counters["frames"]["ok"] > 0) == on  # graphs captured only when asked
        losses[on] = [float(r["loss"]) for r in read_log(tmp_path / f"compile{on}" / "log.csv")]
    torch._dynamo.reset()
    assert losses[True] == pytest.approx(losses[False], rel=1e-5)


def test_model_flops_are_counted_on_the_meta_device(data):
    """The FLOPs behind the MFU figure: counted without memory or arithmetic, equal to a count on real tensors,
    proportional to the rollout steps, and no draw from the RNG (training stays bitwise reproducible)."""
    from torch.utils.flop_counter import FlopCounterMode

    spec, delta_scale = train.open_data(config.validate_params(yaml.safe_load(write_params(
        data["shards"].parent, data).read_text())), data["shards"], data["stats"])[1:]
    before = torch.get_rng_state()
    one, two = (train.flops_per_sample(spec, delta_scale, r) for r in (1, 2))
    assert torch.equal(torch.get_rng_state(), before)
    assert one > 0 and two == pytest.approx(2 * one, rel=0.01)
    loss_fn = train.RolloutLoss(spec.network(), delta_scale, spec.latitude)
    c, f, h, w = len(spec.channels), len(spec.forcings), len(spec.latitude), len(spec.longitude)
    with FlopCounterMode(display=False) as counter:
        loss_fn(torch.randn(1, c, h, w), torch.randn(1, 1, f, h, w), torch.randn(1, 1, c, h, w)).backward()
    assert counter.get_total_flops() == one


def test_log_line_reports_tflops_and_mfu(tmp_path, capsys, monkeypatch):
    d = SimpleNamespace(world=2, device=torch.device("cpu"), main=True, all_sum=lambda x: x * 2)
    meter = trainlog.Meter(d, global_batch=32, flops_per_sample=1e9, peak=100e12)
    meter.add_loss(torch.tensor(0.5))
    meter.end_step(seconds=0.5, wait=0.05, grad_norm=torch.tensor(1.0))
    row = meter.row(step=1, lr=1e-3)
    assert row["samples_per_s"] == 64 and row["tflops"] == pytest.approx(32e-3) and row["mfu"] == pytest.approx(32e-5)
    params = config.validate_params({"data": {"splits": {"train": ["2000-01-01", "2000-01-02"],
                                                         "val": ["2000-01-03", "2000-01-04"],
                                                         "test": ["2000-01-05", "2000-01-06"]}}})
    logger = trainlog.Logger(params, tmp_path / "log.csv", tmp_path, 0, {}, d)
    logger.log(row)
    assert "64.0 samples/s data_wait 10% queue 0.0 0.0 TFLOP/s per process MFU 0.0%" in capsys.readouterr().out
    assert list(read_log(tmp_path / "log.csv")[0]) == list(trainlog.LOG_COLUMNS)  # the CSV keeps its columns
    assert trainlog.peak_flops(torch.device("cpu"), "bf16") is None
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda _d: "NVIDIA H100 PCIe")
    assert trainlog.peak_flops(torch.device("cuda", 0), "bf16") == 756e12
    assert trainlog.peak_flops(torch.device("cuda", 0), "fp32") is None


def test_data_loader_workers_and_accumulation_train(tmp_path, data):
    params = write_params(tmp_path, data, max_steps=3, num_workers=1, grad_accum=2)
    assert run_main(tmp_path, data, params) == 0
    rows = read_log(tmp_path / "run" / "log.csv")
    assert len(rows) == 3 and all(np.isfinite(float(r["loss"])) for r in rows)


def test_lr_schedule_warmup_then_cosine():
    t = type("T", (), {"warmup_steps": 10, "max_steps": 110})
    f = train.lr_lambda(t)
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0)
    assert f(10) == pytest.approx(1.0) and f(60) == pytest.approx(0.5) and f(110) == pytest.approx(0.0)


def test_rng_state_roundtrip_is_weights_only(tmp_path):
    import random

    state = checkpoint.rng_state()
    expected = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    checkpoint.save_checkpoint(tmp_path, {"rng": state}, 1, keep=1)
    checkpoint.set_rng_state(torch.load(tmp_path / "step_00000001.pt", weights_only=True)["rng"])
    got = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]


# ----------------------------------------------------------------------------------------------------------------
# W&B (wandb is a dev dependency: these tests always run)


def test_wandb_enabled_without_the_package_is_one_clear_error(tmp_path, data, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # as if it were not installed
    params = write_params(tmp_path, data, max_steps=2)
    raw = yaml.safe_load(params.read_text())
    raw["wandb"] = {"enabled": True, "project": "test"}
    params.write_text(yaml.safe_dump(raw))
    with pytest.raises(errors.ForgeError, match=r"wandb.enabled is true .* Fix: pip install"):
        run_main(tmp_path, data, params)


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
