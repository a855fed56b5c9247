"""Ensemble forecasts: making the members, and scoring them as WeatherBench2 does.

Scores (weatherbench2/metrics.py, commit 021c0b33: CRPS, CRPSSkill, CRPSSpread, EnsembleMeanMSE, EnsembleVariance,
RankHistogram). With members x_1..x_M and truth y at a point:

    skill        mean_m |x_m - y|
    pair sum     P = sum_{i,j} |x_i - x_j| = 2 sum_i (2i - M - 1) x_(i)   (x_(i) sorted ascending; O(M log M))
    CRPS         skill - P / (2 M^2)          the CRPS of the members' empirical distribution ("standard")
    fair CRPS    skill - P / (2 M (M - 1))    unbiased for the CRPS of the distribution the members are drawn from
                                              (Ferro 2014; WB2's CRPS); with M = 1 the spread term is 0 (WB2)
    ens.-mean MSE  (mean_m x_m - y)^2, RMSE = sqrt(time-mean of its spatial mean)        (WB2 EnsembleMeanMSE)
    variance     var_m(x) with the unbiased factor 1 / (M - 1); 0 for M = 1              (WB2 EnsembleVariance)
    spread       sqrt(time-mean of the spatial-mean variance)  (WB2: "use EnsembleVariance, then a square root")
    spread-skill sqrt((M + 1) / M) x spread / ensemble-mean RMSE: 1 in expectation for a reliable M-member
                 ensemble, whose ensemble-mean MSE is (1 + 1/M) times its variance (Fortin et al. 2014). WB2's plots
                 show the ratio without the factor; pass finite_ensemble_correction=False for it.
    rank         number of members below y, ties split at random (seeded); the histogram is the area-weighted
                 fraction of points in each of the M + 1 ranks (flat for a reliable ensemble)

Every *_per_step function reduces one batch [M, B, C, H, W] to spatial means [B, C] (or [B, C, M + 1]) with the
latitude weights of metrics.cell_area_weights; the pointwise functions return fields for regional means
(regions.regional_mean). A caller keeps the per-step numbers per initial time and lead, and takes the time means
at the end (metrics.time_mean; metrics.rmse for the ensemble-mean MSE), so memory is one batch of members.

Members: `ensemble_forecaster` turns one or several deterministic forecasters (e.g. one per checkpoint) into
an ensemble; member m runs forecaster m mod K from the initial state plus, if amplitude > 0, Gaussian noise of
standard deviation `amplitude` in normalized units (amplitude x the channel's std in physical units), drawn
from a generator seeded by (seed, m, initial time), so a member's perturbation does not depend on batching.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np

from . import metrics
from .errors import EvaluationError


def _members(ensemble: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    ensemble = np.asarray(ensemble, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    if ensemble.ndim != truth.ndim + 1 or ensemble.shape[1:] != truth.shape:
        raise ValueError(f"ensemble must be [members, *truth.shape]; got {ensemble.shape} for truth {truth.shape}")
    return ensemble, truth


def pair_sum(ensemble: np.ndarray) -> np.ndarray:
    """sum_{i,j} |x_i - x_j| over the members (axis 0), via the sorted-rank identity."""
    ensemble = np.sort(np.asarray(ensemble, dtype=np.float64), axis=0)
    m = ensemble.shape[0]
    coef = (2.0 * np.arange(1, m + 1) - m - 1).reshape((m,) + (1,) * (ensemble.ndim - 1))
    return 2.0 * (coef * ensemble).sum(axis=0)


def crps_pointwise(ensemble: np.ndarray, truth: np.ndarray, fair: bool = True) -> np.ndarray:
    """CRPS at every point of `truth` of the members ensemble[m, ...] (fair or standard, see the module doc)."""
    ensemble, truth = _members(ensemble, truth)
    m = ensemble.shape[0]
    skill = np.abs(ensemble - truth).mean(axis=0)
    if m == 1:
        return skill
    return skill - pair_sum(ensemble) / (2.0 * m * (m - 1 if fair else m))


def variance_pointwise(ensemble: np.ndarray) -> np.ndarray:
    """Unbiased member variance (1 / (M - 1)); zero for one member."""
    ensemble = np.asarray(ensemble, dtype=np.float64)
    if ensemble.shape[0] == 1:
        return np.zeros(ensemble.shape[1:])
    return ensemble.var(axis=0, ddof=1)


def ranks_pointwise(ensemble: np.ndarray, truth: np.ndarray, seed: int = 0) -> np.ndarray:
    """Rank 0..M of the truth among the members at every point; ties split uniformly at random (seeded)."""
    ensemble, truth = _members(ensemble, truth)
    below = (ensemble < truth).sum(axis=0)
    equal = (ensemble == truth).sum(axis=0)
    if not equal.any():
        return below
    draw = np.random.default_rng(seed).random(truth.shape)
    return below + np.floor(draw * (equal + 1)).astype(below.dtype)


def crps_per_step(ensemble: np.ndarray, truth: np.ndarray, weights: np.ndarray, fair: bool = True) -> np.ndarray:
    """Area-weighted mean CRPS of each field: [M, ..., H, W] -> [...]."""
    return metrics.spatial_mean(crps_pointwise(ensemble, truth, fair), weights)


def ensemble_mean_mse_per_step(ensemble: np.ndarray, truth: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Area-weighted mean squared error of the ensemble mean of each field."""
    ensemble, truth = _members(ensemble, truth)
    return metrics.mse_per_step(ensemble.mean(axis=0), truth, weights)


