"""Zonal energy spectra of forecasts and truth, as WeatherBench2 defines them.

Definition (weatherbench2/derived_variables.py, class ZonalEnergySpectrum, commit 021c0b33): along a circle of
latitude with L equally spaced values f[l] and circumference C = 2 pi R cos(lat) (R = WB2's EARTH_RADIUS_M, the mean
of the polar and equatorial radii, 6 367 500 m),

    F[k] = (1/L) sum_l f[l] exp(-2 pi i k l / L),     k = 0 .. L // 2
    S[0] = C |F[0]|^2,   S[k] = 2 C |F[k]|^2 (k > 0: positive and negative frequencies)

so S has units of m x (unit of f)^2, wavenumber k has wavelength C / k metres (WB2's `wavelength` coordinate), and
Parseval holds: sum_k S[k] = (C / L) sum_l f[l]^2, the discrete integral of f^2 around the circle. (WB2 doubles the
Nyquist term k = L/2 too; we follow it, so for a field with energy at exactly k = L/2 the sum exceeds the integral by
that term. No meteorological field on a grid fine enough to evaluate has much energy there.)

WB2 computes S per latitude and averages it over time; its spectra plots show mid-latitudes. We average S at each
wavenumber over the latitude rows of a band (default 30-60 degrees in both hemispheres, params
evaluate.spectra.band) with equal weight per row: S already carries each circle's length, so the mean is the
band's energy per unit latitude, and the wavelength of wavenumber k in the band is the rows' mean C / k.

Streaming: SpectraAccumulator keeps one running sum (channels x wavenumbers) per lead for forecast and truth and
takes one batch of initial times at a time; memory is independent of the number of initial times.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from .metrics import RunningMean

EARTH_RADIUS_M = 1000 * (6357 + 6378) / 2  # WB2 schema.EARTH_RADIUS_M
DEFAULT_BAND = (30.0, 60.0)


def circumference_m(latitude: np.ndarray) -> np.ndarray:
    """Length in metres of each circle of latitude."""
    return 2 * np.pi * EARTH_RADIUS_M * np.cos(np.deg2rad(np.asarray(latitude, dtype=np.float64)))


def check_longitude(longitude: np.ndarray) -> None:
    """The zonal DFT needs equally spaced longitudes around the whole circle."""
    lon = np.asarray(longitude, dtype=np.float64)
    step = np.diff(lon)
    if lon.ndim != 1 or lon.size < 4 or np.any(np.abs(step - step[0]) > 1e-3) or step[0] <= 0:
        raise ValueError("longitude must be ascending and equally spaced (the zonal spectrum is a DFT)")
    if abs(step[0] * lon.size - 360.0) > 1e-3:
        raise ValueError(f"longitude covers {step[0] * lon.size} degrees; a zonal spectrum needs the full circle")


def zonal_energy_spectrum(field: np.ndarray, latitude: np.ndarray, longitude: np.ndarray) -> np.ndarray:
    """S[..., lat, k] of `field` [..., lat, lon] (WB2 ZonalEnergySpectrum), k = 0 .. nlon // 2."""
    field = np.asarray(field, dtype=np.float64)
    check_longitude(longitude)
    if field.shape[-2:] != (len(latitude), len(longitude)):
        raise ValueError(f"field grid {field.shape[-2:]} differs from ({len(latitude)}, {len(longitude)})")
    coeff = np.fft.rfft(field, axis=-1, norm="forward")
    power = coeff.real**2 + coeff.imag**2
    power[..., 1:] *= 2.0
    return power * circumference_m(latitude)[:, None]


def energy_units(units: str) -> str:
    """Units of S for a field in `units` (UDUNITS, e.g. 'm2 s-2'): metres times the units squared ('m5 s-4');
    '' when the field's units are unknown."""
    if not units:
        return ""
    powers: dict[str, int] = {"m": 1}
    for token in units.split():
        found = re.fullmatch(r"([A-Za-z%]+)(-?\d+)?", token)
        if found is None:  # not a plain product of powers: keep it whole
            return f"m ({units})2"
        if found.group(1) != "1":
            base = found.group(1)
            powers[base] = powers.get(base, 0) + 2 * int(found.group(2) or 1)
    return " ".join(base if p == 1 else f"{base}{p}" for base, p in powers.items() if p)


