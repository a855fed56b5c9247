"""Training checkpoints: atomic writes with a checksum, keep the last K, resume from the newest good one, and the
checks that decide whether a checkpoint may be resumed (same run) or fine-tuned from (same channels/grid/model).

A checkpoint is a ModelFile (modelfile.py) plus the training state, stored as tensors, numbers, strings, lists
and dicts so that `torch.load(weights_only=True)` reads it (RNG states are converted to tensors here). A damaged
newest checkpoint is never resumed silently: it is skipped with a warning naming it, and the one before is used.
"""

from __future__ import annotations

import random
import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import Params
from .distributed import Dist, load_full_state
from .errors import CheckpointMismatchError, ForgeError, IntegrityError
from .inference import grid_mismatches
from .modelfile import ModelFile, load_checked, save_checked
from .trainlog import say

CHECKPOINT_RE = re.compile(r"^step_(\d{8})\.pt$")
CHECKPOINT_FIX = "rerun the same command: training resumes from the checkpoint before it"

# Params that may change between an interrupted run and its resumption: they do not change the maths. Any other
# change means "a different run": start fresh. train.max_steps is not one of them: the learning-rate schedule
# depends on it, so a resumed run would differ from the fresh run a reviewer's clone makes, and a checkpoint past
# the new max_steps would hand back the longer run's model as if it were the shorter one.
RESUMABLE_CHANGES = ("train.log_every", "train.checkpoint_every", "train.keep_checkpoints",
                     "train.num_workers", "train.prefetch", "train.allow_dirty", "train.strategy",
                     "train.activation_checkpointing", "train.init_from", "train.freeze", "train.compile")
RESUME_KEYS = ("seed", "data", "model", "train")  # the sections that define a training run


@dataclass
class Checkpoint:
    """What a rerun needs to continue bit for bit: the model file plus optimizer, schedule, RNGs and data order."""

    model: ModelFile
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: list[dict]  # one rng_state() per rank
    sampler: dict[str, int]  # BatchStream.state(): epoch, index, world_size
    params: dict[str, Any]  # params.model_dump(mode="json") of the run

    def to_dict(self) -> dict[str, Any]:
        return {**self.model.to_dict(), "optimizer": self.optimizer, "scheduler": self.scheduler, "rng": self.rng,
                "sampler": self.sampler, "params": self.params}

    @classmethod
    def from_dict(cls, blob: dict, path: Path | str) -> Checkpoint:
        return cls(ModelFile.from_dict(blob, path), blob["optimizer"], blob["scheduler"], blob.get("rng", []),
                   blob["sampler"], blob.get("params", {}))


# ----------------------------------------------------------------------------------------------------------------
# files


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoints in `directory`, newest (highest step) first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := CHECKPOINT_RE.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def save_checkpoint(directory: Path, state: dict, step: int, keep: int) -> Path:
    """Write step_XXXXXXXX.pt atomically with its checksum, then delete all but the `keep` newest checkpoints and
    temp files left by a job killed mid-write."""
    directory = Path(directory)
    path = directory / f"step_{step:08d}.pt"
    save_checked(state, path)
    for old in list_checkpoints(directory)[keep:]:
        old.unlink(missing_ok=True)
    for tmp in directory.glob(".step_*.pt.tmp*"):
        tmp.unlink(missing_ok=True)
    return path


def load_latest(directory: Path, map_location: str | torch.device = "cpu") -> tuple[dict | None, Path | None]:
    """The newest checkpoint whose checksum holds. A damaged one (truncated, garbled) is skipped with a warning
    naming it; if every checkpoint is damaged that is an error (resuming from none would silently start over)."""
    damaged = []
    for path in list_checkpoints(directory):
        try:
            state = load_checked(path, map_location, CHECKPOINT_FIX)
        except IntegrityError as exc:
            damaged.append(path.name)
            warnings.warn(f"skipping damaged checkpoint {exc}", stacklevel=2)
            continue
        return state, path
    if damaged:
        raise IntegrityError(f"{directory}: every checkpoint is damaged ({', '.join(damaged)}). Fix: restore them "
                             f"from a backup, or delete {directory} to train from scratch.")
    return None, None


# ----------------------------------------------------------------------------------------------------------------
# may this checkpoint be resumed / fine-tuned from?


def resume_conflicts(saved_params: dict, params: Params) -> list[str]:
    """'key: old -> new' for each param that differs from the checkpoint's and matters for training."""
    from .provenance import param_differences

    return [f"{key}: {old!r} -> {new!r}" for key, old, new in param_differences(saved_params, params, RESUME_KEYS)
            if key not in RESUMABLE_CHANGES]


