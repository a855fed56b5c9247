"""`<package> verify`: does this checkout reproduce what it claims? A table a reviewer can paste.

Checks, for the checked-out commit:
  git            the tree has no uncommitted code (gitstate.NOT_CODE says what is not code)
  committed      dvc.lock and the outs git keeps (metrics, plots, provenance, the source fingerprint) have no
                 uncommitted changes: what is verified is what is committed
  deps           dvc.yaml's deps and params are what the code imports and reads (deps.py)
  dvc.lock       every dvc.yaml stage is locked; every out and dep on disk has the md5 dvc.lock records
                 (computed here the way DVC does), every locked param has the value params.yaml has now
  dvc status     `dvc status --json` reports nothing but "always changed" of the fingerprint stage (skipped
                 with --no-dvc or without dvc)
  source         data.source still has the fingerprint the shards were made from (data/source.fingerprint.json)
  stamps         results/provenance.json (required), models/model.pt and the shards (when present) were made
                 from committed code at an ancestor of HEAD whose code is this commit's (or differs only in files
                 the producing stage does not depend on), with the values of the params that stage declares
  environment    installed packages match requirements/lock.txt (WARN only: results may differ otherwise)
Exit code 1 when any check fails. Reads dvc.yaml and dvc.lock as YAML (once); calls the dvc CLI only for
`dvc status`.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

from . import cliargs, deps, dvcfile, environment, fingerprint
from .config import load_params
from .errors import DataError, ParamsError
from .gitstate import git_state, uncommitted
from .hashes import md5_path
from .provenance import param_differences
from .verify_stamps import check_stamps

PASS, FAIL, WARN, SKIP = "PASS", "FAIL", "WARN", "SKIP"


class Report:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str]] = []
        self.head: dict = {}  # git_state of the checkout

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


def check_git(report: Report, root: Path, stages: dict[str, dvcfile.Stage]) -> dict:
    state = git_state(root, dvcfile.outs(stages))
    if state["dirty"] is None:
        report.add("git", "HEAD", FAIL, "not a git repository with a commit: nothing to verify against")
    elif state["dirty"]:
        report.add("git", "HEAD", FAIL, f"uncommitted code: {', '.join(state['changed'][:8])}; commit or stash it")
    else:
        report.add("git", "HEAD", PASS, f"{state['commit'][:12]} ({state['branch'] or 'detached'}), code clean")
    return state


def check_committed(report: Report, root: Path, stages: dict[str, dvcfile.Stage]) -> None:
    paths = [*dvcfile.LOCK_FILES, *[p for s in stages.values() for p in s.uncached]]
    changed = uncommitted(root, [p for p in paths if (root / p).exists() or p in dvcfile.LOCK_FILES])
    if changed:
        report.add("committed", "dvc.lock, results", FAIL, f"uncommitted changes: {', '.join(changed[:6])}. Fix: "
                   "commit them (git add dvc.lock results data && git commit) or restore them (git checkout -- ...)")
    else:
        report.add("committed", "dvc.lock, results", PASS, "what is verified is what is committed")


def check_deps(report: Report, root: Path) -> None:
    if not (root / "src" / deps.PACKAGE).is_dir():
        report.add("deps", "dvc.yaml", SKIP, f"no src/{deps.PACKAGE} here")
        return
    problems = deps.check(root)
    report.add("deps", "dvc.yaml", FAIL if problems else PASS,
               "; ".join(problems[:4]) if problems else "deps and params = what the code imports and reads")


def _nest(dotted: str, value):
    for part in reversed(dotted.split(".")):
        value = {part: value}
    return value


def _lock_problems(root: Path, stage: dict, current: dict) -> list[str]:
    problems = []
    for file, values in (stage.get("params") or {}).items():
        tree = current if Path(file).name == dvcfile.PARAMS_FILE else (dvcfile.read_yaml(root / file) or {})
        for key, locked in (values or {}).items():
            problems += [f"param {k}: locked {a!r}, now {b!r}"
                         for k, a, b in param_differences(_nest(key, locked), tree, [key])]
    for dep in stage.get("deps") or []:
        problems += _compare(root, dep, "dep")
    return problems


def check_lock(report: Report, root: Path, stages: dict[str, dvcfile.Stage]) -> None:
    lock = dvcfile.read_lock(root, stages)
    if lock is None:
        report.add("dvc.lock", "dvc.lock", FAIL, "missing or unreadable; run `dvc repro` and commit dvc.lock")
        return
    locked = lock.get("stages") or {}
    missing = [name for name in stages if name not in locked]
    if missing:
        report.add("dvc.lock", "stages", FAIL, f"never run: {', '.join(missing)}; run `dvc repro` and commit")
    current = dvcfile.read_yaml(root / dvcfile.PARAMS_FILE) or {}
    for name, stage in locked.items():
        problems = _lock_problems(root, stage, current)
        report.add("dvc.lock", f"stage {name}", FAIL if problems else PASS,
                   "; ".join(problems[:6]) + " (stale: `dvc repro`)" if problems else "deps and params match")
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
        return [f"{kind} {path} missing ({'`dvc pull`' if kind == 'out' else 'restore it'})"]
    actual = md5_path(target, root)
    return [] if actual == locked else [f"{kind} {path}: md5 {actual[:12]} != locked {locked[:12]}"]


def check_dvc_status(report: Report, root: Path, use_dvc: bool, stages: dict[str, dvcfile.Stage]) -> None:
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
    if res.returncode != 0 or not isinstance(status, dict):
        report.add("dvc status", ".", FAIL, (res.stderr or res.stdout).strip()[-300:] or "dvc status failed")
        return
    # a stage that runs on every `dvc repro` (the source fingerprint) is always "changed": the source check below
    # recomputes it instead
    status = {k: v for k, v in status.items() if not (k in stages and stages[k].always_changed
                                                       and v == ["always changed"])}
    if status:
        report.add("dvc status", ".", FAIL, json.dumps(status)[:300])
    else:
        report.add("dvc status", ".", PASS, "data and pipelines are up to date")


def check_source(report: Report, root: Path, params: dict | None) -> None:
    recorded = fingerprint.read(root)
    if recorded is None or params is None:
        report.add("source", fingerprint.FINGERPRINT, SKIP, "no fingerprint recorded" if params else "no params")
        return
    source = params["data"]["source"]
    try:
        now = fingerprint.compute(source, root)
    except DataError as exc:
        report.add("source", source, WARN, f"cannot fingerprint it here: {str(exc)[:200]}")
        return
    if recorded.get("source") != source:
        report.add("source", source, FAIL, f"the shards were made from {recorded.get('source')!r}; `dvc repro`")
    elif now["sha256"] != recorded.get("sha256"):
        report.add("source", source, FAIL, f"changed since the shards were made ({recorded.get('files')} -> "
                   f"{now.get('files')} files, sha256 {recorded.get('sha256', '')[:12]} -> {now['sha256'][:12]}); "
                   "rerun `dvc repro` (the shards stage reruns) and commit")
    else:
        report.add("source", source, PASS, f"{now['kind']}, sha256 {now['sha256'][:12]} as recorded")


def check_environment(report: Report, root: Path) -> None:
    info = environment.package_versions(root)["lock"]
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
    stages = dvcfile.stages(root)  # dvc.yaml, parsed once for every check
    head = report.head = check_git(report, root, stages)
    if not stages:
        report.add("dvc.yaml", "dvc.yaml", FAIL, "missing or has no stages")
    check_committed(report, root, stages)
    check_deps(report, root)
    check_lock(report, root, stages)
    check_dvc_status(report, root, use_dvc, stages)
    try:
        params = load_params(root / params_path).model_dump(mode="json")
    except ParamsError as exc:
        params = None
        report.add("params", params_path, FAIL, str(exc).splitlines()[0])
    check_source(report, root, params)
    for row in check_stamps(root, head, stages, params):
        report.add("stamp", *row)
    check_environment(report, root)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = cliargs.parser("verify", __doc__, "params")
    parser.add_argument("--root", default=".", help="project root (default: .); --params is relative to it")
    parser.add_argument("--no-dvc", action="store_true", help="skip `dvc status` (the md5 checks still run)")
    parser.add_argument("--output", help="also write the markdown table to this file (appends; e.g. "
                                         "$GITHUB_STEP_SUMMARY)")
    args = parser.parse_args(argv)
    report = verify(args.root, args.params, use_dvc=not args.no_dvc)
    head = report.head
    title = f"verify {Path(args.root).resolve().name} @ {head['commit'][:12]} ({head['branch'] or 'detached'})"
    text = report.markdown(title)
    print(text)
    if args.output:
        with open(args.output, "a") as fh:
            fh.write(text + "\n")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
