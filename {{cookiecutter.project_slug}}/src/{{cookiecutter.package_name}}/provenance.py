"""Tie every artifact to the code, params, data and machine that made it.

`collect()` returns one JSON-able dict (the "stamp") that goes into shard attrs, checkpoints, the W&B config,
`results/provenance.json` and the report. `ensure_clean_or_allowed()` is the guard that makes `train` and
`evaluate` refuse uncommitted code. The parts live in their own modules and are re-exported here:
  gitstate.py     commit, branch, dirty flag, diff and code hashes (what counts as code)
  hashes.py       md5 of inputs as DVC records them
  environment.py  package versions against the lock, hardware, scheduler job, template origin
  fingerprint.py  computes the source fingerprint; its file (fingerprint.FINGERPRINT) is stamped here as "source"
This module never calls the `dvc` CLI: `dvc repro` holds the repository lock while a stage runs.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import environment, fingerprint
from .errors import DirtyCodeError
from .fileio import atomic_write_text
from .gitstate import NOT_CODE, UNKNOWN, ensure_clean_or_allowed, git_state, is_code
from .hashes import input_hashes, md5_file, md5_path

__all__ = ["NOT_CODE", "UNKNOWN", "DirtyCodeError", "collect", "ensure_clean_or_allowed", "git_state",
           "input_hashes", "is_code", "md5_file", "md5_path", "param_differences", "params_hash",
           "same_value", "write_provenance"]

SCHEMA = 2  # 2: "job" holds scheduler and id (no separate "job_id"); "source" (the source fingerprint)


def _values(params: Any) -> Any:
    return params.model_dump(mode="json") if hasattr(params, "model_dump") else params


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode()


def params_hash(params: Any) -> str:
    """sha256 of the canonical JSON of the params actually used.

    A pydantic Params is hashed through model_dump(mode="json"), so defaults count and YAML spelling (comments,
    1e-3 vs 0.001, key order) does not. A dict is hashed as given (validate it first for the same hash).
    """
    return hashlib.sha256(_canonical(_values(params))).hexdigest()


def same_value(a: Any, b: Any) -> bool:
    """Equal values, allowing for number spellings (PyYAML reads 1e-3 as a string, DVC as a float); a bool is
    never a number here."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(map(same_value, a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if a == b:
        return True
    if isinstance(a, (int, float, str)) and isinstance(b, (int, float, str)):
        try:
            return float(a) == float(b)
        except ValueError:
            return False
    return False


def param_differences(old: Any, new: Any, keys: list[str] | tuple[str, ...] = ()) -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) of every leaf where two params (Params or dicts, e.g. a stamp's
    "params") differ, restricted to the dotted `keys` if given. E.g. resume a checkpoint only when
    param_differences(ckpt["provenance"]["params"], params, ["seed", "data", "model", "train.lr"]) is empty.
    A key missing on one side shows as None there."""
    old, new = _values(old), _values(new)

    def lookup(tree: Any, dotted: str) -> Any:
        for part in dotted.split("."):
            tree = tree.get(part) if isinstance(tree, dict) else None
        return tree

    def walk(key: str, a: Any, b: Any) -> list[tuple[str, Any, Any]]:
        if isinstance(a, dict) and isinstance(b, dict):
            return [d for k in sorted(set(a) | set(b)) for d in walk(f"{key}.{k}" if key else k, a.get(k), b.get(k))]
        return [] if same_value(a, b) else [(key, a, b)]

    if not keys:
        return walk("", old, new)
    return [d for key in keys for d in walk(key, lookup(old, key), lookup(new, key))]


def collect(params: Any = None, command: Any = None, inputs: dict | None = None, root: Path | str = ".") -> dict:
    """The provenance stamp (JSON-able).

    params: pydantic Params or dict (stored, hashed, seed taken from it); command: list or str (default sys.argv);
    inputs: {path: md5 or None} (None = hash it, see hashes.input_hashes); root: the project root (default cwd).
    """
    git = git_state(root)
    env = environment.package_versions(root)
    if command is None:
        command = [Path(sys.executable).name, *sys.argv]
    if not isinstance(command, str):
        command = shlex.join(str(c) for c in command)
    values = _values(params)
    return {
        "schema": SCHEMA,
        **{key: git[key] for key in ("commit", "branch", "dirty", "changed", "diff_sha256", "code_sha256")},
        "params_sha256": params_hash(values) if values is not None else None,
        "params": values,  # the values used, so verify can compare exactly the keys a stage declares
        "inputs": input_hashes(inputs, root),
        "source": fingerprint.read(root),  # what data.source was when the shards were made (None: not recorded)
        "versions": env["packages"],  # {distribution: installed version} of the key packages
        "lock": env["lock"],  # requirements/lock.txt: sha256 and every installed version that differs from it
        "python": platform.python_version(),
        "platform": platform.platform(),
        "hardware": environment.hardware(),
        "seed": values.get("seed") if isinstance(values, dict) else None,
        "command": command,
        "cwd": str(Path(root).resolve()),
        "job": environment.job(),
        "world_size": int(os.environ.get("WORLD_SIZE", 1)),
        "template": environment.template_origin(root),
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def write_provenance(path: Path | str, **collect_kwargs: Any) -> dict:
    """collect(**collect_kwargs) and write it as indented JSON to `path` (atomically); return the stamp."""
    stamp = collect(**collect_kwargs)
    atomic_write_text(path, json.dumps(stamp, indent=2, sort_keys=True) + "\n")
    return stamp
