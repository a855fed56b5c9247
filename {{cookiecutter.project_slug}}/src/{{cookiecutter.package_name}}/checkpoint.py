"""Training checkpoints: atomic writes, keep the last K, resume from the newest readable one.

Everything is stored as tensors, numbers, strings, lists and dicts so that `torch.load(weights_only=True)` reads
it (no pickled objects): RNG states are converted to tensors here.
"""

from __future__ import annotations

import os
import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_RE = re.compile(r"^step_(\d{8})\.pt$")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some filesystems do not allow opening a directory
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temp file in the same directory, fsync, then rename: readers see the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)


def list_checkpoints(directory: Path) -> list[Path]:
    """Checkpoints in `directory`, newest (highest step) first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := CHECKPOINT_RE.match(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def save_checkpoint(directory: Path, state: dict, step: int, keep: int) -> Path:
    """Write step_XXXXXXXX.pt atomically, then delete all but the `keep` newest checkpoints and stale temp files."""
    directory = Path(directory)
    path = directory / f"step_{step:08d}.pt"
    atomic_save(state, path)
    for old in list_checkpoints(directory)[keep:]:
        old.unlink(missing_ok=True)
    for tmp in directory.glob(".step_*.pt.tmp*"):  # left behind by a job killed mid-write
        if tmp.name != f".{path.name}.tmp{os.getpid()}":
            tmp.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict:
    return torch.load(Path(path), map_location=map_location, weights_only=True)


def load_latest(directory: Path, map_location: str | torch.device = "cpu") -> tuple[dict | None, Path | None]:
    """The newest checkpoint that loads; an unreadable one (e.g. truncated) is skipped with a warning."""
    for path in list_checkpoints(directory):
        try:
            return load_checkpoint(path, map_location), path
        except Exception as exc:  # noqa: BLE001 - any failure to read means: try the next older one
            warnings.warn(f"skipping unreadable checkpoint {path}: {type(exc).__name__}: {exc}", stacklevel=2)
    return None, None


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
