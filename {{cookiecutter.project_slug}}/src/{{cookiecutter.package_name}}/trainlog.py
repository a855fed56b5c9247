"""What training reports: the CSV log (results/train_log.csv), a progress bar or plain lines, and W&B.

Rank 0 writes; every rank takes part in the sums (Meter.row is a collective).
"""

from __future__ import annotations

import csv
import os
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .config import Params
from .distributed import Dist
from .errors import ForgeError

LOG_COLUMNS = ("step", "loss", "lr", "grad_norm", "samples_per_s", "data_wait", "queue_depth")

# Dense bf16 peak of one GPU (TFLOP/s, vendor datasheets), for MFU; the first name found in the device's name wins.
BF16_PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.0, "H200": 989.0, "GH200": 989.0, "B200": 2250.0,
                    "A100": 312.0, "L40S": 362.0, "A10": 125.0, "L4": 121.0}


def say(d: Dist, message: str) -> None:
    if d.main:
        print(f"[train] {message}", file=sys.stderr, flush=True)


def train_flops_per_sample(build_loss: Callable[[], nn.Module], inputs: dict[str, tuple[int, ...]]) -> float:
    """Model FLOPs of one training sample (forward + backward), counted once on the meta device: no memory, no
    arithmetic, no draw from the RNGs. `build_loss()` makes the loss module; `inputs` are per-sample shapes."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        loss_fn = build_loss()
        args = [torch.zeros(1, *shape) for shape in inputs.values()]
    with FlopCounterMode(display=False) as counter:
        loss_fn(*args).backward()
    return float(counter.get_total_flops())


def peak_flops(device: torch.device, precision: str) -> float | None:
    """The GPU's dense bf16 peak in FLOP/s when training in bf16 on a GPU listed above, else None (no MFU)."""
    if device.type != "cuda" or precision != "bf16":
        return None
    name = torch.cuda.get_device_name(device)
    return next((tflops * 1e12 for key, tflops in BF16_PEAK_TFLOPS.items() if key in name), None)


class Meter:
    """Sums over one log interval: the loss (kept on the device: no sync per step), step and data-wait times.
    With the model's FLOPs per sample, each row also gives achieved TFLOP/s and, against `peak` (FLOP/s per
    process), the model FLOPs utilization."""

    def __init__(self, d: Dist, global_batch: int, flops_per_sample: float | None = None, peak: float | None = None):
        self.d, self.global_batch = d, global_batch
        self.flops_per_sample, self.peak = flops_per_sample, peak
        self.reset()

    def reset(self) -> None:
        self.loss = torch.zeros(1, device=self.d.device)
        self.steps, self.time, self.wait, self.grad_norm = 0, 0.0, 0.0, 0.0

    def add_loss(self, loss: torch.Tensor) -> None:
        self.loss += loss.detach().float()

    def end_step(self, seconds: float, wait: float, grad_norm: torch.Tensor) -> None:
        self.steps += 1
        self.time += seconds
        self.wait += wait
        self.grad_norm = float(grad_norm)

    def row(self, step: int, lr: float) -> dict:
        """The interval's log row (mean loss over ranks and steps), then start a new interval. A collective."""
        loss = self.d.all_sum(self.loss.clone()).item() / self.d.world / self.steps
        samples_per_s = self.global_batch * self.steps / max(self.time, 1e-9)
        row = {"step": step, "loss": loss, "lr": lr, "grad_norm": self.grad_norm, "samples_per_s": samples_per_s,
               "data_wait": self.wait / max(self.time, 1e-9)}
        if self.flops_per_sample:  # not in the CSV: only for the log line and W&B
            row["tflops"] = self.flops_per_sample * samples_per_s / self.d.world / 1e12  # per process
            if self.peak:
                row["mfu"] = row["tflops"] * 1e12 / self.peak
        self.reset()
        return row


class Logger:
    """Rank 0 only: CSV rows, a tqdm bar on a terminal or plain lines in batch logs, optional W&B (offline)."""

    def __init__(self, params: Params, path: Path, run_dir: Path, start_step: int, provenance: dict, d: Dist):
        self.on = d.main
        self.path = Path(path)
        self.bar = self.wandb = None
        if not self.on:
            return
        self._keep_rows_up_to(start_step)
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=params.train.max_steps, initial=start_step, desc="train", dynamic_ncols=True)
        if params.wandb.enabled:
            self.wandb = start_wandb(params, run_dir, provenance)

    def _keep_rows_up_to(self, step: int) -> None:
        """A fresh log, or on resume the rows up to the checkpoint (the rest are redone)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rows = []
        if step > 0 and self.path.exists():
            with open(self.path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= step]
        with open(self.path, "w", newline="") as f:
            writer = csv.DictWriter(f, LOG_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    def log(self, row: dict) -> None:
        if not self.on:
            return
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, LOG_COLUMNS, extrasaction="ignore").writerow(row)
        text = (f"step {row['step']} loss {row['loss']:.4g} lr {row['lr']:.3g} grad_norm {row['grad_norm']:.3g} "
                f"{row['samples_per_s']:.1f} samples/s data_wait {100 * row['data_wait']:.0f}% "
                f"queue {row.get('queue_depth', 0):.1f}")
        if "tflops" in row:
            text += f" {row['tflops']:.1f} TFLOP/s per process"
        if "mfu" in row:
            text += f" MFU {100 * row['mfu']:.1f}%"
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


def start_wandb(params: Params, run_dir: Path, provenance: dict):
    """A W&B run inside the run folder, the same one across requeues (its id is kept in <run-dir>/wandb_run_id)."""
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
    id_file = Path(run_dir) / "wandb_run_id"
    if not id_file.exists():
        id_file.write_text(uuid.uuid4().hex[:12])
    return wandb.init(
        project=params.wandb.project,
        dir=str(wandb_dir),
        id=id_file.read_text().strip(),
        resume="allow",
        config={"params": params.model_dump(), "provenance": provenance},
    )
