"""Export a forecast from one initial time as a file in WeatherBench2 layout.

    <package> forecast --init 2001-02-01T00:00 --steps 12 --out forecasts/2001-02-01.zarr

The file has dims (time, prediction_timedelta, [level], latitude, longitude) and WB2 variable names
(geopotential with a level dim, 2m_temperature without), so WB2's evaluation code and plain xarray read it:
`time` is the initial time, `prediction_timedelta` the lead time (valid time = time + prediction_timedelta).
The rollout is inference.rollout, the one `evaluate` scores.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import cliargs
from .errors import EvaluationError
from .fileio import atomic_path
from .inference import HOUR, ShardReader, check_grid, deterministic, load_forecaster, rollout
from .units import split_channel

# ----------------------------------------------------------------------------------------------------------------
# WB2 layout


def to_wb2_dataset(
    states: np.ndarray,
    channels: Sequence[str],
    init_times,
    lead_hours: Sequence[int],
    latitude,
    longitude,
    attrs: dict | None = None,
):
    """(time, lead, channel, lat, lon) -> xr.Dataset in WB2 forecast layout, channels un-flattened to variables."""
    import xarray as xr

    states = np.asarray(states)
    parts = [split_channel(c) for c in channels]
    levels = sorted({lev for _, lev in parts if lev is not None})
    variables: dict[str, list[tuple[int | None, int]]] = {}
    for index, (var, lev) in enumerate(parts):
        variables.setdefault(var, []).append((lev, index))
    coords = {
        "time": np.asarray(init_times).astype("datetime64[ns]"),
        "prediction_timedelta": (np.asarray(lead_hours, dtype=np.int64) * HOUR).astype("timedelta64[ns]"),
        "latitude": np.asarray(latitude, dtype=np.float64),
        "longitude": np.asarray(longitude, dtype=np.float64),
    }
    if levels:
        coords["level"] = np.asarray(levels, dtype=np.int64)
    data_vars = {}
    for var, entries in variables.items():
        if entries[0][0] is None:
            data_vars[var] = (("time", "prediction_timedelta", "latitude", "longitude"), states[:, :, entries[0][1]])
            continue
        cube = np.full(states.shape[:2] + (len(levels),) + states.shape[3:], np.nan, dtype=states.dtype)
        for lev, index in entries:
            cube[:, :, levels.index(lev)] = states[:, :, index]
        data_vars[var] = (("time", "prediction_timedelta", "level", "latitude", "longitude"), cube)
    ds = xr.Dataset(data_vars, coords=coords, attrs=dict(attrs or {}))
    ds["latitude"].attrs.update(units="degrees_north", long_name="latitude")
    ds["longitude"].attrs.update(units="degrees_east", long_name="longitude")
    if levels:
        ds["level"].attrs.update(units="hPa", long_name="pressure level")
    ds["time"].attrs.update(long_name="forecast initial time")
    ds["prediction_timedelta"].attrs.update(long_name="lead time (valid time = time + prediction_timedelta)")
    return ds


def write_dataset(ds, out: str | Path) -> Path:
    """Write to `.zarr` (zarr v3) or `.nc` (netCDF4), chosen by the suffix; atomic (a failure keeps the old file)."""
    import warnings

    out = Path(out)
    if out.suffix not in {".zarr", ".nc", ".nc4", ".netcdf"}:
        raise EvaluationError(f"--out {out}: unknown format. Fix: end the path with .zarr or .nc.")
    with atomic_path(out) as tmp:
        if out.suffix == ".zarr":
            with warnings.catch_warnings():
                # consolidated metadata (an extension in zarr v3) lets a plain xr.open_zarr(path) open it quietly;
                # the store stays readable without it
                warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
                ds.to_zarr(tmp, mode="w", zarr_format=3, consolidated=True)
        else:
            ds.to_netcdf(tmp)
    return out


# ----------------------------------------------------------------------------------------------------------------
# CLI


def _parser() -> argparse.ArgumentParser:
    p = cliargs.parser("forecast", __doc__, "params", "model", "shards", "stats", "device")
    p.add_argument("--init", required=True, help="initial time (ISO, e.g. 2001-02-01T00:00); must be in the shards")
    p.add_argument("--steps", type=int, default=None, help="model steps (default: evaluate.max_lead_hours / lead)")
    p.add_argument("--out", default=None, help="output .zarr or .nc (default: forecasts/forecast_<init>.zarr)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with deterministic(args.device):
        return _forecast(args)


def _forecast(args: argparse.Namespace) -> int:
    from .config import load_params

    params = load_params(args.params)
    try:
        init = np.array([args.init], dtype="datetime64[ns]")
    except ValueError:
        raise EvaluationError(f"--init {args.init!r}: not an ISO time. Fix: e.g. --init 2001-02-01T00:00.") from None
    model, meta, normalizer = load_forecaster(args.model, args.stats, args.device)
    lead_hours = int(meta.get("lead_hours", params.train.lead_hours))
    steps = args.steps if args.steps is not None else max(1, params.evaluate.max_lead_hours // lead_hours)
    if steps < 1:
        raise EvaluationError(f"--steps {steps}: must be at least 1.")
    reader = ShardReader(args.shards)
    check_grid(meta, reader, args.model)
    states = rollout(model, normalizer, reader.read(init), init, steps, lead_hours, reader.latitude, reader.longitude)
    attrs = {
        "source": "forge forecast",
        "model": json.dumps(meta.get("model", {}), sort_keys=True),
        "model_step": int(meta.get("step", -1)),
        "provenance": json.dumps(meta.get("provenance", {}), sort_keys=True, default=str),
    }
    leads = [lead_hours * s for s in range(1, steps + 1)]
    ds = to_wb2_dataset(
        np.stack(list(states), axis=1), reader.channels, init, leads, reader.latitude, reader.longitude, attrs
    )
    stamp = str(np.datetime_as_string(init[0], unit="h")).replace(":", "")
    out = write_dataset(ds, args.out or f"forecasts/forecast_{stamp}.zarr")
    print(f"forecast: {steps} steps of {lead_hours} h from {init[0].astype('datetime64[m]')} -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
