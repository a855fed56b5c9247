"""Check params against the data before anything runs, so that no rule stops halfway after Snakemake (or DVC)
removed its outputs: the Snakefile calls `check()` while it builds the DAG, before any job starts.

    <package> preflight [--params params.yaml]    the same checks by hand

Read for it: nothing for the synthetic source (its variables and levels come from the generator run on a 4 x 8
grid for one step, its times from the params); for a real source, the metadata of a lazy open (no data values).
Checked: variables, levels and the time range against the source; the splits against the data's times; the
data time step against train.lead_hours; evaluate.headline / map_channels against the channels; train.batch_size
against the number of training pairs; one full rollout in the test split; the grid against data.coarsen and the
model; train.init_from. Each problem names the file, the key, the value and the fix ("did you mean" for close
names); all problems are reported together. Checks of params alone are config.py's.
"""

from __future__ import annotations

import difflib
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import cliargs, remote
from .config import Params, load_params
from .errors import ParamsError

HOUR = np.timedelta64(1, "h")


@dataclass(frozen=True)
class Data:
    """What the params select from the source, as far as metadata tells."""

    name: str  # the source, for messages
    variables: list[str]  # every variable of the source (with a time axis)
    levels: list[int]  # every pressure level of the source, hPa
    channels: list[str]  # the selected channels, in shard order
    times: np.ndarray  # the selected times (data.start..data.end, every data.time_stride-th), datetime64[ns]
    span: tuple  # first and last time of the source
    nlat: int  # the grid before data.coarsen
    nlon: int


def _tiny_synthetic(params: Params):
    """The synthetic generator's output for one step on a 4 x 8 grid: its variables, dims and levels."""
    from .data import synthetic

    d = params.data
    tiny = d.model_copy(update={"end": d.start, "synthetic": d.synthetic.model_copy(update={"nlat": 4, "nlon": 8})})
    return synthetic.generate(params.model_copy(update={"data": tiny}))


def _source(params: Params):
    """(canonical lazy Dataset with every variable and level; all its times; its grid; its name)."""
    from .data import source

    d = params.data
    if d.source == "synthetic":
        from .data.synthetic import synthetic_times

        grid = (d.synthetic.nlat, d.synthetic.nlon)
        return source.canonicalize(_tiny_synthetic(params)), synthetic_times(params), grid, "synthetic"
    remote.require_reachable(d.source)
    ds = source.canonicalize(source.open_source(d.source), name=f"source {d.source!r}")
    grid = (int(ds.sizes["latitude"]), int(ds.sizes["longitude"]))
    return ds, ds["time"].values.astype("datetime64[ns]"), grid, d.source


def _t(time) -> str:
    return str(np.datetime_as_string(np.datetime64(time, "ns"), unit="m"))


def _close(name, options) -> str:
    """The "did you mean" hint for the closest option (ties: the longest common prefix), or ""."""
    name, options = str(name), [str(o) for o in options]
    found = difflib.get_close_matches(name, options, n=len(options), cutoff=0.6)
    if not found:
        return ""
    best = max(found, key=lambda o: (round(difflib.SequenceMatcher(None, name, o).ratio(), 6),
                                     len(os.path.commonprefix([name, o]))))
    return f" Did you mean '{best}'?"


def selection_problems(params: Params, ds, path: str, name: str) -> list[str]:
    """data.variables and data.levels against what the source has."""
    problems = []
    have = [str(v) for v in ds.data_vars]
    for v in params.data.variables:
        if v not in have:
            problems.append(f"{path}: data.variables has {v!r}, which the source {name!r} lacks (it has: "
                            f"{', '.join(have)}).{_close(v, have)} Fix: correct data.variables in {path}.")
    levels = [int(x) for x in ds["level"].values] if "level" in ds.dims else []
    for lev in params.data.levels:
        if lev not in levels:
            near = f" Did you mean {min(levels, key=lambda x: abs(x - lev))}?" if levels else ""
            problems.append(f"{path}: data.levels has {lev} hPa, which the source {name!r} lacks (it has: "
                            f"{levels or 'no pressure levels'}).{near} Fix: correct data.levels in {path}.")
    return problems


