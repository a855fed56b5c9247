"""Climatology stores in WeatherBench2's layout: written one (hour, day of year) field at a time, read on any grid
that is the shards' grid or contains it.

Layout (as WB2's `1990-2019_6h_1440x721.zarr`): one variable per WB2 name, dims (hour, dayofyear, [level], latitude,
longitude); `dayofyear` 1..366 (xarray's dt.dayofyear), `hour` the hours of day the data has, `level` in hPa. The
shards' flat channels (`geopotential_500`) become variables with a level dim (`geopotential` at level 500) so WB2's
tools read the store as they read theirs, and so one reader serves a store made here and an external one. One chunk
per (hour, day, variable): a field written or read is one step's size, whatever the grid. Keys without data are not
written and read as NaN.

Reading (`Climatology`) selects the shards' channels and grid out of a store: the variables and levels must be
there; the grid must equal the shards' or contain every shard latitude and longitude (a subset: every n-th point,
latitude in either order, longitude in -180..180 or 0..360). Anything else is refused with the store, what differs
and the fix, never silently interpolated.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from .errors import DataError
from .forecast import split_channel

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


def _variables(channels: Sequence[str]) -> tuple[dict[str, list[tuple[int, int | None]]], list[int]]:
    """WB2 variable -> [(channel index, level or None)], and the union of the levels."""
    variables: dict[str, list[tuple[int, int | None]]] = {}
    for index, name in enumerate(channels):
        var, level = split_channel(name)
        variables.setdefault(var, []).append((index, level))
    return variables, sorted({lev for entries in variables.values() for _, lev in entries if lev is not None})


class ClimatologyWriter:
    """Create an empty store (metadata and coordinates only), then `write(hour_index, day_index, field)`."""

    def __init__(self, out: Path, channels: Sequence[str], latitude, longitude, hours: Sequence[int] | None,
                 provenance: dict, dtype=np.float32):
        import dask.array as da
        import zarr

        self.variables, self.levels = _variables(channels)
        self.dtype = np.dtype(dtype)
        lat, lon = np.asarray(latitude, np.float64), np.asarray(longitude, np.float64)
        lead = ("hour", "dayofyear") if hours is not None else ("dayofyear",)
        lead_shape = (len(hours), DAYS) if hours is not None else (DAYS,)
        coords = {"dayofyear": np.arange(1, DAYS + 1), "latitude": lat, "longitude": lon}
        if hours is not None:
            coords["hour"] = np.asarray(hours, dtype=np.int64)
        if self.levels:
            coords["level"] = np.asarray(self.levels, dtype=np.int64)
        data_vars, encoding = {}, {}
        for var, entries in self.variables.items():
            dims = lead + (("level",) if entries[0][1] is not None else ()) + ("latitude", "longitude")
            shape = lead_shape + ((len(self.levels),) if "level" in dims else ()) + (len(lat), len(lon))
            chunks = (1,) * len(lead) + shape[len(lead):]
            # one dask chunk: only metadata is written (compute=False), and a graph per zarr chunk would cost more
            data_vars[var] = (dims, da.zeros(shape, chunks=-1, dtype=self.dtype))
            encoding[var] = {"chunks": chunks, "fill_value": np.nan}
        ds = xr.Dataset(data_vars, coords=coords, attrs={
            "channels": list(channels), PROVENANCE_ATTR: json.dumps(provenance, sort_keys=True)})
        ds["latitude"].attrs.update(units="degrees_north")
        ds["longitude"].attrs.update(units="degrees_east")
        if self.levels:
            ds["level"].attrs.update(units="hPa")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # zarr v3 consolidated-metadata chatter
            ds.to_zarr(out, mode="w", zarr_format=3, consolidated=True, compute=False, encoding=encoding)
        self._arrays = {var: zarr.open_array(str(Path(out) / var), mode="r+") for var in self.variables}
        self._level_pos = {lev: i for i, lev in enumerate(self.levels)}

    def write(self, hour_index: int | None, first_day: int, fields: np.ndarray) -> None:
        """Write (day, channel, lat, lon) `fields` at days first_day.. (0-based) of the hour (None: a daily store)."""
        days = slice(first_day, first_day + len(fields))
        key = (days,) if hour_index is None else (hour_index, days)
        for var, entries in self.variables.items():
            if entries[0][1] is None:
                self._arrays[var][key] = fields[:, entries[0][0]].astype(self.dtype)
                continue
            cube = np.full((len(fields), len(self.levels)) + fields.shape[2:], np.nan, dtype=self.dtype)
            for index, level in entries:
                cube[:, self._level_pos[level]] = fields[:, index]
            self._arrays[var][key] = cube


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


def grid_index(path: str, name: str, have: np.ndarray, want: np.ndarray) -> np.ndarray | slice:
    """Indices into the store's `have` of each value of `want` (a slice when they are equal); an error otherwise."""
    if name == "longitude":
        have, want = np.mod(have, 360.0), np.mod(want, 360.0)
    if len(have) == len(want) and np.allclose(have, want, rtol=0, atol=GRID_TOLERANCE_DEG):
        return slice(None)
    order = np.argsort(have, kind="stable")
    pos = np.clip(np.searchsorted(have[order], want), 1, max(len(have) - 1, 1))
    left, right = order[pos - 1], order[np.minimum(pos, len(have) - 1)]
    nearest = np.where(np.abs(have[left] - want) <= np.abs(have[right] - want), left, right)
    off = np.abs(have[nearest] - want) > GRID_TOLERANCE_DEG
    if off.any():
        raise DataError(
            f"climatology store {path!r}: its {name} ({_describe(np.sort(have))}) does not contain the shards' "
            f"{name} ({_describe(want)}); e.g. {want[off][0]:g} is missing. Only the same grid or a subset of it "
            "(every n-th point) can be selected. Fix: regrid the climatology to the shards' grid (conservatively, "
            "e.g. with xarray-regrid) and point evaluate.climatology at the result, or set evaluate.climatology: "
            "computed to compute it from the train split."
        )
    return nearest


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
        self._lat = grid_index(self.path, "latitude", np.asarray(ds["latitude"].values, np.float64),
                               np.asarray(latitude, np.float64))
        self._lon = grid_index(self.path, "longitude", np.asarray(ds["longitude"].values, np.float64),
                               np.asarray(longitude, np.float64))
        self.shape = (len(self.channels), len(latitude), len(longitude))
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
        lead.update(latitude=self._lat, longitude=self._lon)
        for var, entries in self._plan.items():
            levels = sorted({level for _, level in entries if level is not None})  # read only the levels needed
            da = self._ds[var].isel({**lead, "level": levels} if levels else lead)
            values = np.asarray(da.transpose("dayofyear", *(("level",) if levels else ()), "latitude", "longitude"))
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
