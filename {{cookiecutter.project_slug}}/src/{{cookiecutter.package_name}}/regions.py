"""WeatherBench2's verification regions as latitude/longitude boxes, land-only / sea-only variants, and scores
averaged over each region.

The boxes are WB2's `predefined_regions` (google-research/weatherbench2, scripts/evaluate.py, commit 021c0b33,
lines 345-374; the region classes are weatherbench2/regions.py: SliceRegion, ExtraTropicalRegion, LandRegion):

    global               all points
    tropics              lat -20 .. 20
    extra-tropics        lat .. -20 and 20 ..
    northern-hemisphere  lat 20 ..          (WB2's hemispheres are their extra-tropical halves)
    southern-hemisphere  lat .. -20
    europe               lat 35 .. 75,      lon 347.5 .. 42.5 (crosses 0)
    north-america        lat 25 .. 60,      lon 240 .. 285
    north-atlantic       lat 25 .. 65,      lon 290 .. 350
    north-pacific        lat 25 .. 60,      lon 145 .. 230
    east-asia            lat 25 .. 60,      lon 102.5 .. 150
    ausnz                lat -45 .. -12.5,  lon 120 .. 175
    arctic               lat 60 .. 90
    antarctic            lat -90 .. -60

Bounds are inclusive, as WB2's label slices are (a row at exactly 20 N is in the tropics and in the extra-tropics).
Longitudes are compared modulo 360, so grids in [0, 360) and in [-180, 180) select the same points; a box whose
west edge is east of its east edge (Europe) wraps through longitude 0.

"<region>_land" and "<region>_sea" exist for every region when a land-sea mask (land fraction in [0, 1] on the
grid) is given. As WB2's LandRegion without a threshold, each cell's weight is multiplied by its land fraction
(by 1 - land fraction for sea), so a coastal cell counts in part for both.

A regional mean is sum(w f) / sum(w), w = cell-area weight (metrics.cell_area_weights, WB2 get_lat_weights, from the
whole grid's latitudes) x box x surface fraction: WB2's _spatial_average with `region.apply` weights. Memory: the
weights are kept as one latitude vector and one longitude vector per region (a box is separable) plus one shared
land-fraction field, so 0.25 deg grids cost a few MB; every score is reduced per call, so a caller streams over
initial times and keeps only the per-step numbers (n_inits x leads x channels x regions floats).
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import metrics
from .errors import EvaluationError
from .regionboxes import (  # noqa: F401  (the table, re-exported: regions.WB2_REGIONS etc.)
    ALL_LON,
    SURFACES,
    WB2_REGIONS,
    Region,
    available_names,
    check_names,
    lat_in,
    lon_in,
    region,
)

# ----------------------------------------------------------------------------------------------------------------
# Weights and regional means


@dataclass(frozen=True)
class RegionWeights:
    """Separable weights of several regions on one grid; build with region_weights()."""

    names: list[str]
    lat: np.ndarray  # (R, H) cell-area weight where the row is in the region's latitude ranges, else 0
    lon: np.ndarray  # (R, W) 1 where the column is in the region's longitude ranges, else 0
    surface: list[str]  # per region: all | land | sea
    land: np.ndarray | None  # (H, W) land fraction, or None
    total: np.ndarray  # (R,) sum of the weights of each region

    def dense(self, index: int) -> np.ndarray:
        """The (H, W) weights of region `index` (for plots and tests; scoring never builds them)."""
        return _dense(self.lat[index], self.lon[index], self.surface[index], self.land)


def _dense(lat: np.ndarray, lon: np.ndarray, surface: str, land: np.ndarray | None) -> np.ndarray:
    w = lat[:, None] * lon[None, :]
    if surface == "land":
        w = w * land
    elif surface == "sea":
        w = w * (1.0 - land)
    return w


def region_weights(
    names: Sequence[str], latitude: np.ndarray, longitude: np.ndarray, land_sea_mask: np.ndarray | None = None
) -> RegionWeights:
    """Weights of the named regions on the grid; EvaluationError if one holds no grid point (name, grid, fix)."""
    latitude = np.asarray(latitude, dtype=np.float64)
    longitude = np.asarray(longitude, dtype=np.float64)
    check_names(names, has_land_sea_mask=land_sea_mask is not None)
    area = metrics.cell_area_weights(latitude)
    regions = [region(n) for n in names]
    land = None
    if land_sea_mask is not None:
        land = check_land_sea_mask(land_sea_mask, latitude, longitude)
    lat = np.stack([area * lat_in(r, latitude) for r in regions])
    lon = np.stack([lon_in(r, longitude).astype(np.float64) for r in regions])
    total = np.array([_dense(lat[i], lon[i], r.surface, land).sum() for i, r in enumerate(regions)])
    for name, t in zip(names, total, strict=True):
        if not t > 0:
            raise EvaluationError(
                f"region {name!r} contains no grid point (or no {region(name).surface} fraction) of the "
                f"{len(latitude)} x {len(longitude)} grid. Fix: remove it from evaluate.regions, or use a finer grid."
            )
    return RegionWeights(list(names), lat, lon, [r.surface for r in regions], land, total)


def with_surfaces(names: Sequence[str]) -> list[str]:
    """Each name followed by its _land and _sea variants (names that already are a variant are kept as they are)."""
    out: list[str] = []
    for name in names:
        is_variant = name.endswith(tuple(f"_{s}" for s in SURFACES))
        variants = [name] if is_variant else [name, *(f"{name}_{s}" for s in SURFACES)]
        out += [v for v in variants if v not in out]
    return out


def empty_regions(
    names: Sequence[str], latitude: np.ndarray, longitude: np.ndarray, land_sea_mask: np.ndarray | None = None
) -> list[str]:
    """The named regions that hold no weight on this grid: no grid point in the box, or no land (sea) fraction."""
    land = None if land_sea_mask is None else check_land_sea_mask(land_sea_mask, latitude, longitude)
    empty = []
    for name in names:
        r = region(name)
        inside = lat_in(r, np.asarray(latitude))[:, None] & lon_in(r, np.asarray(longitude))[None, :]
        if r.surface != "all":
            inside = inside & ((land if r.surface == "land" else 1.0 - land) > 0)
        if not inside.any():
            empty.append(name)
    return empty


def check_land_sea_mask(mask: np.ndarray, latitude: np.ndarray, longitude: np.ndarray) -> np.ndarray:
    mask = np.asarray(mask, dtype=np.float64)
    if mask.shape != (len(latitude), len(longitude)):
        raise EvaluationError(
            f"the land-sea mask has shape {mask.shape}, the grid is {len(latitude)} x {len(longitude)}. "
            "Fix: regrid the mask to the data's grid."
        )
    if not np.all(np.isfinite(mask)) or mask.min() < 0 or mask.max() > 1:
        raise EvaluationError(
            f"the land-sea mask must be a land fraction in [0, 1] everywhere; it spans [{np.nanmin(mask)}, "
            f"{np.nanmax(mask)}] and has {int((~np.isfinite(mask)).sum())} non-finite values. Fix: fill or rescale it."
        )
    return mask


def regional_mean(field: np.ndarray, weights: RegionWeights) -> np.ndarray:
    """Weighted mean over the last two axes (lat, lon) in each region: shape field.shape[:-2] + (R,)."""
    field = np.asarray(field, dtype=np.float64)
    if field.shape[-2:] != (weights.lat.shape[1], weights.lon.shape[1]):
        raise ValueError(f"field grid {field.shape[-2:]} differs from the weights' {weights.lat.shape[1:]}")
    sums = {"all": _box_sums(field, weights)}
    if weights.land is not None and any(s != "all" for s in weights.surface):
        sums["land"] = _box_sums(field * weights.land, weights)
        sums["sea"] = sums["all"] - sums["land"]
    picked = np.stack([sums[s][..., r] for r, s in enumerate(weights.surface)], axis=-1)
    return picked / weights.total


def _box_sums(field: np.ndarray, weights: RegionWeights) -> np.ndarray:
    # sum over longitude inside each box first (..., H, R), then the weighted sum over latitude (..., R)
    zonal = field @ weights.lon.T
    return np.einsum("...hr,rh->...r", zonal, weights.lat)


def regional_scores_per_step(
    forecast: np.ndarray, truth: np.ndarray, weights: RegionWeights, climatology: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Per-field squared error, error and (with a climatology) ACC in each region, as metrics.py defines them.

    Returns {"mse", "bias"[, "acc"]} of shape leading + (R,): store one per initial time and lead, then take
    metrics.rmse / metrics.time_mean over the initial-time axis, exactly as for the global scores.
    """
    diff = np.asarray(forecast, dtype=np.float64) - np.asarray(truth, dtype=np.float64)
    out = {"mse": regional_mean(diff * diff, weights), "bias": regional_mean(diff, weights)}
    if climatology is not None:
        clim = np.asarray(climatology, dtype=np.float64)
        fa = np.asarray(forecast, dtype=np.float64) - clim
        oa = np.asarray(truth, dtype=np.float64) - clim
        out["acc"] = metrics.anomaly_correlation(fa, oa, lambda x: regional_mean(x, weights))
    return out


