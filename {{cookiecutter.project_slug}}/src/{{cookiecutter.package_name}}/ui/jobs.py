"""Long commands started from the app (dvc repro, snakemake --profile): detached, each with its log file.

The log file under logs/ui/ is the job's only record: a header with the command and the process id, the
command's output, and a last line with the exit code. The app keeps nothing in memory about a job, so a restarted
app (or a second one) sees the same jobs, and a job outlives the app.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ForgeError
from .commands import environment, shown

LOG_DIR = Path("logs") / "ui"
JOB_ID = re.compile(r"^\d{8}T\d{6}-\d+-[a-z0-9-]{1,40}$")
_HEADER = re.compile(r"^# (command|pid|started|exit): (.*)$")


@dataclass
class Job:
    id: str
    label: str
    command: str  # as typed (shown)
    argv: list[str]
    pid: int | None
    started: str
    exit_code: int | None
    running: bool

    @property
    def state(self) -> str:
        if self.running:
            return "running"
        if self.exit_code is None:
            return "stopped"
        return "done" if self.exit_code == 0 else f"failed (exit {self.exit_code})"


def _slug(label: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[:40] or "job"


def _alive(pid: int, argv: list[str]) -> bool:
    """The process exists and is this job (where /proc tells: a recycled pid runs something else)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:  # exited but not yet waited for: the reaper is about to write its exit code, so it still counts as running
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return True
    except (OSError, IndexError):
        pass
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        try:
            return cmdline.read_bytes().split(b"\0")[: len(argv)] == [a.encode() for a in argv]
        except OSError:
            return False
    return True


class Jobs:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / LOG_DIR

    def start(self, argv: list[str], label: str, env: dict[str, str] | None = None) -> Job:
        self.dir.mkdir(parents=True, exist_ok=True)
        job_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{time.time_ns() % 1000000}-{_slug(label)}"
        path = self.dir / f"{job_id}.log"
        with open(path, "w") as log:
            log.write(f"# label: {label}\n# command: {shlex.join(argv)}\n# shown: {shown(argv)}\n"
                      f"# started: {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
            log.flush()
            proc = subprocess.Popen(argv, cwd=self.root, env=env or environment(), stdout=log,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
            log.write(f"# pid: {proc.pid}\n")
        threading.Thread(target=self._reap, args=(proc, path), daemon=True).start()
        return self.get(job_id)

    @staticmethod
    def _reap(proc: subprocess.Popen, path: Path) -> None:
        """Write the exit code while the process is still a zombie (waitid WNOWAIT: exited, not yet reaped, which
        _alive counts as running), then reap it: a reader never sees it gone without its exit line."""
        try:
            info = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
            code = info.si_status if info.si_code == os.CLD_EXITED else -info.si_status  # Popen's sign for signals
        except ChildProcessError:
            code = None
        code = proc.wait() if code is None else code
        with open(path, "a") as log:
            log.write(f"\n# exit: {code}\n")
        proc.wait()

    def _read(self, path: Path) -> Job:
        head: dict[str, str] = {}
        label = ""
        with open(path, errors="replace") as f:
            for line in f:
                if line.startswith("# label: ") and not label:
                    label = line[9:].strip()
                m = _HEADER.match(line.rstrip("\n"))
                if m and m[1] not in head:
                    head[m[1]] = m[2]
        argv = shlex.split(head.get("command", ""))
        pid = int(head["pid"]) if head.get("pid", "").isdigit() else None
        exit_code = int(head["exit"]) if re.fullmatch(r"-?\d+", head.get("exit", "")) else None
        running = exit_code is None and pid is not None and _alive(pid, argv)
        shown_line = next((ln[8:].strip() for ln in path.read_text(errors="replace").splitlines()[:4]
                           if ln.startswith("# shown: ")), shlex.join(argv))
        return Job(path.stem, label, shown_line, argv, pid, head.get("started", ""), exit_code, running)

    def list(self) -> list[Job]:
        if not self.dir.is_dir():
            return []
        return [self._read(p) for p in sorted(self.dir.glob("*.log"), reverse=True) if JOB_ID.fullmatch(p.stem)]

    def _path(self, job_id: str) -> Path:
        if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id) or not (self.dir / f"{job_id}.log").is_file():
            raise ForgeError(f"no job {job_id!r} in {LOG_DIR}/")
        return self.dir / f"{job_id}.log"

    def get(self, job_id: str) -> Job:
        return self._read(self._path(job_id))

    def tail(self, job_id: str, max_bytes: int = 64_000) -> str:
        path = self._path(job_id)
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - max_bytes))
            return f.read().decode(errors="replace")

    def cancel(self, job_id: str) -> Job:
        """Ctrl-C to the job's process group (DVC and Snakemake clean up on it), SIGTERM 20 s later if needed."""
        job = self.get(job_id)
        if not job.running or job.pid is None:
            raise ForgeError(f"job {job_id} is not running ({job.state}).")
        os.killpg(job.pid, signal.SIGINT)

        def escalate(pid: int = job.pid) -> None:
            time.sleep(20)
            if _alive(pid, job.argv):
                os.killpg(pid, signal.SIGTERM)

        threading.Thread(target=escalate, daemon=True).start()
        return job
