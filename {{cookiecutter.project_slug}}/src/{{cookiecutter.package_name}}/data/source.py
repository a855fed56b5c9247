"""Open a source (zarr or netCDF, local or URL, one entry or a list) and turn it into the canonical Dataset.

Canonical: dims (time, [level], latitude, longitude); latitude ascending; longitude ascending in [0, 360);
level in hPa (int, ascending); WeatherBench2 variable names; only the selected variables, levels and times.
`archive.py` opens and normalizes each entry of data.source (file layouts, CDS/RDA spellings, names); this module
selects what params asks for, checks the time axis (`timeaxis.py`) and merges the entries on time, level and grid.
Everything stays lazy until `read_parts` / `read_block` pull one block of time steps as contiguous float32 arrays;
regridding happens there (`regrid.py`), in numpy on C-ordered arrays, so every layout gives bit-identical numbers.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import xarray as xr

from ..errors import DataError
from .archive import DIM_ALIASES, NETCDF_SUFFIXES, Entry, merge_entries, normalize, open_entries
from .names import check_requested
from .regrid import BlockMean, Resampler
from .timeaxis import select

ALIASES = DIM_ALIASES  # the dimension names accepted for time/level/latitude/longitude
__all__ = ["ALIASES", "NETCDF_SUFFIXES", "canonicalize", "channel_names", "open_canonical", "open_source",
           "read_block", "read_parts", "source_entries", "source_label"]


def source_entries(params, source: str | Sequence[str] | None = None) -> list[str]:
    """The entries of the source: the synthetic store written by `synthesize`, or data.source (one or a list)."""
    if source:
        return [source] if isinstance(source, str) else list(source)
    src = params.data.source
    if src == "synthetic":
        return ["data/synthetic.zarr"]
    return [src] if isinstance(src, str) else list(src)


def source_label(entries: Sequence[str]) -> str:
    return entries[0] if len(entries) == 1 else "[" + ", ".join(entries) + "]"


def source_path(params, source: str | None = None) -> str:
    """Where the source lives, as one string (a list of entries is shown as a list), e.g. for provenance."""
    return source_label(source_entries(params, source))


def open_source(path: str | os.PathLike | Sequence[str], rename: Mapping[str, str] | None = None) -> xr.Dataset:
    """All entries opened, normalized and merged (every variable, every time): for a look at a source."""
    paths = [os.fspath(path)] if isinstance(path, str | os.PathLike) else [os.fspath(p) for p in path]
    entries = [e for p in paths for e in open_entries(p, rename)]
    if len(entries) == 1:
        return entries[0].ds
    return merge_entries(entries, "source")


def canonicalize(
    ds: xr.Dataset,
    variables: Sequence[str] = (),
    levels: Sequence[int] = (),
    start: str | None = None,
    end: str | None = None,
    time_stride: int = 1,
    name: str = "source",
    spans: Sequence | None = None,
) -> xr.Dataset:
    """Canonical names, order and units; select variables, levels and time range; keep every n-th time step.
    The time axis must be evenly spaced and free of duplicates after that (`timeaxis.select` says what is not)."""
    ds = normalize(ds, where=name)
    if "time" not in ds.dims:
        raise DataError(f"{name} has no time dimension (dims: {sorted(map(str, ds.dims))}). "
                        f"Fix: use a source with time (accepted names: {', '.join(ALIASES['time'])}).")
    available = [str(v) for v in ds.data_vars if "time" in ds[v].dims]
    variables = list(variables) or available
    check_requested(variables, available, "data.variables", name)
    ds = ds[variables]
    for v in variables:
        extra = set(ds[v].dims) - {"time", "level", "latitude", "longitude"}
        if extra:
            raise DataError(f"{name}: variable {v!r} has unexpected dims {sorted(extra)}. Fix: select them away first.")
    if "level" in ds.dims:
        ds = _select_levels(ds, levels, name)
    ds = ds.isel(time=_as_slice(select(ds["time"].values, start, end, time_stride, name, spans)))
    order = ("time", "level", "latitude", "longitude")
    ds = ds.transpose(*[d for d in order if d in ds.dims])
    for v in variables:
        ds[v] = ds[v].transpose(*[d for d in order if d in ds[v].dims])
    return ds


def _as_slice(index: np.ndarray) -> slice | np.ndarray:
    """Evenly spaced ascending indices as a slice, so lazy zarr/netCDF reads stay plain slices."""
    if len(index) == 0:
        return index
    step = int(index[1] - index[0]) if len(index) > 1 else 1
    if step > 0 and np.array_equal(index, index[0] + step * np.arange(len(index))):
        return slice(int(index[0]), int(index[-1]) + 1, step)
    return index


def _select_levels(ds: xr.Dataset, levels: Sequence[int], name: str) -> xr.Dataset:
    have = [int(x) for x in ds["level"].values]
    if levels:
        lack = [int(x) for x in levels if int(x) not in have]
        if lack:
            raise DataError(f"{name}: level(s) {lack} hPa not found. The source has levels {have} hPa. "
                            "Fix: change data.levels in params.yaml.")
        ds = ds.sel(level=sorted(int(x) for x in levels))
    ds["level"].attrs["units"] = "hPa"
    return ds


def open_canonical(params, source: str | Sequence[str] | None = None) -> xr.Dataset:
    """The canonical, lazy Dataset that params selects (before regridding, which `read_block` applies).

    Each entry of data.source gives the requested variables it holds (entries holding none are skipped, e.g. a
    file of static fields); every requested variable must come from exactly one entry, and the entries must agree
    on time steps, levels and grid."""
    d = params.data
    paths = source_entries(params, source)
    variables = list(d.variables)
    if not variables and d.source == "synthetic":  # the synthetic order (a zarr store lists variables alphabetically)
        from .synthetic import VARIABLES

        variables = list(VARIABLES)
    entries = [e for p in paths for e in open_entries(p, d.rename)]
    timed = {e.path: [str(v) for v in e.ds.data_vars if "time" in e.ds[v].dims] for e in entries}
    check_requested(variables, [v for vs in timed.values() for v in vs], "data.variables",
                    f"source {source_label(paths)!r}")
    _refuse_twice(variables, timed)
    picked = []
    for e in entries:
        mine = [v for v in variables if v in timed[e.path]]
        if mine:
            ds = canonicalize(e.ds, mine, d.levels, d.start, d.end, d.time_stride, f"source {e.path!r}", e.spans)
            picked.append(Entry(e.path, ds, e.spans))
    ds = picked[0].ds if len(picked) == 1 else merge_entries(picked, f"source {source_label(paths)!r}")
    return ds[variables]


def _refuse_twice(variables: Sequence[str], timed: dict[str, list[str]]) -> None:
    for v in variables:
        holders = [p for p, vs in timed.items() if v in vs]
        if len(holders) > 1:
            raise DataError(f"variable {v!r} is in more than one data.source entry: {holders}. "
                            "Fix: narrow the globs so each variable comes from one entry.")


def channel_names(ds: xr.Dataset) -> list[str]:
    """Flattened channel names: `variable` or `variable_level`, variables in dataset order, levels ascending."""
    out = []
    for v in ds.data_vars:
        if "level" in ds[v].dims:
            out += [f"{v}_{int(lev)}" for lev in ds[v]["level"].values]
        else:
            out.append(str(v))
    return out


def read_parts(ds: xr.Dataset, start: int, stop: int, resample: Resampler | None = None) -> list[np.ndarray]:
    """Time steps start..stop-1, one float32 array (time, channels of the variable, lat, lon) per variable,
    regridded by `resample` when given (one variable at a time, so memory is one variable's block, not all)."""
    parts = []
    for v in ds.data_vars:
        a = np.asarray(ds[v].isel(time=slice(start, stop)).values)
        a = a[:, None] if a.ndim == 3 else a
        if resample is not None:
            a = resample(a)
        parts.append(np.ascontiguousarray(a, dtype=np.float32))
    return parts


def read_block(ds: xr.Dataset, start: int, stop: int, coarsen: int | Resampler = 1) -> np.ndarray:
    """Time steps start..stop-1 of a canonical Dataset as float32 (time, channel, lat, lon), C-contiguous."""
    resample = coarsen if isinstance(coarsen, Resampler) else None
    if resample is None and coarsen > 1:
        resample = BlockMean(ds["latitude"].values, ds["longitude"].values, coarsen)
    parts = read_parts(ds, start, stop, resample)
    return np.ascontiguousarray(np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0], dtype=np.float32)
