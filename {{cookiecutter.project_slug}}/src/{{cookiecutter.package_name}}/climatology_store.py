"""Climatology stores in WeatherBench2's layout: written a block of days at a time, read on the shards' grid.

Layout (as WB2's `1990-2019_6h_1440x721.zarr`): one variable per WB2 name, dims (hour, dayofyear, [level], latitude,
longitude); `dayofyear` 1..366 (xarray's dt.dayofyear), `hour` the hours of day the data has, `level` in hPa; zarr
format 2 with consolidated metadata and CF attributes (export.open_store writes it). The shards' flat channels
(`geopotential_500`) become variables with a level dim (`geopotential` at level 500), so WB2's tools read the store
as they read theirs, and one reader serves a store made here and an external one. One chunk per (hour, day,
variable): a field written or read is one step's size, whatever the grid. Keys without data read as NaN.

Reading (`Climatology`) takes the shards' channels out of a store (the variables and levels must be there: one error
lists all that are missing) on the shards' grid: the same grid is selected exactly (latitude in either order,
longitude in -180..180 or 0..360); another grid that covers the shards' domain is regridded conservatively, as
data.grid regrids the shards (data/regrid.py); a store that does not cover it is refused with what differs and the fix.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import xarray as xr

from .errors import DataError
from .units import split_channel

DAYS = 366
DIM_ALIASES = {"lat": "latitude", "lon": "longitude"}
PROVENANCE_ATTR = "forge_climatology"  # JSON: what the store was made from (checked against params by `load`)
GRID_TOLERANCE_DEG = 1e-5
BLOCK_BYTES = 32 * 2**20  # fields buffered per read/write: small grids pay zarr's per-chunk cost once per block
CHUNK_BYTES = 2**30  # the most read at once to read an external store's chunk (e.g. 3 days of WB2's) only once


def day_and_hour(times) -> tuple[np.ndarray, np.ndarray]:
    """0-based day of year (0..365, as xarray dayofyear - 1) and hour of day of each time."""
    import pandas as pd

    idx = pd.DatetimeIndex(np.asarray(times).astype("datetime64[ns]"))
    return np.asarray(idx.day_of_year, dtype=np.int64) - 1, np.asarray(idx.hour, dtype=np.int64)


@contextmanager
def writer(out: Path, channels: Sequence[str], latitude, longitude, hours: Sequence[int] | None, provenance: dict,
           dtype=np.float32) -> Iterator[Callable[[int | None, int, np.ndarray], None]]:
    """An empty store at `out` (it appears, replacing an older one, only when the block ends without an error);
    yields write(hour_index or None, first_day, fields) for (day, channel, lat, lon) fields at days first_day.."""
    from .export import CLIMATOLOGY_ATTRS, open_store

    leading = {"dayofyear": (np.arange(1, DAYS + 1, dtype=np.int64), CLIMATOLOGY_ATTRS["dayofyear"])}
    if hours is not None:
        leading = {"hour": (np.asarray(hours, dtype=np.int64), CLIMATOLOGY_ATTRS["hour"]), **leading}
    attrs = {"title": "day-of-year x hour-of-day climatology (WeatherBench2 layout)", "channels": list(channels),
             PROVENANCE_ATTR: json.dumps(provenance, sort_keys=True)}
    with open_store(out, channels, leading, latitude, longitude, attrs, dtype) as store:
        def write(hour_index: int | None, first_day: int, fields: np.ndarray) -> None:
            days = slice(first_day, first_day + len(fields))
            store.write((days,) if hour_index is None else (hour_index, days), fields)

        yield write


def days_per_block(field_shape: Sequence[int], chunk_days: int = 1) -> int:
    """Days of one hour read or written together: as many as fit in BLOCK_BYTES (float64), at least one; or a store's
    whole chunk of days if that fits in CHUNK_BYTES (then each chunk is read once, not once per day)."""
    field = 8 * int(np.prod(field_shape))
    fit = int(max(1, min(DAYS, BLOCK_BYTES // field)))
    return chunk_days if fit < chunk_days and chunk_days * field <= CHUNK_BYTES else fit


def open_store(path: str | Path) -> xr.Dataset:
    """Open a climatology zarr (v2 or v3, consolidated or not, local or URL) lazily, without dask."""
    path = str(path)
    if "://" not in path and not Path(path).exists():
        raise DataError(f"climatology store {path!r} does not exist. Fix: check evaluate.climatology in params.yaml "
                        "(a WB2-layout zarr path or URL, or 'computed').")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            try:
                ds = xr.open_dataset(path, engine="zarr", consolidated=True, chunks=None)
            except (KeyError, ValueError, FileNotFoundError, OSError):
                ds = xr.open_dataset(path, engine="zarr", consolidated=False, chunks=None)
        except ImportError as exc:
            raise DataError(f"climatology store {path!r}: {exc}. Fix: pip install the package it names "
                            "(gcsfs for gs://, s3fs for s3://).") from None
    ds = ds.rename({k: v for k, v in DIM_ALIASES.items() if k in ds.dims and v not in ds.dims})
    lacking = [d for d in ("dayofyear", "latitude", "longitude") if d not in ds.dims]
    if lacking:
        raise DataError(f"climatology store {path!r} has dims {sorted(map(str, ds.dims))}, no {lacking}: not a "
                        "climatology in WeatherBench2 layout (dayofyear 1..366, [hour], [level], latitude, longitude). "
                        "Fix: point evaluate.climatology at such a store, or set it to 'computed'.")
    return ds


def _describe(values: np.ndarray) -> str:
    step = np.diff(values)
    regular = len(step) and np.allclose(step, step[0], atol=GRID_TOLERANCE_DEG)
    spacing = f"step {step[0]:g}" if regular else "irregular"
    return f"{len(values)} points {values[0]:g}..{values[-1]:g}, {spacing}"


def _outer_bounds(centers: np.ndarray) -> tuple[float, float]:
    """The south / north edge of a latitude grid (cells end halfway to the next row, and at the poles)."""
    if len(centers) < 2:
        return float(centers[0]), float(centers[0])
    return (max(-90.0, 1.5 * centers[0] - 0.5 * centers[1]), min(90.0, 1.5 * centers[-1] - 0.5 * centers[-2]))


class GridMap:
    """A store's grid onto the shards': an exact selection (latitude in either order, longitude -180..180 or 0..360),
    or else conservative regridding with data/regrid.py, the method data.grid regrids the shards with."""

    def __init__(self, path: str, store_lat, store_lon, latitude, longitude):
        from .data.regrid import regrid_to, same_grid

        have_lon = np.mod(np.asarray(store_lon, np.float64), 360.0)
        lat_order, lon_order = np.argsort(store_lat, kind="stable"), np.argsort(have_lon, kind="stable")
        src_lat, src_lon = np.asarray(store_lat, np.float64)[lat_order], have_lon[lon_order]
        identity = lambda order: slice(None) if np.array_equal(order, np.arange(len(order))) else order  # noqa: E731
        self.isel = {"latitude": identity(lat_order), "longitude": identity(lon_order)}  # store -> ascending
        self.source_shape = (len(src_lat), len(src_lon))
        self.regrid = None
        if not same_grid(src_lat, src_lon, latitude, longitude):
            _check_covers(path, src_lat, src_lon, np.asarray(latitude, np.float64), np.asarray(longitude, np.float64))
            self.regrid = regrid_to(src_lat, src_lon, latitude, longitude)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """(..., store lat, store lon) in ascending order -> (..., lat, lon) on the shards' grid."""
        return values if self.regrid is None else self.regrid(values)


