"""Zonal energy spectra against a direct DFT, a single sine wave and Parseval's relation (WB2 definition)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

R_EARTH = 1000 * (6357 + 6378) / 2  # WB2 schema.EARTH_RADIUS_M


@pytest.fixture(scope="module")
def S(pkg_name):
    return importlib.import_module(f"{pkg_name}.spectra")


LAT = -90 + (np.arange(16) + 0.5) * 180 / 16
LON = np.arange(32) * 360 / 32


def direct_spectrum(row: np.ndarray, latitude: float) -> np.ndarray:
    """WB2's formula written out: F[k] = (1/L) sum f[l] e^(-2 pi i k l / L), S = C |F|^2 x (1 or 2)."""
    n = row.size
    k = np.arange(n // 2 + 1)[:, None]
    coeff = (row[None, :] * np.exp(-2j * np.pi * k * np.arange(n)[None, :] / n)).sum(axis=1) / n
    factor = np.where(np.arange(n // 2 + 1) == 0, 1.0, 2.0)
    return factor * np.abs(coeff) ** 2 * 2 * np.pi * R_EARTH * np.cos(np.deg2rad(latitude))


def test_matches_the_direct_dft(S):
    field = np.random.default_rng(0).normal(size=(2, len(LAT), len(LON)))
    got = S.zonal_energy_spectrum(field, LAT, LON)
    assert got.shape == (2, len(LAT), len(LON) // 2 + 1)
    for t in range(2):
        for i, lat in enumerate(LAT):
            np.testing.assert_allclose(got[t, i], direct_spectrum(field[t, i], lat), rtol=1e-10)


@pytest.mark.parametrize("k0", [1, 3, 7])
def test_single_sine_wave_has_all_its_power_at_its_wavenumber(S, k0):
    amplitude, phase = 2.5, 0.4
    lon = np.deg2rad(LON)
    field = np.broadcast_to(amplitude * np.sin(k0 * lon + phase), (len(LAT), len(LON)))
    spec = S.zonal_energy_spectrum(field, LAT, LON)
    circumference = 2 * np.pi * R_EARTH * np.cos(np.deg2rad(LAT))
    np.testing.assert_allclose(spec[:, k0], circumference * amplitude**2 / 2, rtol=1e-12)
    others = np.delete(spec, k0, axis=1)
    assert np.all(others <= 1e-20 * spec[:, k0:k0 + 1])
    # Parseval: total energy = (C / L) sum f^2, the discrete integral of f^2 around the circle
    np.testing.assert_allclose(spec.sum(axis=1), circumference / len(LON) * (field**2).sum(axis=1), rtol=1e-12)
    assert S.wavenumbers(len(LON))[np.argmax(spec[3])] == k0


def test_parseval_with_wb2s_doubled_nyquist_term(S):
    field = np.random.default_rng(1).normal(size=(len(LAT), len(LON)))
    spec = S.zonal_energy_spectrum(field, LAT, LON)
    circumference = 2 * np.pi * R_EARTH * np.cos(np.deg2rad(LAT))
    integral = circumference / len(LON) * (field**2).sum(axis=1)
    nyquist = circumference * np.abs(np.fft.fft(field, axis=1)[:, len(LON) // 2] / len(LON)) ** 2
    np.testing.assert_allclose(spec.sum(axis=1), integral + nyquist, rtol=1e-12)


def test_wavelength_of_wavenumbers_in_the_band(S):
    rows = (np.abs(LAT) >= 30) & (np.abs(LAT) <= 60)
    wl = S.band_wavelength_m(LAT, len(LON))
    mean_c = (2 * np.pi * R_EARTH * np.cos(np.deg2rad(LAT[rows]))).mean()
    assert np.isinf(wl[0])
    np.testing.assert_allclose(wl[1:], mean_c / np.arange(1, len(LON) // 2 + 1), rtol=1e-12)


def test_band_spectrum_is_the_mean_over_the_band_rows(S):
    field = np.random.default_rng(2).normal(size=(3, len(LAT), len(LON)))
    rows = (np.abs(LAT) >= 20) & (np.abs(LAT) <= 50)
    full = S.zonal_energy_spectrum(field, LAT, LON)
    np.testing.assert_allclose(S.band_spectrum(field, LAT, LON, (20, 50)), full[:, rows].mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(S.band_mean(full, LAT, (20, 50)), full[:, rows].mean(axis=1), rtol=1e-12)
    with pytest.raises(ValueError, match="no latitude row"):
        S.band_rows(LAT, (1.0, 2.0))


def test_accumulator_streams_and_sees_blurring(S):
    rng = np.random.default_rng(3)
    truth = rng.normal(size=(5, 2, len(LAT), len(LON)))
    # a blurred forecast: a 1-2-1 filter along longitude damps the small scales
    blurred = 0.25 * np.roll(truth, 1, axis=-1) + 0.5 * truth + 0.25 * np.roll(truth, -1, axis=-1)
    acc = S.SpectraAccumulator(LAT, LON, leads_hours=[24, 72])
    acc.add(24, blurred[:2], truth[:2])
    acc.add(24, blurred[2:], truth[2:])
    acc.add(48, truth, truth)  # not a spectra lead: ignored
    out = acc.result()
    assert out["leads_hours"] == [24]  # 72 received nothing
    np.testing.assert_allclose(out["truth"][0], S.band_spectrum(truth, LAT, LON).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(out["forecast"][0], S.band_spectrum(blurred, LAT, LON).mean(axis=0), rtol=1e-12)
    ratio = S.small_scale_energy_ratio(out["forecast"][0], out["truth"][0], k_min=len(LON) // 4)
    k = np.arange(len(LON) // 4, len(LON) // 2 + 1)
    assert np.all(ratio < np.cos(np.pi * k[0] / len(LON)) ** 4 + 1e-9)  # the filter's |H(k)|^2 = cos^4(pi k / L)
    np.testing.assert_allclose(S.small_scale_energy_ratio(out["truth"][0], out["truth"][0], 5), 1.0)


def test_refuses_a_partial_circle(S):
    with pytest.raises(ValueError, match="full circle"):
        S.zonal_energy_spectrum(np.zeros((4, 8)), LAT[:4], np.arange(8) * 10.0)


def test_wb2_layout_arrays_are_converted_before_scoring(S, pkg_name):
    """A WB2 file (latitude descending, dims in any order) gives the spectrum of the same field stored south-up."""
    import xarray as xr

    metrics = importlib.import_module(f"{pkg_name}.metrics")
    field = np.random.default_rng(4).normal(size=(2, len(LAT), len(LON)))
    coords = {"latitude": LAT[::-1], "longitude": LON}
    da = xr.DataArray(field[:, ::-1], dims=("time", "latitude", "longitude"), coords=coords)
    values, lat, lon = metrics.lat_lon_last(da.transpose("latitude", "longitude", "time"))
    np.testing.assert_array_equal(lat, LAT)
    np.testing.assert_array_equal(values, field)
    np.testing.assert_allclose(S.zonal_energy_spectrum(values, lat, lon), S.zonal_energy_spectrum(field, LAT, LON))
