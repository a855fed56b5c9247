"""Open what the archives ship, lazily, and give it one layout: the part of `source.py` that meets the files.

An entry of data.source is a zarr store, a netCDF file, a folder of them or a glob, local or a URL. A netCDF entry is
opened file by file (metadata only; one dask chunk per time step, so a reader never pulls more than the steps it
asks for, however the file is laid out) and concatenated in time order. Each file is normalized on its own before
anything is combined, because the archives spell the same thing differently per file:
  dims      valid_time -> time, pressure_level / plev / isobaricInhPa -> level, lat / lon -> latitude / longitude
  extras    CDS `number` (one ensemble member) and `expver` are dropped; an `expver` dimension (ERA5 and ERA5T in
            one legacy CDS file, each time filled in one of them) is combined, ERA5 winning where both have data
  names     archive names -> WeatherBench2 names (`names.py`; data.rename first), so a surface `z` and a
            pressure-level `z` from two files do not collide
  order     level in hPa ascending, latitude ascending, longitude ascending in [0, 360)
Files holding the same variables are concatenated in time (their grids must agree; a mismatch is refused naming
the two files); each set of variables becomes an Entry, so one glob can cover a whole one-variable-per-file archive.
"""

from __future__ import annotations

import glob
import importlib.util
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from ..errors import DataError
from .names import wb2_renames

DIM_ALIASES = {  # canonical name -> names seen in the wild
    "latitude": ("latitude", "lat", "nav_lat"),
    "longitude": ("longitude", "lon", "nav_lon"),
    "level": ("level", "plev", "pressure_level", "isobaricInhPa", "lev"),
    "time": ("time", "valid_time"),
}
PROTOCOL_PACKAGES = {"gs": "gcsfs", "gcs": "gcsfs", "s3": "s3fs", "az": "adlfs", "abfs": "adlfs"}
NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".h5", ".hdf5")


@dataclass
class Entry:
    """One data.source entry, normalized; `spans` = [(file, first time, last time)] of its netCDF files."""

    path: str
    ds: xr.Dataset
    spans: list = field(default_factory=list)


def _protocol(path: str) -> str | None:
    return path.split("://", 1)[0] if "://" in path else None


def _require_protocol_package(path: str) -> None:
    proto = _protocol(path)
    package = PROTOCOL_PACKAGES.get(proto or "")
    if package and importlib.util.find_spec(package) is None:
        raise DataError(
            f"data.source {path!r} needs the optional package '{package}' to read {proto}:// URLs. "
            f"Fix: pip install {package} (or install the project's cloud extra)."
        )


def _is_zarr(path: str) -> bool:
    stripped = path.rstrip("/")
    if stripped.endswith(".zarr"):
        return True
    local = Path(stripped)
    return _protocol(path) is None and local.is_dir() and any((local / m).exists() for m in ("zarr.json", ".zgroup"))


