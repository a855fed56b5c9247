"""Train the forecast model: one script from 1 CPU to 1000 GPUs; the profile (params.yaml, torchrun) decides.

A torchrun entry point (gloo on CPU, nccl on GPU) that also runs as plain `python -m <package>.train` (1 process);
`<package> launch` starts it the way the machine needs (torchrun, srun, mpiexec: see launch.py for the commands).
Global batch = train.batch_size x train.grad_accum x processes.

    python -m <package>.train --params params.yaml --shards data/shards --stats data/stats.json \\
        --run-dir runs/train --out models/model.pt --log results/train_log.csv

Preemption: SIGTERM or SIGUSR1 -> every rank finishes its optimizer step, a checkpoint is written, and the
process exits with REQUEUE_EXIT_CODE (75, EX_TEMPFAIL) after writing <run-dir>/REQUEUE; rerunning the same command
resumes from <run-dir>/checkpoints (the newest checkpoint whose checksum holds; bitwise-identical result on CPU).
One run at a time per run folder (<run-dir>/.lock); torchrun workers die with torchrun (lifetime.py).

Fine-tuning: train.init_from = a checkpoint or models/model.pt (a DVC-tracked file: `dvc pull` it first);
train.freeze = parameter-name prefixes to keep fixed. A checkpoint whose channels, grid or architecture differ is
refused with one error naming each mismatch.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from . import checkpoint as ckpt
from .config import Params, load_params
from .distributed import Dist, StopFlag, full_state, no_sync, set_determinism, wrap
from .errors import REQUEUE_EXIT_CODE, ForgeError
from .lifetime import RunLock, die_with_torchrun
from .modelfile import ModelFile
from .models import rollout_step, with_static
from .trainlog import Logger, Meter, peak_flops, say, train_flops_per_sample

# ----------------------------------------------------------------------------------------------------------------
# data


def open_data(params: Params, shards_dir: Path, stats_path: Path) -> tuple[object, ModelFile, torch.Tensor]:
    """The training pairs, the model file to fill (channels, grid, stats, static fields: all but the weights), and
    the per-channel scale of the normalized change."""
    from .data.forcings import FORCING_NAMES
    from .data.loader import WeatherPairs
    from .data.statics import static_inputs
    from .data.stats import Normalizer, shard_paths
    from .integrity import read_stats

    stats = read_stats(stats_path)
    step_hours, lead = stats["time_step_hours"], params.train.lead_hours
    if lead % step_hours:
        raise ForgeError(f"params.yaml: train.lead_hours ({lead}) is not a multiple of the data time step "
                         f"({step_hours} h in {stats_path}). Fix: set train.lead_hours to a multiple of {step_hours}.")
    if stats.get("lead_hours") not in (None, lead):  # diff_std (hence the loss scale) is per model step
        raise ForgeError(f"{stats_path}: diff_std was computed for a {stats['lead_hours']} h step but "
                         f"train.lead_hours is {lead}. Fix: recompute the stats (dvc repro) after changing it.")
    normalizer = Normalizer.from_dict(stats)
    t = params.train
    dataset = WeatherPairs(shard_paths(shards_dir), normalizer, times_range=tuple(params.data.splits.train),
                           lead_steps=lead // step_hours, rollout_steps=t.rollout_steps)
    if len(dataset) < t.batch_size:
        raise ForgeError(
            f"only {len(dataset)} training pairs in {list(params.data.splits.train)} for lead {lead} h and "
            f"{t.rollout_steps} rollout steps, fewer than train.batch_size ({t.batch_size}). "
            "Fix: widen data.splits.train, shorten train.rollout_steps or lower train.batch_size."
        )
    # constant in time: read once here (not per sample by the loader) and appended to every input by the model
    static, static_fields = static_inputs(params, shards_dir, dataset.lat, dataset.lon)
    spec = ModelFile(model=params.model.model_dump(), channels=list(dataset.channels), forcings=list(FORCING_NAMES),
                     latitude=[float(v) for v in dataset.lat], longitude=[float(v) for v in dataset.lon],
                     stats=stats, time_step_hours=step_hours, lead_hours=lead, static=static,
                     static_fields=torch.from_numpy(static_fields))
    return dataset, spec, torch.as_tensor(normalizer.delta_scale, dtype=torch.float32)


class BatchStream:
    """Endless micro-batches for this rank, epoch after epoch, resumable at (epoch, index) = micro-batches
    already taken in that epoch (the seeded sampler makes the order a function of seed, epoch and world size)."""

    def __init__(self, dataset, params: Params, d: Dist, epoch: int = 0, index: int = 0):
        self.dataset, self.params, self.d = dataset, params, d
        self.epoch, self.index = epoch, index
        self.loader = None  # made on the first iteration

    def queue_depth(self) -> float:
        """Batches the loader had ready when the loop asked, averaged since the last call (0 before it started)."""
        return self.loader.stats(reset=True)["queue_depth"] if self.loader is not None else 0.0

    def state(self) -> dict:
        return {"epoch": self.epoch, "index": self.index, "world_size": self.d.world}

    def __iter__(self) -> Iterator[dict]:
        from .data.loader import make_loader

        t = self.params.train
        loader = self.loader = make_loader(
            self.dataset, batch_size=t.batch_size, seed=self.params.seed, rank=self.d.rank, world_size=self.d.world,
            num_workers=t.num_workers, prefetch=t.prefetch, pin_memory=self.d.device.type == "cuda", drop_last=True)
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
    network several times. `net` is the network as `with_static` wraps it: the static fields join every step's
    input, the targets and the loss are the state's channels only.
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


def lr_lambda(t):
    """Linear warm-up to train.lr over warmup_steps, then cosine decay to 0 at max_steps."""

    def factor(step: int) -> float:
        if step < t.warmup_steps:
            return (step + 1) / t.warmup_steps
        progress = (step - t.warmup_steps) / max(1, t.max_steps - t.warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def flops_per_sample(spec: ModelFile, delta_scale: torch.Tensor, rollout_steps: int) -> float:
    """Forward + backward FLOPs of RolloutLoss for one sample (counted on the meta device, once)."""
    c, f, r = len(spec.channels), len(spec.forcings), rollout_steps
    h, w = len(spec.latitude), len(spec.longitude)

    def loss_module() -> RolloutLoss:
        net = with_static(spec.network(), spec.static_fields.to("meta"))
        return RolloutLoss(net, delta_scale.to("meta"), spec.latitude)

    return train_flops_per_sample(loss_module, {"state": (c, h, w), "forcings": (r, f, h, w), "targets": (r, c, h, w)})


def freeze(net: nn.Module, prefixes: list[str]) -> None:
    names = [n for n, _ in net.named_parameters()]
    for prefix in prefixes:
        if not any(n.startswith(prefix) for n in names):
            tops = sorted({n.split(".")[0] for n in names})
            raise ForgeError(f"params.yaml: train.freeze prefix {prefix!r} matches no parameter. Fix: use a name "
                             f"prefix such as {', '.join(tops)}.")
    for name, p in net.named_parameters():
        if any(name.startswith(prefix) for prefix in prefixes):
            p.requires_grad_(False)


# ----------------------------------------------------------------------------------------------------------------
# the run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from .cliargs import parser as cli_parser

    parser = cli_parser("train", __doc__, "params", "shards", "stats")
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
    die_with_torchrun()  # first: a worker whose torchrun is killed must not train on alone
    args = parse_args(argv)
    params = load_params(args.params)
    from .provenance import ensure_clean_or_allowed

    ensure_clean_or_allowed(params.train.allow_dirty, "train")
    lock = RunLock(args.run_dir)
    if int(os.environ.get("RANK", 0)) == 0 and not lock.held_by_launcher():
        lock.acquire()  # before anything in the run folder is read or written
    try:
        stop = StopFlag()
        d = Dist(need_group=params.train.strategy == "fsdp")
        try:
            return train(args, params, d, stop)
        finally:
            d.close()
    finally:
        lock.release()


@dataclass
class Run:
    """What the training loop works on."""

    params: Params
    d: Dist
    spec: ModelFile  # the model file being trained: all but weights, step and provenance
    provenance: dict
    net: nn.Module  # the network (sharded in place under FSDP)
    model: nn.Module  # what computes the loss: RolloutLoss around net, under DDP with several processes
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    stream: BatchStream
    run_dir: Path
    step: int = 0
    flops_per_sample: float | None = None  # model FLOPs of one sample, forward + backward


def setup(args: argparse.Namespace, params: Params, d: Dist) -> Run:
    """Data, network (fresh, fine-tuned from train.init_from, or resumed), loss, optimizer and schedule."""
    t, run_dir = params.train, Path(args.run_dir)
    set_determinism(params.seed, d.rank, t.deterministic)
    dataset, spec, delta_scale = open_data(params, Path(args.shards), Path(args.stats))
    from .provenance import collect

    provenance = collect(params=params, inputs={args.shards: None, args.stats: None}) if d.main else {}
    init_from = ckpt.resolve_init_from(t.init_from) if t.init_from else None  # checked even when resuming
    net = spec.network()
    net.checkpointing = t.activation_checkpointing
    resume, resume_path = ckpt.find_resume(run_dir / "checkpoints", params, d)
    if resume is None and init_from is not None:  # fine-tune: weights only, the optimizer and schedule start fresh
        init = ModelFile.load(init_from, fix="check train.init_from, or restore that file")
        ckpt.check_compatible(init, spec, str(init_from))
        net.load_state_dict(init.state_dict)
        say(d, f"initialized from {init_from} (step {init.step})")
    if t.freeze:
        freeze(net, t.freeze)
    cuda = d.device.type == "cuda"
    # NHWC is the layout of cuDNN's tensor-core convolutions; on CPU the default layout keeps results bitwise.
    net.to(d.device, memory_format=torch.channels_last if cuda and t.strategy == "ddp" else torch.preserve_format)
    loss_fn = RolloutLoss(with_static(net, spec.static_fields), delta_scale, spec.latitude)
    model = wrap(net, loss_fn.to(d.device), t.strategy, d)
    if t.compile:
        model.compile()  # in place: the network's parameter names (and so the checkpoints) do not change
    trainable = [p for p in net.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=t.lr, weight_decay=t.weight_decay, fused=True if cuda else None)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(t))
    step, sampler = 0, {"epoch": 0, "index": 0}
    if resume is not None:
        ckpt.check_compatible(resume.model, spec, str(resume_path))
        step, sampler = ckpt.restore(resume, net, optimizer, scheduler, d)
        say(d, f"resumed from {resume_path} at step {step}")
    stream = BatchStream(dataset, params, d, sampler["epoch"], sampler["index"])
    flops = flops_per_sample(spec, delta_scale, t.rollout_steps) if cuda else None  # for MFU in the log
    return Run(params, d, spec, provenance, net, model, optimizer, scheduler, stream, run_dir, step, flops)


def train_step(run: Run, batches: Iterator[dict], meter: Meter) -> float:
    """One optimizer step over train.grad_accum micro-batches; returns the learning rate it used."""
    t, d = run.params.train, run.d
    autocast = torch.autocast(d.device.type, dtype=torch.bfloat16) if t.precision == "bf16" else nullcontext()
    t0, wait = time.perf_counter(), 0.0
    for micro in range(t.grad_accum):
        w0 = time.perf_counter()
        batch = next(batches)
        wait += time.perf_counter() - w0
        state, forcings, targets = (batch[k].to(d.device, non_blocking=True)  # overlaps when pinned
                                    for k in ("state", "forcings", "targets"))
        with no_sync(run.model, run.net, t.strategy, last=micro == t.grad_accum - 1):
            with autocast:
                loss = run.model(state, forcings, targets) / t.grad_accum
            loss.backward()
        meter.add_loss(loss)
    lr = run.optimizer.param_groups[0]["lr"]
    trainable = [p for p in run.net.parameters() if p.requires_grad]
    grad_norm = torch.nn.utils.clip_grad_norm_(trainable, t.grad_clip if t.grad_clip > 0 else float("inf"))
    if hasattr(grad_norm, "full_tensor"):  # FSDP: a DTensor
        grad_norm = grad_norm.full_tensor()
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    run.step += 1
    meter.end_step(time.perf_counter() - t0, wait, grad_norm)
    return lr


def save_checkpoint(run: Run) -> None:
    """<run-dir>/checkpoints/step_N.pt: a collective (the state is gathered from every rank), rank 0 writes."""
    model_sd, optim_sd = full_state(run.net, run.optimizer)
    state = ckpt.Checkpoint(run.spec.with_weights(model_sd, run.step, run.provenance), optim_sd,
                            run.scheduler.state_dict(), run.d.all_gather(ckpt.rng_state()), run.stream.state(),
                            run.params.model_dump(mode="json"))
    if run.d.main:
        ckpt.save_checkpoint(run.run_dir / "checkpoints", state.to_dict(), run.step, run.params.train.keep_checkpoints)
    run.d.barrier()


def save_model(run: Run, out: Path) -> None:
    """models/model.pt: the trained weights (gathered under FSDP) with the model file's contract."""
    if run.params.train.strategy == "fsdp":
        model_sd, _ = full_state(run.net, run.optimizer)  # a collective
    else:
        model_sd = run.net.state_dict()
    if run.d.main:
        weights = {k: v.detach().cpu() for k, v in model_sd.items()}
        run.spec.with_weights(weights, run.step, run.provenance).save(out)
        say(run.d, f"wrote {out} (step {run.step})")
    run.d.barrier()


