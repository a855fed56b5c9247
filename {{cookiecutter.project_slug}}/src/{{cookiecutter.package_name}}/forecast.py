"""Export forecasts from one or more initial times as one file in WeatherBench2 layout.

    <package> forecast --init 2001-02-01T00:00 2001-02-01T12:00 --steps 12 --out forecasts/feb.zarr
    <package> forecast --init 2001-02-01T00:00 --members 8 --out forecasts/ens.zarr     # an ensemble

The file has dims (time, prediction_timedelta, [level], latitude, longitude), WB2 variable names (geopotential
with a level dim, 2m_temperature without) and CF attributes (export.py), so WB2's evaluation code and plain xarray
read it: `time` is the initial time, `prediction_timedelta` the lead time from 0 (the initial state) up
(valid time = time + prediction_timedelta). `.zarr` is zarr format 2; `.nc` netCDF4. The rollout is
inference.rollout, the one `evaluate` scores: a state exported here equals the state scored, bit for bit (on CPU).

An ensemble (--members N > 1, default evaluate.ensemble.members) adds a `number` dim (CF standard name
realization; WB2's metrics call it `realization`: `ds.rename(number="realization")`) after `time`: member m is made
as evaluate makes it (ensemble.ensemble_forecaster: evaluate.ensemble.perturbation, .checkpoints, the params seed),
so the members exported here are those evaluate scores.
"""

from __future__ import annotations

import argparse
import tempfile
from functools import partial
from pathlib import Path

import numpy as np

from . import cliargs, export
from .errors import EvaluationError
from .fileio import atomic_path
from .inference import ShardReader, check_grid, deterministic, load_forecaster, model_forecaster

SUFFIXES = {".zarr": "zarr", ".nc": "netcdf", ".nc4": "netcdf", ".netcdf": "netcdf"}


def write_forecasts(out: Path, forecaster, reader: ShardReader, inits: np.ndarray, steps: int, lead_hours: int,
                    attrs: dict, members: int = 0, start=None) -> None:  # fmt: skip
    """Roll out from each initial time in turn and stream the states into a WB2 zarr store at `out`.

    `forecaster(x0, init_times, steps)` yields (B, C, H, W) states; for an ensemble of `members` (> 0), it yields
    (M, B, C, H, W) states and `start(x0, init_times)` gives the members' initial states, written as lead 0."""
    leads = [lead_hours * s for s in range(steps + 1)]
    lat, lon = reader.latitude, reader.longitude
    with export.forecast_store(out, reader.channels, inits, leads, lat, lon, attrs, members=members) as store:
        buffer = export.LeadBuffer(store, len(leads))
        for k in range(len(inits)):  # one initial time at a time: memory holds one state (per member)
            x0, now = reader.read(inits[k : k + 1]), inits[k : k + 1]
            where = (slice(k, k + 1), slice(None)) if members else (slice(k, k + 1),)
            buffer(where, 0, np.swapaxes(start(x0, now), 0, 1) if members else x0)  # members: (B, M, C, H, W)
            for s, state in enumerate(forecaster(x0, now, steps)):
                buffer(where, s + 1, np.swapaxes(state, 0, 1) if members else state)


def write_file(out: Path, write_zarr) -> None:
    """`write_zarr(path)` writes a zarr store; put it (or its netCDF copy, for .nc) at `out`, atomically."""
    import xarray as xr

    if SUFFIXES[out.suffix] == "zarr":
        write_zarr(out)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.") as scratch:
        write_zarr(Path(scratch) / "forecast.zarr")
        with xr.open_zarr(Path(scratch) / "forecast.zarr") as ds, atomic_path(out) as tmp:
            ds.to_netcdf(tmp)  # chunk by chunk (dask), so memory stays at one chunk


# ----------------------------------------------------------------------------------------------------------------
# CLI


def _parser() -> argparse.ArgumentParser:
    p = cliargs.parser("forecast", __doc__, "params", "model", "shards", "stats", "device")
    p.add_argument("--init", required=True, nargs="+", help="initial time(s), ISO (e.g. 2001-02-01T00:00)")
    p.add_argument("--steps", type=int, default=None, help="model steps (default: evaluate.max_lead_hours / lead)")
    p.add_argument("--out", default=None, help="output .zarr or .nc (default: forecasts/forecast_<first init>.zarr)")
    p.add_argument("--members", type=int, default=None,
                   help="ensemble members (default: evaluate.ensemble.members; 1 = the deterministic forecast)")
    return p


def _inits(values: list[str]) -> np.ndarray:
    try:
        return np.array(values, dtype="datetime64[ns]")
    except ValueError:
        raise EvaluationError(f"--init {' '.join(values)}: not ISO times. Fix: e.g. --init 2001-02-01T00:00.") from None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with deterministic(args.device):
        return _forecast(args)


def _forecast(args: argparse.Namespace) -> int:
    from .config import load_params

    params = load_params(args.params)
    inits = _inits(args.init)
    stamp = str(np.datetime_as_string(inits[0], unit="h")).replace(":", "")
    out = Path(args.out or f"forecasts/forecast_{stamp}.zarr")
    if out.suffix not in SUFFIXES:
        raise EvaluationError(f"--out {out}: unknown format. Fix: end the path with .zarr or .nc.")
    members = params.evaluate.ensemble.members if args.members is None else args.members
    if members < 1:
        raise EvaluationError(f"--members {members}: must be at least 1.")
    model, meta, normalizer = load_forecaster(args.model, args.stats, args.device, shards=args.shards)
    lead_hours = int(meta.get("lead_hours", params.train.lead_hours))
    steps = args.steps if args.steps is not None else max(1, params.evaluate.max_lead_hours // lead_hours)
    if steps < 1:
        raise EvaluationError(f"--steps {steps}: must be at least 1.")
    reader = ShardReader(args.shards)
    check_grid(meta, reader, args.model)
    reader.read(inits)  # every initial state exists (a clear error before anything is written)
    forecaster = model_forecaster(model, normalizer, lead_hours, reader.latitude, reader.longitude)
    start = None
    if members > 1:
        from .ensemble import ensemble_forecaster, initial_states
        from .extras import load_member_forecasters

        cfg = params.evaluate.ensemble
        sources = load_member_forecasters(params.evaluate, args.model, args.stats, args.device, meta, reader,
                                          forecaster)  # fmt: skip
        forecaster = ensemble_forecaster(sources, members, normalizer.std, cfg.perturbation, params.seed)
        start = partial(initial_states, std=normalizer.std, amplitude=cfg.perturbation, n_members=members,
                        seed=params.seed)  # fmt: skip
    attrs = export.model_attrs(meta, "forge forecast")
    n = members if members > 1 else 0
    write_file(out, lambda path: write_forecasts(path, forecaster, reader, inits, steps, lead_hours, attrs, n, start))
    what = f"{members} members x " if n else ""
    print(f"forecast: {what}{len(inits)} initial time(s), {steps} steps of {lead_hours} h -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
