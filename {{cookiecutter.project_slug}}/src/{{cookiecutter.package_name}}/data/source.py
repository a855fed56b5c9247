"""Open a source (zarr or netCDF, local or URL) and turn it into the canonical Dataset.

Canonical: dims (time, [level], latitude, longitude); latitude ascending; longitude ascending in [0, 360);
level in hPa (int, ascending); WeatherBench2 variable names; only the selected variables, levels and times.
Everything stays lazy until `read_block` pulls one time block as a contiguous float32 array (time, channel, lat, lon);
coarsening happens there, in numpy on a C-ordered array, so every source layout gives bit-identical numbers.
"""

from __future__ import annotations

import glob
import importlib.util
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xarray as xr

from ..errors import DataError

ALIASES = {  # canonical name -> names seen in the wild
    "latitude": ("latitude", "lat", "nav_lat"),
    "longitude": ("longitude", "lon", "nav_lon"),
    "level": ("level", "plev", "pressure_level", "isobaricInhPa", "lev"),
    "time": ("time", "valid_time"),
}
PROTOCOL_PACKAGES = {"gs": "gcsfs", "gcs": "gcsfs", "s3": "s3fs", "az": "adlfs", "abfs": "adlfs"}
NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".h5", ".hdf5")


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


def _netcdf_files(path: str) -> list:
    if _protocol(path):
        import fsspec

        files = fsspec.open_files(path, mode="rb")
        return [f.open() for f in files]
    p = Path(path)
    if p.is_dir():
        found = sorted(str(f) for f in p.iterdir() if f.suffix in NETCDF_SUFFIXES)
    else:
        found = sorted(glob.glob(path))
    return found


def open_source(path: str | Path) -> xr.Dataset:
    """Open a zarr store or one/many netCDF files (a glob) lazily, local or URL (fsspec)."""
    path = str(path)
    _require_protocol_package(path)
    if _is_zarr(path):
        if _protocol(path) is None and not Path(path).exists():
            raise DataError(f"source {path!r} does not exist. Fix: check data.source in params.yaml.")
        return _open_zarr(path)
    files = _netcdf_files(path)
    if not files:
        raise DataError(
            f"source {path!r}: no zarr store and no netCDF files ({', '.join(NETCDF_SUFFIXES)}) found. "
            "Fix: point data.source at a .zarr store, a netCDF file or a glob such as 'era5/*.nc'."
        )
    if len(files) == 1:
        return xr.open_dataset(files[0], chunks=None)
    return xr.open_mfdataset(files, combine="by_coords", parallel=False, chunks={})


def _rename(ds: xr.Dataset) -> xr.Dataset:
    names = set(ds.dims) | set(ds.coords)
    renames = {}
    for canonical, aliases in ALIASES.items():
        if canonical in names:
            continue
        for alias in aliases:
            if alias in names:
                renames[alias] = canonical
                break
    ds = ds.rename(renames)
    for dim in ("time", "latitude", "longitude"):
        if dim not in ds.dims:
            raise DataError(f"source has no '{dim}' dimension (dims: {sorted(map(str, ds.dims))}). "
                            f"Fix: use a source with {dim} (accepted names: {', '.join(ALIASES[dim])}).")
    return ds


