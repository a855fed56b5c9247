"""Deterministic scores, defined as in WeatherBench2 (`weatherbench2/metrics.py`, Rasp et al. 2024, sec. 4).

All functions take numpy arrays whose last two axes are (latitude, longitude), latitude ascending in degrees.
Arithmetic is float64 numpy with a fixed reduction order, so results do not depend on threads or batching.

    weights   w_i = sin(upper bound_i) - sin(lower bound_i), normalized to mean 1       (WB2 get_lat_weights)
    per step  mse_t = mean_ij(w_i (f - o)^2),  bias_t = mean_ij(w_i (f - o))            (WB2 _spatial_average)
              acc_t = mean(w f' o') / sqrt(mean(w f'^2) mean(w o'^2)), f' = f - c, o' = o - c  (WB2 ACC)
    over time RMSE = sqrt(mean_t mse_t)   (WB2 RMSE: square root after the time mean)
              Bias = mean_t bias_t,  ACC = mean_t acc_t
    undefined ACC where a forecast or the truth has no anomaly (the climatology forecast): NaN, as in WB2

"Time" is the forecast initial time: the scores of one lead time average over all initial times.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def cell_area_weights(latitude: np.ndarray) -> np.ndarray:
    """Area weight of each latitude row, mean 1 (WB2 `get_lat_weights` / `_cell_area_from_latitude`).

    Cell bounds are the midpoints between rows, and the poles for the first and last row, so a grid with or
    without pole rows gets the exact area of each cell: the integral of cos(lat) between its bounds.
    """
    lat = np.deg2rad(np.asarray(latitude, dtype=np.float64))
    if lat.ndim != 1 or lat.size < 2:
        raise ValueError(f"latitude must be a 1-D array of at least 2 values, got shape {lat.shape}")
    if np.any(np.diff(lat) <= 0):
        raise ValueError("latitude must be strictly ascending (the canonical dataset is south to north)")
    if lat[0] < -np.pi / 2 - 1e-9 or lat[-1] > np.pi / 2 + 1e-9:
        raise ValueError(f"latitude must lie in [-90, 90], got [{latitude[0]}, {latitude[-1]}]")
    bounds = np.concatenate([[-np.pi / 2], (lat[:-1] + lat[1:]) / 2, [np.pi / 2]])
    area = np.sin(bounds[1:]) - np.sin(bounds[:-1])
    return area / area.mean()


def lat_lon_last(data) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(values [..., latitude, longitude], latitude ascending, longitude) of an xarray DataArray in WB2 layout.

    WB2 files may store latitude descending (90 .. -90) and any dimension order; every function here takes numpy
    arrays with latitude ascending in the last-but-one axis, so convert with this first. Other dims keep their order.
    """
    dims = [d for d in data.dims if d not in ("latitude", "longitude")]
    data = data.transpose(*dims, "latitude", "longitude").sortby("latitude")
    latitude = np.asarray(data["latitude"].values, dtype=np.float64)
    return np.asarray(data.values), latitude, np.asarray(data["longitude"].values, dtype=np.float64)


def spatial_mean(field: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Area-weighted mean over the last two axes (latitude, longitude); `weights` from cell_area_weights."""
    field = np.asarray(field, dtype=np.float64)
    if field.shape[-2] != weights.shape[0]:
        raise ValueError(f"field has {field.shape[-2]} latitudes but the weights {weights.shape[0]}")
    # mean over longitude first, then the weighted mean over latitude: same value as WB2's (x * w).mean(lat, lon)
    return (field.mean(axis=-1) * weights).mean(axis=-1)


def mse_per_step(forecast: np.ndarray, truth: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Spatially averaged squared error of each field (all leading axes kept)."""
    diff = np.asarray(forecast, dtype=np.float64) - np.asarray(truth, dtype=np.float64)
    return spatial_mean(diff * diff, weights)


def bias_per_step(forecast: np.ndarray, truth: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Spatially averaged error (forecast minus truth) of each field."""
    return spatial_mean(np.asarray(forecast, dtype=np.float64) - np.asarray(truth, dtype=np.float64), weights)


def acc_per_step(forecast: np.ndarray, truth: np.ndarray, climatology: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Anomaly correlation of each field against the climatology (WB2 ACC: uncentred anomalies).

    A forecast with zero anomaly everywhere (the climatology forecast itself) has no defined correlation: NaN,
    as in WB2. It stays NaN through the time mean and is written as null ("undefined"), never as a score.
    """
    clim = np.asarray(climatology, dtype=np.float64)
    fa = np.asarray(forecast, dtype=np.float64) - clim
    oa = np.asarray(truth, dtype=np.float64) - clim
    return anomaly_correlation(fa, oa, lambda x: spatial_mean(x, weights))


def anomaly_correlation(fa: np.ndarray, oa: np.ndarray, mean: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """mean(fa oa) / sqrt(mean(fa^2) mean(oa^2)) for a spatial `mean` (global or regional); 0 where undefined."""
    num = mean(fa * oa)
    den = np.sqrt(mean(fa * fa) * mean(oa * oa))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def rmse(mse_steps: np.ndarray, axis: int = 0) -> np.ndarray:
    """RMSE = sqrt of the time-mean of the per-step MSE (WB2 RMSE, not the mean of per-step RMSEs)."""
    return np.sqrt(np.mean(mse_steps, axis=axis))


def time_mean(per_step: np.ndarray, axis: int = 0) -> np.ndarray:
    """Mean over forecast initial times (bias and ACC)."""
    return np.mean(per_step, axis=axis)


class RunningMean:
    """Mean over initial times of arrays that arrive one batch at a time (axis 0 = initial time).

    Rows are added one by one in float64, so the result does not depend on how the initial times were batched, and
    memory is one result array whatever the number of initial times (for 0.25 degree grids).
    """

    def __init__(self) -> None:
        self.total: np.ndarray | None = None
        self.count = 0

    def add(self, batch: np.ndarray) -> None:
        for row in np.asarray(batch, dtype=np.float64):
            self.total = row.copy() if self.total is None else self.total + row
            self.count += 1

    @property
    def mean(self) -> np.ndarray:
        if self.total is None:
            raise ValueError("RunningMean.mean: nothing was added")
        return self.total / self.count
