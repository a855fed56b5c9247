"""Gridded forecasts at weather stations: bilinear interpolation and WeatherReal-style scores.

Interpolation (bilinear in latitude and longitude degrees, as WeatherReal's `xarray.interp(method="linear")`):
  - longitude is periodic: a station east of the last grid column is interpolated between the last and the first
    column (the grid must go round the globe); station longitudes may be in [-180, 180) or [0, 360);
  - latitude must be ascending; a station poleward of the outermost grid row (a grid without pole rows) takes
    that row's value along the meridian (no extrapolation);
  - no height correction: a station's elevation is read and kept, but values are compared as interpolated.
The error of bilinear interpolation of a smooth field is at most (dlat^2 max|f_lat lat| + dlon^2 max|f_lon lon|) / 8.

Scores by lead, variable and region (regions.WB2_REGIONS boxes; a station is in a region when its coordinates are,
land/sea variants do not apply to stations): over all (initial time, station) pairs with an observation,
    RMSE = sqrt(mean e^2), MAE = mean |e|, bias = mean e, accuracy = fraction with |e| < threshold,
e = forecast - observation. Thresholds (THRESHOLDS) follow WeatherReal's metric_config.yml
(microsoft/WeatherReal-Benchmark, commit f9b362f1): 1.7 K for temperature, 1 m/s for wind, 2 hPa for pressure.

Streaming: StationScores keeps running sums (leads x variables x regions) and is fed one batch of initial times
at a time; interpolation gathers 4 grid values per station, so memory is one batch plus n_stations floats.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import regions as regions_mod

THRESHOLDS: dict[str, float] = {
    "2m_temperature": 1.7,  # K
    "temperature": 1.7,  # K
    "2m_dewpoint_temperature": 1.7,  # K
    "10m_wind_speed": 1.0,  # m/s
    "wind_speed": 1.0,  # m/s
    "10m_u_component_of_wind": 1.0,  # m/s
    "10m_v_component_of_wind": 1.0,  # m/s
    "u_component_of_wind": 1.0,  # m/s
    "v_component_of_wind": 1.0,  # m/s
    "mean_sea_level_pressure": 200.0,  # Pa (WeatherReal: 2 hPa)
}
SCORES = ("rmse", "mae", "bias", "accuracy", "count")


def threshold_for(variable: str) -> float | None:
    """Accuracy threshold of a channel ("temperature_850" uses "temperature"'s); None if it has none."""
    if variable in THRESHOLDS:
        return THRESHOLDS[variable]
    return THRESHOLDS.get(re.sub(r"_\d+$", "", variable))


@dataclass(frozen=True)
class Bilinear:
    """Interpolation of [..., H, W] fields to S points: four corner indices and weights per point."""

    i0: np.ndarray
    i1: np.ndarray
    wy: np.ndarray  # weight of row i1
    j0: np.ndarray
    j1: np.ndarray
    wx: np.ndarray  # weight of column j1
    grid_shape: tuple[int, int]

    def __call__(self, field: np.ndarray) -> np.ndarray:
        field = np.asarray(field)
        if field.shape[-2:] != self.grid_shape:
            raise ValueError(f"field grid {field.shape[-2:]} differs from the interpolator's {self.grid_shape}")
        f = field.astype(np.float64, copy=False)
        south = f[..., self.i0, self.j0] * (1 - self.wx) + f[..., self.i0, self.j1] * self.wx
        north = f[..., self.i1, self.j0] * (1 - self.wx) + f[..., self.i1, self.j1] * self.wx
        return south * (1 - self.wy) + north * self.wy


def bilinear(latitude: np.ndarray, longitude: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> Bilinear:
    """Interpolator from the grid (ascending latitude, ascending global longitude) to points (lat, lon) degrees."""
    glat = np.asarray(latitude, dtype=np.float64)
    glon = np.asarray(longitude, dtype=np.float64)
    lat, lon = np.asarray(lat, dtype=np.float64), np.asarray(lon, dtype=np.float64)
    if np.any(np.diff(glat) <= 0) or np.any(np.diff(glon) <= 0):
        raise ValueError("grid latitude and longitude must be strictly ascending")
    if np.any(np.abs(lat) > 90):
        raise ValueError(f"station latitudes must lie in [-90, 90]; got {lat[np.abs(lat) > 90][:3]}")
    rel = glon - glon[0]
    gap = 360.0 - rel[-1]  # the cell from the last column back to the first
    if glon.size < 2 or gap <= 0 or gap > 1.5 * np.diff(glon).max():
        raise ValueError("the grid's longitudes must go round the globe once (periodic interpolation)")
    # latitude: clamp to the outermost rows, then locate the row below
    y = np.clip(lat, glat[0], glat[-1])
    i0 = np.clip(np.searchsorted(glat, y, side="right") - 1, 0, len(glat) - 2)
    wy = (y - glat[i0]) / (glat[i0 + 1] - glat[i0])
    # longitude: position east of the first column, modulo 360; the last cell wraps to column 0
    x = np.mod(lon - glon[0], 360.0)
    j0 = np.searchsorted(rel, x, side="right") - 1
    j1 = (j0 + 1) % len(glon)
    width = np.where(j1 == 0, gap, rel[j1] - rel[j0])
    wx = (x - rel[j0]) / width
    return Bilinear(i0, i0 + 1, wy, j0, j1, wx, (len(glat), len(glon)))


class StationScores:
    """Running station scores by lead, variable and region.

        scores = StationScores(stations, variables, leads_hours, region_names)
        interp = bilinear(grid_lat, grid_lon, stations.latitude, stations.longitude)
        for each batch and lead:  scores.add(lead_hours, variable, valid_times[B], interp(forecast[:, c]))
        scores.result()  ->  {"rmse" | "mae" | "bias" | "accuracy" | "count": [lead, variable, region]}
    """

    def __init__(
        self,
        stations,
        variables: Sequence[str],
        leads_hours: Sequence[int],
        region_names: Sequence[str] = ("global",),
        thresholds: dict[str, float] | None = None,
    ):
        missing = [v for v in variables if v not in stations.values]
        if missing:
            raise ValueError(f"the stations have no {missing}; they have {sorted(stations.values)}")
        for name in region_names:
            if regions_mod.region(name).surface != "all":
                raise ValueError(f"region {name!r}: land/sea variants do not apply to stations; use the box")
        self.stations = stations
        self.variables, self.leads_hours, self.region_names = list(variables), list(leads_hours), list(region_names)
        # the default table, or the caller's (a variable missing from it gets no accuracy score)
        self.thresholds = [threshold_for(v) if thresholds is None else thresholds.get(v) for v in variables]
        self.members = np.stack(
            [regions_mod.region(n).contains(stations.latitude, stations.longitude) for n in self.region_names]
        )
        shape = (len(self.leads_hours), len(self.variables), len(self.region_names))
        self._sums = {k: np.zeros(shape) for k in ("sq", "abs", "err", "within", "count")}

    def add(self, lead_hours: int, variable: str, valid_times: np.ndarray, at_stations: np.ndarray) -> None:
        """Add forecasts interpolated to the stations [B, S] valid at `valid_times` [B]."""
        li, vi = self.leads_hours.index(lead_hours), self.variables.index(variable)
        obs = self.stations.at(variable, valid_times)
        at_stations = np.asarray(at_stations, dtype=np.float64)
        if at_stations.shape != obs.shape:
            raise ValueError(f"forecast at stations has shape {at_stations.shape}, expected {obs.shape}")
        threshold = self.thresholds[vi]
        for err in at_stations - obs:  # row by row: sums do not depend on how initial times were batched
            seen = np.isfinite(err)
            for ri, inside in enumerate(self.members):
                e = err[seen & inside]
                self._sums["sq"][li, vi, ri] += float(np.dot(e, e))
                self._sums["abs"][li, vi, ri] += float(np.abs(e).sum())
                self._sums["err"][li, vi, ri] += float(e.sum())
                self._sums["within"][li, vi, ri] += float((np.abs(e) < threshold).sum()) if threshold else 0.0
                self._sums["count"][li, vi, ri] += e.size

    def result(self) -> dict[str, np.ndarray]:
        """Scores [lead, variable, region]; NaN where no observation was scored (accuracy: or no threshold)."""
        n = self._sums["count"]
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = {k: np.where(n > 0, self._sums[k] / np.where(n > 0, n, 1), np.nan) for k in self._sums}
        has_threshold = np.array([t is not None for t in self.thresholds])[None, :, None]
        return {
            "rmse": np.sqrt(mean["sq"]),
            "mae": mean["abs"],
            "bias": mean["err"],
            "accuracy": np.where(has_threshold, mean["within"], np.nan),
            "count": n.astype(np.int64),
        }
