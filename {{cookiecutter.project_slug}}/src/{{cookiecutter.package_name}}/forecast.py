"""Autoregressive rollout, and a forecast file in WeatherBench2 layout.

    <package> forecast --init 2001-02-01T00:00 --steps 12 --out forecasts/2001-02-01.zarr

The file has dims (time, prediction_timedelta, [level], latitude, longitude) and WB2 variable names
(geopotential with a level dim, 2m_temperature without), so WB2's evaluation code and plain xarray read it:
`time` is the initial time, `prediction_timedelta` the lead time (valid time = time + prediction_timedelta).
The same rollout (`rollout`) is what `evaluate` scores.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .errors import EvaluationError

HOUR = np.timedelta64(1, "h")


# ----------------------------------------------------------------------------------------------------------------
# Reading states from the shards


class ShardReader:
    """Physical states (time, channel, lat, lon) of the shards `DIR/block_NNNN.zarr`, read by time.

    Opens each shard lazily (no dask) and reads only the requested time steps, so evaluation never holds the
    whole data set in memory.
    """

    def __init__(self, shards_dir: str | Path):
        import xarray as xr

        self.dir = Path(shards_dir)
        self.paths = sorted(self.dir.glob("block_*.zarr"))
        if not self.paths:
            raise EvaluationError(
                f"{self.dir}: no shards (block_NNNN.zarr) found. Fix: run the shard step first, or pass --shards DIR."
            )
        self._arrays = [xr.open_zarr(p, consolidated=False, chunks=None)["data"] for p in self.paths]
        first = self._arrays[0]
        self.channels = [str(c) for c in first["channel"].values]
        self.latitude = np.asarray(first["latitude"].values, dtype=np.float64)
        self.longitude = np.asarray(first["longitude"].values, dtype=np.float64)
        self._where: dict[int, tuple[int, int]] = {}
        for s, arr in enumerate(self._arrays):
            if [str(c) for c in arr["channel"].values] != self.channels:
                raise EvaluationError(
                    f"{self.paths[s]}: channels differ from {self.paths[0]}. Fix: re-run the shard step."
                )
            for i, t in enumerate(arr["time"].values.astype("datetime64[ns]").astype(np.int64)):
                self._where[int(t)] = (s, i)
        self.times = np.array(sorted(self._where), dtype=np.int64).astype("datetime64[ns]")

    def has(self, times: np.ndarray) -> np.ndarray:
        return np.array([int(t) in self._where for t in _ns(times)], dtype=bool)

    def times_in(self, start, end) -> np.ndarray:
        """Available times in [start, end] (inclusive)."""
        start, end = np.datetime64(start, "ns"), np.datetime64(end, "ns")
        return self.times[(self.times >= start) & (self.times <= end)]

    def read(self, times: np.ndarray) -> np.ndarray:
        """float32 (T, C, H, W) at the given times, in the given order."""
        times = _ns(times)
        out = np.empty((len(times), len(self.channels), len(self.latitude), len(self.longitude)), dtype=np.float32)
        by_shard: dict[int, list[tuple[int, int]]] = {}
        for k, t in enumerate(times):
            loc = self._where.get(int(t))
            if loc is None:
                raise EvaluationError(
                    f"{self.dir}: no time step {np.datetime64(int(t), 'ns')} in the shards (they cover "
                    f"{self.times[0]} .. {self.times[-1]}). Fix: choose a time inside that range, or re-shard."
                )
            by_shard.setdefault(loc[0], []).append((k, loc[1]))
        for s, pairs in sorted(by_shard.items()):
            rows = [i for _, i in pairs]
            block = np.asarray(self._arrays[s].isel(time=rows).values, dtype=np.float32)
            out[[k for k, _ in pairs]] = block
        return out


def _ns(times) -> np.ndarray:
    return np.asarray(times).astype("datetime64[ns]").astype(np.int64)


# ----------------------------------------------------------------------------------------------------------------
# Model + normalizer


def load_forecaster(model_path: str | Path, stats_path: str | Path | None = None, device: str = "cpu"):
    """(model, meta, normalizer) for inference; the normalizer is the one the model was trained with."""
    from .data.stats import Normalizer
    from .models import load_model

    model_path = Path(model_path)
    if not model_path.exists():
        raise EvaluationError(f"{model_path}: model file not found. Fix: run the train step, or pass --model PATH.")
    model, meta = load_model(model_path, map_location=device)
    model.eval()
    stats = meta.get("stats")
    if stats is None:
        if stats_path is None or not Path(stats_path).exists():
            raise EvaluationError(
                f"{model_path}: has no 'stats' and no --stats file was given. Fix: pass --stats data/stats.json."
            )
        stats = json.loads(Path(stats_path).read_text())
    if list(stats["channels"]) != list(meta["channels"]):
        raise EvaluationError(f"{model_path}: the model's channels and its stats' channels differ. Fix: retrain.")
    return model, meta, Normalizer.from_dict(stats)


def check_grid(meta: dict, reader: ShardReader, model_path) -> None:
    """The shards must hold the model's channels on the model's grid."""
    if list(meta["channels"]) != reader.channels:
        raise EvaluationError(
            f"{model_path}: trained on channels {list(meta['channels'])} but the shards in {reader.dir} hold "
            f"{reader.channels}. Fix: evaluate with the shards the model was trained on."
        )
    for name in ("latitude", "longitude"):
        if name in meta and not np.allclose(np.asarray(meta[name], dtype=np.float64), getattr(reader, name)):
            raise EvaluationError(f"{model_path}: the model's {name} grid differs from the shards' in {reader.dir}.")


def rollout(
    model,
    normalizer,
    x0: np.ndarray,
    init_times: np.ndarray,
    n_steps: int,
    lead_hours: int,
    latitude: np.ndarray,
    longitude: np.ndarray,
) -> Iterator[np.ndarray]:
    """Yield the physical states (B, C, H, W) float32 at leads 1..n_steps model steps after `init_times`.

    Each step sees the forcings of its input time (init + (s-1) x lead), as in training.
    """
    import torch

    from .data.forcings import forcing_fields
    from .models import rollout_step

    init_times = np.asarray(init_times).astype("datetime64[ns]")
    scale = np.asarray(normalizer.delta_scale, dtype=np.float32)  # [C]
    device = next(model.parameters()).device
    z = torch.as_tensor(
        np.asarray(normalizer.normalize(np.asarray(x0, dtype=np.float32)), dtype=np.float32), device=device
    )
    with torch.no_grad():
        for step in range(1, n_steps + 1):
            input_times = init_times + (step - 1) * lead_hours * HOUR
            forcing = torch.as_tensor(
                forcing_fields(input_times, latitude, longitude), dtype=torch.float32, device=device
            )
            z = rollout_step(model, z, forcing, scale)
            yield np.asarray(normalizer.denormalize(z.detach().cpu().numpy()), dtype=np.float32)


def model_forecaster(model, normalizer, lead_hours: int, latitude, longitude) -> Callable:
    """fn(x0, init_times, n_steps) -> iterator of states: the interface `evaluate.score` takes."""

    def forecast(x0, init_times, n_steps):
        return rollout(model, normalizer, x0, init_times, n_steps, lead_hours, latitude, longitude)

    return forecast


@contextmanager
def deterministic(device: str = "cpu") -> Iterator[None]:
    """Identical reruns give identical numbers on CPU, whatever the machine's thread count.

    Deterministic kernels, and one intra-op thread on CPU: a convolution split over n threads sums in an
    n-dependent order, which changes the last bits and, through cancellation, the 6th digit of a bias.
    (The grouping of initial times, evaluate.batch_size, is a param, so it is fixed for a rerun.)
    """
    import os

    import torch

    threads, was_deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    if device.startswith("cuda"):
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # needed by deterministic cuBLAS
    else:
        torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:  # leave the process as it was (tests call main() in-process)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(was_deterministic)


# ----------------------------------------------------------------------------------------------------------------
# WB2 layout


def split_channel(name: str) -> tuple[str, int | None]:
    """'geopotential_500' -> ('geopotential', 500); '2m_temperature' -> ('2m_temperature', None)."""
    head, sep, tail = name.rpartition("_")
    if sep and head and tail.isdigit():
        return head, int(tail)
    return name, None


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
    """Write to `.zarr` (zarr v3) or `.nc` (netCDF4), chosen by the suffix."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".zarr":
        import shutil

        if out.exists():
            shutil.rmtree(out)
        import warnings

        with warnings.catch_warnings():
            # consolidated metadata (an extension in zarr v3) lets a plain xr.open_zarr(path) open it quietly;
            # the store stays readable without it
            warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part")
            ds.to_zarr(out, mode="w", zarr_format=3, consolidated=True)
    elif out.suffix in {".nc", ".nc4", ".netcdf"}:
        ds.to_netcdf(out)
    else:
        raise EvaluationError(f"--out {out}: unknown format. Fix: end the path with .zarr or .nc.")
    return out


