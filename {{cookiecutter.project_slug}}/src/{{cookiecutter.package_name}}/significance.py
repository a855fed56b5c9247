"""Paired block-bootstrap confidence intervals for the difference of a score between two forecasts.

Used for model vs each baseline and for experiment vs experiment: both are scored on the same initial times, and
what is resampled is the initial-time index, the same draw for both (paired), so the day-to-day variation that
both forecasts share (a hard week is hard for every model) cancels in the difference.

    statistic   "rmse": sqrt(mean_t mse_a) - sqrt(mean_t mse_b)   (WB2 RMSE of the resampled set, per-step MSE in)
                "mean": mean_t s_a - mean_t s_b                   (bias, ACC, MAE, CRPS, ... per-step values in)
    resampling  circular block bootstrap (Politis & Romano 1992): blocks of `block_length` consecutive initial
                times starting at uniformly drawn positions, wrapping at the end, until n times are drawn
    interval    percentile interval of the resampled differences at `confidence` (default 0.95)
    significant only when the interval excludes zero

Block length. Consecutive initial times are not independent: the flow persists for days, and forecasts whose
windows overlap see the same weather. A block keeps that dependence inside it. `block_length=None` (params
evaluate.significance.block_length: 0) takes the larger of
  - Wilks' rule for the moving-block bootstrap (Wilks 1997, J. Climate 10:65-82): L = (n - L + 1)^((2/3)(1 - n'/n))
    with the effective sample size n' = n (1 - r1) / (1 + r1) from the lag-1 autocorrelation r1 of the per-time
    differences (the largest r1 over all series given, so one block length serves every lead and channel), and
  - the window overlap ceil(lead_hours / init_every_hours) when both are given.
An explicit integer overrides both.

Memory: the inputs are the per-initial-time spatial means (n_inits x ... floats) that evaluate keeps anyway; the
resampling works on a (n_samples x n_inits) matrix of counts, never on copies of the data, and on at most
COLUMNS_PER_PASS series at a time (n_samples x 4096 floats, 33 MB for 1000 samples), whatever their number.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

DEFAULT_SAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95
COLUMNS_PER_PASS = 4096  # series (lead x channel x region) resampled at once


@dataclass(frozen=True)
class PairedInterval:
    """Difference a - b of a score (a: the forecast under test, b: the baseline) with its bootstrap interval.

    For error scores (RMSE, MAE, CRPS) a negative difference means a is better.
    """

    difference: np.ndarray  # on all initial times; shape = the inputs' trailing shape
    low: np.ndarray
    high: np.ndarray
    significant: np.ndarray  # bool: the interval excludes zero
    block_length: int
    n_samples: int
    confidence: float


def lag1_autocorrelation(x: np.ndarray) -> np.ndarray:
    """Lag-1 autocorrelation along axis 0 of each series (0 for a constant series)."""
    x = np.asarray(x, dtype=np.float64)
    d = x - x.mean(axis=0)
    den = (d * d).sum(axis=0)
    num = (d[1:] * d[:-1]).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


def wilks_block_length(n: int, r1: float) -> int:
    """Smallest integer L with L >= (n - L + 1)^((2/3)(1 - n'/n)), n' = n (1 - r1) / (1 + r1); 1 if r1 <= 0."""
    if n < 2 or r1 <= 0:
        return 1
    r1 = min(r1, 0.999)
    exponent = (2.0 / 3.0) * (1.0 - (1.0 - r1) / (1.0 + r1))
    for length in range(1, n + 1):
        if length >= (n - length + 1) ** exponent:
            return length
    return n


def auto_block_length(
    differences: np.ndarray, lead_hours: float | None = None, init_every_hours: float | None = None
) -> int:
    """Block length from the data (Wilks) and, when given, from the overlap of the forecast windows."""
    differences = np.asarray(differences, dtype=np.float64)
    n = differences.shape[0]
    r1 = float(np.max(lag1_autocorrelation(differences.reshape(n, -1)))) if n > 2 else 0.0
    length = wilks_block_length(n, r1)
    if lead_hours is not None and init_every_hours:
        length = max(length, math.ceil(lead_hours / init_every_hours))
    return max(1, min(length, n))


def resample_counts(n: int, block_length: int, n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """(n_samples, n) how often each initial time is drawn by a circular block bootstrap; each row sums to n."""
    n_blocks = math.ceil(n / block_length)
    starts = rng.integers(0, n, size=(n_samples, n_blocks))
    index = ((starts[:, :, None] + np.arange(block_length)) % n).reshape(n_samples, -1)[:, :n]
    flat = index + n * np.arange(n_samples)[:, None]
    return np.bincount(flat.ravel(), minlength=n_samples * n).reshape(n_samples, n)


def _aggregate(means: np.ndarray, statistic: str) -> np.ndarray:
    return np.sqrt(means) if statistic == "rmse" else means


def paired_bootstrap(
    a: np.ndarray,
    b: np.ndarray,
    statistic: Literal["rmse", "mean"] = "mean",
    n_samples: int = DEFAULT_SAMPLES,
    block_length: int | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
    lead_hours: float | None = None,
    init_every_hours: float | None = None,
) -> PairedInterval:
    """Bootstrap interval of statistic(a) - statistic(b); a, b: per-initial-time values [n_inits, ...] (paired).

    For statistic="rmse" pass the per-step MSE (evaluate's per["mse"]), not per-step RMSE. The trailing axes (lead,
    channel, region, ...) are handled at once with the same resampled initial times.
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired scores need the same initial times and shape; got {a.shape} and {b.shape}")
    if a.ndim == 0 or a.shape[0] < 2:
        raise ValueError("a bootstrap over initial times needs at least 2 initial times")
    if statistic not in ("rmse", "mean"):
        raise ValueError(f"statistic must be 'rmse' or 'mean', got {statistic!r}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    n, trailing = a.shape[0], a.shape[1:]
    if block_length is None:
        block_length = auto_block_length(a - b, lead_hours, init_every_hours)
    block_length = int(min(max(1, block_length), n))
    counts = resample_counts(n, block_length, n_samples, np.random.default_rng(seed)).astype(np.float64)
    flat_a, flat_b = a.reshape(n, -1), b.reshape(n, -1)
    tail = (1.0 - confidence) / 2.0
    low, high = np.empty(flat_a.shape[1]), np.empty(flat_a.shape[1])
    for c in range(0, flat_a.shape[1], COLUMNS_PER_PASS):  # bounded memory: n_samples x COLUMNS_PER_PASS floats
        cols = slice(c, c + COLUMNS_PER_PASS)
        boot = _aggregate(counts @ flat_a[:, cols] / n, statistic) - _aggregate(counts @ flat_b[:, cols] / n, statistic)
        low[cols], high[cols] = np.quantile(boot, [tail, 1.0 - tail], axis=0)
    diff = _aggregate(flat_a.mean(axis=0), statistic) - _aggregate(flat_b.mean(axis=0), statistic)
    return PairedInterval(
        difference=diff.reshape(trailing),
        low=low.reshape(trailing),
        high=high.reshape(trailing),
        significant=((low > 0) | (high < 0)).reshape(trailing),
        block_length=block_length,
        n_samples=n_samples,
        confidence=confidence,
    )
