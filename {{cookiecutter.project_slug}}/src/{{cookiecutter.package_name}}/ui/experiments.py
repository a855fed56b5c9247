"""Experiments as DVC knows them: `dvc exp show --json --all-branches`, parsed into one row per run.

A run is the workspace, a branch tip, or an experiment (queued, running, failed or finished) of a baseline commit.
Its curves and report come from git and the DVC cache at its commit (the workspace's from disk), read in one
`git cat-file --batch` call per page. Nothing here writes.
"""

from __future__ import annotations

import configparser
import csv
import io
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .commands import dvc, run

METRICS = "results/metrics.json"
REPORT = "results/report.html"
CURVE = "results/plots/{metric}_{channel}.csv"
PER_INIT = "results/scores/per_init.nc"
ACTIVE = ("queued", "running")


@dataclass
class Run:
    id: str  # "workspace", the experiment's name, or the branch name
    rev: str  # commit sha, or "workspace"
    kind: str  # workspace | branch | experiment
    baseline: str  # the branch (or short rev) an experiment starts from
    state: str  # workspace | committed | queued | running | failed | success | done
    timestamp: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # flattened params.yaml
    metrics: dict[str, Any] = field(default_factory=dict)  # results/metrics.json
    error: str | None = None
    log: str | None = None  # the queue worker's log of this experiment
    workdir: str | None = None  # where a running experiment runs (its temp copy of the project)

    @property
    def finished(self) -> bool:
        return bool(self.metrics)


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: tree}


def _data(entry: dict) -> tuple[dict, dict, str | None]:
    data = entry.get("data") or {}
    params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
    metrics = ((data.get("metrics") or {}).get(METRICS) or {}).get("data") or {}
    error = entry.get("error")
    return flatten(params), metrics, (error.get("msg") if isinstance(error, dict) else error)


def parse(entries: list[dict]) -> list[Run]:
    """`dvc exp show --json` -> runs: the workspace, each baseline commit, then its experiments, newest first."""
    runs: list[Run] = []
    seen: set[str] = set()
    for entry in entries:
        rev = entry.get("rev", "")
        params, metrics, error = _data(entry)
        timestamp = (entry.get("data") or {}).get("timestamp")
        if rev == "workspace":
            runs.append(Run("workspace", "workspace", "workspace", "", "workspace", timestamp, params, metrics, error))
            continue
        baseline = entry.get("name") or rev[:7]
        if baseline not in seen:
            seen.add(baseline)
            runs.append(Run(baseline, rev, "branch", baseline, "committed", timestamp, params, metrics, error))
        for exp in entry.get("experiments") or []:
            revs = exp.get("revs") or [{}]
            head = revs[0]
            executor = exp.get("executor") or {}
            local = executor.get("local") or {}
            p, m, err = _data(head)
            name = exp.get("name") or head.get("name") or head.get("rev", "")[:7]
            state = executor.get("state") or "done"
            runs.append(Run(name, head.get("rev", ""), "experiment", baseline, state,
                            (head.get("data") or {}).get("timestamp"), p, m, err, local.get("log"), local.get("root")))
    return runs


# `dvc exp show` can hang while the queue's worker winds down (seen in CI: the app showed "running" and "queued" for
# 10 minutes after both experiments had succeeded). A call past this fails; the page keeps the previous answer and its
# next poll asks again.
EXP_SHOW_TIMEOUT_S = 90


def load(root: Path) -> list[Run]:
    return parse(json.loads(run(dvc("exp", "show", "--json", "--all-branches"), root, timeout=EXP_SHOW_TIMEOUT_S)
                            or "[]"))


def git_dir(root: Path) -> Path | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--absolute-git-dir"], cwd=root, capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return Path(out.stdout.strip()) if out.returncode == 0 else None


def file_stats(paths: list[Path], skip: tuple[str, ...] = (".out",)) -> tuple:
    """(path, mtime, size) of each file, and of every file below each folder (a folder's own mtime is left out:
    reading a queue touches it). Files ending in `skip` (logs that grow while a run works) are left out."""
    out = []
    for path in paths:
        if path.is_dir():
            out.extend(file_stats(sorted(path.iterdir()), skip))
            continue
        if path.name.endswith(skip):
            continue
        try:
            st = path.stat()
        except OSError:
            out.append((str(path), None))
            continue
        out.append((str(path), st.st_mtime_ns, st.st_size))
    return tuple(out)


