"""Training pairs from shards: (state at t, targets at t+k, t+2k, ...) normalized, with a seeded, resumable,
rank-sharded sampler and a bounded-memory, multi-process loader.

Hot path: when a shard's chunks are plain little-endian float32 bytes (how shard.py writes them), one time step is
one file, read with `readinto` straight into the batch buffer, ~1 MB at a time, each piece normalized while still in
cache; other layouts are read through zarr. Batch buffers are a ring of shared-memory slots mapped before the
worker processes fork: workers fill a slot in place and send back only its number, so a batch is neither allocated
(no page faults) nor copied between processes. A slot is reused only when nothing points into it any more.
Memory is bounded by the ring: (num_workers x prefetch + 3) batches, whatever the dataset size.
"""

from __future__ import annotations

import itertools
import os
import weakref
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from ..errors import DataError
from .forcings import FORCING_NAMES, forcing_fields
from .shard import raw_chunk_files
from .stats import Normalizer, shard_paths


class WeatherPairs(torch.utils.data.Dataset):
    """Item i = dict(state [C,H,W] z_t, forcings [R,F,H,W] at t, t+k, ..., t+(R-1)k, targets [R,C,H,W]
    z_{t+k}, ..., z_{t+Rk}, time int64 ns of t); k = lead_steps data steps per model step, R = rollout_steps.
    Pairs may cross shard boundaries; every time of a pair lies inside times_range (inclusive) and the pair's times
    are evenly spaced (no gaps)."""

    def __init__(
        self,
        shards: str | Path | Sequence[str | Path],
        normalizer: Normalizer,
        times_range: tuple | None = None,
        lead_steps: int = 1,
        rollout_steps: int = 1,
        raw_reads: bool = True,
    ):
        if lead_steps < 1 or rollout_steps < 1:
            raise ValueError("lead_steps and rollout_steps must be >= 1")
        self.paths = [str(p) for p in shard_paths(shards)]
        self.normalizer = normalizer
        self.lead_steps, self.rollout_steps = int(lead_steps), int(rollout_steps)
        times, shard_of, local, files = [], [], [], []
        for s, p in enumerate(self.paths):
            ds = xr.open_zarr(p, consolidated=False, chunks=None)
            if s == 0:
                self.channels = [str(c) for c in ds["channel"].values]
                self.lat = ds["latitude"].values.astype(np.float64)
                self.lon = ds["longitude"].values.astype(np.float64)
            elif [str(c) for c in ds["channel"].values] != self.channels:
                raise DataError(f"shard {p} has channels different from {self.paths[0]}. Fix: rebuild the shards.")
            t = ds["time"].values.astype("datetime64[ns]").astype(np.int64)
            times.append(t)
            shard_of.append(np.full(len(t), s, np.int32))
            local.append(np.arange(len(t), dtype=np.int32))
            files.append(raw_chunk_files(p) if raw_reads else None)
        if list(normalizer.channels) != self.channels:
            raise DataError(f"stats channels {normalizer.channels} differ from the shards' {self.channels}. "
                            "Fix: recompute data/stats.json from these shards.")
        self.times = np.concatenate(times)
        if np.any(np.diff(self.times) <= 0):
            raise DataError("shard times are not increasing. Fix: pass shards in time order (block_0000, ...).")
        self.shard_of, self.local, self._files = np.concatenate(shard_of), np.concatenate(local), files
        self._arrays: dict[int, object] = {}  # zarr arrays opened lazily per process (fallback path)

        span = self.lead_steps * self.rollout_steps
        lo, hi = (np.int64(-(2**62)), np.int64(2**62)) if times_range is None else (
            np.datetime64(times_range[0], "ns").astype(np.int64), np.datetime64(times_range[1], "ns").astype(np.int64))
        n = len(self.times)
        first = np.arange(max(n - span, 0))
        if len(first):
            dt = np.diff(self.times).min() if n > 1 else 0
            ok = (self.times[first] >= lo) & (self.times[first + span] <= hi)
            ok &= self.times[first + span] - self.times[first] == span * dt
            first = first[ok]
        self.starts = first.astype(np.int64)
        c, h, w = len(self.channels), len(self.lat), len(self.lon)
        self.sample_shape = (c, h, w)
        self._mean = normalizer.mean[:, None, None]
        self._std = normalizer.std[:, None, None]
        self._group = max(1, 2**20 // (h * w * 4))  # channels per read: ~1 MB, so the normalization hits cache

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def forcing_names(self) -> tuple[str, ...]:
        return FORCING_NAMES

    def _read_normalized(self, g: int, out: np.ndarray) -> None:
        """Normalized values of global time index g into out [C,H,W] float32.

        Raw path: the chunk file is read a group of channels (~1 MB) at a time and each group is normalized while it
        is still in the CPU cache, so the sample crosses main memory once (same arithmetic as Normalizer.normalize)."""
        s, t = int(self.shard_of[g]), int(self.local[g])
        files = self._files[s]
        if files is not None:
            try:
                with open(files[t], "rb", buffering=0) as f:
                    for a in range(0, len(out), self._group):
                        part = out[a : a + self._group]
                        if f.readinto(memoryview(part).cast("B")) != part.nbytes:
                            raise EOFError(files[t])
                        np.subtract(part, self._mean[a : a + self._group], out=part)
                        np.divide(part, self._std[a : a + self._group], out=part)
                return
            except FileNotFoundError:  # chunk never written (all fill value): let zarr supply it
                pass
        arr = self._arrays.get(s)
        if arr is None:
            import zarr

            arr = self._arrays[s] = zarr.open_array(str(Path(self.paths[s]) / "data"), mode="r")
        out[...] = arr[t]
        np.subtract(out, self._mean, out=out)
        np.divide(out, self._std, out=out)

    def _fill(self, i: int, state: np.ndarray, targets: np.ndarray, forcings: np.ndarray) -> int:
        g = int(self.starts[i])
        k, r = self.lead_steps, self.rollout_steps
        self._read_normalized(g, state)
        for j in range(r):
            self._read_normalized(g + (j + 1) * k, targets[j])
        forcing_fields(self.times[[g + j * k for j in range(r)]], self.lat, self.lon, out=forcings)
        return int(self.times[g])

    def _alloc(self, shape: tuple[int, ...]) -> torch.Tensor:
        numel = int(np.prod(shape))
        if torch.utils.data.get_worker_info() is not None:  # in a worker: shared memory, so no copy to the parent
            storage = torch.UntypedStorage._new_shared(numel * 4)
            return torch.tensor([], dtype=torch.float32).set_(storage, 0, shape)
        return torch.empty(shape, dtype=torch.float32)

    def __getitem__(self, i: int) -> dict:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}

    def __getitems__(self, indices: Sequence[int]) -> dict:
        """A whole batch, read straight into its final buffers: a recycled shared slot when the loader assigned one
        (then only {"slot", "time"} travels back; `make_loader` turns it into tensors), else new shared memory."""
        slot = getattr(indices, "slot", None)
        slots = _SLOTS.get(getattr(indices, "ring", -1))
        b, r, f = len(indices), self.rollout_steps, len(FORCING_NAMES)
        c, h, w = self.sample_shape
        if slot is not None and slots is not None:
            views = slots.views(slot, b)
            state, targets, forcings = views["state"], views["targets"], views["forcings"]
        else:
            state = self._alloc((b, c, h, w))
            targets = self._alloc((b, r, c, h, w))
            forcings = self._alloc((b, r, f, h, w))
        times = torch.empty(b, dtype=torch.int64)
        sn, tn, fn = state.numpy(), targets.numpy(), forcings.numpy()
        for j, i in enumerate(indices):
            times[j] = self._fill(int(i), sn[j], tn[j], fn[j])
        if slot is not None and slots is not None:
            return {"slot": slot, "time": times}
        return {"state": state, "forcings": forcings, "targets": targets, "time": times}