def _open_zarr(path: str) -> xr.Dataset:
    """Lazy (no dask) zarr open: consolidated metadata when present, plain metadata otherwise, without warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # consolidated-metadata and zarr-v3-spec chatter
        try:
            return xr.open_dataset(path, engine="zarr", consolidated=True, chunks=None)
        except (KeyError, ValueError, FileNotFoundError, OSError):
            return xr.open_dataset(path, engine="zarr", consolidated=False, chunks=None)


def netcdf_files(path: str) -> list:
    """The netCDF files of an entry (a file, a folder or a glob; URLs through fsspec), sorted by name."""
    if _protocol(path):
        import fsspec

        return [f.open() for f in fsspec.open_files(path, mode="rb")]
    p = Path(path)
    if p.is_dir():
        return sorted(str(f) for f in p.iterdir() if f.suffix in NETCDF_SUFFIXES)
    return sorted(glob.glob(path, recursive=True))


def open_entries(path: str, rename: Mapping[str, str] | None = None) -> list[Entry]:
    """Open one data.source entry lazily and normalize it (see the module docstring).

    A netCDF glob may match several kinds of file (e.g. `era5/*.nc` over NCAR's one-variable-per-file layout):
    files with the same variables are concatenated in time, and each kind becomes an Entry of its own."""
    path = str(path)
    _require_protocol_package(path)
    if _is_zarr(path):
        if _protocol(path) is None and not Path(path).exists():
            raise DataError(f"source {path!r} does not exist. Fix: check data.source in params.yaml.")
        return [Entry(path, normalize(_open_zarr(path), rename, f"source {path!r}"))]
    files = netcdf_files(path)
    if not files:
        raise DataError(
            f"source {path!r}: no zarr store and no netCDF files ({', '.join(NETCDF_SUFFIXES)}) found. "
            "Fix: point data.source at a .zarr store, a netCDF file or a glob such as 'era5/*.nc' (or a list)."
        )
    kinds: dict[tuple[str, ...], list[tuple[str, xr.Dataset]]] = {}
    for f in files:
        ds = normalize(xr.open_dataset(f, chunks=None), rename, f"file {_label(f)!r}")
        if "time" in ds.dims:
            ds = ds.chunk({"time": 1})  # a read of n steps touches n steps, whatever the file's own layout
        kinds.setdefault(tuple(sorted(map(str, ds.data_vars))), []).append((_label(f), ds))
    entries = []
    for variables, parts in kinds.items():
        label = path if len(kinds) == 1 else f"{path} [{', '.join(variables)}]"
        spans = [(name, ds["time"].values.min(), ds["time"].values.max()) for name, ds in parts if "time" in ds.dims]
        ds = parts[0][1] if len(parts) == 1 else _concat_files(parts, label)
        entries.append(Entry(label, ds, spans))
    return entries


def open_entry(path: str, rename: Mapping[str, str] | None = None) -> Entry:
    """The one Entry of a source entry (e.g. a grid file); several kinds of file in it are merged."""
    entries = open_entries(path, rename)
    if len(entries) == 1:
        return entries[0]
    return Entry(str(path), merge_entries(entries, f"source {path!r}"))


def _label(f) -> str:
    return str(getattr(f, "path", f))


def _concat_files(parts: list[tuple[str, xr.Dataset]], label: str) -> xr.Dataset:
    """Concatenate files holding the same variables in time order after checking that their grids agree."""
    first_name, first = parts[0]
    for name, ds in parts[1:]:
        check_same_grid(first, ds, f"file {first_name!r}", f"file {name!r}", f"source {label!r}")
    if any("time" not in ds.dims for _, ds in parts):
        names = [name for name, _ in parts]
        raise DataError(f"source {label!r}: {len(parts)} files of the same variables without a time dimension "
                        f"({names[:3]}...). Fix: keep one of them.")
    parts = sorted(parts, key=lambda p: p[1]["time"].values.min())
    datasets = [ds.assign_coords(latitude=first.latitude, longitude=first.longitude) for _, ds in parts]
    return xr.concat(datasets, dim="time", data_vars="minimal", coords="minimal", compat="override",
                     join="override", combine_attrs="drop_conflicts")


def check_same_grid(a: xr.Dataset, b: xr.Dataset, name_a: str, name_b: str, where: str) -> None:
    """Refuse two (normalized) datasets whose latitude/longitude or levels differ, naming both and the difference."""
    for dim in ("latitude", "longitude", "level"):
        if dim not in a.dims or dim not in b.dims:
            continue
        x, y = a[dim].values, b[dim].values
        if len(x) != len(y) or not np.allclose(x, y, rtol=0, atol=1e-6):
            raise DataError(
                f"{where}: the {dim} of {name_a} ({_describe(x)}) and {name_b} ({_describe(y)}) differ. "
                f"Fix: use files on one grid{' and data.levels' if dim == 'level' else ''} (or regrid one first)."
            )


def merge_entries(entries: Sequence[Entry], where: str) -> xr.Dataset:
    """Merge entries that agree on grid, levels and time steps; a disagreement names the entries and the fix."""
    first = entries[0]
    for e in entries[1:]:
        check_same_grid(first.ds, e.ds, f"{first.path!r}", f"{e.path!r}", where)
        if "time" in first.ds.dims and "time" in e.ds.dims:
            _check_same_times(first, e, where)
    aligned = [e.ds.assign_coords(latitude=first.ds.latitude, longitude=first.ds.longitude) for e in entries]
    return xr.merge(aligned, join="exact", compat="override", combine_attrs="drop")


def _check_same_times(a: Entry, b: Entry, where: str) -> None:
    ta, tb = a.ds["time"].values, b.ds["time"].values
    if np.array_equal(ta, tb):
        return
    only_a, only_b = np.setdiff1d(ta, tb), np.setdiff1d(tb, ta)
    first = (f"first time only in {a.path!r}: {only_a[0]}" if len(only_a)
             else f"first time only in {b.path!r}: {only_b[0]}")
    raise DataError(
        f"{where}: entries {a.path!r} ({len(ta)} steps, {ta[0]} .. {ta[-1]}) and {b.path!r} ({len(tb)} steps, "
        f"{tb[0]} .. {tb[-1]}) have different time steps in data.start .. data.end ({first}). "
        "Fix: download the same times for every variable, or narrow data.start / data.end to the common range."
    )


def _describe(x: np.ndarray) -> str:
    return f"{len(x)} values, {x[0]:g} .. {x[-1]:g}" if len(x) else "no values"


def normalize(ds: xr.Dataset, rename: Mapping[str, str] | None = None, where: str = "source") -> xr.Dataset:
    """One layout for every archive: canonical dims, no extras, WB2 names, sorted coordinates (lazy)."""
    ds = _rename_dims(ds, where)
    ds = _drop_extras(ds, where)
    # auxiliary variables (RDA's utc_date, time bounds) have no grid
    ds = ds.drop_vars([v for v in ds.data_vars if not {"latitude", "longitude"} <= set(ds[v].dims)])
    ds = ds.drop_vars([c for c in ds.coords if c not in ds.dims])
    ds = ds.rename(wb2_renames({str(v): "level" in ds[v].dims for v in ds.data_vars}, rename, where))
    return _sort_coords(ds)


def _rename_dims(ds: xr.Dataset, where: str) -> xr.Dataset:
    names = set(ds.dims) | set(ds.coords)
    renames = {}
    for canonical, aliases in DIM_ALIASES.items():
        if canonical in names:
            continue
        for alias in aliases:
            if alias in names:
                renames[alias] = canonical
                break
    ds = ds.rename(renames)
    for dim in ("latitude", "longitude"):
        if dim not in ds.dims:
            raise DataError(f"{where} has no '{dim}' dimension (dims: {sorted(map(str, ds.dims))}). "
                            f"Fix: use a source with {dim} (accepted names: {', '.join(DIM_ALIASES[dim])}).")
    return ds


def _drop_extras(ds: xr.Dataset, where: str) -> xr.Dataset:
    """CDS's `number` (ensemble member) and `expver` (ERA5 = 1 / ERA5T = 5) coordinates."""
    if "number" in ds.dims:
        if ds.sizes["number"] > 1:
            raise DataError(f"{where}: {ds.sizes['number']} ensemble members (dimension 'number'). "
                            "Fix: download or select one member (e.g. the control, number 0).")
        ds = ds.isel(number=0)
    if "expver" in ds.dims:
        if ds.sizes["expver"] == 1:
            ds = ds.isel(expver=0)
        else:
            ds = _combine_expver(ds, where)
    return ds


def _combine_expver(ds: xr.Dataset, where: str) -> xr.Dataset:
    """Legacy CDS files mixing ERA5 and ERA5T carry an `expver` dimension with each time in one of them (NaN in the
    other): take, per time, the lowest expver with data (ERA5 final before ERA5T), lazily."""
    if "time" not in ds.dims:
        raise DataError(f"{where}: an 'expver' dimension without a time dimension. Fix: select one expver.")
    try:
        order = np.argsort([int(str(e)) for e in ds["expver"].values])
    except ValueError:
        raise DataError(f"{where}: unreadable expver values {list(ds['expver'].values)}. "
                        "Fix: select one expver (e.g. ds.sel(expver=1)) before using the file.") from None
    ds = ds.chunk({"time": 1})
    out = ds.isel(expver=int(order[0]))
    for i in order[1:]:
        out = out.fillna(ds.isel(expver=int(i)))
    return out


def _sort_coords(ds: xr.Dataset) -> xr.Dataset:
    """Level in hPa (int, ascending), latitude ascending, longitude ascending in [0, 360)."""
    if "level" in ds.dims:
        lev = np.asarray(ds["level"].values, dtype=np.float64)
        if len(lev) and lev.max() > 1100.0:  # Pa, not hPa
            lev = lev / 100.0
        ds = ds.assign_coords(level=np.rint(lev).astype(np.int64)).sortby("level")
        ds["level"].attrs["units"] = "hPa"
    lat = np.asarray(ds["latitude"].values, dtype=np.float64)
    if len(lat) > 1 and lat[0] > lat[-1]:
        ds = ds.isel(latitude=slice(None, None, -1))
    lon = np.mod(np.asarray(ds["longitude"].values, dtype=np.float64), 360.0)
    order = np.argsort(lon, kind="stable")
    ds = ds.assign_coords(longitude=lon)
    if not np.array_equal(order, np.arange(len(lon))):
        ds = ds.isel(longitude=order)
    return ds
