"""Day-of-year x hour-of-day climatology of the training split (the reference for ACC and the climatology forecast).

As WB2 (`compute_climatology.py`, smoothing by a running window): for each (day of year, hour of day) the mean
over all training states whose day of year lies within +-window days (circular over the 366 days of the year)
at the same hour of day:

    clim(d, h) = sum_{|d' - d| <= w (mod 366)} S(d', h) / sum_{...} N(d', h)

where S and N are the sum and count of training states at day of year d' (1..366, xarray's `dayofyear`) and
hour h. Only the days needed for the requested valid times are accumulated, so memory stays small.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .errors import EvaluationError
from .inference import ShardReader

DAYS = 366


def day_and_hour(times) -> tuple[np.ndarray, np.ndarray]:
    """0-based day of year (0..365, as xarray dayofyear - 1) and hour of day of each time."""
    import pandas as pd

    idx = pd.DatetimeIndex(np.asarray(times).astype("datetime64[ns]"))
    return np.asarray(idx.day_of_year, dtype=np.int64) - 1, np.asarray(idx.hour, dtype=np.int64)


class Climatology:
    """Climatological states at (day of year, hour) keys; `at(times)` looks them up."""

    def __init__(self, keys: list[tuple[int, int]], values: np.ndarray, channels: list[str]):
        self.index = {key: i for i, key in enumerate(keys)}
        self.values = values  # (K, C, H, W) float64
        self.channels = channels

    def at(self, times) -> np.ndarray:
        days, hours = day_and_hour(times)
        try:
            rows = [self.index[(int(d), int(h))] for d, h in zip(days, hours, strict=True)]
        except KeyError as exc:
            raise EvaluationError(
                f"climatology has no value for (day of year, hour) {exc.args[0]}: the training split has no "
                "states at that hour of day. Fix: use the same time step in all splits."
            ) from None
        return self.values[rows]


def compute(
    reader: ShardReader, train_range: tuple[str, str], window_days: int, needed_times: Iterable | None = None
) -> Climatology:
    """Climatology from the states of `reader` inside `train_range`, for the keys of `needed_times` (None = all)."""
    train_times = reader.times_in(*train_range)
    if len(train_times) == 0:
        raise EvaluationError(
            f"{reader.dir}: no time steps in the train split {list(train_range)}, so no climatology. "
            "Fix: check data.splits.train in params.yaml against the shards."
        )
    train_days, train_hours = day_and_hour(train_times)
    if needed_times is None:
        keys = sorted({(d, int(h)) for d in range(DAYS) for h in np.unique(train_hours)})
    else:
        nd, nh = day_and_hour(np.asarray(list(needed_times)))
        keys = sorted(set(zip(nd.tolist(), nh.tolist(), strict=True)))
    # days whose states enter some needed window
    offsets = np.arange(-window_days, window_days + 1)
    used_days = sorted({int((d + o) % DAYS) for d, _ in keys for o in offsets})
    slot = {d: i for i, d in enumerate(used_days)}
    hours = sorted({h for _, h in keys})
    hslot = {h: i for i, h in enumerate(hours)}
    shape = (len(used_days), len(hours), len(reader.channels), len(reader.latitude), len(reader.longitude))
    sums = np.zeros(shape, dtype=np.float64)
    counts = np.zeros(shape[:2], dtype=np.int64)
    keep = [
        k for k, (d, h) in enumerate(zip(train_days, train_hours, strict=True)) if int(d) in slot and int(h) in hslot
    ]
    # stream in time order, a block at a time, so the sums are always added in the same order
    block = 64
    for start in range(0, len(keep), block):
        rows = keep[start : start + block]
        states = reader.read(train_times[rows])
        for j, k in enumerate(rows):
            d, h = slot[int(train_days[k])], hslot[int(train_hours[k])]
            sums[d, h] += states[j]
            counts[d, h] += 1
    values = np.empty((len(keys),) + shape[2:], dtype=np.float64)
    for i, (d, h) in enumerate(keys):
        rows = sorted({slot[int((d + o) % DAYS)] for o in offsets})  # a window wider than the year counts each day once
        n = counts[rows, hslot[h]].sum()
        if n == 0:
            raise EvaluationError(
                f"climatology: no training state within +-{window_days} days of day {d + 1} at {h:02d}h. "
                "Fix: lengthen data.splits.train or raise evaluate.climatology_window_days."
            )
        values[i] = sums[rows, hslot[h]].sum(axis=0) / n
    return Climatology(keys, values, reader.channels)
