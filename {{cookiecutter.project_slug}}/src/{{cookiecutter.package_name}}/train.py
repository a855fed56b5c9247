"""Train the forecast model: one script from 1 CPU to 1000 GPUs; the profile (params.yaml, torchrun) decides.

A torchrun entry point (gloo on CPU, nccl on GPU) that also runs as plain `python -m <package>.train` (1 process).
Global batch = train.batch_size x train.grad_accum x processes.

    # 1 process (CPU or 1 GPU)
    python -m <package>.train --params params.yaml --shards data/shards --stats data/stats.json \\
        --run-dir runs/train --out models/model.pt --log results/train_log.csv

    # one node, G GPUs (or G CPU processes). The `--` keeps torchrun's own parser off the train options (it
    # would take --log for an abbreviation of its --log-dir); `<package> launch` writes these commands for you.
    torchrun --standalone --nproc-per-node G -m <package>.train -- --params params.yaml --shards data/shards \
        --stats data/stats.json --run-dir runs/train --out models/model.pt --log results/train_log.csv

    # Slurm, several nodes (in the batch script; #SBATCH --signal=USR1@300 --requeue: USR1 to the job steps, not
    # B:USR1, which signals only the batch shell)
    head=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
    srun torchrun --nnodes $SLURM_NNODES --nproc-per-node G --rdzv-id $SLURM_JOB_ID \
        --rdzv-backend c10d --rdzv-endpoint $head:29500 --signals-to-handle SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1 \
        -m <package>.train -- --params params.yaml ...

    # PBS, several nodes (one torchrun per node)
    mpiexec -n NODES -ppn 1 torchrun --nnodes NODES --nproc-per-node G --rdzv-id $PBS_JOBID \
        --rdzv-backend c10d --rdzv-endpoint $(head -1 $PBS_NODEFILE):29500 -m <package>.train -- --params ...

Preemption: SIGTERM or SIGUSR1 -> every rank finishes its optimizer step, a checkpoint is written, and the
process exits with REQUEUE_EXIT_CODE (75, EX_TEMPFAIL) after writing <run-dir>/REQUEUE; rerunning the same command
resumes from <run-dir>/checkpoints (newest readable checkpoint; bitwise-identical result on CPU). torchrun itself
reports a failed worker as exit code 1 and forwards SIGUSR1 only when told (--signals-to-handle above), so a job
script that launches through torchrun tests for the REQUEUE file; `<package> launch` does that and returns 75.

Fine-tuning: train.init_from = a checkpoint or models/model.pt (a DVC-tracked file: `dvc pull` it first);
train.freeze = parameter-name prefixes to keep fixed. A checkpoint whose channels, grid or architecture differ is
refused with one error naming each mismatch.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import random
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .checkpoint import atomic_save, load_checkpoint, load_latest, rng_state, save_checkpoint, set_rng_state
from .config import Params, load_params
from .errors import REQUEUE_EXIT_CODE, CheckpointMismatchError, ForgeError
from .models import build_model, rollout_step

LOG_COLUMNS = ("step", "loss", "lr", "grad_norm", "samples_per_s", "data_wait")


# ----------------------------------------------------------------------------------------------------------------
# processes, devices, signals


class Dist:
    """Rank, world size and device of this process; a process group only when there is more than one process
    (or FSDP, which needs one)."""

    def __init__(self, need_group: bool):
        self.rank = int(os.environ.get("RANK", 0))
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        self.local_rank = int(os.environ.get("LOCAL_RANK", 0))
        if torch.cuda.is_available():
            torch.cuda.set_device(self.local_rank)
            self.device = torch.device("cuda", self.local_rank)
        else:
            self.device = torch.device("cpu")
        self.backend = "nccl" if self.device.type == "cuda" else "gloo"
        self.group = False
        if self.world > 1 or need_group:
            if "MASTER_ADDR" in os.environ:
                dist.init_process_group(self.backend, device_id=self.device if self.device.type == "cuda" else None)
            else:  # plain `python -m ...` with FSDP: a 1-process group in memory
                dist.init_process_group(self.backend, store=dist.HashStore(), rank=0, world_size=1)
            self.group = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, value: torch.Tensor) -> torch.Tensor:
        if self.group and self.world > 1:
            dist.all_reduce(value)
        return value

    def barrier(self) -> None:
        if self.group and self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self.group:
            dist.destroy_process_group()


class StopFlag:
    """SIGTERM / SIGUSR1 -> stop after the current optimizer step (all ranks agree, see should_stop)."""

    def __init__(self):
        self.signum = 0
        for sig in (signal.SIGTERM, signal.SIGUSR1):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):  # noqa: ARG002
        self.signum = signum

    def should_stop(self, d: Dist) -> bool:
        flag = torch.tensor([float(self.signum)], device=d.device)
        return bool(d.all_sum(flag).item() > 0)


def set_determinism(seed: int, rank: int, deterministic: bool) -> None:
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # required by deterministic cuBLAS
        if "torch._inductor.config" in sys.modules or not hasattr(torch._C, "_set_deterministic_algorithms"):
            torch.use_deterministic_algorithms(True)
        else:  # the same switch without also configuring the compiler, whose import costs ~4 s per process
            torch._C._set_deterministic_algorithms(True)
        # Determinism does not need uninitialized memory filled with NaN (a debugging aid that made the default
        # UNet ~2x slower on CPU).
        torch.utils.deterministic.fill_uninitialized_memory = False
        torch.backends.cudnn.benchmark = False
    random.seed(seed + rank)
    np.random.seed((seed + rank) % 2**32)  # noqa: NPY002 - the global RNG, for any code that uses it
    torch.manual_seed(seed)  # the same on every rank: identical initial weights


# ----------------------------------------------------------------------------------------------------------------
# data


def open_data(params: Params, shards_dir: Path, stats_path: Path):
    """The training pairs plus what the saved model must remember about them (channels, grid, stats)."""
    import json

    from .data.forcings import FORCING_NAMES
    from .data.loader import WeatherPairs
    from .data.stats import Normalizer, shard_paths

    if not Path(stats_path).exists():
        raise ForgeError(f"{stats_path}: not found. Fix: run the stats step first (dvc repro / snakemake).")
    stats = json.loads(Path(stats_path).read_text())
    step_hours = int(stats["time_step_hours"])
    lead = params.train.lead_hours
    if lead % step_hours:
        raise ForgeError(
            f"params.yaml: train.lead_hours ({lead}) is not a multiple of the data time step "
            f"({step_hours} h in {stats_path}). Fix: set train.lead_hours to a multiple of {step_hours}."
        )
    if stats.get("lead_hours") not in (None, lead):  # diff_std (hence the loss scale) is per model step
        raise ForgeError(
            f"{stats_path}: diff_std was computed for a {stats['lead_hours']} h step but train.lead_hours is {lead}. "
            "Fix: recompute the stats (dvc repro) after changing train.lead_hours."
        )
    normalizer = Normalizer.from_dict(stats)
    dataset = WeatherPairs(
        shard_paths(shards_dir),
        normalizer,
        times_range=tuple(params.data.splits.train),
        lead_steps=lead // step_hours,
        rollout_steps=params.train.rollout_steps,
    )
    if len(dataset) < params.train.batch_size:
        raise ForgeError(
            f"only {len(dataset)} training pairs in {list(params.data.splits.train)} for lead {lead} h and "
            f"{params.train.rollout_steps} rollout steps, fewer than train.batch_size ({params.train.batch_size}). "
            "Fix: widen data.splits.train, shorten train.rollout_steps or lower train.batch_size."
        )
    meta = {
        "model": params.model.model_dump(),
        "channels": list(dataset.channels),
        "forcings": list(FORCING_NAMES),
        "latitude": [float(v) for v in dataset.lat],
        "longitude": [float(v) for v in dataset.lon],
        "stats": stats,
        "time_step_hours": step_hours,
        "lead_hours": lead,
    }
    return dataset, meta, torch.as_tensor(normalizer.delta_scale, dtype=torch.float32)


class BatchStream:
    """Endless micro-batches for this rank, epoch after epoch, resumable at (epoch, index) = micro-batches
    already taken in that epoch (the seeded sampler makes the order a function of seed, epoch and world size)."""

    def __init__(self, dataset, params: Params, d: Dist, epoch: int = 0, index: int = 0):
        self.dataset, self.params, self.d = dataset, params, d
        self.epoch, self.index = epoch, index

    def state(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "world_size": self.d.world}

    def __iter__(self) -> Iterator[dict]:
        from .data.loader import make_loader

        t = self.params.train
        loader = make_loader(
            self.dataset,
            batch_size=t.batch_size,
            seed=self.params.seed,
            rank=self.d.rank,
            world_size=self.d.world,
            num_workers=t.num_workers,
            prefetch=t.prefetch,
            pin_memory=self.d.device.type == "cuda",
            drop_last=True,
        )
        while True:
            # The loader counts this rank's samples; workers (persistent) survive from epoch to epoch.
            loader.sampler.set_epoch(self.epoch, self.index * t.batch_size)
            for batch in loader:
                self.index += 1
                yield batch
            self.epoch, self.index = self.epoch + 1, 0


# ----------------------------------------------------------------------------------------------------------------
# model, loss, optimizer


class RolloutLoss(nn.Module):
    """Latitude-weighted MSE of the normalized change, averaged over train.rollout_steps autoregressive steps.

    One module around the network so DDP sees a single forward per micro-batch even when the rollout calls the
    network several times.
    """

    def __init__(self, net: nn.Module, delta_scale: torch.Tensor, latitude: list[float]):
        super().__init__()
        self.net = net
        self.register_buffer("delta_scale", delta_scale.clone(), persistent=False)
        w = torch.cos(torch.deg2rad(torch.tensor(latitude, dtype=torch.float32))).clamp_min(0)
        self.register_buffer("lat_weight", (w / w.mean())[:, None], persistent=False)

    def forward(self, state: torch.Tensor, forcings: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        z, loss = state, 0.0
        scale = self.delta_scale[:, None, None]
        for r in range(targets.shape[1]):
            z = rollout_step(self.net, z, forcings[:, r], self.delta_scale)
            err = (z.float() - targets[:, r]) / scale
            loss = loss + (err.square() * self.lat_weight).mean()
        return loss / targets.shape[1]


def lr_lambda(t) -> Any:
    """Linear warm-up to train.lr over warmup_steps, then cosine decay to 0 at max_steps."""

    def factor(step: int) -> float:
        if step < t.warmup_steps:
            return (step + 1) / t.warmup_steps
        progress = (step - t.warmup_steps) / max(1, t.max_steps - t.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


# Params that may change between an interrupted run and its resumption (they do not change the maths, or, for
# max_steps, deliberately extend or shorten the schedule). Any other change means "a different run": start fresh.
RESUMABLE_CHANGES = {"train.max_steps", "train.log_every", "train.checkpoint_every", "train.keep_checkpoints",
                     "train.num_workers", "train.prefetch", "train.allow_dirty", "train.strategy",
                     "train.activation_checkpointing", "train.init_from", "train.freeze"}


def resume_conflicts(saved: dict | None, params: Params) -> list[str]:
    """'key: old -> new' for each param that differs from the checkpoint's and matters for training."""
    if saved is None:
        return []
    now = params.model_dump()
    out = []
    for section in ("seed", "data", "model", "train"):
        old, new = saved.get(section), now.get(section)
        if isinstance(new, dict):
            for key in sorted(set(old or {}) | set(new)):
                name = f"{section}.{key}"
                if name not in RESUMABLE_CHANGES and (old or {}).get(key) != new.get(key):
                    out.append(f"{name}: {(old or {}).get(key)!r} -> {new.get(key)!r}")
        elif old != new:
            out.append(f"{section}: {old!r} -> {new!r}")
    return out


