"""Static fields (data.static): time-invariant model inputs such as land_sea_mask or geopotential_at_surface.

Read from data.static_source ("" = data.source; a path, glob or list like data.source), named like everything
else (`names.py`: `lsm`, `LSM`, a surface `z` / RDA invariant `Z` all arrive with their WeatherBench2 names), checked
to be constant in time, put on the shards' grid (the shards' own regridding when the static field is on the
source grid, else conservative regridding to the shards' grid) and written once beside the shards:

  data/shards/static.zarr   data (channel, latitude, longitude) float32, NORMALIZED: (x - mean) / std per channel
                            mean, std (channel) float64: the statistics used (over the grid, unweighted like
                            stats.json; a constant field keeps std = 1); coords channel, latitude, longitude

They are inputs only: concatenated to every model input step (after state and forcings), never predicted, never
in the targets or the scores. `read_static` is the one reader: training takes them once (`static_inputs`, not per
sample: they are constant) and keeps a copy in models/model.pt, against which evaluate / forecast check the shards'
static.zarr (inference.load_forecaster); models.with_static appends them to every input of the network.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

from ..config import load_params
from ..errors import DataError
from ..fileio import atomic_path
from .archive import open_entries
from .names import check_requested
from .regrid import regrid_to, resampler, same_grid
from .source import open_canonical, source_entries, source_label

STATIC_STORE = Path("data/shards/static.zarr")
CHECK_BYTES = 512 * 2**20  # compare every time step of a time-dependent static field up to this much data ...
CHECKED_STEPS = 64  # ... else this many evenly spaced steps (first and last included)
TOLERANCE = 1e-4  # of the field's range: differences below it are packing noise, not variation in time


def static_entries(params, source=None) -> list[str]:
    """Where data.static comes from: data.static_source, else the source's entries (or the --source override)."""
    src = params.data.static_source
    if src:
        return [src] if isinstance(src, str) else list(src)
    return source_entries(params, source)


def check_static(params, source=None) -> None:
    """Plan-time check (metadata only): every name in data.static exists, without levels."""
    if not params.data.static:
        return
    if params.data.source == "synthetic" and not params.data.static_source and source is None:
        from .synthetic import STATICS

        check_requested(params.data.static, STATICS, "data.static", "the synthetic source")
        return
    open_static(params, source)


def open_static(params, source=None) -> dict[str, tuple[str, xr.DataArray]]:
    """{name: (entry, lazy DataArray ([time,] latitude, longitude) on its own grid)} for data.static, in order."""
    paths = static_entries(params, source)
    found: dict[str, tuple[str, xr.DataArray]] = {}
    for path in paths:
        for entry in open_entries(path, params.data.rename):
            for name in entry.ds.data_vars:
                found.setdefault(str(name), (entry.path, entry.ds[name]))
    where = f"static source {source_label(paths)!r}"
    check_requested(params.data.static, list(found), "data.static", where)
    out = {}
    for name in params.data.static:
        path, field = found[name]
        if "level" in field.dims:
            raise DataError(f"{where}: data.static {name!r} has pressure levels; static fields are 2-D. "
                            "Fix: use a surface field (e.g. geopotential_at_surface, not geopotential).")
        out[name] = (path, field)
    return out


def time_invariant(field: xr.DataArray, name: str, where: str) -> np.ndarray:
    """The field as float64 (latitude, longitude); a DataError if it changes in time beyond packing noise."""
    if "time" not in field.dims:
        return np.asarray(field.values, dtype=np.float64)
    n = field.sizes["time"]
    first = np.asarray(field.isel(time=0).values, dtype=np.float64)
    step_bytes = first.nbytes // 2
    if n * step_bytes <= CHECK_BYTES:
        steps = range(1, n)
    else:
        steps = np.unique(np.linspace(0, n - 1, CHECKED_STEPS).astype(int))
    finite = first[np.isfinite(first)]
    tol = TOLERANCE * max(float(np.ptp(finite)) if finite.size else 0.0, 1e-12)
    for i in steps:
        other = np.asarray(field.isel(time=int(i)).values, dtype=np.float64)
        diff = np.abs(other - first)
        if np.nanmax(diff, initial=0.0) > tol or not np.array_equal(np.isnan(other), np.isnan(first)):
            t0, t = field["time"].values[0], field["time"].values[int(i)]
            raise DataError(
                f"{where}: data.static {name!r} varies in time: at {t} it differs from {t0} by up to "
                f"{np.nanmax(diff):.6g} ({int((diff > tol).sum())} grid points). Static fields must be constant. "
                f"Fix: move {name!r} to data.variables, or point data.static_source at a time-invariant file."
            )
    return first


