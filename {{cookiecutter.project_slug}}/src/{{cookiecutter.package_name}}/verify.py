"""`<package> verify`: does this checkout reproduce what it claims? A table a reviewer can paste.

Checks, for the checked-out commit:
  git            the tree has no uncommitted code (provenance.NOT_CODE says what is not code)
  dvc.lock       every dvc.yaml stage is locked; every out and dep on disk has the md5 dvc.lock records
                 (computed here the way DVC does), every locked param has the value params.yaml has now
  dvc status     `dvc status --json` reports nothing (skipped with --no-dvc or without dvc)
  stamps         results/provenance.json (required), models/model.pt and the shards (when present) were made
                 from committed code at an ancestor of HEAD whose code is this commit's (or differs only in files
                 the producing stage does not depend on), with the values of the params that stage declares
  environment    installed packages match requirements/lock.txt (WARN only: results may differ otherwise)
Exit code 1 when any check fails. Reads dvc.lock as YAML; calls the dvc CLI only for `dvc status`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from . import provenance as prov
from .config import load_params
from .errors import ParamsError

PASS, FAIL, WARN, SKIP = "PASS", "FAIL", "WARN", "SKIP"
STAMPS_REQUIRED = ("results/provenance.json",)
MODEL = "models/model.pt"
SHARDS_GLOB = "data/shards/*.zarr"


class Report:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []

    def add(self, check: str, target: str, result: str, detail: str = "") -> None:
        self.rows.append((check, target, result, detail))

    @property
    def failed(self) -> int:
        return sum(r[2] == FAIL for r in self.rows)

    def markdown(self, title: str) -> str:
        def cell(text: str) -> str:
            return str(text).replace("|", "\\|").replace("\n", " ")

        lines = [f"### {title}", "", "| # | check | target | result | detail |", "|---|---|---|---|---|"]
        for i, (check, target, result, detail) in enumerate(self.rows, 1):
            shown = f"**{result}**" if result == FAIL else result
            lines.append(f"| {i} | {cell(check)} | `{cell(target)}` | {shown} | {cell(detail)} |")
        verdict = (f"**FAIL**: {self.failed} of {len(self.rows)} checks failed" if self.failed
                   else f"**PASS**: all {len(self.rows)} checks passed (or skipped/warned)")
        return "\n".join([*lines, "", verdict, ""])


# ----------------------------------------------------------------------------------------------------------------
# helpers


def _load_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return None


def _lookup(tree: Any, dotted: str) -> tuple[bool, Any]:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return False, None
        tree = tree[part]
    return True, tree


def _same(a: Any, b: Any) -> bool:
    """Equal, allowing for YAML 1.1 vs 1.2 spellings (PyYAML reads 1e-3 as a string, DVC as a float)."""
    if a == b:
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(map(_same, a, b))
    if isinstance(a, (int, float, str)) and isinstance(b, (int, float, str)) and not isinstance(a, bool):
        try:
            return float(a) == float(b)
        except ValueError:
            return False
    return False


def _entry_path(entry: Any) -> str | None:
    path = next(iter(entry)) if isinstance(entry, dict) else entry
    return path.strip("/") if isinstance(path, str) else None


def _stage_specs(dvc_yaml: dict) -> dict[str, dict]:
    """{stage: {"outs": [...], "deps": [...], "params": [dotted keys of params.yaml]}} from dvc.yaml."""
    specs = {}
    for name, stage in (dvc_yaml.get("stages") or {}).items():
        if not isinstance(stage, dict):
            continue
        outs = [_entry_path(e) for key in ("outs", "metrics", "plots") for e in stage.get(key) or []]
        keys = []
        for entry in stage.get("params") or []:
            if isinstance(entry, str):
                keys.append(entry)
            elif isinstance(entry, dict):  # {file: [keys]}: only params.yaml is validated by config.py
                for file, file_keys in entry.items():
                    if Path(file).name == "params.yaml":
                        keys.extend(file_keys or [])
        specs[name] = {"outs": [o for o in outs if o], "deps": [d for d in map(_entry_path, stage.get("deps") or [])
                                                               if d], "params": keys}
    return specs


def _inside(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def _stage_of(path: str, specs: dict[str, dict]) -> str | None:
    for name, spec in specs.items():
        if any(_inside(path, out) for out in spec["outs"]):
            return name
    return None


def _git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)


# ----------------------------------------------------------------------------------------------------------------
# checks


def check_git(report: Report, root: Path) -> dict:
    state = prov.git_state(root)
    if state["dirty"] is None:
        report.add("git", "HEAD", FAIL, "not a git repository with a commit: nothing to verify against")
    elif state["dirty"]:
        report.add("git", "HEAD", FAIL, f"uncommitted code: {', '.join(state['changed'][:8])}; commit or stash it")
    else:
        report.add("git", "HEAD", PASS, f"{state['commit'][:12]} ({state['branch'] or 'detached'}), code clean")
    return state


def check_lock(report: Report, root: Path, specs: dict[str, dict]) -> None:
    lock = _load_yaml(root / "dvc.lock")
    if not isinstance(lock, dict):
        report.add("dvc.lock", "dvc.lock", FAIL, "missing or unreadable; run `dvc repro` and commit dvc.lock")
        return
    stages = lock.get("stages") or {}
    missing = [name for name in specs if name not in stages]
    if missing:
        report.add("dvc.lock", "stages", FAIL, f"never run: {', '.join(missing)}; run `dvc repro` and commit")
    current = _load_yaml(root / "params.yaml") or {}
    for name, stage in stages.items():
        problems = []
        for file, values in (stage.get("params") or {}).items():
            tree = current if Path(file).name == "params.yaml" else (_load_yaml(root / file) or {})
            for key, locked in (values or {}).items():
                found, now = _lookup(tree, key)
                if not found or not _same(now, locked):
                    problems.append(f"param {key}: locked {locked!r}, now {now!r}" if found else f"param {key} gone")
        for dep in stage.get("deps") or []:
            problems += _compare(root, dep, "dep")
        if problems:
            report.add("dvc.lock", f"stage {name}", FAIL, "; ".join(problems[:6]) + " (stale: `dvc repro`)")
        else:
            report.add("dvc.lock", f"stage {name}", PASS, "deps and params match")
        for out in stage.get("outs") or []:
            bad = _compare(root, out, "out")
            report.add("out", out.get("path", "?"), FAIL if bad else PASS,
                       "; ".join(bad) if bad else f"md5 {str(out.get('md5'))[:12]}")


def _compare(root: Path, entry: dict, kind: str) -> list[str]:
    path, locked = entry.get("path"), entry.get("md5")
    if not path or not locked:
        return []  # e.g. a dependency on a whole params file, hashed by DVC differently
    target = root / path
    if not target.exists():
        hint = "`dvc pull`" if kind == "out" else "restore it"
        return [f"{kind} {path} missing ({hint})"]
    actual = prov.md5_path(target, root)
    return [] if actual == locked else [f"{kind} {path}: md5 {actual[:12]} != locked {locked[:12]}"]


def check_dvc_status(report: Report, root: Path, use_dvc: bool) -> None:
    # the dvc of this environment first (python -m dvc), else the one on PATH
    exe = [sys.executable, "-m", "dvc"] if importlib.util.find_spec("dvc") else [shutil.which("dvc") or ""]
    if not use_dvc or not exe[0]:
        report.add("dvc status", ".", SKIP, "--no-dvc" if not use_dvc else "dvc not installed")
        return
    res = subprocess.run([*exe, "status", "--json"], cwd=root, capture_output=True, text=True, check=False)
    try:
        status = json.loads(res.stdout or "null")
    except ValueError:
        status = None
    if res.returncode != 0 or status is None:
        report.add("dvc status", ".", FAIL, (res.stderr or res.stdout).strip()[-300:] or "dvc status failed")
    elif status:
        report.add("dvc status", ".", FAIL, json.dumps(status)[:300])
    else:
        report.add("dvc status", ".", PASS, "data and pipelines are up to date")


def read_stamps(root: Path) -> list[tuple[str, dict | None, str]]:
    """(path, stamp or None, why missing) for the results, the model and the shards."""
    stamps = []
    for rel in STAMPS_REQUIRED:
        path = root / rel
        try:
            stamps.append((rel, json.loads(path.read_text()), ""))
        except (OSError, ValueError) as exc:
            stamps.append((rel, None, f"unreadable ({exc.__class__.__name__}); `dvc pull` or `dvc repro`"))
    if (root / MODEL).exists():
        try:
            import torch

            meta = torch.load(root / MODEL, map_location="cpu", weights_only=True)
            stamps.append((MODEL, meta.get("provenance") if isinstance(meta, dict) else None, "no provenance"))
        except ImportError:
            pass
        except Exception as exc:  # noqa: BLE001 - report, don't crash the table
            stamps.append((MODEL, None, f"unreadable: {exc}"))
    for shard in sorted(root.glob(SHARDS_GLOB)):
        try:
            attrs = json.loads((shard / "zarr.json").read_text()).get("attributes", {})
            stamp = attrs.get("provenance")
            stamps.append((shard.relative_to(root).as_posix(),
                           json.loads(stamp) if isinstance(stamp, str) else stamp, "no provenance attr"))
        except (OSError, ValueError) as exc:
            stamps.append((shard.relative_to(root).as_posix(), None, f"unreadable: {exc}"))
    return stamps


def check_stamp(rel: str, stamp: dict | None, why: str, root: Path, head: dict, specs: dict, params: dict | None
                ) -> tuple[str, str]:
    """(result, detail) for one stamp."""
    if not isinstance(stamp, dict):
        return FAIL, why
    problems, notes = [], []
    commit = stamp.get("commit")
    if stamp.get("dirty") is not False:
        diff = stamp.get("diff_sha256") or "?"
        problems.append("made from uncommitted code" + (f" (diff {diff[:12]})" if stamp.get("dirty") else
                                                         " (dirty state unknown)"))
    if not commit or commit == prov.UNKNOWN:
        problems.append("commit unknown")
    elif head["commit"] != prov.UNKNOWN:
        if _git(root, "cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
            problems.append(f"commit {commit[:12]} not in this clone (fetch full history)")
        elif _git(root, "merge-base", "--is-ancestor", commit, "HEAD").returncode != 0:
            problems.append(f"commit {commit[:12]} is not an ancestor of HEAD")
        elif stamp.get("code_sha256") == head["code_sha256"]:
            notes.append(f"code of {commit[:10]} = HEAD's")
        else:
            stage = _stage_of(rel, specs)
            deps = specs.get(stage, {}).get("deps", []) if stage else None
            diff = _git(root, "diff", "--name-only", "--no-renames", "--relative", commit, "HEAD")
            changed = [n for n in diff.stdout.splitlines() if n and prov.is_code(n, prov.dvc_yaml_outs(root))]
            touched = changed if deps is None else [n for n in changed if any(_inside(n, d) for d in deps)]
            if touched:
                problems.append(f"code changed since {commit[:10]}: {', '.join(touched[:5])}")
            else:
                notes.append(f"code changed since {commit[:10]} only outside stage {stage}'s deps")
    problems += _param_problems(rel, stamp, specs, params)
    if not problems:
        notes.append(f"params {str(stamp.get('params_sha256'))[:12]}")
    return (FAIL, "; ".join(problems)) if problems else (PASS, "; ".join(notes))


def _param_problems(rel: str, stamp: dict, specs: dict, params: dict | None) -> list[str]:
    if params is None:
        return ["params.yaml invalid"]
    stage = _stage_of(rel, specs)
    keys = specs.get(stage, {}).get("params") if stage else None
    values = stamp.get("params")
    if not keys or not isinstance(values, dict):  # unknown stage or no values stored: the whole params must match
        if stamp.get("params_sha256") != prov.params_hash(params):
            return [f"params hash {str(stamp.get('params_sha256'))[:12]} != params.yaml's "
                    f"{prov.params_hash(params)[:12]}"]
        return []
    problems = []
    for key in keys:
        found_then, then = _lookup(values, key)
        found_now, now = _lookup(params, key)
        if found_then != found_now:
            problems.append(f"param {key} {'gone from params' if found_then else 'not in the stamp'}")
        else:
            problems += [f"param {k} was {a!r}, params.yaml has {b!r}" for k, a, b in _differences(key, then, now)]
    return problems


def _differences(key: str, a: Any, b: Any) -> list[tuple[str, Any, Any]]:
    """(dotted key, old, new) of the leaves where two param trees differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _differences(f"{key}.{k}", a.get(k), b.get(k))]
    return [] if _same(a, b) else [(key, a, b)]


