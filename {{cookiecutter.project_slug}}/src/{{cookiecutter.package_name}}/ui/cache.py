"""Slow answers (dvc exp show, dvc status, verify) computed in a thread; a page gets the last answer at once.

Stale-while-revalidate: a reader that finds the fingerprint (cheap file stats) changed, or the answer older than
`max_age` while work is in flight, starts a refresh and still gets the previous answer, marked as refreshing.
This is a memo of what git, DVC and the files say, never a record of its own: a restart loses nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Snapshot:
    value: Any  # None until the first computation finished
    error: str | None  # the last computation's error (the value is the one before it)
    loaded_at: float | None
    refreshing: bool

    @property
    def ready(self) -> bool:
        return self.loaded_at is not None


class Background:
    def __init__(self, compute: Callable[[], Any], fingerprint: Callable[[], Hashable] = lambda: None,
                 max_age: Callable[[Any], float | None] = lambda value: None) -> None:
        self._compute = compute
        self._fingerprint = fingerprint
        self._max_age = max_age  # from the current value: e.g. short while experiments are running
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._value: Any = None
        self._error: str | None = None
        self._loaded_at: float | None = None
        self._loaded_print: Hashable = object()
        self._thread: threading.Thread | None = None

    def _run(self, fingerprint: Hashable) -> None:
        try:
            value, error = self._compute(), None
        except Exception as exc:  # noqa: BLE001 - shown on the page; the previous value stays
            value, error = None, f"{type(exc).__name__}: {exc}"
        with self._lock:
            if error is None:
                self._value = value
            self._error = error
            self._loaded_at = time.time()
            self._loaded_print = fingerprint
            self._thread = None
        self._done.set()

    def refresh(self) -> None:
        """Start a computation unless one is running."""
        fingerprint = self._fingerprint()
        with self._lock:
            if self._thread is not None:
                return
            self._done.clear()
            self._thread = threading.Thread(target=self._run, args=(fingerprint,), daemon=True)
            self._thread.start()

    def _stale(self) -> bool:
        if self._loaded_at is None:
            return True
        if self._fingerprint() != self._loaded_print:
            return True
        age = self._max_age(self._value)
        return age is not None and time.time() - self._loaded_at > age

    def get(self, wait: float = 0.0) -> Snapshot:
        """The last answer now (refreshing it in the background when stale); wait up to `wait` s for a first one."""
        if self._stale():
            self.refresh()
        if self._loaded_at is None and wait > 0:
            self._done.wait(wait)
        with self._lock:
            return Snapshot(self._value, self._error, self._loaded_at, self._thread is not None)

    def _join(self, deadline: float) -> None:
        with self._lock:
            running = self._thread
        if running is not None:
            running.join(max(0.0, deadline - time.time()))

    def wait_fresh(self, timeout: float) -> Snapshot:
        """A computation started after this call, finished (for an action that must see its own effect)."""
        deadline = time.time() + timeout
        self._join(deadline)  # one in flight may have started before the action
        self.refresh()
        self._join(deadline)
        with self._lock:
            return Snapshot(self._value, self._error, self._loaded_at, self._thread is not None)