# ----------------------------------------------------------------------------------------------------------------
# CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="forecast", description=__doc__.split("\n")[0])
    p.add_argument("--init", required=True, help="initial time (ISO, e.g. 2001-02-01T00:00); must be in the shards")
    p.add_argument("--steps", type=int, default=None, help="model steps (default: evaluate.max_lead_hours / lead)")
    p.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    p.add_argument("--model", default="models/model.pt", help="trained model (default: models/model.pt)")
    p.add_argument(
        "--shards", default="data/shards", help="shard directory with the initial state (default: data/shards)"
    )
    p.add_argument("--stats", default="data/stats.json", help="stats, used if the model file has none")
    p.add_argument("--out", default=None, help="output .zarr or .nc (default: forecasts/forecast_<init>.zarr)")
    p.add_argument("--device", default="cpu", help="cpu (default; bitwise reproducible) or cuda")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with deterministic(args.device):
        return _forecast(args)


def _forecast(args: argparse.Namespace) -> int:
    from .config import load_params

    params = load_params(args.params)
    try:
        init = np.datetime64(args.init, "ns")
    except ValueError:
        raise EvaluationError(f"--init {args.init!r}: not an ISO time. Fix: e.g. --init 2001-02-01T00:00.") from None
    model, meta, normalizer = load_forecaster(args.model, args.stats, args.device)
    lead_hours = int(meta.get("lead_hours", params.train.lead_hours))
    steps = args.steps if args.steps is not None else max(1, params.evaluate.max_lead_hours // lead_hours)
    if steps < 1:
        raise EvaluationError(f"--steps {steps}: must be at least 1.")
    reader = ShardReader(args.shards)
    check_grid(meta, reader, args.model)
    x0 = reader.read(np.array([init]))
    states = np.stack(
        list(rollout(model, normalizer, x0, np.array([init]), steps, lead_hours, reader.latitude, reader.longitude)),
        axis=1,
    )
    attrs = {
        "source": "forge forecast",
        "model": json.dumps(meta.get("model", {}), sort_keys=True),
        "model_step": int(meta.get("step", -1)),
        "provenance": json.dumps(meta.get("provenance", {}), sort_keys=True, default=str),
    }
    ds = to_wb2_dataset(
        states,
        reader.channels,
        np.array([init]),
        [lead_hours * s for s in range(1, steps + 1)],
        reader.latitude,
        reader.longitude,
        attrs,
    )
    stamp = str(np.datetime_as_string(init, unit="h")).replace(":", "")
    out = write_dataset(ds, args.out or f"forecasts/forecast_{stamp}.zarr")
    print(f"forecast: {steps} steps of {lead_hours} h from {init.astype('datetime64[m]')} -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
