"""Scores against hand-computed cases (WB2 definitions, see metrics.py)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest


@pytest.fixture(scope="module")
def m(pkg_name):
    return importlib.import_module(f"{pkg_name}.metrics")


def test_cell_area_weights_by_hand(m):
    # two rows: bounds -90, 0, 90 -> equal areas
    np.testing.assert_allclose(m.cell_area_weights(np.array([-45.0, 45.0])), [1.0, 1.0])
    # bounds -90, -30, 30, 90 -> sin differences 0.5, 1, 0.5 -> normalized to mean 1
    np.testing.assert_allclose(m.cell_area_weights(np.array([-60.0, 0.0, 60.0])), [0.75, 1.5, 0.75])
    # pole rows get the polar cap down to the midpoint: 1 - sin(45), 2 sin(45), 1 - sin(45), over mean 2/3
    cap = 1 - np.sin(np.pi / 4)
    np.testing.assert_allclose(
        m.cell_area_weights(np.array([-90.0, 0.0, 90.0])), np.array([cap, 2 * np.sin(np.pi / 4), cap]) * 1.5
    )


def test_weights_of_equiangular_grid_approach_cos_lat(m):
    lat = np.linspace(-90 + 2.8125, 90 - 2.8125, 32)
    w = m.cell_area_weights(lat)
    assert w.mean() == pytest.approx(1.0)
    cos = np.cos(np.deg2rad(lat))
    np.testing.assert_allclose(w, cos / cos.mean(), rtol=2e-3)


def test_weights_reject_descending_latitude(m):
    with pytest.raises(ValueError, match="ascending"):
        m.cell_area_weights(np.array([45.0, -45.0]))


def test_uniform_fields(m):
    w = m.cell_area_weights(np.array([-60.0, 0.0, 60.0]))
    f, t = np.full((2, 3, 4), 3.0), np.full((2, 3, 4), 1.0)  # (time, lat, lon)
    np.testing.assert_allclose(m.mse_per_step(f, t, w), [4.0, 4.0])
    np.testing.assert_allclose(m.rmse(m.mse_per_step(f, t, w)), 2.0)
    np.testing.assert_allclose(m.time_mean(m.bias_per_step(f, t, w)), 2.0)


def test_known_bias(m):
    rng = np.random.default_rng(0)
    w = m.cell_area_weights(np.linspace(-80, 80, 9))
    truth = rng.normal(size=(5, 9, 12))
    forecast = truth + 0.5
    assert m.time_mean(m.bias_per_step(forecast, truth, w)) == pytest.approx(0.5)
    assert m.rmse(m.mse_per_step(forecast, truth, w)) == pytest.approx(0.5)
    assert m.time_mean(m.bias_per_step(truth - 0.25, truth, w)) == pytest.approx(-0.25)


def test_perfect_forecast(m):
    rng = np.random.default_rng(1)
    w = m.cell_area_weights(np.linspace(-80, 80, 9))
    truth, clim = rng.normal(size=(4, 2, 9, 12)), rng.normal(size=(4, 2, 9, 12))
    assert np.all(m.rmse(m.mse_per_step(truth, truth, w)) == 0.0)
    assert np.all(m.time_mean(m.bias_per_step(truth, truth, w)) == 0.0)
    np.testing.assert_allclose(m.time_mean(m.acc_per_step(truth, truth, clim, w)), 1.0)


def test_acc_sign_and_climatology_forecast(m):
    rng = np.random.default_rng(2)
    w = m.cell_area_weights(np.linspace(-80, 80, 9))
    clim = rng.normal(size=(9, 12))
    truth = clim + rng.normal(size=(9, 12))
    anti = 2 * clim - truth  # anomaly of the opposite sign
    assert m.acc_per_step(anti, truth, clim, w) == pytest.approx(-1.0)
    assert m.acc_per_step(clim + 3 * (truth - clim), truth, clim, w) == pytest.approx(1.0)  # ACC ignores amplitude
    assert np.isnan(m.acc_per_step(clim, truth, clim, w))  # no anomaly: undefined (WB2: NaN), not 0
    # and it stays undefined through the time mean: never averaged into a number
    steps = m.acc_per_step(np.stack([clim, truth]), np.stack([truth, truth]), np.stack([clim, clim]), w)
    assert np.isnan(steps[0]) and steps[1] == pytest.approx(1.0) and np.isnan(m.time_mean(steps))


def test_latitude_weighting_of_non_uniform_grid(m):
    lat = np.array([-60.0, 0.0, 60.0])  # weights 0.75, 1.5, 0.75
    w = m.cell_area_weights(lat)
    truth = np.zeros((3, 4))
    equator = truth.copy()
    equator[1] = 1.0
    polar = truth.copy()
    polar[0] = 1.0
    assert m.mse_per_step(equator, truth, w) == pytest.approx(1.5 / 3)
    assert m.mse_per_step(polar, truth, w) == pytest.approx(0.75 / 3)
    assert m.bias_per_step(equator * 2, truth, w) == pytest.approx(1.0)
    # ACC with a hand-computed weighted correlation: anomalies per row (lon-uniform)
    clim = np.zeros((3, 4))
    f = np.array([1.0, 2.0, -1.0])[:, None] * np.ones((3, 4))
    o = np.array([1.0, 1.0, 1.0])[:, None] * np.ones((3, 4))
    num = (0.75 * 1 + 1.5 * 2 + 0.75 * -1) / 3
    den = np.sqrt((0.75 * 1 + 1.5 * 4 + 0.75 * 1) / 3 * (0.75 + 1.5 + 0.75) / 3)
    assert m.acc_per_step(f, o, clim, w) == pytest.approx(num / den)
    # the weighting is WB2's: the same as xarray's weighted mean with the cell-area weights
    import xarray as xr
    field = xr.DataArray(np.arange(12.0).reshape(3, 4) ** 2, dims=("latitude", "longitude"))
    expected = field.weighted(xr.DataArray(w, dims="latitude")).mean(("latitude", "longitude"))
    assert m.spatial_mean(field.values, w) == pytest.approx(float(expected))


def test_rmse_takes_the_root_after_the_time_mean(m):
    w = m.cell_area_weights(np.array([-45.0, 45.0]))
    truth = np.zeros((2, 2, 3))
    forecast = np.stack([np.full((2, 3), 1.0), np.full((2, 3), 3.0)])
    mse = m.mse_per_step(forecast, truth, w)
    np.testing.assert_allclose(mse, [1.0, 9.0])
    assert m.rmse(mse) == pytest.approx(np.sqrt(5.0))  # not the mean of per-step RMSEs (2.0)
