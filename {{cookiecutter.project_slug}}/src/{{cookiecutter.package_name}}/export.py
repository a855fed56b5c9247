"""Forecasts, truth and climatology as files other tools read unchanged: WeatherBench2 layout, CF attributes.

Channels become WB2 variables (`geopotential_500` -> `geopotential` at level 500; `2m_temperature` keeps no level
dim). Three layouts, as WB2's evaluation takes them:

    forecast     (time, prediction_timedelta, [level], latitude, longitude)  time = initial time, lead 0 included
    truth        (time, [level], latitude, longitude)                        time = valid time
    climatology  (dayofyear, hour, [level], latitude, longitude)             dayofyear 1..366, hour of day (UTC)

    ensemble     (time, number, prediction_timedelta, [level], latitude, longitude)  number = member (forecast)

Stores are zarr format 2 with consolidated metadata (what WB2's `xr.open_zarr` and zarr-python 2 read), written
piece by piece as the states are computed. Chunks hold all levels of a variable and as many initial times and
leads (truth: times; climatology: days) as fit in BUFFER_BYTES of states of all channels, and each chunk is
written once, whole: a forecast chunk is a batch of initial times x a block of leads, filled lead by lead in
memory (LeadBuffer), so memory stays at one batch's block of states and a default run writes a few dozen files
instead of one per (initial time, lead, variable). Grids too big for that get one state per chunk. A store is
built beside its final path and moved into place when complete: a failed run keeps the previous export. A value
never written (a level a variable lacks, a day of year the climatology was not needed for) reads as NaN.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from . import units
from .fileio import atomic_path

COORD_ATTRS = {
    "latitude": {"units": "degrees_north", "standard_name": "latitude", "long_name": "latitude", "axis": "Y"},
    "longitude": {"units": "degrees_east", "standard_name": "longitude", "long_name": "longitude", "axis": "X"},
    "level": {"units": "hPa", "standard_name": "air_pressure", "long_name": "pressure level", "positive": "down",
              "axis": "Z"},  # fmt: skip
}
FORECAST_TIME_ATTRS = {
    "time": {"standard_name": "forecast_reference_time", "long_name": "forecast initial time"},
    "prediction_timedelta": {"standard_name": "forecast_period",
                             "long_name": "lead time (valid time = time + prediction_timedelta)"},  # fmt: skip
}
TRUTH_TIME_ATTRS = {"time": {"standard_name": "time", "long_name": "valid time", "axis": "T"}}
NUMBER_ATTRS = {"standard_name": "realization", "long_name": "ensemble member number"}
CLIMATOLOGY_ATTRS = {
    "dayofyear": {"long_name": "day of year (1 = 1 January; 366 only in leap years)"},
    "hour": {"long_name": "hour of day (UTC)"},
}


def model_attrs(meta: dict, source: str) -> dict:
    """Global attributes naming the model a file's forecasts come from (architecture, step, its provenance)."""
    return {
        "source": source,
        "model": json.dumps(meta.get("model", {}), sort_keys=True),
        "model_step": int(meta.get("step", -1)),
        "model_provenance": json.dumps(meta.get("provenance", {}), sort_keys=True, default=str),
    }


class Layout:
    """How channels map onto WB2 variables: variable -> [(level or None, channel index)], and the levels."""

    def __init__(self, channels: Sequence[str]):
        self.channels = list(channels)
        self.variables: dict[str, list[tuple[int | None, int]]] = {}
        for index, name in enumerate(self.channels):
            var, level = units.split_channel(name)
            self.variables.setdefault(var, []).append((level, index))
        self.levels = sorted({lev for entries in self.variables.values() for lev, _ in entries if lev is not None})

    def has_level(self, var: str) -> bool:
        return self.variables[var][0][0] is not None

    def cube(self, var: str, states: np.ndarray) -> np.ndarray:
        """The values of `var` from states (..., C, H, W): (..., [level], H, W), NaN at levels it lacks."""
        entries = self.variables[var]
        if not self.has_level(var):
            return states[..., entries[0][1], :, :]
        out = np.full(states.shape[:-3] + (len(self.levels),) + states.shape[-2:], np.nan, dtype=states.dtype)
        for level, index in entries:
            out[..., self.levels.index(level), :, :] = states[..., index, :, :]
        return out


