"""Ensemble scores against independent definitions (CDF integral, pair loops, WB2's rank formula, Gaussian
expectations) and the member generation (seeded, batch-independent perturbations; several checkpoints)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest


@pytest.fixture(scope="module")
def E(pkg_name):
    return importlib.import_module(f"{pkg_name}.ensemble")


@pytest.fixture(scope="module")
def M(pkg_name):
    return importlib.import_module(f"{pkg_name}.metrics")


LAT = np.linspace(-80, 80, 9)


def crps_by_cdf_integral(members: np.ndarray, y: float) -> float:
    """integral (F(x) - 1{x >= y})^2 dx of the members' empirical CDF F, exactly (piecewise constant)."""
    points = np.sort(np.append(members, y))
    total = 0.0
    for left, right in zip(points[:-1], points[1:], strict=True):
        f = (members <= left).mean()
        h = float(left >= y)
        total += (f - h) ** 2 * (right - left)
    return total


def test_standard_crps_is_the_cdf_integral(E):
    rng = np.random.default_rng(0)
    members, truth = rng.normal(size=(5, 3, 4)), rng.normal(size=(3, 4))
    got = E.crps_pointwise(members, truth, fair=False)
    for i in range(3):
        for j in range(4):
            assert got[i, j] == pytest.approx(crps_by_cdf_integral(members[:, i, j], truth[i, j]), rel=1e-12)


def test_fair_crps_is_the_pair_formula(E):
    rng = np.random.default_rng(1)
    members, truth = rng.normal(size=(6, 2, 3)), rng.normal(size=(2, 3))
    m = members.shape[0]
    pairs = sum(np.abs(members[i] - members[j]) for i in range(m) for j in range(m))
    want = np.abs(members - truth).mean(axis=0) - pairs / (2 * m * (m - 1))
    np.testing.assert_allclose(E.crps_pointwise(members, truth, fair=True), want, rtol=1e-12)


def test_pair_sum_equals_wb2s_rank_formula(E):
    """WB2 _pointwise_crps_spread: 2 mean_m((2 rank - M - 1) x) / (M - 1) = pair sum / (M (M - 1))."""
    members = np.random.default_rng(2).normal(size=(7, 5))
    m = members.shape[0]
    rank = np.argsort(np.argsort(members, axis=0), axis=0) + 1  # ordinal ranks, 1 = smallest
    wb2_spread = 2 * ((2 * rank - m - 1) * members).mean(axis=0) / (m - 1)
    np.testing.assert_allclose(E.pair_sum(members) / (m * (m - 1)), wb2_spread, rtol=1e-12)


def test_perfect_ensemble_scores_zero(E, M):
    w = M.cell_area_weights(LAT)
    truth = np.random.default_rng(3).normal(size=(2, 3, 9, 12))
    members = np.stack([truth] * 4)
    for fair in (True, False):
        np.testing.assert_array_equal(E.crps_per_step(members, truth, w, fair), 0.0)
    np.testing.assert_array_equal(E.ensemble_mean_mse_per_step(members, truth, w), 0.0)
    np.testing.assert_array_equal(E.variance_per_step(members, w), 0.0)


def test_one_member_crps_is_the_mae(E, M):
    w = M.cell_area_weights(LAT)
    rng = np.random.default_rng(4)
    truth, forecast = rng.normal(size=(2, 3, 9, 12)), rng.normal(size=(2, 3, 9, 12))
    mae = M.spatial_mean(np.abs(forecast - truth), w)
    for fair in (True, False):
        np.testing.assert_allclose(E.crps_per_step(forecast[None], truth, w, fair), mae, rtol=1e-12)
    np.testing.assert_array_equal(E.variance_per_step(forecast[None], w), 0.0)


def test_crps_expectations_for_gaussian_members_and_truth(E):
    """Members and truth iid N(0, 1): E[fair CRPS] = 1/sqrt(pi) (the distribution's CRPS, any M);
    E[standard CRPS] = 2/sqrt(pi) - (M - 1)/M x 1/sqrt(pi) (biased by the finite ensemble)."""
    rng = np.random.default_rng(5)
    m = 4
    members, truth = rng.normal(size=(m, 200_000)), rng.normal(size=200_000)
    assert E.crps_pointwise(members, truth, fair=True).mean() == pytest.approx(1 / np.sqrt(np.pi), rel=0.01)
    standard = (2 - (m - 1) / m) / np.sqrt(np.pi)
    assert E.crps_pointwise(members, truth, fair=False).mean() == pytest.approx(standard, rel=0.01)


def test_ensemble_mean_rmse_of_a_constant_bias(E, M):
    w = M.cell_area_weights(LAT)
    truth = np.random.default_rng(6).normal(size=(3, 2, 9, 12))
    spread = np.array([-0.3, 0.3, -0.1, 0.1])[:, None, None, None, None]  # symmetric: the ensemble mean is exact
    members = truth[None] + 0.5 + spread
    np.testing.assert_allclose(M.rmse(E.ensemble_mean_mse_per_step(members, truth, w)), 0.5, rtol=1e-12)
    want_var = np.var(spread.ravel(), ddof=1)  # the same at every point
    np.testing.assert_allclose(E.spread(E.variance_per_step(members, w)), np.sqrt(want_var), rtol=1e-12)


