"""Normalization statistics from the train split only, and the one place that normalizes (`Normalizer`).

stats.json = {"channels", "mean", "std", "diff_std", "time_step_hours", "lead_hours", "train": [start, end]}
  mean, std   per channel over (time, latitude, longitude) of the train split (unweighted)
  diff_std    std of the change over ONE MODEL STEP (train.lead_hours), in physical units
  time_step_hours  the data time step of the shards; lead_hours = the model step that diff_std refers to
Bounded memory: the shards are read one time step at a time (`ShardSteps`); what is held is that step, the
lead_hours / time step earlier ones that the differences need, and per-channel running sums. Reproducible to the
bit: float64 sums per step, then a fixed pairwise tree over the steps (`PairwiseSum`, the order dask's reduction
used before, so stats.json is unchanged), never an order that depends on threads or timing.

Normalization (model space):
  z = (x - mean) / std;  model target = (z_{t+1} - z_t) / delta_scale;  z_{t+1} = z_t + output * delta_scale
  with delta_scale = diff_std / std.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from .. import cliargs
from ..config import Params, load_params
from ..errors import DataError
from ..integrity import write_json_with_checksum
from ..units import symbol
from .integrity import CheckedSteps, open_checks


def shard_paths(shards: str | Path | Sequence[str | Path]) -> list[Path]:
    """Shard stores in time order: a directory (block_*.zarr inside) or an explicit list."""
    if isinstance(shards, (str, Path)):
        paths = sorted(Path(shards).glob("block_*.zarr"))
        if not paths:
            raise DataError(f"no shards (block_*.zarr) in {shards}. "
                            "Fix: run the shard step first (snakemake / dvc repro).")
        return paths
    return [Path(p) for p in shards]


class ShardSteps:
    """The shards' time steps one at a time, each a float32 (channel, latitude, longitude) array.

    Opening reads metadata only (no dask): `times`, `channels`, `latitude`, `longitude`; `read(i)` reads the one
    chunk of step i (the shards hold one step per chunk), so a stage that streams holds one step, not the split.
    """

    def __init__(self, shards: str | Path | Sequence[str | Path]):
        import zarr

        self.paths = shard_paths(shards)
        self._arrays = [xr.open_zarr(p, consolidated=False, chunks=None)["data"] for p in self.paths]
        self._data = [zarr.open_array(str(p / "data"), mode="r") for p in self.paths]  # 15x less overhead per read
        first = self._arrays[0]
        self.channels = [str(c) for c in first["channel"].values]
        self.latitude = np.asarray(first["latitude"].values, dtype=np.float64)
        self.longitude = np.asarray(first["longitude"].values, dtype=np.float64)
        self._where: list[tuple[int, int]] = []
        for s, arr in enumerate(self._arrays):
            if [str(c) for c in arr["channel"].values] != self.channels:
                raise DataError(f"{self.paths[s]}: channels differ from {self.paths[0]}. Fix: re-run the shard step.")
            self._where += [(s, i) for i in range(arr.sizes["time"])]
        self.times = np.concatenate([a["time"].values.astype("datetime64[ns]") for a in self._arrays])
        self._checks = CheckedSteps([open_checks(p, a["time"].values, self.step_nbytes)
                                     for p, a in zip(self.paths, self._arrays, strict=True)])

    def __len__(self) -> int:
        return len(self.times)

    def indices_in(self, start, end) -> np.ndarray:
        """Indices of the steps in [start, end] (inclusive), in time order."""
        lo, hi = np.datetime64(start, "ns"), np.datetime64(end, "ns")
        return np.flatnonzero((self.times >= lo) & (self.times <= hi))

    def read(self, index: int) -> np.ndarray:
        s, i = self._where[int(index)]
        self._checks.before_read(s, i)  # a missing, truncated or garbled chunk is an error, not fill values
        return np.asarray(self._data[s][i], dtype=np.float32)

    @property
    def step_nbytes(self) -> int:
        return 4 * len(self.channels) * len(self.latitude) * len(self.longitude)


def time_step_hours(times: np.ndarray) -> int:
    """The (uniform) time step of a time axis in hours; an error names the first gap."""
    steps = np.diff(times.astype("datetime64[ns]")) / np.timedelta64(1, "h")
    if len(steps) == 0:
        raise DataError("need at least two time steps to know the data time step")
    if not np.all(steps == steps[0]) or steps[0] <= 0 or steps[0] != int(steps[0]):
        bad = int(np.argmax(steps != steps[0]))
        raise DataError(f"shards are not evenly spaced in time: step {steps[0]} h, then {steps[bad]} h after "
                        f"{times[bad]}. Fix: rebuild the shards (missing or extra block?).")
    return int(steps[0])


class PairwiseSum:
    """Sum of a stream of arrays in a fixed binary tree: leaf i pairs with leaf i^1, each pair with its neighbour
    pair, ...; an unpaired trailing node joins at the end. O(log n) arrays held; the grouping depends on the
    count only, and the error grows as log n (not n as in a running total)."""

    def __init__(self):
        self._nodes: list[tuple[int, np.ndarray]] = []  # (level, partial sum) of complete subtrees, levels falling

    def add(self, value: np.ndarray) -> None:
        level = 0
        while self._nodes and self._nodes[-1][0] == level:
            value = self._nodes.pop()[1] + value
            level += 1
        self._nodes.append((level, value))

    def total(self) -> np.ndarray:
        if not self._nodes:
            raise ValueError("sum of nothing")
        total = self._nodes[-1][1]
        for _, node in reversed(self._nodes[:-1]):
            total = node + total
        return total


def _channel_sums(x: np.ndarray) -> np.ndarray:
    """Per-channel float64 sum of one (channel, lat, lon) array (as a (1, C, 1, 1) block, the tree's leaf)."""
    return np.sum(x[None], axis=(0, 2, 3), keepdims=True)


def compute_stats(
    shards: str | Path | Sequence[str | Path], train: tuple[str, str], lead_hours: int
) -> dict:
    """Per-channel mean, std and std of lead_hours differences over the train time range (inclusive)."""
    steps = ShardSteps(shards)
    step = time_step_hours(steps.times)
    if lead_hours % step:
        raise DataError(f"train.lead_hours ({lead_hours}) is not a multiple of the data time step ({step} h).")
    k = lead_hours // step
    index = steps.indices_in(*train)
    n = len(index)
    if n <= k:
        raise DataError(f"the train split {train} has {n} time steps in the shards; need more than {k}.")
    sums = {name: PairwiseSum() for name in ("x", "x2", "d", "d2")}
    recent: deque[np.ndarray] = deque(maxlen=k)  # the k steps before the current one, for the differences
    shift = None
    for i in index:
        x = steps.read(i).astype(np.float64)
        if shift is None:  # the first step's channel means: the one-pass variance then has no cancellation problem
            shift = (x.sum(axis=(1, 2), keepdims=True) / (x.shape[1] * x.shape[2]))
        xs = x - shift
        sums["x"].add(_channel_sums(xs))
        sums["x2"].add(_channel_sums(np.square(xs, out=xs)))
        if len(recent) == k:
            d = x - recent[0]
            sums["d"].add(_channel_sums(d))
            sums["d2"].add(_channel_sums(np.square(d, out=d)))
        recent.append(x)
    s1, s2, d1, d2 = (sums[name].total().reshape(-1) for name in ("x", "x2", "d", "d2"))
    count = n * len(steps.latitude) * len(steps.longitude)
    dcount = (n - k) * len(steps.latitude) * len(steps.longitude)
    mean_s = s1 / count
    mean = mean_s + shift.reshape(-1)
    std = np.sqrt(np.maximum(s2 / count - mean_s**2, 0.0))
    diff_std = np.sqrt(np.maximum(d2 / dcount - (d1 / dcount) ** 2, 0.0))
    for name, s in zip(steps.channels, std, strict=True):
        if not s > 0:
            raise DataError(f"channel {name} is constant over the train split (std 0); it cannot be normalized.")
    return {
        "channels": steps.channels,
        "mean": mean.tolist(),
        "std": std.tolist(),
        "diff_std": diff_std.tolist(),
        "time_step_hours": step,
        "lead_hours": int(lead_hours),
        "train": [str(train[0]), str(train[1])],
    }


class Normalizer:
    """Physical <-> model space, for numpy arrays and torch tensors with channels at axis -3 ([..., C, H, W])."""

    def __init__(self, channels, mean, std, diff_std, time_step_hours=None, lead_hours=None):
        self.channels = [str(c) for c in channels]
        self.mean = np.asarray(mean, dtype=np.float32)
        self.std = np.asarray(std, dtype=np.float32)
        self.diff_std = np.asarray(diff_std, dtype=np.float32)
        self.delta_scale = (np.asarray(diff_std, np.float64) / np.asarray(std, np.float64)).astype(np.float32)
        self.time_step_hours = time_step_hours
        self.lead_hours = lead_hours

    @classmethod
    def from_dict(cls, d: dict) -> Normalizer:
        return cls(d["channels"], d["mean"], d["std"], d["diff_std"], d.get("time_step_hours"), d.get("lead_hours"))

    @classmethod
    def from_json(cls, path: str | Path) -> Normalizer:
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_dict(self) -> dict:
        return {"channels": self.channels, "mean": self.mean.tolist(), "std": self.std.tolist(),
                "diff_std": self.diff_std.tolist(), "time_step_hours": self.time_step_hours,
                "lead_hours": self.lead_hours}

    def _vec(self, v: np.ndarray, like):
        v = v[:, None, None]
        if isinstance(like, np.ndarray) or not hasattr(like, "device"):
            return v
        import torch

        return torch.as_tensor(v, dtype=like.dtype, device=like.device)

    def normalize(self, x):
        """z = (x - mean) / std."""
        return (x - self._vec(self.mean, x)) / self._vec(self.std, x)

    def denormalize(self, z):
        """x = z * std + mean."""
        return z * self._vec(self.std, z) + self._vec(self.mean, z)

    def delta_scale_like(self, like):
        """delta_scale shaped [C, 1, 1] as the same type/device as `like`."""
        return self._vec(self.delta_scale, like)


def write_stats(stats: dict, out: str | Path) -> None:
    write_json_with_checksum(out, stats)  # atomic; training checks the checksum (integrity.read_stats)


def main(argv: list[str] | None = None) -> int:
    parser = cliargs.parser("stats", __doc__.splitlines()[0], "params", "shards")
    parser.add_argument("--out", default="data/stats.json", help="JSON file to write")
    args = parser.parse_args(argv)
    params: Params = load_params(args.params)
    stats = compute_stats(args.shards, params.data.splits.train, params.train.lead_hours)
    write_stats(stats, args.out)
    print(f"wrote {args.out}: {len(stats['channels'])} channels from train {stats['train']}")
    for name, mean, std in zip(stats["channels"], stats["mean"], stats["std"], strict=True):
        print(f"  {name:<28} mean {mean:12.6g}  std {std:10.4g}  {symbol(name)}")  # a scale at a glance
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