class Store:
    """A WB2-layout zarr (format 2) store being filled: `write(where, states)` puts states (..., C, H, W) at the
    leading-dims position `where` (a tuple of ints / slices, one per leading dim). `chunks`: the chunk length
    along each leading dim (writes of whole chunks are the cheap ones)."""

    def __init__(self, path: Path, layout: Layout, chunks: tuple):
        import zarr

        self.layout, self.chunks = layout, tuple(chunks)
        self.group = zarr.open_group(path, mode="r+")

    def write(self, where: tuple, states: np.ndarray) -> None:
        for var in self.layout.variables:
            self.group[var][where] = self.layout.cube(var, np.asarray(states))


def _template(layout: Layout, leading: dict, latitude, longitude, dtype, attrs: dict, chunks: tuple):
    """An xr.Dataset with the store's coords, CF attributes and lazy (never computed) data of the right shape;
    `chunks` = the chunk length along each leading dim."""
    import dask.array as da
    import xarray as xr

    lead_dims, lead_shape = tuple(leading), tuple(len(values) for values, _ in leading.values())
    coords = {name: (name, values, dict(attrs_)) for name, (values, attrs_) in leading.items()}
    coords["latitude"] = ("latitude", np.asarray(latitude, dtype=np.float64), COORD_ATTRS["latitude"])
    coords["longitude"] = ("longitude", np.asarray(longitude, dtype=np.float64), COORD_ATTRS["longitude"])
    if layout.levels:
        coords["level"] = ("level", np.asarray(layout.levels, dtype=np.int64), COORD_ATTRS["level"])
    grid = (len(latitude), len(longitude))
    data_vars, encoding = {}, {}
    for var in layout.variables:
        level = (len(layout.levels),) if layout.has_level(var) else ()
        dims = lead_dims + (("level",) if level else ()) + ("latitude", "longitude")
        var_chunks = tuple(min(c, n) for c, n in zip(chunks, lead_shape, strict=True)) + level + grid
        data = da.zeros(lead_shape + level + grid, chunks=var_chunks, dtype=dtype)
        data_vars[var] = (dims, data, units.cf_attrs(var))
        encoding[var] = {"chunks": var_chunks, "_FillValue": np.nan}
    ds = xr.Dataset(data_vars, coords=coords, attrs={"Conventions": "CF-1.8", **attrs})
    return ds, encoding


@contextmanager
def open_store(path: str | Path, channels: Sequence[str], leading: dict, latitude, longitude,
               attrs: dict | None = None, dtype=np.float32, chunks: tuple | None = None,
               ) -> Iterator[Store]:  # fmt: skip
    """Create a WB2-layout store at `path` (atomically: it appears when the block ends without an error).

    `leading` = {dim: (values, attrs)} in order, e.g. {"time": (inits, ...), "prediction_timedelta": (leads, ...)};
    `chunks` its chunk lengths (default 1 each).
    """
    layout = Layout(channels)
    chunks = chunks or (1,) * len(leading)
    ds, encoding = _template(layout, leading, latitude, longitude, dtype, dict(attrs or {}), chunks)
    with atomic_path(path) as tmp:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=FutureWarning)  # zarr 3 on writing format 2
            ds.to_zarr(tmp, mode="w", zarr_format=2, consolidated=True, compute=False, encoding=encoding)
        yield Store(tmp, layout, chunks)


BUFFER_BYTES = 64 * 2**20  # states held in memory to fill chunks (all channels together), and the chunk bound


def state_bytes(channels: Sequence[str], latitude, longitude, itemsize: int = 4) -> int:
    """Bytes of one state: every channel on the grid."""
    return len(channels) * len(latitude) * len(longitude) * itemsize


