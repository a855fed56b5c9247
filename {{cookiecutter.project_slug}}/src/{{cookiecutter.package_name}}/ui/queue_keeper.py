"""Keeps a started queue going until every experiment queued at Start has run.

DVC's queue worker can exit while experiments are still queued (dvc#10562, dvc-task#77: its monitor sees an empty
queue between two tasks; seen here on a loaded machine): the queue then shows them queued forever, no worker left.
After the user's Start, each fresh `dvc exp show` goes through `QueueKeeper.seen`. Queued experiments with none
running for `stall_s` seconds mean no worker is taking them: the keeper runs the same `dvc queue start` again (which
starts only the workers that are missing). The keeper disarms once nothing is queued, so experiments queued later
wait for the next Start, as in DVC.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from .commands import CommandError, run

STALL_S = 30.0  # queued and nothing running this long, in `dvc exp show` answers: the worker is gone


class QueueKeeper:
    def __init__(self, root: Path, stall_s: float = STALL_S,
                 start: Callable[[list[str], Path, dict[str, str] | None], object] | None = None) -> None:
        self.root = root
        self.stall_s = stall_s
        self._start = start or (lambda argv, root, env: run(argv, root, env=env))
        self._lock = threading.Lock()
        self._command: tuple[list[str], dict[str, str] | None] | None = None  # the user's Start, while armed
        self._stalled_since: float | None = None  # load time of the first answer of the current stall
        self.restarts = 0
        self.last_error: str | None = None

    def started(self, argv: list[str], env: dict[str, str] | None) -> None:
        """The user started the queue with this command: keep it going."""
        with self._lock:
            self._command, self._stalled_since = (list(argv), env), None

    def seen(self, states: list[str], loaded_at: float) -> bool:
        """One fresh `dvc exp show` (the experiments' states), loaded at `loaded_at` (time.time()); True when it
        started the queue again."""
        with self._lock:
            if self._command is None:
                return False
            if "queued" not in states:
                self._command, self._stalled_since = None, None  # all taken: the Start is done
                return False
            if "running" in states:
                self._stalled_since = None
                return False
            if self._stalled_since is None:
                self._stalled_since = loaded_at
            if loaded_at - self._stalled_since < self.stall_s:
                return False
            self._stalled_since = None
            self.restarts += 1
            argv, env = self._command
        try:
            self._start(argv, self.root, env)
            self.last_error = None
        except CommandError as exc:  # the next stall tries again
            self.last_error = str(exc)
        return True