def resolve_init_from(spec: str) -> Path:
    path = Path(spec)
    if path.suffix == ".dvc":  # the DVC pointer file was given: use the file it tracks
        path = path.with_suffix("")
    if not path.exists():
        hint = f"run `dvc pull {path}`" if Path(str(path) + ".dvc").exists() else "check the path"
        raise ForgeError(f"params.yaml: train.init_from {spec!r} does not exist. Fix: {hint}.")
    return path


def check_compatible(ckpt: dict, meta: dict, source: str) -> None:
    """One error naming every way the checkpoint differs from this run (channels, grid, architecture)."""
    problems = []
    if list(ckpt.get("channels", [])) != meta["channels"]:
        problems.append(f"channels: checkpoint {ckpt.get('channels')} vs data {meta['channels']}")
    if list(ckpt.get("forcings", [])) != meta["forcings"]:
        problems.append(f"forcings: checkpoint {ckpt.get('forcings')} vs this code {meta['forcings']}")
    for axis in ("latitude", "longitude"):
        a, b = np.asarray(ckpt.get(axis, [])), np.asarray(meta[axis])
        if a.shape != b.shape or not np.allclose(a, b, atol=1e-4):
            problems.append(f"grid {axis}: checkpoint {a.size} points [{_span(a)}] vs data {b.size} [{_span(b)}]")
    arch_then, arch_now = ckpt.get("model", {}), meta["model"]
    for key in sorted(set(arch_then) | set(arch_now)):
        if key == "patch_size" and arch_now.get("name") != "vit" and arch_then.get("name") != "vit":
            continue
        if arch_then.get(key) != arch_now.get(key):
            then, now = arch_then.get(key), arch_now.get(key)
            problems.append(f"architecture model.{key}: checkpoint {then!r} vs params {now!r}")
    if problems:
        raise CheckpointMismatchError(
            f"train.init_from {source} does not match this run: " + "; ".join(problems)
            + ". Fix: set model.* in params.yaml to the checkpoint's values, train on the same channels and grid, "
            "or start from scratch (train.init_from: '')."
        )