def forecast_chunks(batch: int, n_leads: int, plane: int) -> tuple[int, int]:
    """(initial times, leads) per chunk for states of `plane` bytes written a batch of `batch` initial times at a
    time: as many leads as BUFFER_BYTES holds for the batch, then the largest divisor of the batch that fits."""
    leads = int(np.clip(BUFFER_BYTES // max(1, batch * plane), 1, n_leads))
    fits = max(1, BUFFER_BYTES // (leads * plane))
    times = max(d for d in range(1, batch + 1) if batch % d == 0 and d <= fits)
    return times, leads


class LeadBuffer:
    """A forecast sink: `(prefix, lead_index, states)` with leads arriving in order 0, 1, ... for the same prefix
    (the batch's position, e.g. (rows,) or (rows, slice(None)) with members); a block of leads (the store's lead
    chunk) is collected in memory and written as whole chunks, once."""

    def __init__(self, store: Store, n_leads: int):
        self.store, self.n_leads, self.per_chunk = store, n_leads, store.chunks[-1]
        self.block: np.ndarray | None = None
        self.first = 0

    def __call__(self, prefix: tuple, lead_index: int, states: np.ndarray) -> None:
        states = np.asarray(states)
        if lead_index % self.per_chunk == 0:
            length = min(self.per_chunk, self.n_leads - lead_index)
            self.block = np.empty(states.shape[:-3] + (length,) + states.shape[-3:], dtype=states.dtype)
            self.first = lead_index
        j = lead_index - self.first
        self.block[..., j, :, :, :] = states
        if j + 1 == self.block.shape[-4]:
            self.store.write(prefix + (slice(self.first, self.first + j + 1),), self.block)
            self.block = None


def forecast_store(path, channels, init_times, lead_hours: Sequence[int], latitude, longitude, attrs=None,
                   batch: int = 1, members: int = 0):  # fmt: skip
    """A forecast store: (time = initial time, [number = member,] prediction_timedelta = lead incl. 0), chunked for
    writes of `batch` initial times (forecast_chunks). Fill it through LeadBuffer(store, len(lead_hours))."""
    hours = (np.asarray(lead_hours, dtype=np.int64) * np.timedelta64(1, "h")).astype("timedelta64[ns]")
    leading = {"time": (np.asarray(init_times).astype("datetime64[ns]"), FORECAST_TIME_ATTRS["time"])}
    if members:
        leading["number"] = (np.arange(members, dtype=np.int64), NUMBER_ATTRS)
    leading["prediction_timedelta"] = (hours, FORECAST_TIME_ATTRS["prediction_timedelta"])
    plane = state_bytes(channels, latitude, longitude) * max(1, members)
    times, leads = forecast_chunks(batch, len(hours), plane)
    chunks = (times, members, leads) if members else (times, leads)
    return open_store(path, channels, leading, latitude, longitude, attrs, chunks=chunks)


def truth_store(path, channels, times, latitude, longitude, attrs=None, times_per_chunk: int = 1):
    """A truth store: (time = valid time); write((rows,), states) in blocks of `times_per_chunk`."""
    leading = {"time": (np.asarray(times).astype("datetime64[ns]"), TRUTH_TIME_ATTRS["time"])}
    return open_store(path, channels, leading, latitude, longitude, attrs, chunks=(times_per_chunk,))


def climatology_store(path, channels, hours: Sequence[int], latitude, longitude, attrs=None, days_per_chunk: int = 1):
    """A climatology store (dayofyear 1..366, hour); write((day-of-year index slice, hour index), states). float64:
    the values scored, to the bit. A chunk holds `days_per_chunk` days x every hour."""
    leading = {
        "dayofyear": (np.arange(1, 367, dtype=np.int64), CLIMATOLOGY_ATTRS["dayofyear"]),
        "hour": (np.asarray(sorted(hours), dtype=np.int64), CLIMATOLOGY_ATTRS["hour"]),
    }
    chunks = (days_per_chunk, len(hours))
    return open_store(path, channels, leading, latitude, longitude, attrs, dtype=np.float64, chunks=chunks)


# ----------------------------------------------------------------------------------------------------------------
# The evaluation's export (results/wb2/)

TRUTH_BLOCK = 32  # time steps read and written at a time (fewer when that many states exceed BUFFER_BYTES)


@contextmanager
def evaluation_export(directory: str | Path, enabled: bool, reader, inits, lead_hours: int, n_steps: int, clim,
                      attrs: dict, batch: int = 1) -> Iterator:  # fmt: skip
    """Yield a sink(rows, lead_index, states) that `evaluate.score` feeds every state it scores (lead 0 = the
    initial state) in batches of `batch` initial times, streamed into DIRECTORY/forecast.zarr; then write
    truth.zarr (the shards' states from the first initial time to the last valid time) and climatology.zarr (at
    the valid times scored). Yields None when not `enabled`: the directory is then left empty, so no stale export
    of an earlier run looks current."""
    with atomic_path(directory) as tmp:
        tmp.mkdir()
        if not enabled:
            yield None
            return
        leads = [lead_hours * s for s in range(n_steps + 1)]
        lat, lon, channels = reader.latitude, reader.longitude, reader.channels
        with forecast_store(tmp / "forecast.zarr", channels, inits, leads, lat, lon, attrs, batch) as store:
            buffer = LeadBuffer(store, len(leads))
            yield lambda rows, lead_index, states: buffer((rows,), lead_index, states)
        last_valid = np.asarray(inits).astype("datetime64[ns]")[-1] + np.timedelta64(leads[-1], "h")
        write_truth(tmp / "truth.zarr", reader, reader.times_in(inits[0], last_valid), attrs)
        valid = (np.asarray(inits).astype("datetime64[ns]")[:, None] + np.asarray(leads[1:]) * np.timedelta64(1, "h"))
        write_climatology(tmp / "climatology.zarr", channels, clim, valid.ravel(), lat, lon, attrs)


def write_truth(path, reader, times, attrs: dict) -> None:
    """The shards' states at `times`, read and written a chunk at a time."""
    per_chunk = int(np.clip(BUFFER_BYTES // state_bytes(reader.channels, reader.latitude, reader.longitude),
                            1, TRUTH_BLOCK))  # fmt: skip
    truth_attrs = {**attrs, "title": "truth: the states of the shards at the valid times"}
    with truth_store(path, reader.channels, times, reader.latitude, reader.longitude, truth_attrs, per_chunk) as store:
        for t0 in range(0, len(times), per_chunk):
            block = times[t0 : t0 + per_chunk]
            store.write((slice(t0, t0 + len(block)),), reader.read(block))


def write_climatology(path, channels, clim, times, latitude, longitude, attrs: dict) -> None:
    """The climatology (anything with `.at(times)`) at the (day of year, hour) of `times`; other days stay NaN.

    Chunks hold a block of days x every hour: as many days as fit in BUFFER_BYTES, and no more than the days
    needed span; each block is filled in memory and written once."""
    import pandas as pd

    times = np.asarray(times).astype("datetime64[ns]")
    idx = pd.DatetimeIndex(times)
    first: dict[tuple[int, int], np.datetime64] = {}  # (day of year, hour) -> a time that has it
    for t, day, hour in zip(times, idx.day_of_year.tolist(), idx.hour.tolist(), strict=True):
        first.setdefault((day, hour), t)
    days = sorted({d for d, _ in first})
    hours = sorted({h for _, h in first})
    per_day = len(hours) * state_bytes(channels, latitude, longitude, itemsize=8)
    per_chunk = int(np.clip(BUFFER_BYTES // per_day, 1, days[-1] - days[0] + 1))
    clim_attrs = {**attrs, "title": "climatology of the train split (WB2 layout), at the days of year scored"}
    with climatology_store(path, channels, hours, latitude, longitude, clim_attrs, per_chunk) as store:
        for c0 in sorted({(d - 1) // per_chunk * per_chunk for d in days}):  # 0-based first day of each chunk
            block = np.full((min(per_chunk, 366 - c0), len(hours), len(channels), len(latitude), len(longitude)),
                            np.nan)  # fmt: skip
            for (day, hour), t in first.items():
                if c0 <= day - 1 < c0 + per_chunk:
                    block[day - 1 - c0, hours.index(hour)] = clim.at(np.array([t]))[0]
            store.write((slice(c0, c0 + len(block)), slice(None)), block)