def static_fields(params, source=None) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(names, lat, lon, float64 array [C, lat, lon]) of data.static on the shards' grid, not normalized."""
    d = params.data
    ds = open_canonical(params, source)
    src_lat, src_lon = ds["latitude"].values, ds["longitude"].values
    to_shards = resampler(src_lat, src_lon, d.coarsen, d.grid)
    lat, lon = to_shards.grid
    fields = []
    for name, (path, field) in open_static(params, source).items():
        value = time_invariant(field, name, f"static source {path!r}")
        if not np.all(np.isfinite(value)):
            raise DataError(f"static source {path!r}: data.static {name!r} has {int((~np.isfinite(value)).sum())} "
                            "NaN/inf grid points. Fix: fill them (e.g. 0 over sea) in the file, or drop the field.")
        f_lat, f_lon = field["latitude"].values, field["longitude"].values
        # on the source grid: the shards' own regridding; elsewhere: conservatively onto the shards' grid
        regrid = to_shards if same_grid(f_lat, f_lon, src_lat, src_lon) else regrid_to(f_lat, f_lon, lat, lon)
        fields.append(np.asarray(regrid(value[None]), dtype=np.float64)[0])
    return list(params.data.static), lat, lon, np.stack(fields)


def write_static(params, out: str | Path = STATIC_STORE, source=None) -> Path:
    """Write data.static, normalized, as `out` (atomically; a failure keeps the previous store)."""
    names, lat, lon, fields = static_fields(params, source)
    return store_static(out, names, lat, lon, fields, source_label(static_entries(params, source)))


def store_static(out: str | Path, names: list[str], lat, lon, fields: np.ndarray, source: str = "") -> Path:
    """Normalize `fields` [C, lat, lon] (physical units) per channel and write them as the store `out`, atomically."""
    fields = np.asarray(fields, dtype=np.float64)
    mean = fields.mean(axis=(1, 2))
    std = fields.std(axis=(1, 2))
    std = np.where(std > 0, std, 1.0)  # a constant field normalizes to zeros instead of dividing by zero
    normalized = ((fields - mean[:, None, None]) / std[:, None, None]).astype(np.float32)
    ds = xr.Dataset(
        {"data": (("channel", "latitude", "longitude"), normalized), "mean": ("channel", mean),
         "std": ("channel", std)},
        coords={"channel": np.array(names, dtype=object),
                "latitude": ("latitude", lat, {"units": "degrees_north"}),
                "longitude": ("longitude", lon, {"units": "degrees_east"})},
        attrs={"channels": list(names), "source": source, "normalized": "(x - mean) / std"},
    )
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.to_zarr(tmp, mode="w", zarr_format=3, consolidated=False)
    return Path(out)


def read_static(path: str | Path = STATIC_STORE, lat=None, lon=None) -> tuple[list[str], np.ndarray]:
    """(channel names, float32 array [C, lat, lon]) of the normalized static fields; with lat/lon given, a
    DataError unless the store is on that grid (the shards')."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"no static fields at {path}. Fix: run the static step (`snakemake {path}` or dvc repro), "
                        "or set data.static: [] in params.yaml.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = xr.open_zarr(path, consolidated=False)
    for dim, want in (("latitude", lat), ("longitude", lon)):
        have = ds[dim].values
        if want is not None and (len(have) != len(want) or not np.allclose(have, want, atol=1e-6)):
            raise DataError(f"{path}: static fields are on another {dim} grid ({len(have)} values) than the shards "
                            f"({len(want)}). Fix: rebuild it with the shards (snakemake / dvc repro).")
    return [str(c) for c in ds["channel"].values], np.ascontiguousarray(ds["data"].values, dtype=np.float32)


def physical_static(path: str | Path, name: str) -> np.ndarray:
    """One static field in its own units, float64 (lat, lon) (e.g. the land fraction for land/sea scores)."""
    names, fields = read_static(path)
    if name not in names:
        raise DataError(f"{path} has no static field {name!r} (it has {names}). Fix: add it to data.static.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = xr.open_zarr(path, consolidated=False)
    i = names.index(name)
    return fields[i].astype(np.float64) * float(ds["std"].values[i]) + float(ds["mean"].values[i])


def static_inputs(params, shards: str | Path = STATIC_STORE.parent, lat=None, lon=None) -> tuple[list[str], np.ndarray]:
    """What training appends to every input step: (names, float32 [C, lat, lon]) of data.static from
    `shards`/static.zarr, C = 0 (an empty array on the lat/lon grid) when data.static is empty.
    A store holding other fields than params asks for is refused (it is stale: rebuild the shards)."""
    if not params.data.static:
        return [], np.zeros((0, len(lat) if lat is not None else 0, len(lon) if lon is not None else 0), np.float32)
    path = Path(shards) / STATIC_STORE.name
    names, fields = read_static(path, lat, lon)
    if names != list(params.data.static):
        raise DataError(f"{path} holds {names} but data.static is {list(params.data.static)}. "
                        "Fix: rebuild it (snakemake shards / dvc repro).")
    return names, fields


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="static", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--out", default=str(STATIC_STORE), help=f"store to write (default: {STATIC_STORE})")
    parser.add_argument("--source", help="override the source path (default: data/synthetic.zarr or data.source)")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    if not params.data.static:
        raise DataError("data.static is empty: there are no static fields to write. Fix: list them in params.yaml, "
                        "e.g. data.static: [land_sea_mask, geopotential_at_surface].")
    out = write_static(params, args.out, args.source)
    print(f"wrote {out}: {', '.join(params.data.static)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
