"""results/scores/per_init.nc: the global scores of every initial time, kept for significance between experiments.

evaluate computes, for every forecast (model, persistence, climatology), initial time, lead and channel, the
area-weighted global MSE, ACC and bias of one forecast (evaluate.score's per-step arrays). Their time means are the
headline scores; this file keeps them unreduced, so that two experiments can be compared later on the initial
times they share, with a paired block bootstrap (compare.py), without rerunning either.

    variables   mse, acc, bias   float32 (forecast, init_time, lead_hours, channel); NaN where undefined
    coords      forecast (model, persistence, climatology), init_time (datetime64), lead_hours, channel

Format: netCDF3 (64-bit offset) written by xarray's scipy engine: one file that any xarray reads, holding no
timestamp or library version, so identical runs write identical bytes (DVC tracks it; reruns are compared byte
for byte).
Size: 3 scores x 3 forecasts x 4 bytes per (initial time, lead, channel), whatever the grid: 84 MB at 80 channels x
40 leads x 730 initial times (a year at 00Z and 12Z); 240 kB for the demo (5 channels x 12 leads x 112 times).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from .errors import EvaluationError
from .fileio import atomic_path

FILE = "scores/per_init.nc"  # relative to the results folder
SCORES = ("mse", "acc", "bias")
TIME_ENCODING = {"units": "minutes since 1970-01-01", "calendar": "proleptic_gregorian", "dtype": "int32"}


def dataset(per_step: dict, init_times: np.ndarray, leads_hours: Sequence[int], channels: Sequence[str]) -> xr.Dataset:
    """per_step[score][forecast] (init, lead, channel) -> one dataset, float32."""
    forecasts = list(per_step["mse"])
    dims = ("forecast", "init_time", "lead_hours", "channel")
    data = {s: (dims, np.stack([per_step[s][f] for f in forecasts]).astype(np.float32)) for s in SCORES}
    coords = {"forecast": forecasts, "init_time": np.asarray(init_times, dtype="datetime64[ns]"),
              "lead_hours": np.asarray(leads_hours, dtype=np.int32), "channel": list(channels)}
    ds = xr.Dataset(data, coords=coords)
    ds["mse"].attrs["long_name"] = "area-weighted global mean squared error (units of the channel, squared)"
    ds["acc"].attrs["long_name"] = "anomaly correlation coefficient against the climatology"
    ds["bias"].attrs["long_name"] = "area-weighted global mean error, forecast - truth (units of the channel)"
    return ds


def write(path: Path, ds: xr.Dataset) -> None:
    """Write `ds` atomically as netCDF3; the same dataset gives the same bytes."""
    encoding = {"init_time": TIME_ENCODING, **{s: {"_FillValue": np.float32(np.nan)} for s in SCORES}}
    with atomic_path(path) as tmp:
        ds.to_netcdf(tmp, engine="scipy", format="NETCDF3_64BIT", encoding=encoding)


def read(source: Path | bytes, name: str) -> xr.Dataset:
    """The file as a dataset in memory (path or its bytes); `name` says where it came from in an error."""
    try:
        with xr.open_dataset(io.BytesIO(source) if isinstance(source, bytes) else source, engine="scipy") as ds:
            ds = ds.load()
    except (OSError, ValueError, TypeError) as exc:
        raise EvaluationError(f"{name}: not a per-initial-time scores file ({exc}). Fix: rerun the evaluate stage "
                              "(`dvc repro evaluate`) to write it again.") from exc
    missing = [v for v in ("mse", "acc") if v not in ds]
    if missing or "model" not in ds["forecast"].values:
        raise EvaluationError(f"{name}: lacks {missing or 'the model forecast'}. Fix: rerun the evaluate stage.")
    ds["channel"] = ds["channel"].astype(str)
    ds["forecast"] = ds["forecast"].astype(str)
    return ds
