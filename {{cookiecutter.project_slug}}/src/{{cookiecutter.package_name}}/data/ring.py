"""The loader's first prefetch level: a ring of batch buffers in shared memory, filled in place by worker processes.

The buffers are mapped before the workers fork, so a worker fills a slot and sends back only its number: a batch
is neither allocated (no page faults) nor copied between processes. Backpressure: the batch sampler hands a worker a
slot only when no batch in flight uses it and no tensor the caller still holds points into it (storage use count);
with every slot busy a batch falls back to fresh memory. Each slot has a `ready` byte that its worker sets when the
slot is full, so the consumer can see how many batches wait for it (the queue depth).
"""

from __future__ import annotations

import itertools
import mmap
import os
import weakref

import numpy as np
import torch

SLOTS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # ring id -> Slots (inherited by forked workers)
_RING_IDS = itertools.count()


class Slots:
    """n batch buffers {"state", "targets", "forcings"} of `shapes`, shared with forked workers; page-locked for
    asynchronous host->device copies (`pin()`) when `pin` and CUDA is available."""

    NAMES = ("state", "targets", "forcings")

    def __init__(self, n: int, shapes: dict[str, tuple[int, ...]], pin: bool):
        self.shapes = shapes
        self.buffers, self.maps, self.pinned = [], [], False
        for _ in range(n):
            bufs = {}
            for name in self.NAMES:
                m = mmap.mmap(-1, int(np.prod(shapes[name])) * 4)  # MAP_SHARED | MAP_ANONYMOUS
                self.maps.append(m)
                bufs[name] = torch.frombuffer(m, dtype=torch.float32).view(shapes[name])
            self.buffers.append(bufs)
        self._ready_map = mmap.mmap(-1, n)
        self.ready = np.frombuffer(self._ready_map, dtype=np.uint8)
        self.want_pin = pin and torch.cuda.is_available()
        self.baseline = [self._uses(s) for s in range(n)]
        self.in_flight: set[int] = set()
        self.ring = next(_RING_IDS)
        self.pid = os.getpid()
        SLOTS[self.ring] = self

    def __del__(self):
        if getattr(self, "pinned", False) and os.getpid() == self.pid:  # never touch CUDA in a forked worker
            for bufs in self.buffers:
                for t in bufs.values():
                    try:
                        torch.cuda.cudart().cudaHostUnregister(t.data_ptr())
                    except Exception:  # noqa: BLE001 - interpreter shutdown
                        pass

    def pin(self) -> None:
        """Page-lock the buffers (once; call it after the workers have forked, so CUDA never sees a fork of pinned
        memory): copies from them to the GPU are then asynchronous. Without it a batch is pinned by a copy."""
        if self.want_pin and not self.pinned and os.getpid() == self.pid:
            self.want_pin = False
            self.pinned = all(self._pin(t) for bufs in self.buffers for t in bufs.values())

    @staticmethod
    def _pin(t: torch.Tensor) -> bool:
        try:  # page-lock the existing mapping so host->device copies can be asynchronous
            return torch.cuda.cudart().cudaHostRegister(t.data_ptr(), t.numel() * 4, 0) == 0
        except Exception:  # noqa: BLE001 - pinning is an optimization; copies stay correct without it
            return False

    def _uses(self, s: int) -> int:
        return sum(torch._C._storage_Use_Count(t.untyped_storage()._cdata) for t in self.buffers[s].values())

    def acquire(self) -> int | None:
        for s in range(len(self.buffers)):
            if s not in self.in_flight and self._uses(s) == self.baseline[s]:
                self.in_flight.add(s)
                self.ready[s] = 0
                return s
        return None  # all busy (the caller keeps old batches): fall back to fresh memory

    def views(self, s: int, b: int) -> dict:
        return {name: self.buffers[s][name][:b] for name in self.NAMES}

    def filled(self, s: int) -> None:
        """Called by the worker that filled slot s."""
        self.ready[s] = 1

    def release(self, s: int, b: int) -> dict:
        self.in_flight.discard(s)
        self.ready[s] = 0
        return self.views(s, b)

    def waiting(self) -> int:
        """Batches filled and not yet taken by the consumer."""
        return int(sum(self.ready[s] for s in self.in_flight))


class SlotBatch(list):
    """Sample indices of one batch plus the ring and slot to fill (slot None = allocate), and whether the worker
    leaves the values raw (normalized later, on the device)."""

    def __init__(self, indices, ring: int, slot: int | None, raw: bool):
        super().__init__(indices)
        self.ring, self.slot, self.raw = ring, slot, raw


class SlotBatchSampler(torch.utils.data.Sampler):
    def __init__(self, sampler, batch_size: int, drop_last: bool, slots: Slots | None, raw: bool):
        self.sampler, self.batch_size, self.drop_last, self.slots, self.raw = sampler, batch_size, drop_last, slots, raw

    def __iter__(self):
        batch = []
        for i in self.sampler:
            batch.append(i)
            if len(batch) == self.batch_size:
                yield self._batch(batch)
                batch = []
        if batch and not self.drop_last:
            yield self._batch(batch)

    def _batch(self, indices) -> SlotBatch:
        if self.slots is None:
            return SlotBatch(indices, -1, None, self.raw)
        return SlotBatch(indices, self.slots.ring, self.slots.acquire(), self.raw)

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)
