"""The pipeline's stages and whether each is up to date, with the reason when it is not.

The state is `dvc status --json`; where it only says "params.yaml: train modified" (a stage declares whole
sections), the changed keys are found by comparing the values dvc.lock recorded with params.yaml now.
data.source lies outside the repository, where `dvc status` cannot look: its fingerprint is refreshed first (as
the `fingerprint` stage does on every `dvc repro`), so a changed source shows as the reason the shards are stale.
A stage that is `always_changed` (the fingerprint stage) and has no other change counts as up to date.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .. import dvcfile
from .. import fingerprint as source_fingerprint
from ..errors import ForgeError
from ..provenance import param_differences
from .commands import dvc, run
from .schema import lookup, text_of


@dataclass
class Stage:
    name: str
    cmd: str
    deps: list[str]
    params: list[str]
    outs: list[str]
    locked: bool  # dvc.lock has it (it ran at least once)
    state: str = "unknown"  # up to date | changed | never run | unknown
    reasons: list[str] = field(default_factory=list)


def _paths(entries: Any) -> list[str]:
    out = []
    for entry in entries or []:
        out.append(next(iter(entry)) if isinstance(entry, dict) else str(entry))
    return out


def _load_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text()) if path.is_file() else None
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def stages(root: Path) -> list[Stage]:
    """The stages of the dvc.yaml files (dvcfile.DVC_FILES), named as `dvc status` names them."""
    out = []
    for dvc_file in dvcfile.DVC_FILES:
        spec = _load_yaml(root / dvc_file).get("stages") or {}
        lock = _load_yaml(root / dvcfile.lock_file(dvc_file)).get("stages") or {}
        for name, stage in spec.items():
            params = []
            for entry in stage.get("params") or []:
                params.extend(entry if isinstance(entry, dict) else [entry])
            out.append(Stage(dvcfile.address(dvc_file, name), str(stage.get("cmd", "")), _paths(stage.get("deps")),
                             [str(p) for p in params], _paths([*(stage.get("outs") or []),
                                                               *(stage.get("metrics") or []),
                                                               *(stage.get("plots") or [])]), name in lock))
    return out


ALWAYS = "always changed"


def status(root: Path) -> dict:
    """`dvc status --json` after refreshing the source's fingerprint: {stage: [changes]} for the stages that are
    not up to date. A source that cannot be fingerprinted (moved, offline) is a change of the fingerprint stage."""
    try:
        source_fingerprint.refresh(root)
        problem = None
    except (ForgeError, OSError, ValueError) as exc:
        problem = f"data.source cannot be fingerprinted: {exc}"
    changes = json.loads(run(dvc("status", "--json"), root, timeout=600) or "{}")
    if problem:
        for stage in stages(root):
            if source_fingerprint.FINGERPRINT in stage.outs:
                changes.setdefault(stage.name, []).append(problem)
    return changes


def _param_reasons(root: Path, stage: str) -> list[str]:
    lock = (dvcfile.read_lock(root) or {}).get("stages") or {}
    recorded = ((lock.get(stage) or {}).get("params") or {}).get("params.yaml") or {}
    now = _load_yaml(root / "params.yaml")
    reasons = []
    for key, old in recorded.items():
        for dotted, a, b in param_differences(old, lookup(now, key)):
            full = f"{key}.{dotted}" if dotted else key
            reasons.append(f"param {full}: {text_of(a)} -> {text_of(b)}")
    return reasons


def _reasons(root: Path, stage: str, changes: list) -> list[str]:
    out: list[str] = []
    for change in changes:
        if isinstance(change, str):
            out.append(change)  # "changed checksum", "always changed"
            continue
        for kind, items in change.items():
            what = kind.replace("changed ", "")
            for path, how in (items or {}).items():
                if path == "params.yaml" and isinstance(how, dict):
                    out.extend(_param_reasons(root, stage) or [f"params {', '.join(how)} {what}"])
                elif path == source_fingerprint.FINGERPRINT:
                    out.append(f"data.source changed ({path}: {how})")
                else:
                    label = "code" if path.endswith((".py", ".smk")) or path.startswith("src/") else what[:-1]
                    out.append(f"{label} {path}: {how}")
    return out


def annotated(root: Path, changes: dict | None) -> list[Stage]:
    """The stages with their state and reasons from a `dvc status --json` answer (None: not answered yet)."""
    out = stages(root)
    for stage in out:
        if not stage.locked:
            stage.state, stage.reasons = "never run", ["not in dvc.lock yet"]
        elif changes is None:
            stage.state = "checking"
        elif changes.get(stage.name) == [ALWAYS]:
            stage.state = "up to date"
            stage.reasons = ["runs on every `dvc repro`" + (", data.source unchanged (checked just now)"
                                                           if source_fingerprint.FINGERPRINT in stage.outs else "")]
        elif stage.name in changes:
            stage.state, stage.reasons = "changed", _reasons(root, stage.name, changes[stage.name])
        else:
            stage.state = "up to date"
    return out


def fingerprint(root: Path) -> tuple:
    """Stats of what `dvc status` looks at: the pipeline files and each dependency and output (a folder: itself
    and its entries, not deeper: a zarr store's chunks are too many to stat on every page)."""
    paths = [root / p for p in (*dvcfile.DVC_FILES, *dvcfile.LOCK_FILES, "params.yaml")]
    for stage in stages(root):
        paths += [root / p for p in stage.deps + stage.outs]
    out = []
    for path in paths:
        try:
            entries = [path, *sorted(path.iterdir())] if path.is_dir() else [path]
        except OSError:
            entries = [path]
        for entry in entries:
            try:
                st = entry.stat()
                out.append((str(entry), st.st_mtime_ns, st.st_size))
            except OSError:
                out.append((str(entry), None))
    return tuple(out)
