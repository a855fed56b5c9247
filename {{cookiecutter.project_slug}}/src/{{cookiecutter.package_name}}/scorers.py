"""Streaming scores beyond the global deterministic ones, fed by `evaluate.score` one scored step at a time.

A step is one batch of initial times at one lead (`Step`). Every scorer keeps per-step spatial means indexed by
(initial time, lead, ...) or running sums, never fields, and turns them into time means once at the end, with the
science modules' own functions:

    RegionScores    RMSE / bias / ACC in each region, for every forecast       regions.regional_scores_per_step
    SpectraScores   time-mean zonal energy spectra of the model and the truth  spectra.SpectraAccumulator
    EnsembleScores  fair CRPS, ensemble-mean RMSE, spread, spread-skill ratio, rank histogram (ensemble.py)
    StationScorer   RMSE / MAE / bias / accuracy at stations, for every forecast  station_scores.StationScores
    BiasMaps        time-mean error maps (model - truth) of chosen channels at chosen leads
    baseline_significance  paired block-bootstrap intervals of model - baseline (significance.paired_bootstrap)

Memory: every scorer keeps running means over initial times (LeadMeans, metrics.RunningMean): leads x channels
(x regions, or x ranks) floats, a field per (channel, lead) for the bias maps; nothing grows with the number of
initial times. (evaluate keeps the global per-step scores, n_inits x leads x channels, for the significance.) An
ensemble step holds members x batch states, which evaluate makes anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from . import ensemble, metrics, regions, significance, spectra
from .station_scores import StationScores, bilinear

FORECASTS = ("model", "persistence", "climatology")


@dataclass
class Step:
    """What every scorer sees of one scored step: a batch of initial times at one lead, physical units."""

    rows: slice  # positions of the batch's initial times among all initial times
    lead_index: int  # 0-based model step; lead_hours = (lead_index + 1) x the model's step
    lead_hours: int
    valid: np.ndarray  # (B,) valid times
    truth: np.ndarray  # (B, C, H, W)
    climatology: np.ndarray  # (B, C, H, W)
    forecasts: dict[str, np.ndarray]  # FORECASTS -> (B, C, H, W)
    members: np.ndarray | None = None  # (M, B, C, H, W) ensemble members, when evaluating an ensemble


class LeadMeans:
    """Means over initial times of per-step arrays, one metrics.RunningMean per lead: rows are added one by one in
    float64, so batching does not change the result, and memory is one array per lead whatever n_inits."""

    def __init__(self, n_steps: int):
        self.means = [metrics.RunningMean() for _ in range(n_steps)]

    def add(self, lead_index: int, batch: np.ndarray) -> None:
        self.means[lead_index].add(batch)

    @property
    def mean(self) -> np.ndarray:
        """(lead, ...) time means."""
        return np.stack([m.mean for m in self.means])


class RegionScores:
    """Per-region scores of every forecast: result()[score][forecast] is (lead, channel, region)."""

    name = "regions"

    def __init__(self, weights: regions.RegionWeights, n_steps: int):
        self.weights = weights
        self.means = {s: {f: LeadMeans(n_steps) for f in FORECASTS} for s in ("mse", "bias", "acc")}

    def add(self, step: Step) -> None:
        for name, forecast in step.forecasts.items():
            got = regions.regional_scores_per_step(forecast, step.truth, self.weights, step.climatology)
            for score, means in self.means.items():
                means[name].add(step.lead_index, got[score])

    def result(self) -> dict:
        return {
            "names": list(self.weights.names),
            "rmse": {f: np.sqrt(self.means["mse"][f].mean) for f in FORECASTS},  # WB2: sqrt of the time-mean MSE
            "bias": {f: self.means["bias"][f].mean for f in FORECASTS},
            "acc": {f: self.means["acc"][f].mean for f in FORECASTS},
        }


class SpectraScores:
    """Band-mean zonal energy spectra of the model forecast and of the truth at chosen leads."""

    name = "spectra"

    def __init__(self, latitude, longitude, leads_hours: Sequence[int], band: Sequence[float]):
        self.accumulator = spectra.SpectraAccumulator(latitude, longitude, leads_hours, band)

    def add(self, step: Step) -> None:
        self.accumulator.add(step.lead_hours, step.forecasts["model"], step.truth)

    def result(self) -> dict:
        return self.accumulator.result()


class EnsembleScores:
    """Probabilistic scores of the members (global, area-weighted); result() arrays are (lead, channel[, rank])."""

    name = "ensemble"

    def __init__(self, latitude, n_steps: int, n_members: int, seed: int):
        self.weights = metrics.cell_area_weights(latitude)
        self.n_members, self.seed = n_members, seed
        self.means = {k: LeadMeans(n_steps) for k in ("crps", "mse", "variance", "ranks")}

    def add(self, step: Step) -> None:
        members, truth, at = step.members, step.truth, step.lead_index
        self.means["crps"].add(at, ensemble.crps_per_step(members, truth, self.weights, fair=True))
        self.means["mse"].add(at, ensemble.ensemble_mean_mse_per_step(members, truth, self.weights))
        self.means["variance"].add(at, ensemble.variance_per_step(members, self.weights))
        self.means["ranks"].add(at, ensemble.rank_histogram_per_step(members, truth, self.weights, self.seed))

    def result(self) -> dict:
        # the time means of the per-step values, taken as ensemble.py's functions take them (axis 0 = time): on
        # one "time" holding the means, spread = sqrt(mean variance) and RMSE = sqrt(mean MSE) are unchanged
        variance, mse = self.means["variance"].mean[None], self.means["mse"].mean[None]
        return {
            "members": self.n_members,
            "crps": self.means["crps"].mean,
            "ensemble_mean_rmse": metrics.rmse(mse),
            "spread": ensemble.spread(variance),
            "spread_skill_ratio": ensemble.spread_skill_ratio(variance, mse, self.n_members),
            "rank_histogram": self.means["ranks"].mean,
        }


class StationScorer:
    """Every forecast interpolated bilinearly to the stations and scored by lead, variable and region."""

    name = "stations"

    def __init__(self, stations, variables: Sequence[str], channels: Sequence[str], leads_hours: Sequence[int],
                 region_names: Sequence[str], latitude, longitude):  # fmt: skip
        self.stations = stations
        self.variables = list(variables)
        self.index = [list(channels).index(v) for v in self.variables]
        self.interp = bilinear(latitude, longitude, stations.latitude, stations.longitude)
        self.scores = {f: StationScores(stations, self.variables, leads_hours, region_names) for f in FORECASTS}

    def add(self, step: Step) -> None:
        for name, forecast in step.forecasts.items():
            for variable, ci in zip(self.variables, self.index, strict=True):
                self.scores[name].add(step.lead_hours, variable, step.valid, self.interp(forecast[:, ci]))

    def result(self) -> dict:
        first = self.scores["model"]
        return {
            "variables": self.variables,
            "regions": first.region_names,
            "thresholds": first.thresholds,
            "n_stations": len(self.stations.ids),
            "scores": {f: s.result() for f, s in self.scores.items()},  # [score][lead, variable, region]
        }


class BiasMaps:
    """Time-mean error (model - truth) maps of (channel, lead) pairs; result() = {(channel, lead): (H, W)}."""

    name = "bias_maps"

    def __init__(self, channels: Sequence[str], wanted: Sequence[str], leads_hours: Sequence[int]):
        self.index = [(list(channels).index(ch), ch) for ch in wanted]
        self.means = {(ch, h): metrics.RunningMean() for _, ch in self.index for h in leads_hours}

    def add(self, step: Step) -> None:
        for ci, ch in self.index:
            mean = self.means.get((ch, step.lead_hours))
            if mean is not None:
                mean.add(np.asarray(step.forecasts["model"][:, ci], np.float64) - step.truth[:, ci])

    def result(self) -> dict:
        return {key: mean.mean for key, mean in self.means.items() if mean.count}


# ----------------------------------------------------------------------------------------------------------------
# Significance of model - baseline, from the per-step global scores evaluate keeps


# score -> (statistic of paired_bootstrap, the per-step array it takes)
BOOTSTRAPPED = {"rmse": ("rmse", "mse"), "acc": ("mean", "acc")}


def baseline_significance(per_step: dict, leads_hours: Sequence[int], key_leads: Sequence[int], cfg,
                          init_every_hours: int, seed: int) -> dict:  # fmt: skip
    """Intervals of model - baseline for RMSE and ACC at the key leads: {score: {baseline: {lead: PairedInterval}}}
    (arrays over channels). `per_step[s][forecast]` is (init, lead, channel); a baseline whose score is undefined
    (the climatology's ACC) is left out. Block length: cfg.block_length, or automatic per lead (0)."""
    out: dict = {}
    for score, (statistic, key) in BOOTSTRAPPED.items():
        for ref in FORECASTS[1:]:
            if np.isnan(per_step[key][ref]).all():
                continue
            for h in key_leads:
                i = list(leads_hours).index(h)
                out.setdefault(score, {}).setdefault(ref, {})[h] = significance.paired_bootstrap(
                    per_step[key]["model"][:, i], per_step[key][ref][:, i], statistic=statistic,
                    n_samples=cfg.samples, block_length=cfg.block_length or None, confidence=cfg.confidence,
                    seed=seed, lead_hours=h, init_every_hours=init_every_hours,
                )  # fmt: skip
    return out
