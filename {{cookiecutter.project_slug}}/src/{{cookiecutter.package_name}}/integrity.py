"""Checksums written with the files a run reads back (stats.json, checkpoints, models/model.pt), checked on read.

A damaged file (a partial copy, a filesystem fault, a hand edit) must stop the run with a message naming the file,
not train or score silently on wrong numbers. The checksum covers the *content* (values, shapes, dtypes, keys), so
it does not depend on how torch or json happen to lay the bytes out:

  JSON   {"...": ..., "sha256": sha256 of the canonical JSON of everything else}
  torch  {"...": ..., "sha256": tree_sha256(everything else)}: tensors hashed by dtype, shape and bytes
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

from .errors import IntegrityError
from .fileio import atomic_write_text

CHECKSUM_KEY = "sha256"


# ----------------------------------------------------------------------------------------------------------------
# JSON files (stats.json)


def _canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def json_sha256(obj: dict) -> str:
    """The checksum of a JSON mapping, ignoring its own checksum entry."""
    return hashlib.sha256(_canonical_json({k: v for k, v in obj.items() if k != CHECKSUM_KEY})).hexdigest()


def write_json_with_checksum(path: Path | str, obj: dict) -> None:
    """Write `obj` as indented JSON with a "sha256" entry over its content, atomically."""
    body = {k: v for k, v in obj.items() if k != CHECKSUM_KEY}
    atomic_write_text(path, json.dumps({**body, CHECKSUM_KEY: json_sha256(body)}, indent=1) + "\n")


def read_json_checked(path: Path | str, fix: str) -> dict:
    """A JSON mapping whose "sha256" entry matches its content; else IntegrityError naming the file and `fix`."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise IntegrityError(f"{path}: not found. Fix: {fix}.") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IntegrityError(f"{path}: not valid JSON ({exc}); the file is damaged. Fix: {fix}.") from None
    if not isinstance(obj, dict):
        raise IntegrityError(f"{path}: expected a JSON object, found {type(obj).__name__}. Fix: {fix}.")
    stored = obj.get(CHECKSUM_KEY)
    if stored is None:
        raise IntegrityError(f"{path}: has no {CHECKSUM_KEY!r} checksum (written by an older version, or by hand). "
                             f"Fix: {fix}.")
    if stored != json_sha256(obj):
        raise IntegrityError(f"{path}: its content does not match the checksum written with it (the file was "
                             f"damaged or edited). Fix: {fix}.")
    return {k: v for k, v in obj.items() if k != CHECKSUM_KEY}


STATS_FIX = ("recompute it (`dvc repro stats`, or `snakemake --forcerun stats`), or restore it with "
             "`dvc checkout data/stats.json`")


def read_stats(path: Path | str) -> dict:
    """stats.json, checked: its checksum, and per channel a finite mean and a finite positive std and diff_std."""
    stats = read_json_checked(path, STATS_FIX)
    channels = stats.get("channels")
    if not isinstance(channels, list) or not channels:
        raise IntegrityError(f"{path}: 'channels' is missing or empty. Fix: {STATS_FIX}.")
    for key in ("mean", "std", "diff_std"):
        values = stats.get(key)
        if not isinstance(values, list) or len(values) != len(channels):
            raise IntegrityError(f"{path}: {key!r} must list one number per channel ({len(channels)}). "
                                 f"Fix: {STATS_FIX}.")
        bad = [c for c, v in zip(channels, values, strict=True)
               if not isinstance(v, (int, float)) or not math.isfinite(v) or (key != "mean" and v <= 0)]
        if bad:
            raise IntegrityError(f"{path}: {key!r} is not a finite{'' if key == 'mean' else ' positive'} number "
                                 f"for {', '.join(bad)}. Fix: {STATS_FIX}.")
    step = stats.get("time_step_hours")
    if not isinstance(step, int) or step <= 0:
        raise IntegrityError(f"{path}: 'time_step_hours' must be a positive whole number, not {step!r}. "
                             f"Fix: {STATS_FIX}.")
    return stats


# ----------------------------------------------------------------------------------------------------------------
# torch payloads (checkpoints, models/model.pt)


def tree_sha256(obj: Any) -> str:
    """sha256 of a nested structure of dicts, lists, tuples, tensors, numbers, strings and None.

    Tensors contribute dtype, shape and raw bytes (hashed without a copy where they are contiguous on the CPU);
    dict entries are taken in key order, so the digest is the same before a save and after a load.
    """
    digest = hashlib.sha256()
    _feed(digest, obj)
    return digest.hexdigest()


def _feed(digest, obj: Any) -> None:
    import torch

    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        digest.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        if t.numel():
            digest.update(t.reshape(-1).view(torch.uint8).numpy().data)
    elif isinstance(obj, dict):
        digest.update(f"D{len(obj)}".encode())
        for key in sorted(obj, key=repr):
            digest.update(f"K{key!r}".encode())
            _feed(digest, obj[key])
    elif isinstance(obj, (list, tuple)):
        digest.update(f"L{len(obj)}".encode())
        for item in obj:
            _feed(digest, item)
    elif obj is None or isinstance(obj, (bool, int, float, str)):
        digest.update(f"S{type(obj).__name__}:{obj!r};".encode())
    else:  # weights_only files hold nothing else
        raise TypeError(f"cannot checksum a {type(obj).__name__}")


def with_checksum(payload: dict) -> dict:
    """`payload` plus its "sha256" entry, for torch.save."""
    body = {k: v for k, v in payload.items() if k != CHECKSUM_KEY}
    return {**body, CHECKSUM_KEY: tree_sha256(body)}


def verified(blob: Any, path: Path | str, fix: str) -> dict:
    """The loaded payload without its checksum, if the checksum matches; else IntegrityError naming the file."""
    if not isinstance(blob, dict) or CHECKSUM_KEY not in blob:
        raise IntegrityError(f"{path}: has no {CHECKSUM_KEY!r} checksum (written by an older version, or not this "
                             f"project's file). Fix: {fix}.")
    body = {k: v for k, v in blob.items() if k != CHECKSUM_KEY}
    if blob[CHECKSUM_KEY] != tree_sha256(body):
        raise IntegrityError(f"{path}: its content does not match the checksum written with it (the file is "
                             f"damaged: a partial copy, a disk or transfer fault). Fix: {fix}.")
    return body