def load_land_sea_mask(path: str | Path, latitude: np.ndarray, longitude: np.ndarray) -> np.ndarray:
    """Land fraction (H, W) from a netCDF/zarr file with a `land_sea_mask` variable on (latitude, longitude).

    The file may store latitude descending and longitude in [-180, 180); it is reordered to the data's grid, which
    it must contain exactly (to 1e-6 degrees).
    """
    import xarray as xr

    path = Path(path)
    if not path.exists():
        raise EvaluationError(f"{path}: land-sea mask file not found. Fix: set evaluate.land_sea_mask to a file.")
    ds = xr.open_zarr(path) if path.suffix == ".zarr" or path.is_dir() else xr.open_dataset(path)
    if "land_sea_mask" not in ds:
        close = difflib.get_close_matches("land_sea_mask", list(ds.data_vars), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise EvaluationError(
            f"{path}: no variable 'land_sea_mask'{hint}; it has {list(ds.data_vars)}. Fix: rename the variable."
        )
    da = ds["land_sea_mask"].squeeze(drop=True)
    da = da.assign_coords(longitude=np.mod(da["longitude"].values, 360.0)).sortby(["latitude", "longitude"])
    want_lon = np.mod(np.asarray(longitude, dtype=np.float64), 360.0)
    try:
        da = da.sel(latitude=np.asarray(latitude), longitude=want_lon, method="nearest", tolerance=1e-6)
    except KeyError:
        raise EvaluationError(
            f"{path}: the land-sea mask's grid does not contain the data's grid. Fix: regrid the mask."
        ) from None
    return check_land_sea_mask(np.asarray(da.transpose("latitude", "longitude").values), latitude, longitude)
