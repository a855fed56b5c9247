"""Live progress, read from the files a run writes: the training log CSV and Snakemake's own logs.

A run directory is the workspace or the temporary copy of the project a queued experiment runs in. Training:
results/train_log.csv (step, loss, lr, grad_norm, samples_per_s, data_wait), the run's params.yaml for
train.max_steps, logs/train.log for the global batch. Snakemake: .snakemake/log/*.snakemake.log, one per
invocation: jobs done, running and failed.
"""

from __future__ import annotations

import csv
import io
import re
import time
from pathlib import Path
from typing import Any

import yaml

TRAIN_LOG = "results/train_log.csv"
STDOUT_LOG = "logs/train.log"
GLOBAL_BATCH = re.compile(r"global batch (\d+)")
_JOB_START = re.compile(r"^(?:local)?(?:rule|checkpoint) (\S+):$")
_JOBID = re.compile(r"^\s+jobid: (\d+)$")
_FINISHED = re.compile(r"^Finished job(?:id:)? (\d+)")
_ERROR = re.compile(r"^Error in rule (\S+):$")
_PROGRESS = re.compile(r"^(\d+) of (\d+) steps \((\d+)%\) done")
_COMMAND = re.compile(r"^\s+Command: (.*)$")


def _max_steps(run_dir: Path) -> int | None:
    try:
        params = yaml.safe_load((run_dir / "params.yaml").read_text())
        value = params["train"]["max_steps"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    return value if isinstance(value, int) else None


def _global_batch(run_dir: Path) -> int | None:
    path = run_dir / STDOUT_LOG
    if not path.is_file():
        return None
    found = GLOBAL_BATCH.findall(path.read_text(errors="replace")[-200_000:])
    return int(found[-1]) if found else None


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None


def training(run_dir: Path) -> dict[str, Any]:
    """The training curve and where it stands: step, loss, samples/s, data-wait share, ETA."""
    path = run_dir / TRAIN_LOG
    out: dict[str, Any] = {"exists": path.is_file(), "step": [], "loss": [], "max_steps": _max_steps(run_dir)}
    if not out["exists"]:
        return out
    rows = list(csv.DictReader(io.StringIO(path.read_text(errors="replace"))))
    rows = [r for r in rows if _number(r.get("step")) is not None and _number(r.get("loss")) is not None]
    out["step"] = [int(float(r["step"])) for r in rows]
    out["loss"] = [_number(r["loss"]) for r in rows]
    out["updated_s_ago"] = round(time.time() - path.stat().st_mtime, 1)
    if not rows:
        return out
    last = rows[-1]
    out["last_step"] = out["step"][-1]
    out["samples_per_s"] = _number(last.get("samples_per_s"))
    out["data_wait"] = _number(last.get("data_wait"))
    out["global_batch"] = _global_batch(run_dir) or _batch_from_params(run_dir)
    out["eta_s"] = eta(out["last_step"], out["max_steps"], out["global_batch"], out["samples_per_s"])
    return out


def _batch_from_params(run_dir: Path) -> int | None:
    """batch_size x grad_accum (one process) when the training log does not say the global batch."""
    try:
        train = yaml.safe_load((run_dir / "params.yaml").read_text())["train"]
        return int(train["batch_size"]) * int(train.get("grad_accum", 1))
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        return None


def eta(step: int, max_steps: int | None, global_batch: int | None, samples_per_s: float | None) -> float | None:
    """Seconds left: the remaining optimizer steps at the last logged speed."""
    if not max_steps or not global_batch or not samples_per_s or samples_per_s <= 0:
        return None
    return max(0, max_steps - step) * global_batch / samples_per_s


def snakemake_log(path: Path) -> dict[str, Any]:
    """One Snakemake invocation: its command, jobs by state and the progress line. Jobs still open when the log
    says the invocation ended (killed, or stopped by a failure) are `incomplete`, not running."""
    open_jobs: dict[str, str] = {}  # jobid -> rule
    done: list[str] = []
    failed: list[str] = []
    rule = None
    command, progress, total, ended = "", None, None, False
    for line in path.read_text(errors="replace").splitlines():
        if m := _COMMAND.match(line):
            command = m[1]
        elif m := _JOB_START.match(line):
            rule = m[1]
        elif (m := _JOBID.match(line)) and rule:
            open_jobs[m[1]] = rule
            rule = None
        elif m := _FINISHED.match(line):
            if m[1] in open_jobs:
                done.append(open_jobs.pop(m[1]))
        elif m := _ERROR.match(line):
            failed.append(m[1])
            rule = None
        elif m := _PROGRESS.match(line):
            progress, total = int(m[1]), int(m[2])
        elif line.startswith("Complete log"):
            ended = True
    still = list(open_jobs.values())
    for name in failed:  # a failed job is no longer running
        if name in still:
            still.remove(name)
    return {"file": path.name, "command": command, "done": sorted(done), "running": [] if ended else sorted(still),
            "incomplete": sorted(still) if ended else [], "failed": failed, "progress": progress, "total": total,
            "ended": ended, "updated_s_ago": round(time.time() - path.stat().st_mtime, 1)}


def snakemake_runs(run_dir: Path, last: int = 5) -> list[dict[str, Any]]:
    """The last Snakemake invocations in a run directory, newest first."""
    folder = run_dir / ".snakemake" / "log"
    logs = sorted(folder.glob("*.snakemake.log"), reverse=True) if folder.is_dir() else []  # named by start time
    return [snakemake_log(p) for p in logs[:last]]


def run_dirs(root: Path, workdirs: dict[str, str]) -> dict[str, Path]:
    """Where runs write: the workspace, and each running experiment's temporary copy of the project (by name; a
    copy dvc exp show does not name yet is listed by its folder name)."""
    out = {"workspace": root}
    named = {Path(p).resolve(): name for name, p in workdirs.items() if p}
    tmp = root / ".dvc" / "tmp" / "exps"
    for folder in sorted(tmp.glob("tmp*")) if tmp.is_dir() else []:
        if (folder / "params.yaml").is_file():
            out[named.get(folder.resolve(), folder.name)] = folder
    return out