def fingerprint(root: Path, git: Path | None) -> tuple:
    """Changes whenever `dvc exp show` could answer differently: refs, HEAD, params/metrics, and of the queue only
    the waiting messages and each task's info file (not the worker's control messages, which `dvc exp show` itself
    writes when it asks the workers: watching those would refresh forever)."""
    exps = root / ".dvc" / "tmp" / "exps"
    paths = [root / "params.yaml", root / "dvc.lock", root / METRICS, exps / "run", exps / "celery" / "broker" / "in"]
    if git is not None:
        paths += [git / "HEAD", git / "packed-refs", git / "refs" / "heads", git / "refs" / "exps"]
    return file_stats(paths)


def max_age(runs: list[Run] | None) -> float | None:
    """Poll while the queue works (a running experiment's metrics appear only in its own copy)."""
    return 10.0 if runs and any(r.state in ACTIVE for r in runs) else None


# ----------------------------------------------------------------------------------------------------------------
# comparing


def differing(runs: list[Run]) -> list[str]:
    """The params keys whose values differ between the runs that have params."""
    with_params = [r for r in runs if r.params]
    keys = sorted({k for r in with_params for k in r.params})
    return [k for k in keys if len({json.dumps(r.params.get(k), sort_keys=True) for r in with_params}) > 1]


def headline(runs: list[Run]) -> tuple[list[str], list[str]]:
    """The headline channels (evaluate.headline of the newest run that has them) and the leads metrics.json has."""
    channels: list[str] = []
    for r in runs:
        channels = r.params.get("evaluate.headline") or channels
        if channels:
            break
    leads: list[str] = []
    for r in runs:
        for ch in channels:
            for lead in ((r.metrics.get("rmse") or {}).get(ch) or {}).get("model") or {}:
                if lead not in leads:
                    leads.append(lead)
    return channels, sorted(leads, key=lambda s: float(s.rstrip("h")) if s.rstrip("h").isdigit() else 0)


def score(run_: Run, metric: str, channel: str, lead: str, forecast: str = "model") -> float | None:
    value = (((run_.metrics.get(metric) or {}).get(channel) or {}).get(forecast) or {}).get(lead)
    return value if isinstance(value, (int, float)) else None


