"""The time axis of a source: select data.start .. data.end and every n-th step, and refuse gaps and duplicates.

Everything here reads the time coordinate only (no data), so it runs while Snakemake plans the shard jobs
(`shard.plan_blocks`): a missing or duplicated time step stops the run there, naming the times and the fix, before
any shard is written. Shards must be evenly spaced because the loader pairs (t, t + lead) by position.

data.time_stride counts steps of the source's own spacing (the most common difference between its times) from the
first selected time, by value: a stride of 6 over hourly data keeps 00, 06, 12, 18 UTC even where other hours are
missing, so a stride can also step around a regular hole (e.g. an archive that lacks 03 UTC every day).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import DataError

MAX_LISTED = 8  # ranges listed per problem before "... and N more"
MAX_STRIDE = 24  # the largest stride the error message looks for


def _fmt(t) -> str:
    return str(np.datetime_as_string(np.datetime64(t, "m"), unit="m"))


def _hours(step: np.timedelta64) -> str:
    return f"{step / np.timedelta64(1, 'h'):g} h"


def nominal_step(times: np.ndarray) -> np.timedelta64 | None:
    """The most common positive difference between consecutive (sorted, unique) times; None for < 2 times."""
    unique = np.unique(times)
    if len(unique) < 2:
        return None
    diffs, counts = np.unique(np.diff(unique), return_counts=True)
    return diffs[np.argmax(counts)]


def ranges(times: np.ndarray, step: np.timedelta64) -> list[str]:
    """Sorted times compressed into 'first .. last (n steps)' runs of consecutive steps."""
    times = np.sort(np.asarray(times, dtype="datetime64[ns]"))
    if len(times) == 0:
        return []
    breaks = np.nonzero(np.diff(times) != step)[0] + 1
    out = []
    for run in np.split(times, breaks):
        out.append(_fmt(run[0]) if len(run) == 1 else f"{_fmt(run[0])} .. {_fmt(run[-1])} ({len(run)} steps)")
    return out


def _listed(items: list[str]) -> str:
    more = f", ... and {len(items) - MAX_LISTED} more" if len(items) > MAX_LISTED else ""
    return ", ".join(items[:MAX_LISTED]) + more


def select(
    times: np.ndarray, start: str | None, end: str | None, stride: int, name: str, spans: Sequence | None = None
) -> np.ndarray:
    """Indices (into `times`, in time order) of the steps data.start .. data.end, every `stride`-th; raises a
    DataError naming every missing, duplicated or off-grid time and the fix. `spans` = [(file, first, last)] names
    the files that hold a duplicated time."""
    times = np.asarray(times, dtype="datetime64[ns]")
    lo = np.datetime64(start, "ns") if start else times.min()
    hi = np.datetime64(end, "ns") if end else times.max()
    if len(times) == 0 or lo < times.min() or hi > times.max():
        have = f"{_fmt(times.min())} .. {_fmt(times.max())} ({len(times)} steps)" if len(times) else "no times"
        raise DataError(f"{name}: time range {start} .. {end} is not covered; the source has {have}. "
                        "Fix: change data.start / data.end in params.yaml.")
    inside = np.nonzero((times >= lo) & (times <= hi))[0]
    inside = inside[np.argsort(times[inside], kind="stable")]
    step = nominal_step(times[inside])
    if step is None:
        return inside
    offset = times[inside] - times[inside[0]]
    on_grid = offset % step == np.timedelta64(0)
    kept = inside[on_grid & (offset % (stride * step) == np.timedelta64(0))]
    problems = _problems(times[kept], times[inside[~on_grid]], step, stride, spans)
    if problems:
        raise DataError(f"{name}: the time axis ({_hours(step)} steps, data.time_stride {stride}, "
                        f"{_fmt(times[inside[0]])} .. {_fmt(times[inside[-1]])}) " + problems)
    return kept


def _problems(kept: np.ndarray, off_grid: np.ndarray, step: np.timedelta64, stride: int, spans) -> str:
    """'' when the kept times are evenly spaced and unique, else the description of the problems and the fixes."""
    spacing = stride * step
    unique, counts = np.unique(kept, return_counts=True)
    duplicated = unique[counts > 1]
    expected = np.arange(unique[0], unique[-1] + spacing, spacing) if len(unique) else unique
    present = np.isin(expected, unique)
    missing = expected[~present]
    if not (len(duplicated) or len(missing) or len(off_grid)):
        return ""
    said = []
    if len(missing):
        said.append(f"misses {len(missing)} time step(s): {_listed(ranges(missing, spacing))}")
    if len(duplicated):
        files = _files_with(duplicated, spans)
        said.append(f"has {len(duplicated)} duplicated time step(s): {_listed(ranges(duplicated, spacing))}"
                    + (f" (each in more than one of the files {files})" if files else ""))
    if len(off_grid):
        said.append(f"has {len(off_grid)} time(s) off the {_hours(step)} grid: {_listed([_fmt(t) for t in off_grid])}")
    fixes = [_longest_clean(expected, present, np.isin(expected, duplicated))]
    stride_fix = _stride_fix(expected, present & ~np.isin(expected, duplicated), stride, step)
    if stride_fix:
        fixes.append(stride_fix)
    if len(duplicated):
        fixes.insert(0, "remove the files (or time steps) that repeat times")
    return ("; ".join(said) + ". Shards must be evenly spaced, so no shard was planned. Fix: "
            + "; or ".join(f for f in fixes if f) + ".")


def _files_with(times: np.ndarray, spans) -> list[str]:
    if not spans:
        return []
    hits = [str(f) for f, first, last in spans if np.any((times >= first) & (times <= last))]
    return hits[:MAX_LISTED]


def _longest_clean(expected: np.ndarray, present: np.ndarray, duplicated: np.ndarray) -> str:
    """The data.start/data.end of the longest run of present, unduplicated steps."""
    good = present & ~duplicated
    best, best_len, run_start = (0, 0), 0, None
    for i, ok in enumerate(np.append(good, False)):
        if ok and run_start is None:
            run_start = i
        elif not ok and run_start is not None:
            if i - run_start > best_len:
                best, best_len = (run_start, i - 1), i - run_start
            run_start = None
    if best_len < 2:
        return ""
    a, b = best
    return (f"set data.start: '{_fmt(expected[a])}' and data.end: '{_fmt(expected[b])}', the longest stretch "
            f"without problems ({best_len} steps; the splits must fit inside)")


def _stride_fix(expected: np.ndarray, good: np.ndarray, stride: int, step: np.timedelta64) -> str:
    """A larger data.time_stride (and data.start) whose steps are all present, if one up to MAX_STRIDE exists."""
    for factor in range(2, MAX_STRIDE // stride + 1):
        for first in range(factor):
            picked = good[first::factor]
            if len(picked) >= 2 and picked.all():
                new = stride * factor
                start = f" with data.start: '{_fmt(expected[first])}'" if first else ""
                return f"set data.time_stride: {new} (every {_hours(new * step)}){start}, which steps around them"
    return ""