_SLOTS: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # ring id -> _Slots (inherited by forked workers)
_RING_IDS = itertools.count()


class _Slots:
    """A ring of batch buffers in shared memory, mapped before the worker processes fork, so workers fill them in
    place and nothing is allocated (no page faults) or copied per batch. The main process hands a slot out only when
    no batch in flight uses it and no tensor the caller still holds points into it (storage use count)."""

    NAMES = ("state", "targets", "forcings")

    def __init__(self, n: int, batch_size: int, dataset: WeatherPairs, pin: bool):
        import mmap

        c, h, w = dataset.sample_shape
        r, f = dataset.rollout_steps, len(FORCING_NAMES)
        self.shapes = {"state": (batch_size, c, h, w), "targets": (batch_size, r, c, h, w),
                       "forcings": (batch_size, r, f, h, w)}
        self.buffers, self.maps, self.pinned = [], [], False
        for _ in range(n):
            bufs = {}
            for name, shape in self.shapes.items():
                m = mmap.mmap(-1, int(np.prod(shape)) * 4)  # MAP_SHARED | MAP_ANONYMOUS: shared with forked workers
                self.maps.append(m)
                bufs[name] = torch.frombuffer(m, dtype=torch.float32).view(shape)
            self.buffers.append(bufs)
        if pin and torch.cuda.is_available():
            self.pinned = all(self._pin(t) for bufs in self.buffers for t in bufs.values())
        self.baseline = [self._uses(s) for s in range(n)]
        self.in_flight: set[int] = set()
        self.ring = next(_RING_IDS)
        self.pid = os.getpid()
        _SLOTS[self.ring] = self

    def __del__(self):
        if getattr(self, "pinned", False) and os.getpid() == self.pid:  # never touch CUDA in a forked worker
            for bufs in self.buffers:
                for t in bufs.values():
                    try:
                        torch.cuda.cudart().cudaHostUnregister(t.data_ptr())
                    except Exception:  # noqa: BLE001 - interpreter shutdown
                        pass

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
                return s
        return None  # all busy (the caller keeps old batches): fall back to fresh memory

    def views(self, s: int, b: int) -> dict:
        return {name: self.buffers[s][name][:b] for name in self.NAMES}

    def release(self, s: int, b: int) -> dict:
        self.in_flight.discard(s)
        return self.views(s, b)


