"""From the source grid to the shards' grid: native, n x n block means (data.coarsen), or conservative regridding to
a named target grid or a grid file (data.grid), applied inside the shard jobs one block of time steps at a time.

Named grids (WeatherBench2's equiangular grids; latitude ascending, longitude from 0):
  "NLONxNLAT"   e.g. "240x121", "64x32", "1440x721": an odd NLAT includes both poles (spacing 180/(NLAT-1)),
                an even NLAT does not (cell centres at +-(90 - spacing/2), spacing 180/NLAT), as in WB2
  "1.5deg" = 240x121, "0.25deg" = 1440x721, "1deg" = 360x181, "2.8125deg" = 128x64, "5.625deg" = 64x32
or the path of a netCDF/zarr file whose latitude/longitude coordinates are the target grid.

Conservative regridding uses xarray-regrid (`Regridder.conservative`): separable area weights with a spherical
correction in latitude and periodic longitudes. The area-weighted global mean of a field is kept to ~1e-5 of its
variability from 0.25 deg to 1.5 deg (tests/test_data_regrid.py measures it); nested grids keep it exactly but for
the pole rows, which xarray-regrid pads like ESMF's Pole="all".
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import xarray as xr

from ..errors import DataError

NAMED_GRIDS = {"0.25deg": "1440x721", "1deg": "360x181", "1.5deg": "240x121", "2.8125deg": "128x64",
               "5.625deg": "64x32"}
_SIZE = re.compile(r"^(\d+)x(\d+)$")


def equiangular(nlon: int, nlat: int) -> tuple[np.ndarray, np.ndarray]:
    """WB2 equiangular grid: with poles for odd nlat, without (offset half a cell) for even nlat."""
    if nlat % 2:
        lat = np.linspace(-90.0, 90.0, nlat)
    else:
        lat = -90.0 + (np.arange(nlat) + 0.5) * 180.0 / nlat
    return lat, np.arange(nlon) * 360.0 / nlon


def target_grid(spec: str) -> tuple[np.ndarray, np.ndarray]:
    """Latitude and longitude (ascending, longitude in [0, 360)) of data.grid: a name or a grid file."""
    match = _SIZE.match(NAMED_GRIDS.get(spec, spec))
    if match:
        nlon, nlat = int(match.group(1)), int(match.group(2))
        if nlon < 4 or nlat < 2:
            raise DataError(f"data.grid {spec!r}: a grid needs at least 4 longitudes and 2 latitudes.")
        return equiangular(nlon, nlat)
    if Path(spec).exists() or "://" in spec:
        return _grid_file(spec)
    raise DataError(
        f"data.grid {spec!r} is neither a grid name nor an existing file. Names: 'NLONxNLAT' (e.g. 240x121, 64x32) or "
        f"{', '.join(NAMED_GRIDS)}. Fix: change data.grid in params.yaml ('' keeps the source grid)."
    )


def _grid_file(path: str) -> tuple[np.ndarray, np.ndarray]:
    from .archive import open_entry

    ds = open_entry(path).ds
    return (np.asarray(ds["latitude"].values, dtype=np.float64),
            np.asarray(ds["longitude"].values, dtype=np.float64))


class Resampler:
    """Native grid: passes blocks through. Subclasses map (..., lat, lon) arrays to the shards' grid."""

    def __init__(self, lat: np.ndarray, lon: np.ndarray):
        self.lat, self.lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)

    @property
    def grid(self) -> tuple[np.ndarray, np.ndarray]:
        """Latitude and longitude of the output."""
        return self.lat, self.lon

    def __call__(self, a: np.ndarray) -> np.ndarray:
        return a


class BlockMean(Resampler):
    """Average n x n cells (data.coarsen); trailing rows/columns that do not fill a cell are dropped."""

    def __init__(self, lat: np.ndarray, lon: np.ndarray, n: int):
        super().__init__(_mean_groups(np.asarray(lat, dtype=np.float64), n),
                         _mean_groups(np.asarray(lon, dtype=np.float64), n))
        self.n = n

    def __call__(self, a: np.ndarray) -> np.ndarray:
        n = self.n
        h, w = (a.shape[-2] // n) * n, (a.shape[-1] // n) * n
        a = np.ascontiguousarray(a[..., :h, :w], dtype=np.float64)
        a = a.reshape(a.shape[:-2] + (h // n, n, w // n, n))
        return a.mean(axis=(-3, -1))


def _mean_groups(x: np.ndarray, n: int) -> np.ndarray:
    m = (len(x) // n) * n
    return x[:m].reshape(-1, n).mean(axis=1)


class Conservative(Resampler):
    """First-order conservative regridding (xarray-regrid) from the source grid to (lat, lon)."""

    def __init__(self, src_lat: np.ndarray, src_lon: np.ndarray, lat: np.ndarray, lon: np.ndarray):
        super().__init__(lat, lon)
        self.src = {"latitude": np.asarray(src_lat, dtype=np.float64),
                    "longitude": np.asarray(src_lon, dtype=np.float64)}
        self.target = xr.Dataset(coords={"latitude": self.lat, "longitude": self.lon})

    def __call__(self, a: np.ndarray) -> np.ndarray:
        dims = tuple(f"axis{i}" for i in range(a.ndim - 2)) + ("latitude", "longitude")
        field = xr.DataArray(np.asarray(a, dtype=np.float64), dims=dims, coords=self.src)
        # the Regridder itself, not the `.regrid` accessor: xarray caches an accessor on its DataArray, and that
        # reference cycle would keep every block alive until the garbage collector runs (memory growing per read)
        from xarray_regrid import Regridder

        out = Regridder(field).conservative(self.target, latitude_coord="latitude", time_dim=None, skipna=False)
        return np.ascontiguousarray(out.transpose(*dims).values)


def resampler(lat: np.ndarray, lon: np.ndarray, coarsen: int = 1, grid: str = "") -> Resampler:
    """The resampler from the (canonical) source grid lat/lon that data.coarsen / data.grid ask for."""
    if grid and coarsen > 1:
        raise DataError("data.grid and data.coarsen are both set. Fix: keep one (data.coarsen: 1 with data.grid).")
    if grid:
        return regrid_to(lat, lon, *target_grid(grid))
    if coarsen > 1:
        return BlockMean(lat, lon, coarsen)
    return Resampler(lat, lon)


def regrid_to(lat: np.ndarray, lon: np.ndarray, to_lat: np.ndarray, to_lon: np.ndarray) -> Resampler:
    """Identity when the grids match (to 1e-6 degrees), else conservative regridding (e.g. statics on another grid)."""
    if same_grid(lat, lon, to_lat, to_lon):
        return Resampler(lat, lon)
    return Conservative(lat, lon, to_lat, to_lon)


def same_grid(lat: np.ndarray, lon: np.ndarray, other_lat: np.ndarray, other_lon: np.ndarray) -> bool:
    """The same grid to 1e-6 degrees."""
    return all(len(a) == len(b) and bool(np.allclose(a, b, rtol=0, atol=1e-6))
               for a, b in ((lat, other_lat), (lon, other_lon)))