def set_aside(ckpt_dir: Path) -> Path:
    """Move another run's checkpoints to <ckpt_dir>.stale (replacing older stale ones); return the new place."""
    stale = ckpt_dir.with_name(f"{ckpt_dir.name}.stale")
    shutil.rmtree(stale, ignore_errors=True)
    ckpt_dir.rename(stale)
    return stale


def resolve_init_from(spec: str) -> Path:
    """train.init_from as an existing file (a .dvc pointer means the file it tracks)."""
    path = Path(spec)
    if path.suffix == ".dvc":
        path = path.with_suffix("")
    if not path.is_file():
        hint = f"run `dvc pull {path}`" if Path(f"{path}.dvc").exists() else "check the path, or set it to ''"
        raise ForgeError(f"params.yaml: train.init_from {spec!r} does not exist. Fix: {hint}.")
    return path


def check_compatible(saved: ModelFile, run: ModelFile, source: str) -> None:
    """One error naming every way the checkpoint differs from this run (channels, grid, static inputs, architecture).
    The static fields' names must agree (they are input channels of the first layer); their values may differ, so
    a model can be fine-tuned on a better land-sea mask or orography."""
    grid = lambda f: {"channels": f.channels, "latitude": f.latitude, "longitude": f.longitude}  # noqa: E731
    problems = grid_mismatches(grid(saved), grid(run), "checkpoint", "data")
    if list(saved.forcings) != list(run.forcings):
        problems.append(f"forcings: checkpoint {saved.forcings} vs this code {run.forcings}")
    if list(saved.static) != list(run.static):
        problems.append(f"static inputs (data.static): checkpoint {list(saved.static)} vs params {list(run.static)}")
    then, now = saved.config().model_dump(), run.config().model_dump()
    for key in sorted(set(then) | set(now)):
        if key == "patch_size" and "vit" not in (then["name"], now["name"]):
            continue  # only the ViT has patches
        if then.get(key) != now.get(key):
            problems.append(f"architecture model.{key}: checkpoint {then.get(key)!r} vs params {now.get(key)!r}")
    if problems:
        raise CheckpointMismatchError(
            f"train.init_from {source} does not match this run: " + "; ".join(problems)
            + ". Fix: set model.* and data.static in params.yaml to the checkpoint's values, train on the same "
            "channels and grid, or start from scratch (train.init_from: '')."
        )


# ----------------------------------------------------------------------------------------------------------------
# resuming


def find_resume(ckpt_dir: Path, params: Params, d: Dist) -> tuple[Checkpoint | None, Path | None]:
    """The newest good checkpoint of this run, or None. Checkpoints made with other params (e.g. `dvc exp run -S
    train.lr=...` with runs/train persisted) are another run's: they are set aside and training starts fresh."""
    blob, path = load_latest(ckpt_dir)
    if blob is None:
        return None, None
    resume = Checkpoint.from_dict(blob, path)
    changed = resume_conflicts(resume.params, params)
    if not changed:
        return resume, path
    d.barrier()
    if d.main:
        stale = set_aside(ckpt_dir)
        say(d, f"not resuming from {path}: params changed since ({'; '.join(changed)}); starting fresh, old "
               f"checkpoints moved to {stale}")
    d.barrier()
    return None, None


def restore(resume: Checkpoint, net, optimizer, scheduler, d: Dist) -> tuple[int, dict]:
    """Put the checkpoint's weights, optimizer, schedule and RNGs back; (step, sampler position) to continue at."""
    load_full_state(net, optimizer, resume.model.state_dict, resume.optimizer)
    scheduler.load_state_dict(resume.scheduler)
    if len(resume.rng) == d.world:
        set_rng_state(resume.rng[d.rank])
    else:
        say(d, f"resuming on {d.world} processes from a checkpoint made by {len(resume.rng)}: RNG states re-seeded")
    if resume.sampler.get("world_size") == d.world:
        return resume.model.step, resume.sampler
    return resume.model.step, {"epoch": resume.sampler["epoch"] + 1, "index": 0}  # the per-rank order changed


# ----------------------------------------------------------------------------------------------------------------
# RNG states as tensors / plain values (weights_only-loadable)


def rng_state() -> dict:
    _, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    version, py_state, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached": float(cached)},
        "python": {"version": int(version), "state": torch.tensor(py_state, dtype=torch.int64), "gauss": gauss},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    np_state = state["numpy"]
    np.random.set_state(  # noqa: NPY002 - restoring the global RNG is the point
        ("MT19937", np_state["keys"].numpy().astype(np.uint32), np_state["pos"], np_state["has_gauss"],
         np_state["cached"])
    )
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())
