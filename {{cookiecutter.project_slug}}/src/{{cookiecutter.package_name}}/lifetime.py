"""How long training processes live: workers die with their launcher, and one run at a time per run folder.

Process tree of a multi-process run:  launcher -> torchrun (python -m torch.distributed.run) -> workers.
torchrun starts each worker in a session of its own, so a signal to the launcher's process group never reaches
them, and a torchrun killed with SIGKILL cannot stop them. Two links close the gap (Linux, PR_SET_PDEATHSIG):
  - the launcher starts torchrun with SIGTERM as its parent-death signal: if the launcher dies, torchrun shuts
    down the way it does on any SIGTERM (forward it to the workers, which checkpoint and exit 75);
  - each torchrun worker sets SIGKILL as its own parent-death signal before its slow imports: if torchrun dies
    without shutting its workers down (it was killed with SIGKILL), they die at once instead of writing into a
    run folder that a rerun is about to use.
A plain `python -m <package>.train` (no torchrun) sets nothing: it may outlive its shell (nohup) on purpose.

Run folder lock: an exclusive flock on <run-dir>/.lock, held for the whole run (by the launcher and torchrun, which
inherits it, or by rank 0 of a run started without the launcher). The kernel releases it when the holder dies, so a
killed run leaves no stale lock; a second run on the same folder fails at once with a message naming the holder.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import signal
import socket
import sys
import time
import warnings
from pathlib import Path

from .errors import ForgeError

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
LOCK_NAME = ".lock"
# Set by the launcher for its children: the absolute path of the lock it holds on their behalf.
LOCK_ENV = "FORGE_RUN_LOCK"


def set_parent_death_signal(sig: int, parent: int | None = None) -> bool:
    """Ask the kernel to send `sig` to this process when its parent exits (Linux; False elsewhere).

    `parent`: the pid the parent had when this process started; if it is already gone (this process was
    reparented before the call), the signal is raised now: the kernel would never send it.
    """
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
        return False
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), sig)
    return True


def die_with_torchrun() -> None:
    """In a torchrun worker (TORCHELASTIC_RUN_ID is set): SIGKILL when torchrun exits. No-op otherwise."""
    if "TORCHELASTIC_RUN_ID" in os.environ:
        parent = os.getppid()
        if parent == 1:  # reparented to init: torchrun is already gone
            os.kill(os.getpid(), signal.SIGKILL)
        set_parent_death_signal(signal.SIGKILL, parent=parent)


def terminate_with(parent: int):
    """A Popen `preexec_fn`: the child gets SIGTERM when `parent` (the launcher, pid taken before fork) exits."""

    def preexec() -> None:
        set_parent_death_signal(signal.SIGTERM, parent=parent)

    return preexec


class RunLock:
    """An exclusive, non-blocking lock on <run_dir>/.lock; `fd` may be passed to a child to keep it held."""

    def __init__(self, run_dir: Path | str):
        self.path = Path(run_dir).resolve() / LOCK_NAME
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_holder(fd)
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise ForgeError(
                    f"{self.path.parent}: another training run is using this run folder ({holder}). Fix: wait for "
                    f"it to finish or stop it, or give this run its own --run-dir."
                ) from None
            warnings.warn(f"cannot lock {self.path} on this filesystem ({exc.strerror}): make sure no other run "
                          "uses this run folder", stacklevel=2)
            return self
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                 .encode())
        self.fd = fd
        return self

    def held_by_launcher(self) -> bool:
        """True in a child of a launcher that holds this very lock (it passed it on through LOCK_ENV)."""
        return os.environ.get(LOCK_ENV) == str(self.path)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor releases the flock
            self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        text = os.pread(fd, 200, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "holder unknown"
