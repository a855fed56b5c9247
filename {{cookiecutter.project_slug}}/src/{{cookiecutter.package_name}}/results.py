"""The files of an evaluation in results/ (written by `evaluate`, read by `report` and DVC).

  metrics.json          rmse / acc / bias [channel][forecast]["<lead>h"] at evaluate.key_leads_hours, and
                        skill_vs_persistence / skill_vs_climatology [channel]["<lead>h"] = 1 - RMSE_model / RMSE_ref
  per_lead.csv          lead_hours, channel, forecast, rmse, acc, bias, units (every lead, channel and forecast;
                        `units` are those of rmse and bias, ACC has none)
  plots/rmse_<ch>.csv   lead_hours, model, persistence, climatology (headline channels; for `dvc plots`)
  plots/acc_<ch>.csv    the same for ACC
  maps/<ch>_<lead>h.png truth / forecast / error from the first test initial time
  maps/bias_<ch>.png    time-mean error (model - truth) over all initial times at the map leads
  scores/*.csv          the optional evaluations (regions, spectra, ensemble, stations) at every lead; their
                        metrics.json sections (and significance's) are described in sections.py
  scores/per_init.nc    mse / acc / bias (forecast, init_time, lead_hours, channel): the global scores of every
                        initial time, float32 netCDF3, for significance between experiments (per_init.py, compare.py)
  evaluation.json       what was evaluated (channels and their units, leads, initial times, the options that ran,
                        the model's own provenance) for the report

Metrics files hold numbers only (tables.py: SIGNIFICANT digits, null / empty when undefined) and are
byte-identical across identical reruns. Each file (and each directory) is replaced atomically.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import figures, per_init, sections, units
from .fileio import atomic_path, atomic_write_text
from .tables import FORECASTS, csv_text, rounded
from .tables import fmt as _fmt

SCORES = ("rmse", "acc", "bias")


@dataclass
class Scores:
    """Time-mean scores: rmse/acc/bias[forecast] is an array (lead, channel)."""

    channels: list[str]
    leads_hours: list[int]
    n_inits: int
    rmse: dict[str, np.ndarray]
    acc: dict[str, np.ndarray]
    bias: dict[str, np.ndarray]
    # (channel, lead_hours) -> {"truth": (H, W), "forecast": (H, W)} from the first initial time
    maps: dict[tuple[str, int], dict[str, np.ndarray]] = field(default_factory=dict)
    map_init: str = ""
    # per_step[mse|acc|bias][forecast]: (initial time, lead, channel) spatial means (for the significance)
    per_step: dict | None = None
    init_times: np.ndarray | None = None  # (initial time,) datetime64: the first axis of per_step
    # the optional evaluations that ran (extras.py): section name -> its scorer's result (scorers.py)
    sections: dict = field(default_factory=dict)


def select_leads(wanted: Sequence[int], available: Sequence[int]) -> list[int]:
    """The wanted leads that were evaluated (in order); the longest evaluated lead if none was."""
    chosen = [h for h in wanted if h in available]
    return chosen or [available[-1]]


def metrics_dict(scores: Scores, key_leads: Sequence[int]) -> dict:
    """metrics.json content: numbers only, nested channel -> forecast -> lead."""
    at = {h: scores.leads_hours.index(h) for h in key_leads}
    out: dict = {name: {} for name in SCORES}
    out["skill_vs_persistence"], out["skill_vs_climatology"] = {}, {}
    for ci, ch in enumerate(scores.channels):
        for name in SCORES:
            table = getattr(scores, name)
            out[name][ch] = {f: {f"{h}h": rounded(table[f][i, ci]) for h, i in at.items()} for f in FORECASTS}
        for ref, key in (("persistence", "skill_vs_persistence"), ("climatology", "skill_vs_climatology")):
            out[key][ch] = {
                f"{h}h": rounded(1.0 - scores.rmse["model"][i, ci] / scores.rmse[ref][i, ci])
                if scores.rmse[ref][i, ci] > 0
                else None
                for h, i in at.items()
            }
    out["n_inits"] = scores.n_inits
    return out


def per_lead_csv(scores: Scores) -> str:
    rows = []
    for i, h in enumerate(scores.leads_hours):
        for ci, ch in enumerate(scores.channels):
            var = units.variable(ch)
            unit = var.units if var else ""
            for f in FORECASTS:
                values = [_fmt(getattr(scores, name)[f][i, ci]) for name in SCORES]
                rows.append([h, ch, f, *values, unit])
    return csv_text(rows, ["lead_hours", "channel", "forecast", *SCORES, "units"])


def curve_csv(scores: Scores, name: str, channel: str) -> str:
    """One dvc plot: lead_hours and a column per forecast."""
    ci = scores.channels.index(channel)
    table = getattr(scores, name)
    rows = [[h] + [_fmt(table[f][i, ci]) for f in FORECASTS] for i, h in enumerate(scores.leads_hours)]
    return csv_text(rows, ["lead_hours", *FORECASTS])


def write_maps(out: Path, scores: Scores, latitude, longitude) -> tuple[list[dict], list[dict]]:
    """maps/<channel>_<lead>h.png in the order asked for (evaluate.map_channels) and, when they were accumulated,
    maps/bias_<channel>.png (time-mean error at the map leads); the two indexes for evaluation.json."""
    map_files, bias_files = [], []
    order = list(dict.fromkeys(ch for ch, _ in scores.maps))
    bias = scores.sections.get("bias_maps") or {}
    with atomic_path(out / "maps") as tmp:  # a new directory: no stale map of an earlier run survives
        tmp.mkdir()
        for (ch, lead), pair in sorted(scores.maps.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1])):
            name = f"{ch}_{lead}h.png"
            truth, forecast = pair["truth"], pair["forecast"]
            figures.draw_map(tmp / name, latitude, longitude, truth, forecast, ch, lead, scores.map_init,
                             units.symbol(ch))  # fmt: skip
            map_files.append({"channel": ch, "lead_hours": lead, "file": f"maps/{name}"})
        for ch in dict.fromkeys(ch for ch, _ in bias):
            fields = {lead: field_ for (c, lead), field_ in sorted(bias.items()) if c == ch}
            name = f"bias_{ch}.png"
            figures.draw_bias_maps(tmp / name, latitude, longitude, fields, ch, units.symbol(ch), scores.n_inits)
            bias_files.append({"channel": ch, "leads_hours": list(fields), "file": f"maps/{name}"})
    return map_files, bias_files


def write_results(
    out: Path,
    scores: Scores,
    headline: Sequence[str],
    key_leads: Sequence[int],
    latitude=None,
    longitude=None,
    info: dict | None = None,
) -> dict:
    """Write every output but provenance.json, each atomically; return the metrics dict."""
    out = Path(out)
    key_leads = select_leads(key_leads, scores.leads_hours)
    result = metrics_dict(scores, key_leads)
    result.update(sections.metrics_sections(scores.sections, scores.channels, headline, scores.leads_hours, key_leads))
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=2, sort_keys=True) + "\n")
    atomic_write_text(out / "per_lead.csv", per_lead_csv(scores))
    with atomic_path(out / "plots") as tmp:  # a new directory: no stale curve of another headline channel survives
        tmp.mkdir()
        for ch in headline:
            for name in ("rmse", "acc"):
                (tmp / f"{name}_{ch}.csv").write_text(curve_csv(scores, name, ch))
    score_files = sections.write_score_files(out / "scores", scores.sections, scores.channels, scores.leads_hours)
    if scores.per_step is not None and scores.init_times is not None:
        per_init.write(out / per_init.FILE, per_init.dataset(scores.per_step, scores.init_times, scores.leads_hours,
                                                             scores.channels))  # fmt: skip
    map_files, bias_files = write_maps(out, scores, latitude, longitude)
    summary = {
        "channels": scores.channels,
        "units": {ch: units.symbol(ch) for ch in scores.channels},
        "headline": list(headline),
        "key_leads_hours": list(key_leads),
        "leads_hours": scores.leads_hours,
        "n_inits": scores.n_inits,
        "maps": map_files,
        "bias_maps": bias_files,
        "map_init": scores.map_init,
        "score_files": [f"scores/{name}" for name in score_files],
        **(info or {}),
    }
    atomic_write_text(out / "evaluation.json", json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    return result