def _check_covers(path: str, src_lat, src_lon, lat, lon) -> None:
    """Regridding needs the store to cover the shards' domain: all their latitudes, the whole circle of longitude."""
    (s0, s1), (t0, t1) = _outer_bounds(src_lat), _outer_bounds(lat)
    spacing = np.diff(src_lon)
    global_lon = len(src_lon) > 1 and np.allclose(spacing, spacing[0], atol=GRID_TOLERANCE_DEG) and abs(
        len(src_lon) * spacing[0] - 360.0) < GRID_TOLERANCE_DEG
    if t0 < s0 - GRID_TOLERANCE_DEG or t1 > s1 + GRID_TOLERANCE_DEG or not global_lon:
        raise DataError(
            f"climatology store {path!r}: its grid (latitude {_describe(src_lat)}, longitude {_describe(src_lon)}) "
            f"does not cover the shards' (latitude {_describe(lat)}, longitude {_describe(lon)}), so it can be neither "
            "selected nor regridded to them. Fix: use a global climatology (WB2's cover the globe) on a grid that "
            "contains the shards' domain, or set evaluate.climatology: computed to compute it from the train split."
        )


class Climatology:
    """A WB2-layout climatology seen on the shards' `channels` and grid: `at(times)` -> (time, channel, lat, lon).

    Only the (hour, day of year) fields that the times need are read, one at a time, so memory is the output plus one
    field.
    """

    def __init__(self, path: str | Path, channels: Sequence[str], latitude, longitude):
        self.path = str(path)
        self.channels = [str(c) for c in channels]
        self._ds = ds = open_store(self.path)
        self.attrs = dict(ds.attrs)
        self.provenance = json.loads(self.attrs.get(PROVENANCE_ATTR, "{}"))
        days = [int(d) for d in ds["dayofyear"].values]
        if sorted(days) != list(range(1, DAYS + 1)):
            raise DataError(f"climatology store {self.path!r}: dayofyear runs {min(days)}..{max(days)} "
                            f"({len(days)} values), not 1..366. Fix: use a climatology of the whole year.")
        self._day = np.argsort(days)  # 0-based day -> index along dayofyear
        self.hours = [int(h) for h in ds["hour"].values] if "hour" in ds.dims else None
        self._plan = self._channel_plan(ds)
        self.grid = GridMap(self.path, ds["latitude"].values, ds["longitude"].values, latitude, longitude)
        self.shape = (len(self.channels), len(latitude), len(longitude))
        self.read_shape = (len(self.channels),) + self.grid.source_shape  # what one field costs to read
        self.dtype = np.result_type(*(ds[var].dtype for var in self._plan))

    def _channel_plan(self, ds: xr.Dataset) -> dict[str, list[tuple[int, int | None]]]:
        """variable -> [(channel index, index along `level` or None)]; one error lists every channel that is missing."""
        plan: dict[str, list[tuple[int, int | None]]] = {}
        missing = []
        levels = [int(v) for v in ds["level"].values] if "level" in ds.coords else []
        for index, name in enumerate(self.channels):
            var, level = (name, None) if name in ds.data_vars else split_channel(name)
            has_level = var in ds.data_vars and "level" in ds[var].dims
            if var not in ds.data_vars or (level is None) == has_level or (level is not None and level not in levels):
                missing.append(name)
                continue
            plan.setdefault(var, []).append((index, None if level is None else levels.index(level)))
        if missing:
            have = sorted(str(v) for v in ds.data_vars)
            raise DataError(
                f"climatology store {self.path!r} lacks the channels {missing} (it has variables {have}"
                + (f" at levels {levels} hPa" if levels else "") + "). Fix: use a climatology with these variables "
                "and levels, or set evaluate.climatology: computed to compute it from the train split."
            )
        allowed = {"hour", "dayofyear", "level", "latitude", "longitude"}
        for var in plan:
            extra = set(map(str, ds[var].dims)) - allowed
            if extra:
                raise DataError(f"climatology store {self.path!r}: variable {var!r} has extra dims {sorted(extra)}. "
                                "Fix: select them away (e.g. a quantile) and save the store again.")
        return plan

    def hour_index(self, hour: int | None) -> int | None:
        """Index along the store's `hour` of an hour of day (None for a daily store, which fits every hour)."""
        if self.hours is None:
            return None
        if hour not in self.hours:
            raise DataError(f"climatology store {self.path!r} has hours {self.hours}; a valid time at {hour:02d}h "
                            "needs its hour. Fix: use a climatology with that hour of day, or evaluate at its hours.")
        return self.hours.index(hour)

    def fields(self, hour_index: int | None, days: Sequence[int]) -> np.ndarray:
        """(day, channel, lat, lon) at 0-based `days` of one hour, on the shards' grid."""
        out = np.empty((len(days),) + self.shape, dtype=self.dtype)
        lead = {"dayofyear": self._day[np.asarray(days, dtype=np.int64)]}
        if hour_index is not None:
            lead["hour"] = hour_index
        lead.update(self.grid.isel)
        for var, entries in self._plan.items():
            levels = sorted({level for _, level in entries if level is not None})  # read only the levels needed
            da = self._ds[var].isel({**lead, "level": levels} if levels else lead)
            dims = ("dayofyear", *(("level",) if levels else ()), "latitude", "longitude")
            values = self.grid(np.asarray(da.transpose(*dims).values))
            for index, level in entries:
                out[:, index] = values if level is None else values[:, levels.index(level)]
        return out

    @property
    def days_per_chunk(self) -> int:
        """Days the store keeps in one chunk (WB2's 0.25 deg climatology: 3): read together, each chunk is read once."""
        chunks = [dict(zip(self._ds[v].dims, self._ds[v].encoding.get("chunks") or (), strict=False))
                  for v in self._plan]
        return max([c.get("dayofyear", 1) for c in chunks] + [1])

    def check(self, times) -> None:
        """Raise now (before any rollout) if a valid time has no climatology: reads its fields a block at a time."""
        days, hours = day_and_hour(times)
        keys = np.unique(np.stack([hours, days], axis=1), axis=0)
        block = days_per_block(self.shape)
        for start in range(0, len(keys), block):
            hour_day = keys[start : start + block]
            stamps = (np.datetime64("2000-01-01", "D") + hour_day[:, 1]).astype("datetime64[h]") + hour_day[:, 0]
            self.at(stamps.astype("datetime64[ns]"))  # 2000 is a leap year: day 366 exists

    def at(self, times) -> np.ndarray:
        """(time, channel, lat, lon): the climatology at each valid time's (day of year, hour of day)."""
        days, hours = day_and_hour(times)
        out = np.empty((len(days),) + self.shape, dtype=self.dtype)
        for hour in np.unique(hours).tolist():
            rows = np.flatnonzero(hours == hour)
            wanted, where = np.unique(days[rows], return_inverse=True)
            values = self.fields(self.hour_index(hour), wanted)
            bad = np.isnan(values).any(axis=(2, 3))
            if bad.any():
                d, c = np.argwhere(bad)[0]
                raise DataError(
                    f"climatology store {self.path!r} has no value for day of year {wanted[d] + 1} at {hour:02d}h "
                    f"for {[ch for ch, b in zip(self.channels, bad[d], strict=True) if b]}: no training state lies "
                    "within its window. Fix: lengthen data.splits.train or raise evaluate.climatology_window_days "
                    "(for an external store: use one that covers every day)."
                )
            out[rows] = values[where]
        return out
