"""Normalization statistics from the train split only, and the one place that normalizes (`Normalizer`).

stats.json = {"channels", "mean", "std", "diff_std", "time_step_hours", "lead_hours", "train": [start, end]}
  mean, std   per channel over (time, latitude, longitude) of the train split (unweighted)
  diff_std    std of the change over ONE MODEL STEP (train.lead_hours), in physical units
  time_step_hours  the data time step of the shards; lead_hours = the model step that diff_std refers to
Reproducible to the bit: computed with dask over fixed chunks (one time step each), float64 accumulation, one
fixed reduction tree (the graph, not thread timing, decides the order of the sums).

Normalization (model space):
  z = (x - mean) / std;  model target = (z_{t+1} - z_t) / delta_scale;  z_{t+1} = z_t + output * delta_scale
  with delta_scale = diff_std / std.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from .. import cliargs
from ..config import Params, load_params
from ..errors import DataError
from ..integrity import write_json_with_checksum


def shard_paths(shards: str | Path | Sequence[str | Path]) -> list[Path]:
    """Shard stores in time order: a directory (block_*.zarr inside) or an explicit list."""
    if isinstance(shards, (str, Path)):
        paths = sorted(Path(shards).glob("block_*.zarr"))
        if not paths:
            raise DataError(f"no shards (block_*.zarr) in {shards}. "
                            "Fix: run the shard step first (snakemake / dvc repro).")
        return paths
    return [Path(p) for p in shards]


def open_shards(shards: str | Path | Sequence[str | Path]) -> xr.DataArray:
    """All shards as one lazy (dask) DataArray (time, channel, latitude, longitude)."""
    arrays = [xr.open_zarr(p, consolidated=False)["data"] for p in shard_paths(shards)]
    return xr.concat(arrays, dim="time") if len(arrays) > 1 else arrays[0]


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


def compute_stats(
    shards: str | Path | Sequence[str | Path], train: tuple[str, str], lead_hours: int
) -> dict:
    """Per-channel mean, std and std of lead_hours differences over the train time range (inclusive)."""
    import dask

    data = open_shards(shards)
    times = data["time"].values
    step = time_step_hours(times)
    if lead_hours % step:
        raise DataError(f"train.lead_hours ({lead_hours}) is not a multiple of the data time step ({step} h).")
    k = lead_hours // step
    sel = data.sel(time=slice(np.datetime64(train[0], "ns"), np.datetime64(train[1], "ns")))
    n = sel.sizes["time"]
    if n <= k:
        raise DataError(f"the train split {train} has {n} time steps in the shards; need more than {k}.")
    x = sel.data.astype(np.float64)
    # shift by the first step's channel mean so the one-pass variance has no cancellation problem
    shift = np.asarray(x[0].mean(axis=(1, 2)).compute())[None, :, None, None]
    xs = x - shift
    d = x[k:] - x[:-k]
    axes = (0, 2, 3)
    sums = dask.compute(xs.sum(axes), (xs**2).sum(axes), d.sum(axes), (d**2).sum(axes), scheduler="threads")
    s1, s2, d1, d2 = (np.asarray(s, dtype=np.float64) for s in sums)
    count = n * x.shape[2] * x.shape[3]
    dcount = (n - k) * x.shape[2] * x.shape[3]
    mean_s = s1 / count
    mean = mean_s + shift[0, :, 0, 0]
    std = np.sqrt(np.maximum(s2 / count - mean_s**2, 0.0))
    diff_std = np.sqrt(np.maximum(d2 / dcount - (d1 / dcount) ** 2, 0.0))
    for name, s in zip(data["channel"].values, std, strict=True):
        if not s > 0:
            raise DataError(f"channel {name} is constant over the train split (std 0); it cannot be normalized.")
    return {
        "channels": [str(c) for c in data["channel"].values],
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