def inspect(params: Params, path: str = "params.yaml") -> Data:
    """The data the params select (raises ParamsError when the variables or levels are not in the source)."""
    from .data.source import canonicalize, channel_names

    ds, times, (nlat, nlon), name = _source(params)
    problems = selection_problems(params, ds, path, name)
    if problems:
        raise ParamsError("\n".join(problems))
    d = params.data
    chosen = canonicalize(ds, d.variables or [str(v) for v in ds.data_vars], d.levels, name=name)
    return Data(name=name, variables=[str(v) for v in ds.data_vars],
                levels=[int(x) for x in ds["level"].values] if "level" in ds.dims else [],
                channels=channel_names(chosen), times=_in(times, (d.start, d.end))[:: d.time_stride],
                span=(times[0], times[-1]), nlat=nlat, nlon=nlon)


def _in(times: np.ndarray, span) -> np.ndarray:
    return times[(times >= np.datetime64(span[0], "ns")) & (times <= np.datetime64(span[1], "ns"))]


def time_problems(params: Params, data: Data, path: str) -> list[str]:
    """The time range, the splits and the time step against the data's times."""
    d = params.data
    first, last = data.span
    if np.datetime64(d.start, "ns") < first or np.datetime64(d.end, "ns") > last:
        return [f"{path}: data.start {d.start} .. data.end {d.end} reaches outside the source {data.name!r} "
                f"({_t(first)} .. {_t(last)}). Fix: move data.start/data.end inside that range in {path}."]
    if len(data.times) < 2:
        return [f"{path}: data.start {d.start} .. data.end {d.end} selects {len(data.times)} time steps of the "
                f"source {data.name!r}. Fix: widen data.start/data.end in {path} (at least two steps)."]
    problems = []
    for split, span in d.splits.ranges().items():
        if len(_in(data.times, span)) == 0:
            problems.append(f"{path}: data.splits.{split} {list(span)} holds none of the data's times "
                            f"({_t(data.times[0])} .. {_t(data.times[-1])}). Fix: move data.splits.{split} into "
                            "that range.")
    step = (data.times[1] - data.times[0]) / HOUR
    if params.train.lead_hours % step:
        problems.append(f"{path}: train.lead_hours {params.train.lead_hours} is not a multiple of the data time "
                        f"step ({step:g} h after data.time_stride). Fix: set train.lead_hours to a multiple of "
                        f"{step:g}.")
    return problems


