"""The optional sections of an evaluation's results: what extras.py enabled and scorers.py computed, as files.

metrics.json gets a section per option that ran (none when it did not), numbers only (results.rounded):
  regions       [region][rmse|acc|bias][channel][forecast]["<lead>h"]        headline channels, key leads
  spectra       energy_ratio[channel]["<lead>h"]: the model's energy over the truth's at the small scales
                (wavenumbers >= nlon / 4, wavelengths under four grid lengths; < 1 = too smooth); k_min
  significance  [rmse|acc][channel][baseline]["<lead>h"] = {difference, low, high, significant (1 or 0),
                block_length}: model - baseline with its paired block-bootstrap interval; samples, confidence
  ensemble      members; crps, ensemble_mean_rmse, spread, spread_skill_ratio [channel]["<lead>h"];
                rank_histogram[channel]["<lead>h"]["<rank>"]                 headline channels, key leads
  stations      n_stations; rmse, mae, bias, accuracy, count [variable][region][forecast]["<lead>h"]   key leads
scores/ holds every lead, channel and region as CSV (a `units` column where a number has units):
  regions.csv          lead_hours, region, channel, forecast, rmse, acc, bias, units
  spectra.csv          lead_hours, channel, wavenumber, wavelength_km, forecast, truth, units (of the energy)
  ensemble.csv         lead_hours, channel, crps, ensemble_mean_rmse, spread, spread_skill_ratio, units
  rank_histogram.csv   lead_hours, channel, rank, fraction
  stations.csv         lead_hours, variable, region, forecast, rmse, mae, bias, accuracy, count, threshold, units
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from . import spectra, units
from .fileio import atomic_path
from .tables import FORECASTS, csv_text, fmt, rounded

ENSEMBLE_SCORES = ("crps", "ensemble_mean_rmse", "spread", "spread_skill_ratio")
STATION_SCORES = ("rmse", "mae", "bias", "accuracy", "count")


def _by_lead(values: np.ndarray, leads: Sequence[int], key_leads: Sequence[int]) -> dict:
    """{"<lead>h": rounded value} at the key leads, from values indexed by lead."""
    return {f"{h}h": rounded(values[list(leads).index(h)]) for h in key_leads}


def _unit(channel: str) -> str:
    var = units.variable(channel)
    return var.units if var else ""


# ----------------------------------------------------------------------------------------------------------------
# metrics.json sections


def regions_metrics(res: dict, channels: list[str], headline: Sequence[str], leads, key_leads) -> dict:
    out: dict = {}
    for r, region in enumerate(res["names"]):
        out[region] = {
            score: {ch: {f: _by_lead(res[score][f][:, channels.index(ch), r], leads, key_leads) for f in FORECASTS}
                    for ch in headline}
            for score in ("rmse", "acc", "bias")
        }  # fmt: skip
    return out


def small_scale_k(nlon: int) -> int:
    """First wavenumber of the "small scales" of the energy ratio: four grid lengths and shorter."""
    return max(1, nlon // 4)


def spectra_metrics(res: dict, channels: list[str], headline: Sequence[str]) -> dict:
    if not res["leads_hours"]:
        return {}
    k_min = small_scale_k(2 * (len(res["wavenumber"]) - 1))
    ratio = spectra.small_scale_energy_ratio(res["forecast"], res["truth"], k_min)  # (lead, channel)
    return {
        "k_min": k_min,
        "energy_ratio": {ch: {f"{h}h": rounded(ratio[i, channels.index(ch)]) for i, h in enumerate(res["leads_hours"])}
                         for ch in headline},
    }  # fmt: skip


def significance_metrics(res: dict, channels: list[str]) -> dict:
    out: dict = {}
    first = None
    for score, per_ref in res.items():
        for ref, per_lead in per_ref.items():
            for h, iv in per_lead.items():
                first = first or iv
                for ci, ch in enumerate(channels):
                    entry = {"difference": rounded(iv.difference[ci]), "low": rounded(iv.low[ci]),
                             "high": rounded(iv.high[ci]), "significant": int(bool(iv.significant[ci])),
                             "block_length": iv.block_length}  # fmt: skip
                    out.setdefault(score, {}).setdefault(ch, {}).setdefault(ref, {})[f"{h}h"] = entry
    if first is not None:
        out["samples"], out["confidence"] = first.n_samples, first.confidence
    return out


def ensemble_metrics(res: dict, channels: list[str], headline: Sequence[str], leads, key_leads) -> dict:
    out: dict = {"members": res["members"]}
    for name in ENSEMBLE_SCORES:
        out[name] = {ch: _by_lead(res[name][:, channels.index(ch)], leads, key_leads) for ch in headline}
    ranks = res["rank_histogram"]
    out["rank_histogram"] = {
        ch: {f"{h}h": {str(k): rounded(v) for k, v in enumerate(ranks[list(leads).index(h), channels.index(ch)])}
             for h in key_leads}
        for ch in headline
    }  # fmt: skip
    return out


def stations_metrics(res: dict, leads, key_leads) -> dict:
    out: dict = {"n_stations": res["n_stations"]}
    for name in STATION_SCORES:
        out[name] = {
            v: {region: {f: _by_lead(res["scores"][f][name][:, vi, ri], leads, key_leads) for f in FORECASTS}
                for ri, region in enumerate(res["regions"])}
            for vi, v in enumerate(res["variables"])
        }  # fmt: skip
    return out


def metrics_sections(sections: dict, channels: list[str], headline: Sequence[str], leads, key_leads) -> dict:
    """The metrics.json sections of the options that ran."""
    makers: dict[str, Callable[[dict], dict]] = {
        "regions": lambda r: regions_metrics(r, channels, headline, leads, key_leads),
        "spectra": lambda r: spectra_metrics(r, channels, headline),
        "significance": lambda r: significance_metrics(r, channels),
        "ensemble": lambda r: ensemble_metrics(r, channels, headline, leads, key_leads),
        "stations": lambda r: stations_metrics(r, leads, key_leads),
    }
    out = {name: make(sections[name]) for name, make in makers.items() if name in sections}
    return {name: section for name, section in out.items() if section}


# ----------------------------------------------------------------------------------------------------------------
# scores/*.csv


def regions_csv(res: dict, channels: list[str], leads) -> str:
    rows = [[h, region, ch, f, *(fmt(res[s][f][i, ci, r]) for s in ("rmse", "acc", "bias")), _unit(ch)]
            for i, h in enumerate(leads) for r, region in enumerate(res["names"])
            for ci, ch in enumerate(channels) for f in FORECASTS]  # fmt: skip
    return csv_text(rows, ["lead_hours", "region", "channel", "forecast", "rmse", "acc", "bias", "units"])


def spectra_csv(res: dict, channels: list[str]) -> str:
    wavelength_km = res["wavelength_m"] / 1000.0
    rows = [[h, ch, k, fmt(wavelength_km[k]), fmt(res["forecast"][i, ci, k]), fmt(res["truth"][i, ci, k]),
             spectra.energy_units(_unit(ch))]
            for i, h in enumerate(res["leads_hours"]) for ci, ch in enumerate(channels)
            for k in res["wavenumber"]]  # fmt: skip
    header = ["lead_hours", "channel", "wavenumber", "wavelength_km", "forecast", "truth", "units"]
    return csv_text(rows, header)


def ensemble_csv(res: dict, channels: list[str], leads) -> str:
    rows = [[h, ch, *(fmt(res[name][i, ci]) for name in ENSEMBLE_SCORES), _unit(ch)]
            for i, h in enumerate(leads) for ci, ch in enumerate(channels)]  # fmt: skip
    return csv_text(rows, ["lead_hours", "channel", *ENSEMBLE_SCORES, "units"])


def rank_histogram_csv(res: dict, channels: list[str], leads) -> str:
    ranks = res["rank_histogram"]
    rows = [[h, ch, k, fmt(ranks[i, ci, k])] for i, h in enumerate(leads) for ci, ch in enumerate(channels)
            for k in range(ranks.shape[-1])]  # fmt: skip
    return csv_text(rows, ["lead_hours", "channel", "rank", "fraction"])


def stations_csv(res: dict, leads) -> str:
    rows = []
    for i, h in enumerate(leads):
        for vi, v in enumerate(res["variables"]):
            threshold = res["thresholds"][vi]
            for ri, region in enumerate(res["regions"]):
                for f in FORECASTS:
                    got = res["scores"][f]
                    values = [fmt(got[name][i, vi, ri]) for name in STATION_SCORES[:-1]]
                    rows.append([h, v, region, f, *values, int(got["count"][i, vi, ri]),
                                 "" if threshold is None else threshold, _unit(v)])  # fmt: skip
    header = ["lead_hours", "variable", "region", "forecast", *STATION_SCORES, "threshold", "units"]
    return csv_text(rows, header)


def write_score_files(directory: Path, sections: dict, channels: list[str], leads) -> list[str]:
    """Replace `directory` with the CSV files of the sections that ran (empty when none did); their names."""
    files = {
        "regions": lambda r: {"regions.csv": regions_csv(r, channels, leads)},
        "spectra": lambda r: {"spectra.csv": spectra_csv(r, channels)} if r["leads_hours"] else {},
        "ensemble": lambda r: {"ensemble.csv": ensemble_csv(r, channels, leads),
                               "rank_histogram.csv": rank_histogram_csv(r, channels, leads)},  # fmt: skip
        "stations": lambda r: {"stations.csv": stations_csv(r, leads)},
    }
    written = []
    with atomic_path(directory) as tmp:  # a new directory: no file of an option turned off survives
        tmp.mkdir()
        for name, make in files.items():
            if name in sections:
                for filename, text in make(sections[name]).items():
                    (tmp / filename).write_text(text)
                    written.append(filename)
    return written