def train(args: argparse.Namespace, params: Params, d: Dist, stop: StopFlag) -> int:
    """The loop: step, log, checkpoint; on a signal checkpoint and exit REQUEUE_EXIT_CODE; else write the model."""
    t = params.train
    run = setup(args, params, d)
    logger = Logger(params, Path(args.log), run.run_dir, run.step, run.provenance, d)
    if d.main:
        (run.run_dir / "REQUEUE").unlink(missing_ok=True)
    global_batch = t.batch_size * t.grad_accum * d.world
    say(d, f"{params.model.name} with {sum(p.numel() for p in run.net.parameters()):,} parameters, {d.world} "
           f"process(es) on {d.device.type} ({t.strategy}, {t.precision}), global batch {global_batch}, "
           f"steps {run.step} -> {t.max_steps}")
    batches = iter(run.stream)
    meter = Meter(d, global_batch, run.flops_per_sample, peak_flops(d.device, t.precision))
    while run.step < t.max_steps:
        lr = train_step(run, batches, meter)
        logger.advance()
        if run.step % t.log_every == 0 or run.step == t.max_steps:
            logger.log({**meter.row(run.step, lr), "queue_depth": run.stream.queue_depth()})
        stopping = stop.should_stop(d)
        if stopping or run.step % t.checkpoint_every == 0 or run.step == t.max_steps:
            save_checkpoint(run)
        if stopping and run.step < t.max_steps:
            logger.close()
            if d.main:
                (run.run_dir / "REQUEUE").write_text(f"{run.step}\n")
            say(d, f"signal {stop.signum}: checkpointed step {run.step}; exit {REQUEUE_EXIT_CODE} (rerun to resume)")
            return REQUEUE_EXIT_CODE
    logger.close()
    save_model(run, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