def sample_problems(params: Params, data: Data, path: str) -> list[str]:
    """Enough training pairs for one batch; one full rollout in the test split."""
    t, ev, splits = params.train, params.evaluate, params.data.splits
    step = (data.times[1] - data.times[0]) / HOUR
    if t.lead_hours % step:
        return []  # reported by time_problems
    span = int(t.lead_hours // step) * t.rollout_steps
    pairs = max(len(_in(data.times, splits.train)) - span, 0)
    problems = []
    if pairs < t.batch_size:
        problems.append(f"{path}: train.batch_size {t.batch_size} is more than the {pairs} training pairs in "
                        f"data.splits.train {list(splits.train)} (lead {t.lead_hours} h x {t.rollout_steps} "
                        f"rollout steps). Fix: lower train.batch_size to at most {pairs}, or widen "
                        f"data.splits.train.")
    test = _in(data.times, splits.test)
    rollout = ev.max_lead_hours // t.lead_hours * t.lead_hours
    if len(test) and test[0] + rollout * HOUR > min(test[-1], np.datetime64(splits.test[1], "ns")):
        problems.append(f"{path}: data.splits.test {list(splits.test)} is too short for one forecast of "
                        f"evaluate.max_lead_hours {ev.max_lead_hours} (data there: {_t(test[0])} .. "
                        f"{_t(test[-1])}). Fix: lengthen data.splits.test or lower evaluate.max_lead_hours.")
    return problems


def climatology_problems(params: Params, data: Data, path: str) -> list[str]:
    """Every valid time of the test forecasts needs training states of its hour within the window around its day of
    year: the rule of the computed climatology (climatology.keys_with_data). An external store is checked when the
    climatology stage opens it."""
    from .climatology import keys_with_data
    from .climatology_store import day_and_hour

    splits, ev, lead = params.data.splits, params.evaluate, params.train.lead_hours
    if ev.climatology != "computed":
        return []
    test = _in(data.times, splits.test)
    valid = test[test >= test[0] + lead * HOUR] if len(test) else test
    have = keys_with_data(_in(data.times, splits.train), ev.climatology_window_days, ev.climatology_window_shape)
    missing = sorted(set(zip(*(k.tolist() for k in day_and_hour(valid)), strict=True)) - have)
    if missing:
        day, hour = missing[0]
        return [f"{path}: evaluate.climatology_window_days {ev.climatology_window_days}: no training state "
                f"(data.splits.train {list(splits.train)}) within the {ev.climatology_window_shape} window of day "
                f"{day + 1} at {hour:02d}h, a valid time of the test forecasts "
                f"(data.splits.test {list(splits.test)}). Fix: raise evaluate.climatology_window_days, or widen "
                "data.splits.train to those days of the year."]
    return []


def channel_problems(params: Params, data: Data, path: str) -> list[str]:
    ev = params.evaluate
    problems = []
    for key, names in (("evaluate.headline", ev.headline), ("evaluate.map_channels", ev.map_channels)):
        for name in names:
            if name not in data.channels:
                problems.append(f"{path}: {key} has {name!r}, not a channel of the data (channels: "
                                f"{', '.join(data.channels)}).{_close(name, data.channels)} Fix: correct {key} "
                                f"in {path}.")
    return problems


def grid_problems(params: Params, data: Data, path: str) -> list[str]:
    """data.coarsen against the grid; the grid against the model (the same rule as models/unet.py)."""
    n = params.data.coarsen
    nlat, nlon = data.nlat // n, data.nlon // n
    if nlat < 2 or nlon < 2:
        return [f"{path}: data.coarsen {n} leaves a {nlat} x {nlon} grid of the source's {data.nlat} x "
                f"{data.nlon}. Fix: lower data.coarsen to at most {min(data.nlat, data.nlon) // 2}."]
    m = params.model
    if m.name == "unet" and nlon % 2**m.depth:
        return [f"{path}: model.depth {m.depth} needs a number of longitudes divisible by {2**m.depth}, but the "
                f"grid has {nlon} (after data.coarsen {n}). Fix: lower model.depth, or change data.coarsen."]
    return []


def init_problems(params: Params, path: str) -> list[str]:
    spec = params.train.init_from
    if spec and not Path(spec).exists():
        return [f"{path}: train.init_from {spec!r} does not exist. Fix: point it at a checkpoint or model file, "
                "or set it to \"\" to start from a random init."]
    return []


def check(params: Params, path: str = "params.yaml") -> Data:
    """Every check above; raise ParamsError with all problems (one per line), else return the data's summary."""
    data = inspect(params, path)
    problems = time_problems(params, data, path)
    if not problems:
        problems += sample_problems(params, data, path) + climatology_problems(params, data, path)
    problems += channel_problems(params, data, path) + grid_problems(params, data, path)
    problems += init_problems(params, path)
    if problems:
        raise ParamsError("\n".join(problems))
    return data


def main(argv: list[str] | None = None) -> int:
    args = cliargs.parser("preflight", __doc__, "params").parse_args(argv)
    data = check(load_params(args.params), args.params)
    print(f"{args.params}: OK against {data.name!r}: {len(data.channels)} channels, {len(data.times)} times "
          f"({_t(data.times[0])} .. {_t(data.times[-1])}), {data.nlat} x {data.nlon} grid", file=sys.stderr)
    return 0
