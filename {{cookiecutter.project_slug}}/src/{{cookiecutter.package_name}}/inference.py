"""The inference core that `evaluate`, `forecast` and `climatology` share: states read from the shards by time,
the trained forecaster (with its static fields, if any) and its grid check, the autoregressive rollout, and
deterministic numerics.

    reader = ShardReader("data/shards")
    model, meta, normalizer = load_forecaster("models/model.pt", "data/stats.json", shards="data/shards")
    check_grid(meta, reader, "models/model.pt")
    for state in rollout(model, normalizer, reader.read(inits), inits, n_steps, lead_hours, reader.latitude,
                         reader.longitude):
        ...  # (B, C, H, W) float32 physical states, one model step further each time
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .data.integrity import CheckedSteps, open_checks
from .errors import EvaluationError

HOUR = np.timedelta64(1, "h")

# Two grids are the same when every latitude and longitude agrees to this many degrees (absolute, no relative
# part, so 0 deg and 359 deg are held to the same standard). 1e-4 deg is about 11 m: far below any model grid's
# spacing, far above the float32 round-off of coordinates written and read back (< 4e-5 deg at 360).
GRID_TOLERANCE_DEG = 1e-4
# The static fields of the shards are those the model was trained with when every normalized value agrees to this:
# far above float32 round-off of a field recomputed on another machine (~1e-6), far below any real change of a mask
# or an orography (a 1 m change of a 1 km-std orography is 1e-3).
STATIC_TOLERANCE = 1e-4


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
            for i, t in enumerate(_ns(arr["time"].values)):
                self._where[int(t)] = (s, i)
        self.times = np.array(sorted(self._where), dtype=np.int64).astype("datetime64[ns]")
        step_bytes = 4 * len(self.channels) * len(self.latitude) * len(self.longitude)
        self._checks = CheckedSteps([open_checks(p, a["time"].values, step_bytes)
                                     for p, a in zip(self.paths, self._arrays, strict=True)])

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
            for _, i in pairs:  # a missing, truncated or garbled chunk is an error, not fill values or a wrong score
                self._checks.before_read(s, i)
            block = np.asarray(self._arrays[s].isel(time=[i for _, i in pairs]).values, dtype=np.float32)
            out[[k for k, _ in pairs]] = block
        return out


def _ns(times) -> np.ndarray:
    return np.asarray(times).astype("datetime64[ns]").astype(np.int64)


# ----------------------------------------------------------------------------------------------------------------
# The grid check (the one place two descriptions of channels + grid are compared)


def _span(a: np.ndarray) -> str:
    return f"{a.min():.6g}..{a.max():.6g}" if a.size else "none"


def grid_mismatches(a: Mapping, b: Mapping, a_name: str, b_name: str) -> list[str]:
    """How two {'channels', 'latitude', 'longitude'} descriptions differ, one phrase per difference ([] = same).

    Channels must match in order; the coordinates in number and to GRID_TOLERANCE_DEG each.
    """
    problems = []
    if [str(c) for c in a.get("channels", [])] != [str(c) for c in b.get("channels", [])]:
        problems.append(f"channels: {a_name} {list(a.get('channels', []))} vs {b_name} {list(b.get('channels', []))}")
    for axis in ("latitude", "longitude"):
        x = np.asarray(a.get(axis, []), dtype=np.float64)
        y = np.asarray(b.get(axis, []), dtype=np.float64)
        if x.shape != y.shape or np.any(np.abs(x - y) > GRID_TOLERANCE_DEG):
            problems.append(f"grid {axis}: {a_name} {x.size} points [{_span(x)}] vs {b_name} {y.size} [{_span(y)}]")
    return problems


def check_grid(meta: Mapping, reader: ShardReader, model_path) -> None:
    """The shards must hold the model's channels on the model's grid."""
    shards = {"channels": reader.channels, "latitude": reader.latitude, "longitude": reader.longitude}
    problems = grid_mismatches(meta, shards, "model", "shards")
    if problems:
        raise EvaluationError(
            f"{model_path} does not fit the shards in {reader.dir}: " + "; ".join(problems)
            + ". Fix: use the shards the model was trained on (or retrain on these)."
        )


# ----------------------------------------------------------------------------------------------------------------
# The forecaster


def load_forecaster(model_path: str | Path, stats_path: str | Path | None = None, device: str = "cpu",
                    shards: str | Path | None = None):  # fmt: skip
    """(model, meta, normalizer) for inference; the normalizer is the one the model was trained with. A model
    trained with static fields gets them from `shards`/static.zarr (checked against the ones it was trained with)
    appended to every input: `model` takes cat(state, forcings) like any other."""
    from .data.stats import Normalizer
    from .modelfile import ModelFile
    from .models import with_static

    model_path = Path(model_path)
    if not model_path.exists():
        raise EvaluationError(f"{model_path}: model file not found. Fix: run the train step, or pass --model PATH.")
    saved = ModelFile.load(model_path, map_location=device)
    model, meta = saved.build(device), saved.meta()
    if saved.static:
        model = with_static(model, checked_static(saved, shards, model_path)).to(device).eval()
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


def checked_static(saved, shards: str | Path | None, model_path) -> np.ndarray:
    """The normalized static fields [S, lat, lon] of `shards`/static.zarr, which must hold the fields the model file
    `saved` was trained with (same names, on its grid, values within STATIC_TOLERANCE): else an EvaluationError
    with the fix."""
    from .data.statics import STATIC_STORE, read_static
    from .errors import DataError

    names = [str(n) for n in saved.static]
    retrain = (f"set data.static: [{', '.join(names)}] (and the data.static_source the model was trained with) in "
               "params.yaml and rebuild the shards (`dvc repro shards` or `snakemake shards`), or use the shards the "
               "model was trained on, or retrain the model on these shards")
    if shards is None:
        raise EvaluationError(f"{model_path} was trained with static inputs {names}: they come from the shards' "
                              f"{STATIC_STORE.name}. Fix: pass the shards directory (--shards DIR).")
    path = Path(shards) / STATIC_STORE.name
    if not path.exists():
        raise EvaluationError(f"{model_path} was trained with static inputs {names}, but {path} does not exist. "
                              f"Fix: {retrain}.")
    try:
        have, fields = read_static(path, saved.latitude, saved.longitude)
    except DataError as exc:
        raise EvaluationError(f"{exc} (the grid of {model_path})") from None
    if have != names:
        raise EvaluationError(f"{path} holds the static fields {have}, but {model_path} was trained with {names}. "
                              f"Fix: {retrain}.")
    trained = saved.static_fields.detach().cpu().numpy()
    for k, name in enumerate(names):
        diff = np.abs(fields[k] - trained[k])
        if not np.all(diff <= STATIC_TOLERANCE):
            raise EvaluationError(
                f"{path}: static field {name!r} differs from the one {model_path} was trained with, by up to "
                f"{np.nanmax(diff):.4g} (normalized) at {int((~(diff <= STATIC_TOLERANCE)).sum())} grid points: "
                f"another static source or a rebuilt field. Fix: {retrain}."
            )
    return fields


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

    Each step sees the forcings of its input time (init + (s-1) x lead), as in training. The model runs on one
    initial time at a time: CPU convolutions (oneDNN) block their float32 sums by batch size, so a batch of 8
    and a batch of 1 differ in the last bits (~3 % of grid points after one step, more later). One sample per
    call makes a forecast independent of the batch it was computed in: `forecast` (one initial time) exports
    bitwise the states `evaluate` (evaluate.batch_size of them) scores. Batching still groups the reads.
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
    for step in range(1, n_steps + 1):
        input_times = init_times + (step - 1) * lead_hours * HOUR
        forcing = torch.as_tensor(forcing_fields(input_times, latitude, longitude), dtype=torch.float32, device=device)
        # no_grad around the step only, never across the yield: grad mode is thread state, and a generator suspended
        # inside no_grad (several ensemble members' rollouts interleave) would leave it switched off for the caller
        with torch.no_grad():
            z = torch.cat([rollout_step(model, z[i : i + 1], forcing[i : i + 1], scale) for i in range(len(z))])
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
    """
    import torch

    from .distributed import deterministic_kernels

    threads, was_deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    if not device.startswith("cuda"):
        torch.set_num_threads(1)
    deterministic_kernels(True)
    try:
        yield
    finally:  # leave the process as it was (tests call main() in-process)
        torch.set_num_threads(threads)
        if not was_deterministic:
            deterministic_kernels(False)