def _span(a: np.ndarray) -> str:
    return f"{a.min():.3g}..{a.max():.3g}" if a.size else "none"


def freeze(net: nn.Module, prefixes: list[str]) -> None:
    names = [n for n, _ in net.named_parameters()]
    for prefix in prefixes:
        hits = [n for n in names if n.startswith(prefix)]
        if not hits:
            tops = sorted({n.split(".")[0] for n in names})
            raise ForgeError(
                f"params.yaml: train.freeze prefix {prefix!r} matches no parameter. Fix: use a name prefix such as "
                f"{', '.join(tops)}."
            )
    for name, p in net.named_parameters():
        if any(name.startswith(prefix) for prefix in prefixes):
            p.requires_grad_(False)


def wrap(net: nn.Module, loss_fn: RolloutLoss, strategy: str, d: Dist) -> nn.Module:
    """DDP around the loss module, or FSDP2 (fully_shard) on each block and then the whole network."""
    if strategy == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(d.device.type, (d.world,))
        units = net.fsdp_units() if hasattr(net, "fsdp_units") else []
        for unit in units:
            fully_shard(unit, mesh=mesh)
        fully_shard(net, mesh=mesh)
        return loss_fn
    if d.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [d.device.index] if d.device.type == "cuda" else None
        return DDP(loss_fn, device_ids=ids)
    return loss_fn