def canonicalize(
    ds: xr.Dataset,
    variables: Sequence[str] = (),
    levels: Sequence[int] = (),
    start: str | None = None,
    end: str | None = None,
    time_stride: int = 1,
    name: str = "source",
) -> xr.Dataset:
    """Canonical names, order and units; select variables, levels and time range; keep every n-th time step."""
    ds = _rename(ds)
    available = [str(v) for v in ds.data_vars if "time" in ds[v].dims]
    variables = list(variables) or available
    missing = [v for v in variables if v not in ds.data_vars]
    if missing:
        raise DataError(
            f"{name}: variable(s) {missing} not found. The source has: {available}. "
            "Fix: change data.variables in params.yaml (WeatherBench2 names)."
        )
    ds = ds[variables]
    for v in variables:
        extra = set(ds[v].dims) - {"time", "level", "latitude", "longitude"}
        if extra:
            raise DataError(f"{name}: variable {v!r} has unexpected dims {sorted(extra)}. Fix: select them away first.")

    if "level" in ds.dims:
        lev = np.asarray(ds["level"].values, dtype=np.float64)
        if lev.max() > 1100.0:  # Pa, not hPa
            lev = lev / 100.0
        ds = ds.assign_coords(level=np.rint(lev).astype(np.int64)).sortby("level")
        have = [int(x) for x in ds["level"].values]
        if levels:
            lack = [int(x) for x in levels if int(x) not in have]
            if lack:
                raise DataError(
                    f"{name}: level(s) {lack} hPa not found. The source has levels {have} hPa. "
                    "Fix: change data.levels in params.yaml."
                )
            ds = ds.sel(level=sorted(int(x) for x in levels))
        ds["level"].attrs["units"] = "hPa"

    lat = np.asarray(ds["latitude"].values, dtype=np.float64)
    if lat[0] > lat[-1]:
        ds = ds.isel(latitude=slice(None, None, -1))
    lon = np.mod(np.asarray(ds["longitude"].values, dtype=np.float64), 360.0)
    order = np.argsort(lon, kind="stable")
    ds = ds.assign_coords(longitude=lon)
    if not np.array_equal(order, np.arange(len(lon))):
        ds = ds.isel(longitude=order)

    times = ds["time"].values
    lo = np.datetime64(start, "ns") if start else times[0]
    hi = np.datetime64(end, "ns") if end else times[-1]
    if lo < times[0] or hi > times[-1]:
        raise DataError(
            f"{name}: time range {start} .. {end} is not covered; the source has {times[0]} .. {times[-1]} "
            f"({len(times)} steps). Fix: change data.start / data.end in params.yaml."
        )
    ds = ds.sel(time=slice(lo, hi)).isel(time=slice(None, None, time_stride))

    order_dims = [d for d in ("time", "level", "latitude", "longitude")]
    ds = ds.transpose(*[d for d in order_dims if d in ds.dims])
    for v in variables:
        ds[v] = ds[v].transpose(*[d for d in order_dims if d in ds[v].dims])
    return ds


def channel_names(ds: xr.Dataset) -> list[str]:
    """Flattened channel names: `variable` or `variable_level`, variables in dataset order, levels ascending."""
    out = []
    for v in ds.data_vars:
        if "level" in ds[v].dims:
            out += [f"{v}_{int(lev)}" for lev in ds[v]["level"].values]
        else:
            out.append(str(v))
    return out


def coarsen_array(a: np.ndarray, n: int) -> np.ndarray:
    """Average n x n cells over the last two axes (trailing rows/columns that do not fill a cell are dropped)."""
    if n == 1:
        return a
    h, w = (a.shape[-2] // n) * n, (a.shape[-1] // n) * n
    a = np.ascontiguousarray(a[..., :h, :w], dtype=np.float64)
    a = a.reshape(a.shape[:-2] + (h // n, n, w // n, n))
    return a.mean(axis=(-3, -1))


def grid(ds: xr.Dataset, coarsen: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Latitude and longitude of the (coarsened) canonical grid."""
    lat = np.asarray(ds["latitude"].values, dtype=np.float64)
    lon = np.asarray(ds["longitude"].values, dtype=np.float64)
    if coarsen > 1:
        lat = _mean_groups(lat, coarsen)
        lon = _mean_groups(lon, coarsen)
    return lat, lon


def _mean_groups(x: np.ndarray, n: int) -> np.ndarray:
    m = (len(x) // n) * n
    return x[:m].reshape(-1, n).mean(axis=1)


def read_parts(ds: xr.Dataset, start: int, stop: int) -> list[np.ndarray]:
    """Time steps start..stop-1, one float32 array (time, channels of the variable, lat, lon) per variable."""
    parts = []
    for v in ds.data_vars:
        a = np.asarray(ds[v].isel(time=slice(start, stop)).values)
        parts.append(np.ascontiguousarray(a[:, None] if a.ndim == 3 else a, dtype=np.float32))
    return parts


def read_block(ds: xr.Dataset, start: int, stop: int, coarsen: int = 1) -> np.ndarray:
    """Time steps start..stop-1 of a canonical Dataset as float32 (time, channel, lat, lon), C-contiguous."""
    parts = read_parts(ds, start, stop)
    block = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
    return np.ascontiguousarray(coarsen_array(block, coarsen), dtype=np.float32)


def source_path(params, source: str | None = None) -> str:
    """Where the source lives: the synthetic store written by `synthesize`, or data.source."""
    if source:
        return source
    return "data/synthetic.zarr" if params.data.source == "synthetic" else params.data.source


def open_canonical(params, source: str | None = None) -> xr.Dataset:
    """The canonical, lazy Dataset that params selects (before coarsening, which `read_block` applies)."""
    path = source_path(params, source)
    d = params.data
    variables = d.variables
    if not variables and d.source == "synthetic":  # the synthetic order (a zarr store lists variables alphabetically)
        from .synthetic import VARIABLES as variables
    return canonicalize(
        open_source(path), variables, d.levels, d.start, d.end, d.time_stride, name=f"source {path!r}"
    )
