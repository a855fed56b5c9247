"""Training pairs from shards: (state at t, targets at t+k, t+2k, ...) normalized, with a seeded, resumable,
rank-sharded sampler and a bounded-memory loader with two prefetch levels.

Hot path: when a shard's chunks are plain little-endian float32 bytes (how shard.py writes them), one time step is
one file, read with `readinto` straight into the batch buffer, ~1 MB at a time; each piece is checked (byte count,
and its xxh3 checksum the first time this process reads the chunk: integrity.py) and, on the CPU, normalized while
still in cache. Other layouts are read through zarr.
Level 1 (ring.py): worker processes fill a ring of shared-memory batch slots in place; a slot is handed out only
when free (backpressure), so memory is bounded by num_workers x prefetch + 3 batches whatever the dataset size.
Level 2 (device.py, with `make_loader(..., device=cuda)`): batches are copied to the GPU on a side stream ahead of
use and normalized there; the workers then only read. `loader.stats()` gives the queue depth and the data-wait share.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from ..errors import DataError
from .forcings import FORCING_NAMES, forcing_fields
from .integrity import new_hasher, open_checks, raw_chunk_files
from .ring import SLOTS, SlotBatchSampler, Slots
from .stats import Normalizer, shard_paths

VERIFY = ("first", "always")


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
        verify: str = "first",
    ):
        if lead_steps < 1 or rollout_steps < 1:
            raise ValueError("lead_steps and rollout_steps must be >= 1")
        if verify not in VERIFY:
            raise ValueError(f"verify must be one of {VERIFY}, not {verify!r}")
        self.verify_always = verify == "always"
        self.paths = [str(p) for p in shard_paths(shards)]
        self.normalizer = normalizer
        self.lead_steps, self.rollout_steps = int(lead_steps), int(rollout_steps)
        times, shard_of, local, files, self._checks = [], [], [], [], []
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
            chunks = raw_chunk_files(p)
            step_bytes = ds["data"].dtype.itemsize * int(np.prod(ds["data"].shape[1:]))
            self._checks.append(open_checks(p, t.astype("datetime64[ns]"), step_bytes))
            files.append(chunks if raw_reads else None)
        if list(normalizer.channels) != self.channels:
            raise DataError(f"stats channels {normalizer.channels} differ from the shards' {self.channels}. "
                            "Fix: recompute data/stats.json from these shards.")
        self.times = np.concatenate(times)
        if np.any(np.diff(self.times) <= 0):
            raise DataError("shard times are not increasing. Fix: pass shards in time order (block_0000, ...).")
        self.shard_of, self.local, self._files = np.concatenate(shard_of), np.concatenate(local), files
        self._arrays: dict[int, object] = {}  # zarr arrays opened lazily per process (fallback path)
        self._verified: set[int] = set()  # global time indices whose chunk this process has hashed

        self.starts = self._pair_starts(times_range)
        c, h, w = len(self.channels), len(self.lat), len(self.lon)
        self.sample_shape = (c, h, w)
        self._mean = normalizer.mean[:, None, None]
        self._std = normalizer.std[:, None, None]
        self._group = max(1, 2**20 // (h * w * 4))  # channels per read: ~1 MB, so the normalization hits cache

    def _pair_starts(self, times_range: tuple | None) -> np.ndarray:
        """Global indices of the first time of every valid pair (all its times in range, evenly spaced)."""
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
        return first.astype(np.int64)

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def forcing_names(self) -> tuple[str, ...]:
        return FORCING_NAMES

    def _read(self, g: int, out: np.ndarray, normalize: bool = True) -> None:
        """Values of global time index g into out [C,H,W] float32, normalized unless `normalize` is False.

        Raw path: the chunk file is read a group of channels (~1 MB) at a time; each group is hashed (first read of
        the chunk in this process, or always) and normalized while still in the CPU cache, so the sample crosses
        main memory once (same arithmetic as Normalizer.normalize)."""
        s, t = int(self.shard_of[g]), int(self.local[g])
        files, check = self._files[s], self._checks[s]
        hasher = new_hasher() if (self.verify_always or g not in self._verified) and check.hashable(t) else None
        if files is not None:
            try:
                f = open(files[t], "rb", buffering=0)
            except FileNotFoundError:
                raise check.damaged(t, "is missing") from None
            with f:
                for a in range(0, len(out), self._group):
                    part = out[a : a + self._group]
                    n = f.readinto(memoryview(part).cast("B"))
                    if n != part.nbytes:
                        raise check.damaged(t, f"is truncated: {n} bytes where {part.nbytes} were expected")
                    if hasher is not None:
                        hasher.update(memoryview(part).cast("B"))
                    if normalize:
                        np.subtract(part, self._mean[a : a + self._group], out=part)
                        np.divide(part, self._std[a : a + self._group], out=part)
                if f.read(1):
                    raise check.damaged(t, f"is longer than the {out.nbytes} bytes of one time step")
            check.compare(t, hasher)
        else:
            if check.known(t):  # the zarr path: check the chunk file itself, then let zarr decode it
                check.check_file(t, hash_it=hasher is not None)
            arr = self._arrays.get(s)
            if arr is None:
                import zarr

                arr = self._arrays[s] = zarr.open_array(str(Path(self.paths[s]) / "data"), mode="r")
            out[...] = arr[t]
            if normalize:
                np.subtract(out, self._mean, out=out)
                np.divide(out, self._std, out=out)
        if hasher is not None:
            self._verified.add(g)

    def _fill(self, i: int, state: np.ndarray, targets: np.ndarray, forcings: np.ndarray, normalize: bool) -> int:
        g = int(self.starts[i])
        k, r = self.lead_steps, self.rollout_steps
        self._read(g, state, normalize)
        for j in range(r):
            self._read(g + (j + 1) * k, targets[j], normalize)
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
        slots = SLOTS.get(getattr(indices, "ring", -1))
        normalize = not getattr(indices, "raw", False)
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
            times[j] = self._fill(int(i), sn[j], tn[j], fn[j], normalize)
        if slot is not None and slots is not None:
            slots.filled(slot)
            return {"slot": slot, "time": times}
        return {"state": state, "forcings": forcings, "targets": targets, "time": times}


class Loader:
    """Iterable of batches (dicts of tensors) over a torch DataLoader; `sampler` is the ResumableSampler.
    Batches may live in recycled shared buffers: a batch stays valid while you hold a reference to any of its
    tensors (a buffer is reused only when nothing points into it). With a DeviceStage the batches come out on the
    GPU, normalized there. `stats()` reports the queue depth and the share of time spent waiting for data."""

    def __init__(self, dataloader: torch.utils.data.DataLoader, sampler, slots: Slots | None, pin: bool,
                 device_stage=None):
        self.dataloader, self.sampler, self.slots, self.pin = dataloader, sampler, slots, pin
        self.device_stage = device_stage
        self._window = {"batches": 0, "wait": 0.0, "depth": 0, "start": None}

    def __len__(self) -> int:
        return len(self.dataloader)

    def __iter__(self):
        batches = self._host_batches()
        if self.device_stage is not None:
            batches = self.device_stage.run(batches)
        while True:
            t0 = time.perf_counter()
            if self._window["start"] is None:
                self._window["start"] = t0
            try:
                batch = next(batches)
            except StopIteration:
                return
            w = self._window  # stats(reset=True) replaces it between batches
            w["wait"] += time.perf_counter() - t0
            w["batches"] += 1
            yield batch

    def _host_batches(self):
        batches = iter(self.dataloader)  # forks the workers the first time
        if self.slots is not None:
            self.slots.pin()
        while True:
            self._window["depth"] += self.slots.waiting() if self.slots is not None else 0
            try:
                batch = next(batches)
            except StopIteration:
                return
            except DataError as e:  # re-raised from a worker: keep the message, drop the wrapper's traceback
                raise DataError(str(e).rsplit("DataError: ", 1)[-1].strip()) from None
            if "slot" in batch:
                slot = int(batch.pop("slot"))
                batch = {**self.slots.release(slot, len(batch["time"])), "time": batch["time"]}
                if self.pin and not self.slots.pinned:
                    batch = {k: v.pin_memory() for k, v in batch.items()}
            if self.device_stage is not None:
                self._window["depth"] += len(self.device_stage.pending)
            yield batch

    def stats(self, reset: bool = False) -> dict:
        """Since the last reset: batches handed out, seconds the consumer waited for them, that wait as a share of
        the wall time, and the queue depth (batches ready ahead of the consumer when it asked: full ring slots, plus
        batches already on their way to the device), averaged over the requests."""
        w = self._window
        wall = time.perf_counter() - w["start"] if w["start"] is not None else 0.0
        out = {"batches": w["batches"], "data_wait_s": w["wait"], "data_wait_share": w["wait"] / wall if wall else 0.0,
               "queue_depth": w["depth"] / max(w["batches"], 1)}
        if reset:
            self._window = {"batches": 0, "wait": 0.0, "depth": 0, "start": time.perf_counter()}
        return out


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
    device: torch.device | str | None = None,
    normalize: bool = True,
) -> Loader:
    """Batches of `dataset` in a seeded, resumable, rank-sharded order (`loader.sampler.set_epoch(e, start_index)`).

    start_index counts samples of this rank (use step_in_epoch * batch_size to resume mid-epoch).
    num_workers worker processes (forked) each keep `prefetch` batches ready; memory is bounded by the ring of
    num_workers * prefetch + 3 batch buffers. pin_memory defaults to "a GPU is present"; pair it with
    `to_device(batch, device)` (non-blocking copies). drop_last drops the last incomplete batch of each epoch.
    device: a CUDA device makes the loader hand out batches already on it (copied on a side stream, `prefetch`
    batches ahead, normalized on the GPU; the workers only read); None or a CPU device: normalized host batches.
    normalize=False: state and targets in physical units (raw float32, as stored)."""
    import multiprocessing
    import sys

    sampler = ResumableSampler(len(dataset), seed, rank, world_size, shuffle, drop_last, epoch, start_index)
    on_gpu = device is not None and torch.device(device).type == "cuda"
    if pin_memory is None:
        pin_memory = torch.cuda.is_available()
    pin_memory = pin_memory or on_gpu
    # the buffer ring is shared with workers by fork; elsewhere (macOS, Windows) workers allocate per batch
    fork = sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()
    slots = None
    if fork or num_workers == 0:
        c, h, w = dataset.sample_shape
        r, f = dataset.rollout_steps, len(FORCING_NAMES)
        shapes = {"state": (batch_size, c, h, w), "targets": (batch_size, r, c, h, w),
                  "forcings": (batch_size, r, f, h, w)}
        slots = Slots(max(num_workers, 1) * prefetch + 3 + (prefetch if on_gpu else 0), shapes, pin_memory)
    dataloader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=SlotBatchSampler(sampler, batch_size, drop_last, slots, raw=on_gpu or not normalize),
        num_workers=num_workers,
        prefetch_factor=prefetch if num_workers > 0 else None,
        persistent_workers=num_workers > 0,
        pin_memory=pin_memory and slots is None,
        collate_fn=_collate,
        worker_init_fn=_worker_init if num_workers > 0 else None,
        multiprocessing_context="fork" if num_workers > 0 and fork else None,
    )
    stage = None
    if on_gpu:
        from .device import DeviceStage

        stage = DeviceStage(device, dataset.normalizer if normalize else None, depth=prefetch)
    return Loader(dataloader, sampler, slots, pin_memory, stage)


def to_device(batch: dict, device: torch.device | str) -> dict:
    """Copy a batch to `device`; non-blocking (overlaps with compute) when the batch is in pinned memory."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}