def full_state(net: nn.Module, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    """Unsharded model and optimizer state dicts keyed by parameter name (a collective: every rank calls it), so
    a checkpoint from N processes with DDP or FSDP loads into 1 process and vice versa."""
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(net, options=opts), get_optimizer_state_dict(net, optimizer, options=opts)


def load_full_state(net: nn.Module, optimizer: torch.optim.Optimizer | None, model_sd: dict, optim_sd: dict | None):
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True)
    set_model_state_dict(net, model_sd, options=opts)
    if optimizer is not None and optim_sd is not None:
        set_optimizer_state_dict(net, optimizer, optim_sd, options=opts)


# ----------------------------------------------------------------------------------------------------------------
# logging


class Logger:
    """Rank 0 only: CSV rows, a tqdm bar on a terminal or plain lines in batch logs, optional W&B (offline)."""

    def __init__(self, params: Params, path: Path, run_dir: Path, start_step: int, provenance: dict, d: Dist):
        self.on = d.main
        self.path = Path(path)
        self.bar = self.wandb = None
        if not self.on:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rows = []
        if start_step > 0 and self.path.exists():  # resume: keep the rows up to the checkpoint, drop the rest
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= start_step]
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, LOG_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=params.train.max_steps, initial=start_step, desc="train", dynamic_ncols=True)
        if params.wandb.enabled:
            self.wandb = self._start_wandb(params, run_dir, provenance)

    @staticmethod
    def _start_wandb(params: Params, run_dir: Path, provenance: dict):
        try:
            import wandb  # lazily: only runs that log to W&B pay for the import
        except ImportError:
            raise ForgeError(
                "params.yaml: wandb.enabled is true but the wandb package is not installed. "
                "Fix: pip install -e '.[wandb]', or set wandb.enabled: false."
            ) from None

        os.environ.setdefault("WANDB_MODE", params.wandb.mode)  # WANDB_MODE from the environment wins
        wandb_dir = Path(run_dir) / "wandb"
        wandb_dir.mkdir(parents=True, exist_ok=True)
        id_file = Path(run_dir) / "wandb_run_id"  # the same W&B run across requeues
        if not id_file.exists():
            id_file.write_text(uuid.uuid4().hex[:12])
        return wandb.init(
            project=params.wandb.project,
            dir=str(wandb_dir),
            id=id_file.read_text().strip(),
            resume="allow",
            config={"params": params.model_dump(), "provenance": provenance},
        )

    def log(self, row: dict) -> None:
        if not self.on:
            return
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, LOG_COLUMNS).writerow(row)
        text = (f"step {row['step']} loss {row['loss']:.4g} lr {row['lr']:.3g} grad_norm {row['grad_norm']:.3g} "
                f"{row['samples_per_s']:.1f} samples/s data_wait {100 * row['data_wait']:.0f}%")
        if self.bar is not None:
            self.bar.set_postfix_str(text.split(" ", 2)[2])
        else:
            print(text, flush=True)
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])

    def advance(self, n: int = 1) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.wandb is not None:
            self.wandb.finish()


