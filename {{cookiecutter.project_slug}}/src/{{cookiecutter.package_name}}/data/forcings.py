"""Forcings: inputs known in advance at every time (no data needed), shared by training, evaluation and synthetic.

F = 3 channels: top-of-atmosphere insolation proxy (cosine of the solar zenith angle, clipped at 0), sin(lat), cos(lat).
The solar geometry is the textbook approximation (declination from day of year, local solar time from longitude,
no equation of time): accurate to a degree or so, which is all a forcing input needs.
"""

from __future__ import annotations

import numpy as np

FORCING_NAMES = ("cos_solar_zenith", "sin_latitude", "cos_latitude")


def _day_and_hour(times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fractional day of year (0-based) and UTC hour of each time."""
    t = np.asarray(times, dtype="datetime64[ns]")
    year_start = t.astype("datetime64[Y]").astype("datetime64[ns]")
    day = (t - year_start) / np.timedelta64(1, "D")
    hour = (t - t.astype("datetime64[D]").astype("datetime64[ns]")) / np.timedelta64(1, "h")
    return day.astype(np.float64), hour.astype(np.float64)


def solar_declination(times: np.ndarray) -> np.ndarray:
    """Solar declination in radians (about +23.44 deg at the June solstice)."""
    day, hour = _day_and_hour(times)
    return np.deg2rad(23.44) * np.sin(2 * np.pi * (day + hour / 24.0 - 80.0) / 365.25)


def hour_angle(times: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Hour angle in radians, (T, W): 0 at local solar noon."""
    _, hour = _day_and_hour(times)
    local_hours = hour[:, None] + np.asarray(lon, dtype=np.float64)[None, :] / 15.0
    return 2 * np.pi * (local_hours - 12.0) / 24.0


def cos_zenith(times: np.ndarray, lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Cosine of the solar zenith angle, (T, H, W) float64, not clipped."""
    phi = np.deg2rad(np.asarray(lat, dtype=np.float64))[None, :, None]
    dec = solar_declination(times)[:, None, None]
    h = hour_angle(times, lon)[:, None, :]
    # sin(phi) sin(dec) + cos(phi) cos(dec) cos(h), evaluated in place (one (T, H, W) temporary, not four)
    out = np.multiply(np.cos(phi) * np.cos(dec), np.cos(h))
    return np.add(np.sin(phi) * np.sin(dec), out, out=out)


def forcing_fields(times: np.ndarray, lat: np.ndarray, lon: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Forcings at `times` on the (lat, lon) grid: float32 array (T, F, H, W) in the order of FORCING_NAMES
    (written into `out` when given, e.g. a batch buffer)."""
    times = np.atleast_1d(np.asarray(times, dtype="datetime64[ns]"))
    lat = np.asarray(lat, dtype=np.float64)
    lon = np.asarray(lon, dtype=np.float64)
    if out is None:
        out = np.empty((len(times), len(FORCING_NAMES), len(lat), len(lon)), dtype=np.float32)
    cz = cos_zenith(times, lat, lon)
    out[:, 0] = np.clip(cz, 0.0, None, out=cz)
    out[:, 1] = np.sin(np.deg2rad(lat))[:, None]
    out[:, 2] = np.cos(np.deg2rad(lat))[:, None]
    return out
