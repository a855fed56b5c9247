"""The optional evaluations (params evaluate.*): regions, spectra, ensemble, stations, bias maps, significance.

`setup` checks every option against the data before the first rollout (errors name the key, the value and the fix)
and returns an `Extras`: what will be scored, and `scorers()` that make the streaming scorers (scorers.py).

    regions        evaluate.regions, plus their _land / _sea variants when a land-sea mask is available: the file
                   evaluate.land_sea_mask, else a static land_sea_mask of the shards (data.static); a region that
                   holds no point of a coarse grid is skipped and listed (evaluation.json, the report)
    spectra        evaluate.spectra.leads_hours that were evaluated (the longest lead if none was), band checked
    ensemble       evaluate.ensemble.members > 1: members from checkpoints (evaluate.ensemble.checkpoints, or the
                   evaluated model) and initial-condition noise (evaluate.ensemble.perturbation)
    stations       evaluate.stations.file: the observations and the variables scored at them
    significance   evaluate.significance.samples > 0 and at least 2 initial times
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import regions, scorers, spectra
from .errors import EvaluationError

HOUR = np.timedelta64(1, "h")
ROUND_OFF = 1e-5  # of a land fraction read back from the normalized float32 static store


@dataclass
class Extras:
    region_names: list[str] = field(default_factory=list)
    regions_skipped: list[str] = field(default_factory=list)
    land_sea_mask: np.ndarray | None = None
    land_sea_mask_source: str | None = None
    spectra_leads: list[int] = field(default_factory=list)
    members: Callable | None = None  # fn(x0, init_times, n_steps) -> iterator of (M, B, C, H, W)
    n_members: int = 1
    stations: object | None = None  # stations.Stations
    station_variables: list[str] = field(default_factory=list)
    bias_map_leads: list[int] = field(default_factory=list)
    significance: bool = False

    def scorers(self, reader, n_steps: int, leads: Sequence[int], map_channels: Sequence[str], cfg, seed: int) -> list:
        """The scorers of the enabled options, in the order their sections appear."""
        lat, lon, channels = reader.latitude, reader.longitude, reader.channels
        out: list = []
        if self.region_names:
            weights = regions.region_weights(self.region_names, lat, lon, self.land_sea_mask)
            out.append(scorers.RegionScores(weights, n_steps))
        if self.spectra_leads:
            out.append(scorers.SpectraScores(lat, lon, self.spectra_leads, cfg.spectra.band))
        if self.members is not None:
            out.append(scorers.EnsembleScores(lat, n_steps, self.n_members, seed))
        if self.stations is not None:
            boxes = [n for n in self.region_names if regions.region(n).surface == "all"] or ["global"]
            out.append(scorers.StationScorer(self.stations, self.station_variables, channels, leads, boxes, lat, lon))
        if self.bias_map_leads:
            out.append(scorers.BiasMaps(channels, map_channels, self.bias_map_leads))
        return out

    def describe(self) -> dict:
        """What evaluation.json records about the options."""
        return {
            "regions": self.region_names,
            "regions_skipped": self.regions_skipped,
            "land_sea_mask": self.land_sea_mask_source,
            "spectra_leads_hours": self.spectra_leads,
            "ensemble_members": self.n_members if self.members is not None else 1,
            "station_variables": self.station_variables,
            "significance": self.significance,
        }


def setup(params, params_path, reader, inits: np.ndarray, leads: Sequence[int], map_leads: Sequence[int],
          ensemble_forecasters: Sequence[Callable], std: np.ndarray) -> Extras:  # fmt: skip
    """Check the options against the data and say what will be scored (nothing is computed yet)."""
    cfg = params.evaluate
    lat, lon = reader.latitude, reader.longitude
    extras = Extras(bias_map_leads=list(map_leads), significance=cfg.significance.samples > 0 and len(inits) >= 2)
    _regions(extras, cfg, params_path, reader)
    extras.spectra_leads = _spectra_leads(cfg, params_path, leads, lat, lon)
    if cfg.ensemble.members > 1:
        from .ensemble import ensemble_forecaster

        extras.n_members = cfg.ensemble.members
        extras.members = ensemble_forecaster(ensemble_forecasters, cfg.ensemble.members, std,
                                             cfg.ensemble.perturbation, params.seed)  # fmt: skip
    if cfg.stations.file:
        extras.stations, extras.station_variables = _stations(cfg, params_path, reader.channels, inits, leads)
    return extras


def land_sea_mask(cfg, shards: Path, lat, lon) -> tuple[np.ndarray | None, str | None]:
    """(land fraction (H, W), where it came from): evaluate.land_sea_mask, else the shards' static land_sea_mask
    (data.static), else (None, None)."""
    if cfg.land_sea_mask:
        return regions.load_land_sea_mask(cfg.land_sea_mask, lat, lon), str(cfg.land_sea_mask)
    from .data.statics import STATIC_STORE, physical_static, read_static

    static = Path(shards) / STATIC_STORE.name
    if not (static.exists() and "land_sea_mask" in read_static(static, lat, lon)[0]):
        return None, None
    mask = physical_static(static, "land_sea_mask")
    # The store keeps (x - mean) / std in float32: an all-land cell comes back as 1 - 1e-7, which would give it a
    # sea weight. Within ROUND_OFF of 0 or 1 a fraction is 0 or 1 (a real coast is never that close to either).
    mask = np.where(np.abs(mask) <= ROUND_OFF, 0.0, np.where(np.abs(mask - 1.0) <= ROUND_OFF, 1.0, mask))
    return regions.check_land_sea_mask(mask, lat, lon), f"{static} (land_sea_mask)"


def _regions(extras: Extras, cfg, params_path, reader) -> None:
    lat, lon = reader.latitude, reader.longitude
    names = list(cfg.regions)
    extras.land_sea_mask, extras.land_sea_mask_source = land_sea_mask(cfg, reader.dir, lat, lon)
    if extras.land_sea_mask is not None:
        names = regions.with_surfaces(names)
    extras.regions_skipped = regions.empty_regions(names, lat, lon, extras.land_sea_mask)
    extras.region_names = [n for n in names if n not in extras.regions_skipped]
    if extras.regions_skipped:
        print(f"evaluate: regions without a point of the {len(lat)} x {len(lon)} grid, not scored: "
              f"{', '.join(extras.regions_skipped)} ({params_path}: evaluate.regions)", file=sys.stderr)  # fmt: skip


def _spectra_leads(cfg, params_path, leads: Sequence[int], lat, lon) -> list[int]:
    wanted = list(cfg.spectra.leads_hours)
    if not wanted:
        return []
    try:
        spectra.check_longitude(lon)
        spectra.band_rows(lat, cfg.spectra.band)
    except ValueError as exc:
        raise EvaluationError(
            f"{params_path}: evaluate.spectra cannot be computed on this grid: {exc}. Fix: widen evaluate.spectra."
            f"band ({list(cfg.spectra.band)}), or set evaluate.spectra.leads_hours: [] to skip the spectra."
        ) from None
    return [h for h in wanted if h in leads] or [leads[-1]]


def _stations(cfg, params_path, channels: Sequence[str], inits: np.ndarray, leads: Sequence[int]):
    from .stations import read_stations

    obs = read_stations(cfg.stations.file)
    usable = [v for v in obs.values if v in channels]
    variables = list(cfg.stations.variables) or usable
    bad = [v for v in variables if v not in usable]
    if bad or not variables:
        raise EvaluationError(
            f"{params_path}: evaluate.stations.variables {bad or '[]'}: the station file {cfg.stations.file} has "
            f"{sorted(obs.values)} and the forecasts {list(channels)}; a variable must be in both. "
            "Fix: list variables in both in evaluate.stations.variables."
        )
    valid = (np.asarray(inits)[:, None] + np.asarray(leads)[None] * HOUR).ravel()
    seen = sum(np.isfinite(obs.at(v, np.unique(valid))).any() for v in variables)
    if not seen:
        raise EvaluationError(
            f"{cfg.stations.file}: no observation of {variables} at any valid time of the test forecasts "
            f"({valid.min()} .. {valid.max()}). Fix: use observations of the test split (data.splits.test)."
        )
    return obs, variables


def load_member_forecasters(cfg, model_path, stats_path, device, main_meta, reader, main_forecaster) -> list[Callable]:
    """One forecaster per evaluate.ensemble.checkpoints entry (the evaluated model if the list is empty)."""
    from .inference import check_grid, load_forecaster, model_forecaster

    if not cfg.ensemble.checkpoints:
        return [main_forecaster]
    out = []
    for path in cfg.ensemble.checkpoints:
        if not Path(path).exists():
            raise EvaluationError(f"evaluate.ensemble.checkpoints: {path} not found. Fix: list existing model files.")
        model, meta, normalizer = load_forecaster(path, stats_path, device, shards=reader.dir)
        check_grid(meta, reader, path)
        if meta.get("lead_hours") != main_meta.get("lead_hours"):
            raise EvaluationError(
                f"evaluate.ensemble.checkpoints: {path} steps {meta.get('lead_hours')} h, {model_path} "
                f"{main_meta.get('lead_hours')} h. Fix: list checkpoints of models with the same lead time."
            )
        out.append(model_forecaster(model, normalizer, int(meta["lead_hours"]), reader.latitude, reader.longitude))
    return out