class _SlotBatch(list):
    """Sample indices of one batch plus the ring and slot to fill (slot None = allocate)."""

    def __init__(self, indices, ring: int, slot: int | None):
        super().__init__(indices)
        self.ring, self.slot = ring, slot


class _SlotBatchSampler(torch.utils.data.Sampler):
    def __init__(self, sampler, batch_size: int, drop_last: bool, slots: _Slots | None):
        self.sampler, self.batch_size, self.drop_last, self.slots = sampler, batch_size, drop_last, slots

    def __iter__(self):
        batch = []
        for i in self.sampler:
            batch.append(i)
            if len(batch) == self.batch_size:
                yield self._batch(batch)
                batch = []
        if batch and not self.drop_last:
            yield self._batch(batch)

    def _batch(self, indices) -> _SlotBatch:
        if self.slots is None:
            return _SlotBatch(indices, -1, None)
        return _SlotBatch(indices, self.slots.ring, self.slots.acquire())

    def __len__(self) -> int:
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


class Loader:
    """Iterable of batches (dicts of tensors) over a torch DataLoader; `sampler` is the ResumableSampler.
    Batches may live in recycled shared buffers: a batch stays valid while you hold a reference to any of its
    tensors (a buffer is reused only when nothing points into it)."""

    def __init__(self, dataloader: torch.utils.data.DataLoader, sampler, slots: _Slots | None, pin: bool):
        self.dataloader, self.sampler, self.slots, self.pin = dataloader, sampler, slots, pin

    def __len__(self) -> int:
        return len(self.dataloader)

    def __iter__(self):
        for batch in self.dataloader:
            if "slot" in batch:
                slot = int(batch.pop("slot"))
                batch = {**self.slots.release(slot, len(batch["time"])), "time": batch["time"]}
                if self.pin and not self.slots.pinned:
                    batch = {k: v.pin_memory() for k, v in batch.items()}
            yield batch