def variance_per_step(ensemble: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Area-weighted mean of the unbiased member variance of each field."""
    return metrics.spatial_mean(variance_pointwise(ensemble), weights)


def rank_histogram_per_step(ensemble: np.ndarray, truth: np.ndarray, weights: np.ndarray, seed: int = 0) -> np.ndarray:
    """Area-weighted fraction of points at each rank: [M, ..., H, W] -> [..., M + 1], each row summing to 1."""
    ranks = ranks_pointwise(ensemble, truth, seed)
    m = np.asarray(ensemble).shape[0]
    return np.stack([metrics.spatial_mean((ranks == r).astype(np.float64), weights) for r in range(m + 1)], axis=-1)


def spread(variance_steps: np.ndarray, axis: int = 0) -> np.ndarray:
    """Ensemble spread: square root of the time-mean spatial-mean variance."""
    return np.sqrt(np.mean(variance_steps, axis=axis))


def spread_skill_ratio(
    variance_steps: np.ndarray,
    ensemble_mean_mse_steps: np.ndarray,
    n_members: int,
    axis: int = 0,
    finite_ensemble_correction: bool = True,
) -> np.ndarray:
    """sqrt((M + 1) / M) x spread / ensemble-mean RMSE (without the factor if finite_ensemble_correction=False)."""
    factor = np.sqrt((n_members + 1) / n_members) if finite_ensemble_correction else 1.0
    skill = metrics.rmse(ensemble_mean_mse_steps, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(skill > 0, factor * spread(variance_steps, axis) / np.where(skill > 0, skill, 1.0), np.nan)


# ----------------------------------------------------------------------------------------------------------------
# Making the members


def member_rng(seed: int, member: int, init_time: np.datetime64) -> np.random.Generator:
    """The generator of one member's perturbation at one initial time (independent of batching)."""
    t = int(np.datetime64(init_time, "ns").astype(np.int64)) % 2**64  # SeedSequence takes non-negative integers
    return np.random.default_rng([seed, member, t])


def perturb(
    x0: np.ndarray, init_times: np.ndarray, std: np.ndarray, amplitude: float, member: int, seed: int
) -> np.ndarray:
    """x0 [B, C, H, W] (physical) plus Gaussian noise of `amplitude` normalized units: amplitude x std[c] x N(0, 1)."""
    x0 = np.asarray(x0)
    std = np.asarray(std, dtype=np.float64)
    if std.shape != (x0.shape[1],):
        raise ValueError(f"std must hold one value per channel ({x0.shape[1]}), got shape {std.shape}")
    if amplitude == 0:
        return x0
    out = np.empty(x0.shape, dtype=x0.dtype)
    for b, t in enumerate(np.asarray(init_times).astype("datetime64[ns]")):
        noise = member_rng(seed, member, t).standard_normal(x0.shape[1:])
        out[b] = x0[b] + amplitude * std[:, None, None] * noise
    return out


def ensemble_forecaster(
    forecasters: Sequence[Callable], n_members: int, std: np.ndarray, amplitude: float, seed: int
) -> Callable[[np.ndarray, np.ndarray, int], Iterator[np.ndarray]]:
    """fn(x0, init_times, n_steps) -> iterator of [M, B, C, H, W] member states at leads 1..n_steps.

    `forecasters` take evaluate's interface fn(x0, init_times, n_steps) -> iterator of [B, C, H, W]; member m runs
    forecasters[m % K] from perturb(x0, ..., member=m). Identical members (amplitude 0 and more members than
    forecasters) are refused: they would fake a spread of zero.
    """
    if n_members < 1 or not forecasters:
        raise EvaluationError(f"an ensemble needs >= 1 member and >= 1 forecaster; got {n_members}, {len(forecasters)}")
    if amplitude < 0:
        raise EvaluationError(f"evaluate.ensemble.perturbation must be >= 0, got {amplitude}")
    if amplitude == 0 and n_members > len(forecasters):
        raise EvaluationError(
            f"evaluate.ensemble.members = {n_members} but only {len(forecasters)} checkpoint(s) and no perturbation: "
            "members would be identical. Fix: set evaluate.ensemble.perturbation > 0 or list more checkpoints."
        )

    def forecast(x0: np.ndarray, init_times: np.ndarray, n_steps: int) -> Iterator[np.ndarray]:
        starts = initial_states(x0, init_times, std, amplitude, n_members, seed)
        runs = [forecasters[m % len(forecasters)](starts[m], init_times, n_steps) for m in range(n_members)]
        for states in zip(*runs, strict=True):
            yield np.stack(states)

    return forecast


def initial_states(
    x0: np.ndarray, init_times: np.ndarray, std: np.ndarray, amplitude: float, n_members: int, seed: int
) -> np.ndarray:
    """The members' initial states [M, B, C, H, W]: member m starts from perturb(x0, ..., member=m) (their lead 0)."""
    return np.stack([perturb(x0, init_times, std, amplitude, m, seed) for m in range(n_members)])