class GitFiles:
    """File contents at commits, memoized by (rev, path): a commit never changes."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._memo: dict[tuple[str, str], bytes | None] = {}

    def read(self, wanted: list[tuple[str, str]]) -> dict[tuple[str, str], bytes | None]:
        todo = [w for w in dict.fromkeys(wanted) if w not in self._memo and w[0] != "workspace"]
        if todo:
            query = "".join(f"{rev}:./{path}\n" for rev, path in todo).encode()
            out = subprocess.run(["git", "cat-file", "--batch"], cwd=self.root, input=query, capture_output=True,
                                 timeout=60).stdout
            pos = 0
            for item in todo:
                end = out.index(b"\n", pos)
                header = out[pos:end].split()
                pos = end + 1
                if len(header) == 3 and header[1] == b"blob":
                    size = int(header[2])
                    self._memo[item] = out[pos:pos + size]
                    pos += size + 1
                else:
                    self._memo[item] = None
        found = {}
        for rev, path in wanted:
            if rev == "workspace":
                file = self.root / path
                found[(rev, path)] = file.read_bytes() if file.is_file() else None
            else:
                found[(rev, path)] = self._memo.get((rev, path))
        return found


def read_curve(content: bytes | None) -> dict[str, list[float]] | None:
    """A results/plots CSV (lead_hours, model, persistence, climatology) as columns."""
    if not content:
        return None
    rows = list(csv.DictReader(io.StringIO(content.decode(errors="replace"))))
    if not rows:
        return None
    columns: dict[str, list[float]] = {}
    for name in rows[0]:
        try:
            columns[name] = [float(r[name]) if r[name] not in ("", None) else None for r in rows]
        except ValueError:
            continue
    return columns if "lead_hours" in columns else None


def curves(files: GitFiles, runs: list[Run], channels: list[str]) -> dict[str, dict[str, dict]]:
    """{metric: {channel: {run id: columns}}} for the RMSE/ACC-vs-lead overlays."""
    wanted = [(r.rev, CURVE.format(metric=m, channel=ch)) for r in runs for m in ("rmse", "acc") for ch in channels]
    contents = files.read(wanted)
    out: dict[str, dict[str, dict]] = {m: {ch: {} for ch in channels} for m in ("rmse", "acc")}
    for r in runs:
        for m in ("rmse", "acc"):
            for ch in channels:
                columns = read_curve(contents.get((r.rev, CURVE.format(metric=m, channel=ch))))
                if columns:
                    out[m][ch][r.id] = columns
    return out


def _out_md5(files: GitFiles, rev: str, out_path: str) -> str | None:
    """The md5 dvc.lock records at `rev` for the output `out_path` (a directory's ends in .dir)."""
    lock = files.read([(rev, "dvc.lock")])[(rev, "dvc.lock")]
    if not lock:
        return None
    md5 = None
    for stage in (yaml.safe_load(lock) or {}).get("stages", {}).values():
        for out in stage.get("outs") or []:
            if out.get("path") == out_path:
                md5 = out.get("md5")
    return md5


def _cached(root: Path, md5: str | None) -> Path | None:
    path = cache_dir(root) / "files" / "md5" / md5[:2] / md5[2:] if md5 else None
    return path if path is not None and path.is_file() else None


def report_path(root: Path, files: GitFiles, run_: Run) -> Path | None:
    """The run's report.html: the workspace's file, or the DVC-cache object dvc.lock names at the run's commit."""
    if run_.rev == "workspace":
        path = root / REPORT
        return path if path.is_file() else None
    return _cached(root, _out_md5(files, run_.rev, REPORT))


def per_init_path(root: Path, files: GitFiles, run_: Run) -> Path | None:
    """The run's results/scores/per_init.nc: the workspace's file, or its DVC-cache object, found in the manifest
    of the results/scores directory that dvc.lock names at the run's commit. None for a run evaluated before the
    file existed (or whose outputs are not in the cache)."""
    if run_.rev == "workspace":
        path = root / PER_INIT
        return path if path.is_file() else None
    folder, name = PER_INIT.rsplit("/", 1)
    manifest = _cached(root, _out_md5(files, run_.rev, folder))
    if manifest is None:
        return None
    entries = json.loads(manifest.read_text())
    return _cached(root, next((e.get("md5") for e in entries if e.get("relpath") == name), None))


def cache_dir(root: Path) -> Path:
    """DVC's cache folder: .dvc/cache, or [cache] dir of .dvc/config (relative to .dvc/)."""
    parser = configparser.ConfigParser()
    for name in ("config", "config.local"):
        try:
            parser.read(root / ".dvc" / name)
        except configparser.Error:
            continue
    custom = parser.get("cache", "dir", fallback=None)
    return (root / ".dvc" / custom).resolve() if custom else root / ".dvc" / "cache"



# ----------------------------------------------------------------------------------------------------------------
# significance against a reference run


NO_SCORES = "no per-initial-time scores"


def differences(root: Path, files: GitFiles, runs: list[Run], channels: list[str]) -> dict[str, Any]:
    """RMSE of each other finished run - the first run (the reference) at the reference's key leads, with paired
    block-bootstrap intervals over their common initial times (compare.compare, the reference's
    evaluate.significance): {run id: [compare.Row of RMSE] or a message saying why there is none}."""
    from .. import compare, per_init
    from ..errors import ForgeError
    from .params_file import with_changes

    ref, others = runs[0], [r for r in runs[1:] if r.finished]
    paths = {r.id: per_init_path(root, files, r) for r in [ref, *others]}
    if paths[ref.id] is None:
        return {r.id: f"{NO_SCORES} for the reference {ref.id}" for r in others}
    settings = compare.Settings.from_params(with_changes({}, ref.params))  # flat keys -> tree
    base = per_init.read(paths[ref.id], f"{ref.id}: {PER_INIT}")
    out: dict[str, Any] = {}
    for r in others:
        if paths[r.id] is None:
            out[r.id] = NO_SCORES
            continue
        try:
            other = per_init.read(paths[r.id], f"{r.id}: {PER_INIT}")
            leads = [h for h in settings.leads_hours if h in base.lead_hours.values and h in other.lead_hours.values]
            chosen = [c for c in channels if c in base.channel.values and c in other.channel.values]
            result = compare.compare(other, base, settings, (r.id, ref.id), leads, chosen)
        except ForgeError as exc:
            out[r.id] = str(exc)
            continue
        out[r.id] = [row for row in result.rows if row.score == "rmse"]
    return out
