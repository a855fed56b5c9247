"""The climatology stage: data/climatology.zarr, a day-of-year x hour-of-day climatology in WeatherBench2's layout
(climatology_store.py), the reference of ACC and the climatology forecast.

    <package> climatology --params params.yaml --shards data/shards --out data/climatology.zarr

evaluate.climatology: computed (default) -> from the train split of the shards, as WB2's `compute_climatology.py`
(`utils.compute_hourly_stat`, method "explicit"): for each hour of day h and day of year d (1..366), the weighted
mean of every training state at hour h whose day of year d' lies within the running window around d, circular over
the year:

    clim(d, h) = sum_o w_o S(d + o, h) / sum_o w_o N(d + o, h)     (o = -w..w, day indices mod 366)

with S and N the sum and the number of training states at (day, hour), w = evaluate.climatology_window_days, and
evaluate.climatology_window_shape:
    triangular  w_o = 1 - |o| / w: WB2's `create_window_weights(2w + 1)` (its default window_size 61 is w = 30);
                the days at +-w get weight 0, so the window reaches +-(w - 1) days
    uniform     w_o = 1 (a plain running mean over 2w + 1 days)
As in WB2, a non-leap year's 31 December also stands in for day 366. Hours are those the train split has.

evaluate.climatology: <zarr path or URL> -> an external climatology in WB2 layout (e.g. WB2's
`1990-2019_6h_1440x721.zarr`), the shards' channels and grid selected out of it (the same grid, or a subset of it);
a multi-decade climatology is what ACC on real data should be measured against.

Memory: one time step x a constant, whatever the grid, the window or the length of the split. The shards are read one
step at a time; the window sums run day by day per hour (a box sum adds the day entering and subtracts the day
leaving; a triangle is a running sum of two boxes' difference), so a day costs about three daily sums whatever the
window; each (hour, day) field is written to its own chunk as soon as it is known.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from . import cliargs
from .climatology_store import DAYS, Climatology, day_and_hour, days_per_block, writer
from .data.stats import ShardSteps
from .errors import DataError, EvaluationError

WINDOW_SHAPES = ("triangular", "uniform")
MAX_HALF_WIDTH = (DAYS - 2) // 2  # 2w + 1 <= 365: no day enters a window twice


def window_weights(half_width: int, shape: str) -> np.ndarray:
    """Integer weights of the day offsets -w..w (WB2's weights times w for the triangle: the means are the same)."""
    if shape not in WINDOW_SHAPES:
        raise DataError(f"evaluate.climatology_window_shape {shape!r}: use one of {list(WINDOW_SHAPES)}.")
    if not 0 <= half_width <= MAX_HALF_WIDTH:
        raise DataError(f"evaluate.climatology_window_days {half_width}: the window must fit in a year "
                        f"(0..{MAX_HALF_WIDTH}). Fix: change it in params.yaml.")
    offsets = np.arange(-half_width, half_width + 1)
    if shape == "uniform" or half_width == 0:
        return np.ones(len(offsets), dtype=np.int64)
    return half_width - np.abs(offsets)


def members_by_day(times: np.ndarray, hours: Sequence[int]) -> list[list[list[int]]]:
    """[hour index][0-based day] -> positions in `times` (time order) of the states at that day and hour."""
    import pandas as pd

    days, hour_of = day_and_hour(times)
    leap = np.asarray(pd.DatetimeIndex(np.asarray(times).astype("datetime64[ns]")).is_leap_year)
    members: list[list[list[int]]] = [[[] for _ in range(DAYS)] for _ in hours]
    slot = {h: i for i, h in enumerate(hours)}
    for pos, (day, hour, is_leap) in enumerate(zip(days.tolist(), hour_of.tolist(), leap.tolist(), strict=True)):
        members[slot[hour]][day].append(pos)
        if day == DAYS - 2 and not is_leap:  # WB2 fills day 366 of a non-leap year with its day 365
            members[slot[hour]][DAYS - 1].append(pos)
    return members


class DailySums:
    """S(day): the float64 sum of the states at one (day, hour), in time order, read from the shards when asked.

    The two most recent are kept: on each day the running boxes ask for the same day twice."""

    def __init__(self, steps: ShardSteps, index: np.ndarray, members: list[list[int]]):
        self.steps, self.index, self.members = steps, index, members
        self.get = functools.lru_cache(maxsize=2)(self._sum)

    def _sum(self, day: int) -> np.ndarray | None:
        positions = self.members[day]
        if not positions:
            return None
        total = np.zeros((len(self.steps.channels), len(self.steps.latitude), len(self.steps.longitude)))
        for pos in positions:
            total += self.steps.read(self.index[pos])
        return total

    def __call__(self, day: int) -> np.ndarray | None:
        return self.get(day % DAYS)


class Box:
    """Running sum of S over the days d+lo .. d+hi, moved on one day at a time."""

    def __init__(self, daily: DailySums, lo: int, hi: int, shape: tuple[int, ...]):
        self.daily, self.lo, self.hi = daily, lo, hi
        self.total = np.zeros(shape)
        for day in range(lo, hi + 1):
            self._add(daily(day), 1)

    def _add(self, value: np.ndarray | None, sign: int) -> None:
        if value is not None:
            (np.add if sign > 0 else np.subtract)(self.total, value, out=self.total)

    def advance(self, day: int) -> None:
        """From the window of `day` to the window of `day + 1`."""
        self._add(self.daily(day + self.hi + 1), 1)
        self._add(self.daily(day + self.lo), -1)


def window_sums(daily: DailySums, half_width: int, shape: str, field_shape) -> Iterator[tuple[int, np.ndarray]]:
    """(day, sum_o w_o S(day + o)) for day 0..365. The array is reused: use it before asking for the next day."""
    w = half_width
    if shape == "uniform" or w <= 1:  # a triangle of half-width 1 is the day itself
        box = Box(daily, -w if shape == "uniform" else 0, w if shape == "uniform" else 0, field_shape)
        for day in range(DAYS):
            yield day, box.total
            box.advance(day)
        return
    # triangle T(d) = sum_o (w - |o|) S(d + o): T(d + 1) = T(d) + S(d+1 .. d+w) - S(d-w+1 .. d)
    total = np.zeros(field_shape)
    for offset, weight in zip(range(-w + 1, w), window_weights(w, shape)[1:-1], strict=True):
        value = daily(offset)
        if value is not None:
            total += weight * value
    ahead, behind = Box(daily, 1, w, field_shape), Box(daily, -w + 1, 0, field_shape)
    for day in range(DAYS):
        yield day, total
        total += ahead.total
        total -= behind.total
        ahead.advance(day)
        behind.advance(day)


def weighted_counts(counts: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """sum_o w_o N(d + o) for every day d (exact integers, circular)."""
    w = len(weights) // 2
    offsets = np.arange(-w, w + 1)
    return np.array([int(np.dot(weights, counts[(day + offsets) % DAYS])) for day in range(DAYS)], dtype=np.int64)


def window_counts(members: list[list[int]], weights: np.ndarray) -> np.ndarray:
    """The weighted number of training states in each day's window, for one hour (members_by_day): a day has a value
    exactly where this is > 0."""
    return weighted_counts(np.array([len(m) for m in members]), weights)


def keys_with_data(train_times: np.ndarray, half_width: int, shape: str) -> set[tuple[int, int]]:
    """The (0-based day of year, hour of day) keys whose window holds a training state: the keys a computed
    climatology has values for (the rule compute_store writes by; preflight checks the test forecasts against it)."""
    weights = window_weights(half_width, shape)
    hours = sorted({int(h) for h in day_and_hour(train_times)[1]})
    keys: set[tuple[int, int]] = set()
    for hour, members in zip(hours, members_by_day(train_times, hours), strict=True):
        counts = window_counts(members, weights)
        keys.update((int(day), hour) for day in np.flatnonzero(counts))
    return keys


def provenance(params) -> dict:
    """What data/climatology.zarr is made from, as params say: written into the store, checked by `load`."""
    cfg = params.evaluate
    if cfg.climatology != "computed":
        return {"climatology": cfg.climatology}
    return {"climatology": "computed", "train": list(params.data.splits.train),
            "window_days": cfg.climatology_window_days, "window_shape": cfg.climatology_window_shape}


def compute_store(steps: ShardSteps, train: Sequence[str], half_width: int, shape: str, out: Path,
                  made_from: dict, dtype=np.float32) -> int:
    """Write the climatology of the train split of `steps` to `out` (every key with data in its window); return the
    number of fields written."""
    weights = window_weights(half_width, shape)
    index = steps.indices_in(*train)
    if len(index) == 0:
        raise DataError(f"{steps.paths[0].parent}: no time steps in the train split {list(train)}, so no "
                        "climatology. Fix: check data.splits.train in params.yaml against the shards.")
    times = steps.times[index]
    hours = sorted({int(h) for h in day_and_hour(times)[1]})
    with writer(out, steps.channels, steps.latitude, steps.longitude, hours, made_from, dtype) as write:
        written = 0
        for hi, members in enumerate(members_by_day(times, hours)):
            written += _write_hour(write, hi, members, steps, index, half_width, shape, weights)
        return written


def _write_hour(write, hi: int, members: list[list[int]], steps: ShardSteps, index, half_width: int, shape: str,
                weights: np.ndarray) -> int:
    """Window sums of one hour of day, day by day; the days with data in their window are written in runs of
    consecutive days, a block at a time. Returns the number of days written."""
    field_shape = (len(steps.channels), len(steps.latitude), len(steps.longitude))
    counts = window_counts(members, weights)
    wanted = {d for d in range(DAYS) if counts[d]}
    if not wanted:
        return 0
    block, last_wanted, written = days_per_block(field_shape), max(wanted), 0
    pending: list[np.ndarray] = []  # a run of consecutive days, not yet written
    for day, total in window_sums(DailySums(steps, index, members), half_width, shape, field_shape):
        if day in wanted:
            pending.append(total / counts[day])
        if pending and (day not in wanted or len(pending) == block or day == DAYS - 1):
            last = day if day in wanted else day - 1
            write(hi, last - len(pending) + 1, np.stack(pending))
            written += len(pending)
            pending = []
        if day >= last_wanted and not pending:
            break
    return written


def copy_external(source: str, steps: ShardSteps, out: Path, made_from: dict) -> int:
    """The shards' channels out of an external WB2-layout store, on the shards' grid, a block of days at a time."""
    clim = Climatology(source, steps.channels, steps.latitude, steps.longitude)  # refuses what does not fit
    if clim.grid.regrid is not None:
        print(f"climatology: {source} is on a {clim.grid.source_shape[0]} x {clim.grid.source_shape[1]} grid; "
              "regridding it conservatively to the shards' grid", file=sys.stderr)
    block = days_per_block(clim.read_shape, clim.days_per_chunk)
    with writer(out, steps.channels, steps.latitude, steps.longitude, clim.hours, made_from) as write:
        for hour in clim.hours or [None]:
            for first in range(0, DAYS, block):
                days = range(first, min(first + block, DAYS))
                write(clim.hour_index(hour), first, clim.fields(clim.hour_index(hour), days))
    return len(clim.hours or [None]) * DAYS


def build(params, shards: str | Path, out: str | Path) -> int:
    """The stage: compute or copy the climatology into `out` (atomically: a failure keeps the previous one)."""
    cfg = params.evaluate
    steps = ShardSteps(shards)
    window_weights(cfg.climatology_window_days, cfg.climatology_window_shape)  # bad params fail before any work
    if cfg.climatology == "computed":
        return compute_store(steps, params.data.splits.train, cfg.climatology_window_days,
                             cfg.climatology_window_shape, Path(out), provenance(params))
    return copy_external(cfg.climatology, steps, Path(out), provenance(params))


def load(path: str | Path, params, channels: Sequence[str], latitude, longitude) -> Climatology:
    """For evaluate: data/climatology.zarr on the shards' channels and grid, refused if made with other params."""
    if not Path(path).exists():
        raise EvaluationError(f"{path}: no climatology. Fix: run the climatology stage first "
                              f"(dvc repro climatology, or snakemake {path}).")
    clim = Climatology(path, channels, latitude, longitude)
    want = provenance(params)
    if clim.provenance != want:
        raise EvaluationError(f"{path} was made from {clim.provenance}, but params.yaml asks for {want}. Fix: rerun "
                              f"the climatology stage (dvc repro climatology, or snakemake {path} --forcerun).")
    return clim


def main(argv: list[str] | None = None) -> int:
    from .config import load_params

    parser = cliargs.parser("climatology", __doc__, "params", "shards")
    parser.add_argument("--out", default="data/climatology.zarr", help="store to write (default: %(default)s)")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    start = time.perf_counter()
    fields = build(params, args.shards, args.out)
    print(f"climatology: wrote {fields} (hour, day) fields to {args.out} ({json.dumps(provenance(params))}) in "
          f"{time.perf_counter() - start:.1f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
