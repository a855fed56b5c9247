"""Paired block bootstrap: an independent loop implementation, known cases, coverage and block lengths."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest


@pytest.fixture(scope="module")
def B(pkg_name):
    return importlib.import_module(f"{pkg_name}.significance")


def loop_bootstrap(a, b, statistic, n_samples, block, confidence, seed):
    """The circular block bootstrap written as plain loops over resamples and blocks (same random draws)."""
    n = len(a)
    n_blocks = math.ceil(n / block)
    starts = np.random.default_rng(seed).integers(0, n, size=(n_samples, n_blocks))
    agg = (lambda x: np.sqrt(np.mean(x, axis=0))) if statistic == "rmse" else (lambda x: np.mean(x, axis=0))
    diffs = []
    for s in range(n_samples):
        index = [(start + j) % n for start in starts[s] for j in range(block)][:n]
        diffs.append(agg(a[index]) - agg(b[index]))
    tail = (1 - confidence) / 2
    return agg(a) - agg(b), np.quantile(np.array(diffs), tail, axis=0), np.quantile(np.array(diffs), 1 - tail, axis=0)


@pytest.mark.parametrize("statistic,block", [("mean", 1), ("mean", 4), ("rmse", 3)])
def test_matches_a_loop_implementation(B, statistic, block):
    rng = np.random.default_rng(0)
    a = rng.gamma(2.0, size=(37, 3, 2))
    b = a * rng.uniform(0.8, 1.2, size=a.shape)
    got = B.paired_bootstrap(a, b, statistic, n_samples=200, block_length=block, confidence=0.9, seed=7)
    diff, low, high = loop_bootstrap(a, b, statistic, 200, block, 0.9, 7)
    np.testing.assert_allclose(got.difference, diff, rtol=1e-12)
    np.testing.assert_allclose(got.low, low, rtol=1e-12)
    np.testing.assert_allclose(got.high, high, rtol=1e-12)
    assert got.block_length == block and got.difference.shape == (3, 2)
    np.testing.assert_array_equal(got.significant, (low > 0) | (high < 0))


def test_constant_bias_is_significant(B):
    """A forecast with an added constant bias has MSE + bias^2 at every time: RMSE difference > 0, CI excludes 0."""
    rng = np.random.default_rng(1)
    err = rng.normal(size=(60, 500))
    err -= err.mean(axis=1, keepdims=True)  # zero-mean error per time: adding a bias adds exactly bias^2 to the MSE
    mse_b = (err**2).mean(axis=1)
    mse_a = ((err + 0.4) ** 2).mean(axis=1)
    got = B.paired_bootstrap(mse_a, mse_b, "rmse", n_samples=500, seed=0)
    assert got.difference == pytest.approx(np.sqrt(mse_a.mean()) - np.sqrt(mse_b.mean()))
    assert 0 < got.low <= got.difference <= got.high and got.significant
    same = B.paired_bootstrap(mse_b, mse_b, "rmse", n_samples=100)
    assert same.difference == 0 and same.low == 0 and same.high == 0 and not same.significant


def test_noise_alone_is_not_significant(B):
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(80,)), rng.normal(size=(80,))
    got = B.paired_bootstrap(a, b, "mean", n_samples=1000, seed=3)
    assert got.low < 0 < got.high and not got.significant


def test_coverage_of_the_interval(B):
    """For iid differences with mean 0.3 the 90 % interval covers 0.3 in about 90 % of data sets."""
    rng = np.random.default_rng(4)
    covered = 0
    for _ in range(300):
        b = rng.normal(size=50)
        a = b + 0.3 + rng.normal(size=50)
        seed = int(rng.integers(1e9))
        got = B.paired_bootstrap(a, b, "mean", n_samples=300, block_length=1, confidence=0.9, seed=seed)
        covered += got.low <= 0.3 <= got.high
    assert 0.83 <= covered / 300 <= 0.96


def test_block_length_rules(B):
    assert B.wilks_block_length(100, 0.5) == 8  # by hand: 8 >= 93^(4/9) = 7.5 > 7 and 7 < 94^(4/9)
    assert B.wilks_block_length(100, -0.2) == 1
    assert B.wilks_block_length(100, 0.9) > B.wilks_block_length(100, 0.5)
    rng = np.random.default_rng(5)
    white = rng.normal(size=(200, 3))
    red = np.zeros(200)
    for t in range(1, 200):
        red[t] = 0.9 * red[t - 1] + rng.normal()
    assert B.auto_block_length(white) <= 2
    assert B.auto_block_length(red) >= 5
    assert B.auto_block_length(white, lead_hours=72, init_every_hours=24) == 3  # overlapping forecast windows
    # by hand: deviations -1.5 -0.5 0.5 1.5: (0.75 - 0.25 + 0.75) / 5
    np.testing.assert_allclose(B.lag1_autocorrelation(np.array([1.0, 2, 3, 4])), 0.25)


def test_blocks_widen_the_interval_of_autocorrelated_scores(B):
    rng = np.random.default_rng(6)
    d = np.zeros(300)
    for t in range(1, 300):
        d[t] = 0.9 * d[t - 1] + rng.normal()
    iid = B.paired_bootstrap(d, np.zeros(300), n_samples=1000, block_length=1, seed=1)
    auto = B.paired_bootstrap(d, np.zeros(300), n_samples=1000, seed=1)
    assert auto.block_length > 1
    assert (auto.high - auto.low) > 2 * (iid.high - iid.low)  # the iid interval is far too narrow for AR(1) 0.9


def test_seeded_and_checked(B):
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(30, 2)), rng.normal(size=(30, 2))
    one, two = B.paired_bootstrap(a, b, seed=11), B.paired_bootstrap(a, b, seed=11)
    np.testing.assert_array_equal(one.low, two.low)
    assert not np.array_equal(one.low, B.paired_bootstrap(a, b, seed=12).low)
    with pytest.raises(ValueError, match="same initial times"):
        B.paired_bootstrap(a, b[:-1])
    with pytest.raises(ValueError, match="at least 2"):
        B.paired_bootstrap(a[:1], b[:1])
    counts = B.resample_counts(30, 4, 50, np.random.default_rng(0))
    assert counts.shape == (50, 30) and np.all(counts.sum(axis=1) == 30)


def test_many_series_are_resampled_in_passes(B, monkeypatch):
    rng = np.random.default_rng(8)
    a, b = rng.normal(size=(25, 7, 3)), rng.normal(size=(25, 7, 3))
    whole = B.paired_bootstrap(a, b, "mean", n_samples=100, seed=2)
    monkeypatch.setattr(B, "COLUMNS_PER_PASS", 4)  # 21 series in 6 passes
    passes = B.paired_bootstrap(a, b, "mean", n_samples=100, seed=2)
    np.testing.assert_allclose(passes.low, whole.low, rtol=1e-12)  # BLAS may round the last bit differently
    np.testing.assert_allclose(passes.high, whole.high, rtol=1e-12)