def test_spread_skill_ratio_of_a_reliable_and_an_underdispersive_ensemble(E, M):
    """Truth = centre + N(0, 1), members = centre + s N(0, 1): the expected ratio is
    sqrt((M + 1) / M) s / sqrt(1 + s^2 / M), i.e. 1 for the reliable s = 1 (sqrt(M / (M + 1)) without the factor)."""
    rng = np.random.default_rng(7)
    w = M.cell_area_weights(LAT)
    m, shape = 5, (40, 1, 9, 12)
    centre = rng.normal(size=shape)
    truth = centre + rng.normal(size=shape)
    for scale in (1.0, 0.5):
        want = np.sqrt((m + 1) / m) * scale / np.sqrt(1 + scale**2 / m)
        members = centre[None] + scale * rng.normal(size=(m, *shape))
        var = E.variance_per_step(members, w)
        mse = E.ensemble_mean_mse_per_step(members, truth, w)
        ratio = E.spread_skill_ratio(var, mse, m)
        # reference: sqrt(mean var) / sqrt(mean mse) written out, with the Fortin et al. factor
        ref = np.sqrt((m + 1) / m) * np.sqrt(var.mean(axis=0)) / np.sqrt(mse.mean(axis=0))
        np.testing.assert_allclose(ratio, ref, rtol=1e-12)
        assert ratio.item() == pytest.approx(want, rel=0.03)
    raw = E.spread_skill_ratio(var, mse, m, finite_ensemble_correction=False)
    np.testing.assert_allclose(raw, ratio * np.sqrt(m / (m + 1)), rtol=1e-12)


def test_rank_histogram(E, M):
    rng = np.random.default_rng(8)
    w = M.cell_area_weights(LAT)
    m = 4
    members, truth = rng.normal(size=(m, 50, 9, 12)), rng.normal(size=(50, 9, 12))
    hist = E.rank_histogram_per_step(members, truth, w)
    assert hist.shape == (50, m + 1)
    np.testing.assert_allclose(hist.sum(axis=-1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(hist.mean(axis=0), 1 / (m + 1), atol=0.02)  # reliable -> flat
    # reference for one field: area-weighted count of members below the truth
    ranks = (members[:, 0] < truth[0]).sum(axis=0)
    ref = [(w[:, None] * (ranks == r)).mean() for r in range(m + 1)]
    np.testing.assert_allclose(hist[0], ref, rtol=1e-12)
    above = E.rank_histogram_per_step(members, truth + 100, w)
    np.testing.assert_allclose(above[..., -1], 1.0)
    tied = E.rank_histogram_per_step(np.stack([truth] * m), truth, w, seed=1)  # all equal: ties split at random
    np.testing.assert_allclose(tied.mean(axis=0), 1 / (m + 1), atol=0.02)


# ----------------------------------------------------------------------------------------------------------------
# Members


TIMES = np.array(["2001-02-01T00", "2001-02-02T00", "1969-07-20T20"], dtype="datetime64[ns]")


def test_perturbations_are_seeded_scaled_and_batch_independent(E):
    rng = np.random.default_rng(9)
    x0 = rng.normal(size=(3, 2, 32, 64)).astype(np.float32) * 100
    std = np.array([50.0, 2.0])
    batch = E.perturb(x0, TIMES, std, 0.1, member=2, seed=0)
    alone = E.perturb(x0[1:2], TIMES[1:2], std, 0.1, member=2, seed=0)
    np.testing.assert_array_equal(batch[1], alone[0])  # the same noise whatever the batch
    normalized = (batch.astype(np.float64) - x0) / std[None, :, None, None]
    assert normalized.std() == pytest.approx(0.1, rel=0.05) and abs(normalized.mean()) < 0.01
    assert not np.array_equal(batch, E.perturb(x0, TIMES, std, 0.1, member=3, seed=0))
    assert not np.array_equal(batch, E.perturb(x0, TIMES, std, 0.1, member=2, seed=1))
    np.testing.assert_array_equal(E.perturb(x0, TIMES, std, 0.0, member=2, seed=0), x0)


def test_ensemble_forecaster_uses_every_checkpoint(E):
    def constant_forecaster(offset):
        def forecast(x0, init_times, n_steps):
            for step in range(1, n_steps + 1):
                yield x0 + offset * step

        return forecast

    x0 = np.zeros((2, 1, 4, 8))
    checkpoints = [constant_forecaster(1.0), constant_forecaster(10.0)]
    states = list(E.ensemble_forecaster(checkpoints, 2, np.ones(1), 0.0, seed=0)(x0, TIMES[:2], 2))
    assert len(states) == 2 and states[0].shape == (2, 2, 1, 4, 8)
    np.testing.assert_array_equal(states[1][:, :, 0, 0, 0], [[2.0, 2.0], [20.0, 20.0]])
    with pytest.raises(E.EvaluationError, match="members would be identical"):
        E.ensemble_forecaster(checkpoints, 3, np.ones(1), 0.0, seed=0)
    # three perturbed members from two checkpoints: member m runs checkpoint m mod 2
    first = next(iter(E.ensemble_forecaster(checkpoints, 3, np.ones(1), 1e-3, seed=0)(x0, TIMES[:2], 1)))
    np.testing.assert_allclose(first.mean(axis=(1, 2, 3, 4)), [1.0, 10.0, 1.0], atol=1e-3)
    assert not np.array_equal(first[0], first[2])