def say(d: Dist, message: str) -> None:
    if d.main:
        print(f"[train] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------------------------
# the run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="train", description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n", 2)[2],
    )
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--shards", default="data/shards", help="directory of block_NNNN.zarr shards")
    parser.add_argument("--stats", default="data/stats.json", help="normalization statistics")
    parser.add_argument("--run-dir", default="runs/train", help="checkpoints, W&B files (resumed from if present)")
    parser.add_argument("--out", default="models/model.pt", help="the trained model")
    parser.add_argument("--log", "--log-csv", dest="log", default="results/train_log.csv",
                        help="per-log-step metrics (CSV); under torchrun write --log-csv (torchrun's own parser "
                        "takes --log for an abbreviation of its --log-dir and stops)")
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:  # `torchrun ... -m <package>.train -- --params ...` passes the separator through
        argv = argv[1:]
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    params = load_params(args.params)
    t = params.train
    from .provenance import collect, ensure_clean_or_allowed

    ensure_clean_or_allowed(t.allow_dirty, "train")
    stop = StopFlag()
    d = Dist(need_group=t.strategy == "fsdp")
    try:
        return _train(args, params, d, stop, collect)
    finally:
        d.close()


def _train(args, params: Params, d: Dist, stop: StopFlag, collect) -> int:
    t = params.train
    run_dir, ckpt_dir = Path(args.run_dir), Path(args.run_dir) / "checkpoints"
    set_determinism(params.seed, d.rank, t.deterministic)
    dataset, meta, delta_scale = open_data(params, Path(args.shards), Path(args.stats))
    provenance = collect(params=params, inputs={args.shards: None, args.stats: None}) if d.main else {}

    n_ch, n_f = len(meta["channels"]), len(meta["forcings"])
    net = build_model(params.model, n_ch + n_f, n_ch, len(meta["latitude"]), len(meta["longitude"]))
    net.checkpointing = t.activation_checkpointing

    resume, resume_path = load_latest(ckpt_dir)
    changed = resume_conflicts(resume.get("params"), params) if resume is not None else []
    if changed:  # e.g. `dvc exp run -S train.lr=...` with runs/train persisted: these checkpoints are another run's
        say(d, f"not resuming from {resume_path}: params changed since ({'; '.join(changed)}); starting fresh, old "
               f"checkpoints moved to {ckpt_dir.with_name('checkpoints.stale')}")
        resume = None
        d.barrier()
        if d.main:
            import shutil

            shutil.rmtree(ckpt_dir.with_name("checkpoints.stale"), ignore_errors=True)
            ckpt_dir.rename(ckpt_dir.with_name("checkpoints.stale"))
        d.barrier()
    if resume is None and t.init_from:  # fine-tune: weights only, the optimizer and schedule start fresh
        source = resolve_init_from(t.init_from)
        init = load_checkpoint(source)
        check_compatible(init, meta, str(source))
        net.load_state_dict(init["state_dict"])
        say(d, f"initialized from {source} (step {init.get('step')})")
    if t.freeze:
        freeze(net, t.freeze)
    net.to(d.device)
    loss_fn = RolloutLoss(net, delta_scale, meta["latitude"]).to(d.device)
    model = wrap(net, loss_fn, t.strategy, d)
    trainable = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=t.lr, weight_decay=t.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(t))

    step, sampler = 0, {"epoch": 0, "index": 0}
    if resume is not None:
        check_compatible(resume, meta, str(resume_path))
        load_full_state(net, optimizer, resume["state_dict"], resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        step = int(resume["step"])
        rngs = resume.get("rng", [])
        if len(rngs) == d.world:
            set_rng_state(rngs[d.rank])
        else:
            say(d, f"resuming on {d.world} processes from a checkpoint made by {len(rngs)}: RNG states re-seeded")
        if resume["sampler"].get("world_size") == d.world:
            sampler = resume["sampler"]
        else:  # another world size: continue from the next epoch (the per-rank order changed anyway)
            sampler = {"epoch": resume["sampler"]["epoch"] + 1, "index": 0}
        say(d, f"resumed from {resume_path} at step {step}")
    del resume

    def checkpoint_state() -> dict:
        model_sd, optim_sd = full_state(net, optimizer)
        rngs = [None] * d.world
        if d.world > 1:
            dist.all_gather_object(rngs, rng_state())
        else:
            rngs = [rng_state()]
        return {**meta, "state_dict": model_sd, "optimizer": optim_sd, "scheduler": scheduler.state_dict(),
                "step": step, "rng": rngs, "sampler": stream.state(), "provenance": provenance,
                "params": params.model_dump()}

    def write_checkpoint() -> None:
        state = checkpoint_state()  # collective
        if d.main:
            save_checkpoint(ckpt_dir, state, step, t.keep_checkpoints)
        d.barrier()

    stream = BatchStream(dataset, params, d, sampler["epoch"], sampler["index"])
    batches = iter(stream)
    logger = Logger(params, Path(args.log), run_dir, step, provenance, d)
    if d.main:
        (run_dir / "REQUEUE").unlink(missing_ok=True)
    global_batch = t.batch_size * t.grad_accum * d.world
    say(d, f"{params.model.name} with {sum(p.numel() for p in net.parameters()):,} parameters, {d.world} "
           f"process(es) on {d.device.type} ({t.strategy}, {t.precision}), global batch {global_batch}, "
           f"steps {step} -> {t.max_steps}")
    autocast = (
        torch.autocast(d.device.type, dtype=torch.bfloat16) if t.precision == "bf16" else nullcontext()
    )
    clip = t.grad_clip if t.grad_clip > 0 else float("inf")
    window = {"loss": torch.zeros(1, device=d.device), "steps": 0, "time": 0.0, "wait": 0.0, "grad_norm": 0.0}

    while step < t.max_steps:
        t0 = time.perf_counter()
        wait = 0.0
        for micro in range(t.grad_accum):
            w0 = time.perf_counter()
            batch = next(batches)
            wait += time.perf_counter() - w0
            state, forcings, targets = (batch[k].to(d.device, non_blocking=True)  # overlaps when pinned
                                        for k in ("state", "forcings", "targets"))
            with _no_sync(model, net, t.strategy, last=micro == t.grad_accum - 1):
                with autocast:
                    loss = model(state, forcings, targets) / t.grad_accum
                loss.backward()
            window["loss"] += loss.detach().float()
        lr = optimizer.param_groups[0]["lr"]  # the rate this step used
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, clip)
        if hasattr(grad_norm, "full_tensor"):  # FSDP: a DTensor
            grad_norm = grad_norm.full_tensor()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        window["steps"] += 1
        window["time"] += time.perf_counter() - t0
        window["wait"] += wait
        window["grad_norm"] = float(grad_norm)
        logger.advance()

        if step % t.log_every == 0 or step == t.max_steps:
            loss_mean = d.all_sum(window["loss"].clone()).item() / d.world / window["steps"]
            logger.log({
                "step": step,
                "loss": loss_mean,
                "lr": lr,
                "grad_norm": window["grad_norm"],
                "samples_per_s": global_batch * window["steps"] / max(window["time"], 1e-9),
                "data_wait": window["wait"] / max(window["time"], 1e-9),
            })
            window = {"loss": torch.zeros(1, device=d.device), "steps": 0, "time": 0.0, "wait": 0.0,
                      "grad_norm": 0.0}

        stopping = stop.should_stop(d)
        if stopping or step % t.checkpoint_every == 0 or step == t.max_steps:
            write_checkpoint()
        if stopping and step < t.max_steps:
            logger.close()
            if d.main:
                (run_dir / "REQUEUE").write_text(f"{step}\n")
            say(d, f"signal {stop.signum}: checkpointed step {step}; exit {REQUEUE_EXIT_CODE} (rerun to resume)")
            return REQUEUE_EXIT_CODE

    logger.close()
    model_sd, _ = full_state(net, optimizer) if t.strategy == "fsdp" else (net.state_dict(), None)
    if d.main:
        out = {**meta, "state_dict": {k: v.detach().cpu() for k, v in model_sd.items()}, "provenance": provenance,
               "step": step}
        atomic_save(out, Path(args.out))
        say(d, f"wrote {args.out} (step {step})")
    d.barrier()
    return 0


def _no_sync(model: nn.Module, net: nn.Module, strategy: str, last: bool):
    """Skip the gradient all-reduce on all but the last micro-batch of an accumulation."""
    if strategy == "fsdp" and hasattr(net, "set_requires_gradient_sync"):
        net.set_requires_gradient_sync(last)
        return nullcontext()
    if not last and hasattr(model, "no_sync"):  # DDP
        return model.no_sync()
    return nullcontext()


if __name__ == "__main__":
    sys.exit(main())