def check_environment(report: Report, root: Path) -> None:
    info = prov.package_versions(root)["lock"]
    if info["path"] is None:
        report.add("environment", "requirements/lock.txt", SKIP, "no lock file")
        return
    missing = f"; {len(info['missing'])} locked packages not installed (extras)" if info["missing"] else ""
    if info["mismatches"]:
        shown = ", ".join(f"{n} {v['installed']} (lock {v['lock']})" for n, v in list(info["mismatches"].items())[:5])
        report.add("environment", info["path"], WARN, f"{len(info['mismatches'])} differ: {shown}{missing}")
    else:
        report.add("environment", info["path"], PASS, f"installed versions = lock{missing}")


def verify(root: Path | str = ".", params_path: str = "params.yaml", use_dvc: bool = True) -> Report:
    root = Path(root).resolve()
    report = Report()
    head = check_git(report, root)
    dvc_yaml = _load_yaml(root / "dvc.yaml")
    specs = _stage_specs(dvc_yaml) if isinstance(dvc_yaml, dict) else {}
    if not specs:
        report.add("dvc.yaml", "dvc.yaml", FAIL, "missing or has no stages")
    check_lock(report, root, specs)
    check_dvc_status(report, root, use_dvc)
    try:
        params = load_params(root / params_path).model_dump(mode="json")
    except ParamsError as exc:
        params = None
        report.add("params", params_path, FAIL, str(exc).splitlines()[0])
    shards = []
    for rel, stamp, why in read_stamps(root):
        result, detail = check_stamp(rel, stamp, why, root, head, specs, params)
        if Path(rel).match(SHARDS_GLOB):
            shards.append((rel, result, detail))
        else:
            report.add("stamp", rel, result, detail)
    if shards:  # one row for all shards: the first failure, or the first shard's note
        bad = [s for s in shards if s[1] == FAIL]
        rel, result, detail = bad[0] if bad else shards[0]
        report.add("stamp", f"{SHARDS_GLOB} ({len(shards)})", result,
                   f"{len(bad)} failed, e.g. {rel}: {detail}" if bad else detail)
    check_environment(report, root)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=".", help="project root (default: .)")
    parser.add_argument("--params", default="params.yaml", help="params file, relative to the root")
    parser.add_argument("--no-dvc", action="store_true", help="skip `dvc status` (the md5 checks still run)")
    parser.add_argument("--output", help="also write the markdown table to this file (appends; e.g. "
                                         "$GITHUB_STEP_SUMMARY)")
    args = parser.parse_args(argv)
    report = verify(args.root, args.params, use_dvc=not args.no_dvc)
    head = prov.git_state(args.root)
    title = f"verify {Path(args.root).resolve().name} @ {head['commit'][:12]} ({head['branch'] or 'detached'})"
    text = report.markdown(title)
    print(text)
    if args.output:
        with open(args.output, "a") as fh:
            fh.write(text + "\n")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
