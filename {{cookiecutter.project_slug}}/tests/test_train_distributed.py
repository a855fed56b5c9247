"""torchrun with 2 gloo processes on CPU: DDP matches 1 process at the same global batch; FSDP splits every
parameter between the ranks, trains, and its checkpoint continues in a 1-process run."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import PACKAGE, make_dataset, read_log, run_cli, subprocess_env, weights, write_params

models = importlib.import_module(f"{PACKAGE}.models")

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:The data type")]


def _ok(result) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"


@pytest.mark.parametrize("model", ["unet", "vit"])
def test_ddp_two_processes_match_one_process(tmp_path, model):
    data = make_dataset(tmp_path / "data")
    # 2 processes x batch 4 = 1 process x batch 8 (same samples per step: the sampler deals one global order)
    two = write_params(tmp_path / "data", data, model={"name": model}, batch_size=4, max_steps=5)
    _ok(run_cli(tmp_path / "data", data, two, run="ddp2", nproc=2))
    one = (tmp_path / "one")
    one.mkdir()
    p1 = write_params(one, data, model={"name": model}, batch_size=8, max_steps=5)
    _ok(run_cli(one, data, p1, run="ddp1"))
    a, b = weights(tmp_path / "data" / "ddp2" / "model.pt"), weights(one / "ddp1" / "model.pt")
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5, rtol=1e-4), k
    la, lb = read_log(tmp_path / "data" / "ddp2" / "log.csv"), read_log(one / "ddp1" / "log.csv")
    assert [float(r["loss"]) for r in la] == pytest.approx([float(r["loss"]) for r in lb], rel=1e-4)


@pytest.mark.parametrize(
    "model,extra", [("unet", {}), ("vit", {"precision": "bf16", "activation_checkpointing": True})]
)
def test_fsdp_two_processes_then_resume_in_one(tmp_path, model, extra):
    data = make_dataset(tmp_path)
    params = write_params(tmp_path, data, model={"name": model}, strategy="fsdp", max_steps=6, checkpoint_every=2,
                          grad_accum=2, **extra)
    _ok(run_cli(tmp_path, data, params, run="run", nproc=2))
    fsdp = weights(tmp_path / "run" / "model.pt")
    checkpoints = tmp_path / "run" / "checkpoints"
    ckpt = torch.load(checkpoints / "step_00000006.pt", weights_only=True)
    assert all(torch.equal(fsdp[k], ckpt["state_dict"][k]) for k in fsdp)  # full (gathered) tensors
    # As if stopped after step 4: the same run continues in 1 plain process (DDP strategy) from the FSDP checkpoint.
    (checkpoints / "step_00000006.pt").unlink()
    params = write_params(tmp_path, data, model={"name": model}, strategy="ddp", max_steps=6, checkpoint_every=2,
                          grad_accum=2, **extra)
    result = run_cli(tmp_path, data, params, run="run")
    _ok(result)
    assert "resumed from" in result.stderr and "step_00000004.pt" in result.stderr
    net, meta = models.load_model(tmp_path / "run" / "model.pt")
    assert meta["step"] == 6
    assert [int(r["step"]) for r in read_log(tmp_path / "run" / "log.csv")] == [1, 2, 3, 4, 5, 6]


SHARD_REPORT = textwrap.dedent(
    """
    import json, os, sys
    from {pkg}.config import ModelConfig
    from {pkg}.distributed import Dist, wrap
    from {pkg}.models import build_model

    d = Dist(need_group=True)
    net = build_model(ModelConfig(name=sys.argv[1], width=8), 8, 5, 8, 16)
    full = {{n: [p.numel(), p.shape[0]] for n, p in net.named_parameters()}}
    wrap(net, net, "fsdp", d)
    local = {{n: p.to_local().numel() for n, p in net.named_parameters()}}
    with open(os.path.join(sys.argv[2], f"rank{{d.rank}}.json"), "w") as f:
        json.dump({{"full": full, "local": local}}, f)
    d.close()
    """
)


@pytest.mark.parametrize("model", ["unet", "vit"])
def test_fsdp_splits_every_parameter_between_two_ranks(tmp_path, model):
    """distributed.wrap with strategy fsdp, 2 processes: each rank holds part of each parameter, together all."""
    script = tmp_path / "report.py"
    script.write_text(SHARD_REPORT.format(pkg=PACKAGE))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(script), model,
           str(tmp_path)]
    result = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=300)
    _ok(result)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    full = ranks[0]["full"]
    for name, (numel, rows) in full.items():
        parts = [r["local"][name] for r in ranks]
        assert sum(parts) == numel, (name, parts, numel)  # nothing replicated, nothing lost
        if rows > 1:  # sharded along the first dimension
            assert max(parts) < numel, (name, parts, numel)
