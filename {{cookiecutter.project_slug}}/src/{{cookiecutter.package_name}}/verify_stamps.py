"""verify's stamp check: were results/provenance.json, models/model.pt and the shards made from this code and
these params? A stamp passes when it is clean, from an ancestor of HEAD whose code is HEAD's (or differs only in
files its stage does not depend on: dvc.yaml's deps, which `deps` keeps equal to the code's import closure), and
its params equal params.yaml's on the keys its stage declares."""

from __future__ import annotations

import json
from pathlib import Path

from . import dvcfile
from .gitstate import UNKNOWN, git_ok, git_out, is_code
from .provenance import param_differences, params_hash

PASS, FAIL = "PASS", "FAIL"
STAMPS_REQUIRED = ("results/provenance.json",)
MODEL = "models/model.pt"
SHARDS_GLOB = "data/shards/*.zarr"


def _model_stamp(root: Path) -> list[tuple[str, dict | None, str]]:
    if not (root / MODEL).exists():
        return []
    try:
        import torch
    except ImportError:
        return []
    try:
        meta = torch.load(root / MODEL, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - report, don't crash the table
        return [(MODEL, None, f"unreadable: {exc}")]
    return [(MODEL, meta.get("provenance") if isinstance(meta, dict) else None, "no provenance")]


def _shard_stamp(root: Path, shard: Path) -> tuple[str, dict | None, str]:
    rel = shard.relative_to(root).as_posix()
    try:
        stamp = json.loads((shard / "zarr.json").read_text()).get("attributes", {}).get("provenance")
        return rel, json.loads(stamp) if isinstance(stamp, str) else stamp, "no provenance attr"
    except (OSError, ValueError) as exc:
        return rel, None, f"unreadable: {exc}"


def read_stamps(root: Path) -> list[tuple[str, dict | None, str]]:
    """(path, stamp or None, why missing) for the results, the model and the shards."""
    stamps = []
    for rel in STAMPS_REQUIRED:
        try:
            stamps.append((rel, json.loads((root / rel).read_text()), ""))
        except (OSError, ValueError) as exc:
            stamps.append((rel, None, f"unreadable ({exc.__class__.__name__}); `dvc pull` or `dvc repro`"))
    return stamps + _model_stamp(root) + [_shard_stamp(root, s) for s in sorted(root.glob(SHARDS_GLOB))]


def _code_problems(rel: str, stamp: dict, root: Path, head: dict, stages: dict) -> tuple[list[str], list[str]]:
    """(problems, notes) about the code a stamp was made from."""
    commit = stamp["commit"]
    if not git_ok(["cat-file", "-e", f"{commit}^{{commit}}"], root):
        return [f"commit {commit[:12]} not in this clone (fetch full history)"], []
    if not git_ok(["merge-base", "--is-ancestor", commit, "HEAD"], root):
        return [f"commit {commit[:12]} is not an ancestor of HEAD"], []
    if stamp.get("code_sha256") == head["code_sha256"]:
        return [], [f"code of {commit[:10]} = HEAD's"]
    stage = dvcfile.stage_of(rel, stages)
    diff = git_out(["diff", "--name-only", "--no-renames", "--relative", commit, "HEAD"], root) or ""
    outs = dvcfile.outs(stages)
    changed = [n for n in diff.splitlines() if n and is_code(n, outs)]
    touched = changed if stage is None else [n for n in changed if any(dvcfile.inside(n, d) for d in stage.deps)]
    if touched:
        return [f"code changed since {commit[:10]}: {', '.join(touched[:5])}"], []
    return [], [f"code changed since {commit[:10]} only outside stage {stage.name}'s deps"]


def _param_problems(rel: str, stamp: dict, stages: dict, params: dict | None) -> list[str]:
    if params is None:
        return ["params.yaml invalid"]
    stage = dvcfile.stage_of(rel, stages)
    values = stamp.get("params")
    if stage is None or not stage.params or not isinstance(values, dict):  # the whole params must match
        if stamp.get("params_sha256") != params_hash(params):
            return [f"params hash {str(stamp.get('params_sha256'))[:12]} != params.yaml's {params_hash(params)[:12]}"]
        return []
    return [f"param {k} was {a!r}, params.yaml has {b!r}" for k, a, b in param_differences(values, params,
                                                                                            stage.params)]


def check_stamp(rel: str, stamp: dict | None, why: str, root: Path, head: dict, stages: dict,
                params: dict | None) -> tuple[str, str]:
    """(result, detail) for one stamp."""
    if not isinstance(stamp, dict):
        return FAIL, why
    problems, notes = [], []
    commit = stamp.get("commit")
    if stamp.get("dirty") is not False:
        diff = stamp.get("diff_sha256") or "?"
        problems.append("made from uncommitted code" + (f" (diff {diff[:12]})" if stamp.get("dirty") else
                                                         " (dirty state unknown)"))
    if not commit or commit == UNKNOWN:
        problems.append("commit unknown")
    elif head["commit"] != UNKNOWN:
        found, note = _code_problems(rel, stamp, root, head, stages)
        problems, notes = problems + found, notes + note
    problems += _param_problems(rel, stamp, stages, params)
    if not problems:
        notes.append(f"params {str(stamp.get('params_sha256'))[:12]}")
    return (FAIL, "; ".join(problems)) if problems else (PASS, "; ".join(notes))


def check_stamps(root: Path, head: dict, stages: dict, params: dict | None) -> list[tuple[str, str, str]]:
    """(target, result, detail) rows: one per stamp, one for all shards (the first failure or the first note)."""
    rows, shards = [], []
    for rel, stamp, why in read_stamps(root):
        result, detail = check_stamp(rel, stamp, why, root, head, stages, params)
        (shards if Path(rel).match(SHARDS_GLOB) else rows).append((rel, result, detail))
    if shards:
        bad = [s for s in shards if s[1] == FAIL]
        rel, result, detail = bad[0] if bad else shards[0]
        rows.append((f"{SHARDS_GLOB} ({len(shards)})", result,
                     f"{len(bad)} failed, e.g. {rel}: {detail}" if bad else detail))
    return rows