def wavenumbers(nlon: int) -> np.ndarray:
    return np.arange(nlon // 2 + 1)


def band_rows(latitude: np.ndarray, band: Sequence[float] = DEFAULT_BAND) -> np.ndarray:
    """Boolean rows with band[0] <= |latitude| <= band[1]; ValueError if the grid has none."""
    lat = np.abs(np.asarray(latitude, dtype=np.float64))
    rows = (lat >= band[0] - 1e-9) & (lat <= band[1] + 1e-9)
    if not rows.any():
        raise ValueError(f"no latitude row lies in the band |lat| in [{band[0]}, {band[1]}]")
    return rows


def band_mean(spectrum: np.ndarray, latitude: np.ndarray, band: Sequence[float] = DEFAULT_BAND) -> np.ndarray:
    """Mean over the band's latitude rows of S[..., lat, k] -> [..., k]."""
    return np.asarray(spectrum)[..., band_rows(latitude, band), :].mean(axis=-2)


def band_wavelength_m(latitude: np.ndarray, nlon: int, band: Sequence[float] = DEFAULT_BAND) -> np.ndarray:
    """Wavelength (m) of each wavenumber in the band: mean circle length / k (inf at k = 0)."""
    length = circumference_m(np.asarray(latitude)[band_rows(latitude, band)]).mean()
    with np.errstate(divide="ignore"):
        return length / wavenumbers(nlon).astype(np.float64)


def band_spectrum(
    field: np.ndarray, latitude: np.ndarray, longitude: np.ndarray, band: Sequence[float] = DEFAULT_BAND
) -> np.ndarray:
    """Band-mean zonal energy spectrum of `field` [..., lat, lon] -> [..., k]; only the band's rows are transformed."""
    rows = band_rows(latitude, band)
    lat = np.asarray(latitude)[rows]
    return zonal_energy_spectrum(np.asarray(field)[..., rows, :], lat, longitude).mean(axis=-2)


def small_scale_energy_ratio(forecast_spectrum: np.ndarray, truth_spectrum: np.ndarray, k_min: int) -> np.ndarray:
    """Energy of the forecast over the truth's at wavenumbers >= k_min (< 1: the forecast is too smooth)."""
    f = np.asarray(forecast_spectrum)[..., k_min:].sum(axis=-1)
    t = np.asarray(truth_spectrum)[..., k_min:].sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(t > 0, f / np.where(t > 0, t, 1.0), np.nan)


class SpectraAccumulator:
    """Time-mean band spectra of forecast and truth at chosen leads, fed one batch of initial times at a time.

        acc = SpectraAccumulator(latitude, longitude, leads_hours=[24, 72])
        for each batch and lead:  acc.add(lead_hours, forecast[B, C, H, W], truth[B, C, H, W])
        acc.result()  ->  {"wavenumber", "wavelength_m", "leads_hours", "forecast" [lead, C, k], "truth" [...]}
    """

    def __init__(
        self,
        latitude: np.ndarray,
        longitude: np.ndarray,
        leads_hours: Sequence[int],
        band: Sequence[float] = DEFAULT_BAND,
    ):
        check_longitude(longitude)
        band_rows(latitude, band)
        self.latitude, self.longitude, self.band = np.asarray(latitude), np.asarray(longitude), tuple(band)
        self.leads_hours = list(leads_hours)
        self._means = {(h, kind): RunningMean() for h in self.leads_hours for kind in ("forecast", "truth")}

    def wants(self, lead_hours: int) -> bool:
        return lead_hours in self.leads_hours

    def add(self, lead_hours: int, forecast: np.ndarray, truth: np.ndarray) -> None:
        """Add a batch [B, C, H, W] of forecasts and truths valid at `lead_hours` (ignored at other leads)."""
        if not self.wants(lead_hours):
            return
        for kind, field in (("forecast", forecast), ("truth", truth)):
            self._means[(lead_hours, kind)].add(band_spectrum(field, self.latitude, self.longitude, self.band))

    def result(self) -> dict:
        """Time-mean spectra of the leads that received data (a lead with none is left out)."""
        done = [h for h in self.leads_hours if self._means[(h, "truth")].count]
        return {
            "wavenumber": wavenumbers(len(self.longitude)),
            "wavelength_m": band_wavelength_m(self.latitude, len(self.longitude), self.band),
            "band": self.band,
            "leads_hours": done,
            "forecast": np.stack([self._means[(h, "forecast")].mean for h in done]) if done else None,
            "truth": np.stack([self._means[(h, "truth")].mean for h in done]) if done else None,
        }