def _collate(batch):
    """__getitems__ already returns a collated batch (or a slot reference); a list of items is stacked."""
    if isinstance(batch, dict):
        return batch
    return torch.utils.data.default_collate(batch)


class ResumableSampler(torch.utils.data.Sampler):
    """Seeded permutation per epoch, split across ranks (rank r takes positions r, r+W, ...), starting at
    `start_index` = number of this rank's samples already consumed in this epoch. Same order on every run.
    With drop_last=False the permutation is padded with its head so every rank gets the same count."""

    def __init__(self, n: int, seed: int = 0, rank: int = 0, world_size: int = 1, shuffle: bool = True,
                 drop_last: bool = False, epoch: int = 0, start_index: int = 0):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        self.n, self.seed, self.rank, self.world_size = n, seed, rank, world_size
        self.shuffle, self.drop_last = shuffle, drop_last
        self.set_epoch(epoch, start_index)

    def set_epoch(self, epoch: int, start_index: int = 0) -> None:
        self.epoch, self.start_index = int(epoch), int(start_index)

    def indices(self) -> np.ndarray:
        """This rank's full order for the current epoch (before skipping start_index)."""
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        else:
            order = np.arange(self.n)
        if self.drop_last:
            order = order[: (self.n // self.world_size) * self.world_size]
        elif self.n % self.world_size:
            pad = self.world_size - self.n % self.world_size
            order = np.concatenate([order, np.resize(order, pad)])
        return order[self.rank :: self.world_size]

    def __iter__(self):
        return iter(self.indices()[self.start_index :].tolist())

    def __len__(self) -> int:
        return max(len(self.indices()) - self.start_index, 0)


def _worker_init(_):
    torch.set_num_threads(1)


def make_loader(
    dataset: WeatherPairs,
    batch_size: int,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    prefetch: int = 2,
    pin_memory: bool | None = None,
    epoch: int = 0,
    start_index: int = 0,
    shuffle: bool = True,
    drop_last: bool = True,
) -> Loader:
    """Batches of `dataset` in a seeded, resumable, rank-sharded order (`loader.sampler.set_epoch(e, start_index)`).

    start_index counts samples of this rank (use step_in_epoch * batch_size to resume mid-epoch).
    num_workers worker processes (forked) each keep `prefetch` batches ready; memory is bounded by the ring of
    num_workers * prefetch + 3 batch buffers. pin_memory defaults to "a GPU is present"; pair it with
    `to_device(batch, device)` (non-blocking copies). drop_last drops the last incomplete batch of each epoch."""
    import multiprocessing
    import sys

    sampler = ResumableSampler(len(dataset), seed, rank, world_size, shuffle, drop_last, epoch, start_index)
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    # the buffer ring is shared with workers by fork; elsewhere (macOS, Windows) workers allocate per batch
    fork = sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()
    slots = None
    if fork or num_workers == 0:
        slots = _Slots(max(num_workers, 1) * prefetch + 3, batch_size, dataset, pin_memory)
    dataloader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=_SlotBatchSampler(sampler, batch_size, drop_last, slots),
        num_workers=num_workers,
        prefetch_factor=prefetch if num_workers > 0 else None,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory and slots is None,
        collate_fn=_collate,
        worker_init_fn=_worker_init if num_workers > 0 else None,
        multiprocessing_context="fork" if num_workers > 0 and fork else None,
    )
    return Loader(dataloader, sampler, slots, pin_memory)


def to_device(batch: dict, device: torch.device | str) -> dict:
    """Copy a batch to `device`; non-blocking (overlaps with compute) when the batch is in pinned memory."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
