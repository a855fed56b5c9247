"""Score autoregressive rollouts on the test split against persistence and climatology (WB2 definitions).

    python -m <package>.evaluate --params params.yaml --model models/model.pt --shards data/shards \
        --stats data/stats.json --out results/

Forecasts start every evaluate.init_every_hours in the test split (all their valid times inside it) and run in
steps of train.lead_hours up to evaluate.max_lead_hours. Three forecasts are scored at every lead, in physical units:
  model        the rollout of models/model.pt
  persistence  the initial state, unchanged
  climatology  the day-of-year x hour climatology of the train split (climatology.py)
Scores (metrics.py): RMSE, bias, ACC, per channel (a level is a channel: geopotential_500) and lead.

Outputs in --out (metrics files hold numbers only and are byte-identical across identical reruns; a score that is
undefined, such as the ACC of the climatology forecast, is null in JSON and empty in CSV, never 0):
  metrics.json          rmse / acc / bias [channel][forecast]["<lead>h"] at evaluate.key_leads_hours, and
                        skill_vs_persistence / skill_vs_climatology [channel]["<lead>h"] = 1 - RMSE_model / RMSE_ref
  per_lead.csv          lead_hours, channel, forecast, rmse, acc, bias, units (every lead, channel and forecast;
                        `units` are those of rmse and bias, ACC has none)
  plots/rmse_<ch>.csv   lead_hours, model, persistence, climatology (headline channels; for `dvc plots`)
  plots/acc_<ch>.csv    the same for ACC
  maps/<ch>_<lead>h.png truth / forecast / error from the first test initial time
  evaluation.json       what was evaluated (channels and their units, leads, initial times, the model's own
                        provenance) for the report
  provenance.json       commit, dirty flag, params hash, input hashes, versions, hardware of this run
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import cliargs, figures, metrics, units
from .errors import EvaluationError
from .fileio import atomic_path, atomic_write_text
from .inference import HOUR, ShardReader

FORECASTS = ("model", "persistence", "climatology")
SCORES = ("rmse", "acc", "bias")
SIGNIFICANT = 6  # digits kept in metrics files: enough for any comparison, and stable across reruns


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


def test_inits(
    reader: ShardReader, test_range: Sequence[str], init_every_hours: int, lead_hours: int, n_steps: int
) -> np.ndarray:
    """Initial times every `init_every_hours` from the start of the test split whose forecasts end inside it."""
    max_lead_hours = lead_hours * n_steps
    times = reader.times_in(*test_range)
    if len(times) == 0:
        raise EvaluationError(
            f"{reader.dir}: no time steps in the test split {list(test_range)}. "
            "Fix: check data.splits.test in params.yaml against the shards."
        )
    last_valid = min(np.datetime64(test_range[1], "ns"), times[-1])
    candidates = np.arange(
        times[0], last_valid - max_lead_hours * HOUR + np.timedelta64(1, "ns"), init_every_hours * HOUR
    ).astype("datetime64[ns]")
    steps = np.arange(0, n_steps + 1, dtype=np.int64) * lead_hours * HOUR  # the states a forecast reads
    inits = np.array([t for t in candidates if reader.has(t + steps).all()], dtype="datetime64[ns]")
    if len(inits) == 0:
        raise EvaluationError(
            f"the test split {list(test_range)} is too short for forecasts of evaluate.max_lead_hours = "
            f"{max_lead_hours} h. Fix: lengthen data.splits.test or lower evaluate.max_lead_hours."
        )
    return inits


def score(
    forecaster: Callable,
    reader: ShardReader,
    inits: np.ndarray,
    n_steps: int,
    lead_hours: int,
    clim,
    batch_size: int = 8,
    map_channels: Sequence[str] = (),
    map_leads_hours: Sequence[int] = (),
) -> Scores:
    """Roll out `forecaster(x0, init_times, n_steps)` (an iterator of (B, C, H, W) states) from every initial time
    and score it, persistence and `clim` (a Climatology) against the shards' states.

    Per-step spatial means go into arrays indexed by (initial time, lead, channel); the time means are taken once
    at the end, so the result does not depend on batch_size's grouping of the sums.
    """
    weights = metrics.cell_area_weights(reader.latitude)
    n, c = len(inits), len(reader.channels)
    per = {s: {f: np.zeros((n, n_steps, c)) for f in FORECASTS} for s in ("mse", "acc", "bias")}
    leads = [lead_hours * (s + 1) for s in range(n_steps)]
    map_idx = [(reader.channels.index(ch), ch) for ch in map_channels]
    maps: dict[tuple[str, int], dict[str, np.ndarray]] = {}
    s = -1
    for b0 in range(0, n, batch_size):
        batch = inits[b0 : b0 + batch_size]
        rows = slice(b0, b0 + len(batch))
        x0 = reader.read(batch)
        for s, state in enumerate(forecaster(x0, batch, n_steps)):
            valid = batch + leads[s] * HOUR
            truth = reader.read(valid)
            ref = clim.at(valid)
            for name, fc in (("model", state), ("persistence", x0), ("climatology", ref)):
                per["mse"][name][rows, s] = metrics.mse_per_step(fc, truth, weights)
                per["bias"][name][rows, s] = metrics.bias_per_step(fc, truth, weights)
                per["acc"][name][rows, s] = metrics.acc_per_step(fc, truth, ref, weights)
            if b0 == 0 and leads[s] in map_leads_hours:
                for ci, ch in map_idx:
                    maps[(ch, leads[s])] = {"truth": truth[0, ci].copy(), "forecast": np.array(state[0, ci])}
        if s + 1 != n_steps:
            raise EvaluationError(f"the forecaster returned {s + 1} steps, expected {n_steps}")
    return Scores(
        channels=list(reader.channels),
        leads_hours=leads,
        n_inits=n,
        rmse={f: metrics.rmse(per["mse"][f]) for f in FORECASTS},
        acc={f: metrics.time_mean(per["acc"][f]) for f in FORECASTS},
        bias={f: metrics.time_mean(per["bias"][f]) for f in FORECASTS},
        maps=maps,
        map_init=str(inits[0].astype("datetime64[m]")),
    )


# ----------------------------------------------------------------------------------------------------------------
# Writing the results


def rounded(value: float) -> float | None:
    """Round to SIGNIFICANT digits (so reruns and platforms agree); non-finite -> None (JSON null)."""
    value = float(value)
    if not math.isfinite(value):
        return None
    return float(f"{value:.{SIGNIFICANT}g}") + 0.0  # + 0.0 turns -0.0 into 0.0


def _fmt(value: float) -> str:
    r = rounded(value)
    return "" if r is None else repr(r)


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


def _csv(rows: list[list], header: list[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return buf.getvalue()


def per_lead_csv(scores: Scores) -> str:
    rows = []
    for i, h in enumerate(scores.leads_hours):
        for ci, ch in enumerate(scores.channels):
            var = units.variable(ch)
            unit = var.units if var else ""
            for f in FORECASTS:
                values = [_fmt(getattr(scores, name)[f][i, ci]) for name in SCORES]
                rows.append([h, ch, f, *values, unit])
    return _csv(rows, ["lead_hours", "channel", "forecast", *SCORES, "units"])


def curve_csv(scores: Scores, name: str, channel: str) -> str:
    """One dvc plot: lead_hours and a column per forecast."""
    ci = scores.channels.index(channel)
    table = getattr(scores, name)
    rows = [[h] + [_fmt(table[f][i, ci]) for f in FORECASTS] for i, h in enumerate(scores.leads_hours)]
    return _csv(rows, ["lead_hours", *FORECASTS])


def write_maps(out: Path, scores: Scores, latitude, longitude) -> list[dict]:
    """maps/<channel>_<lead>h.png in the order asked for (evaluate.map_channels); the index for evaluation.json."""
    map_files = []
    order = list(dict.fromkeys(ch for ch, _ in scores.maps))
    with atomic_path(out / "maps") as tmp:  # a new directory: no stale map of an earlier run survives
        tmp.mkdir()
        for (ch, lead), pair in sorted(scores.maps.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1])):
            name = f"{ch}_{lead}h.png"
            truth, forecast = pair["truth"], pair["forecast"]
            figures.draw_map(tmp / name, latitude, longitude, truth, forecast, ch, lead, scores.map_init,
                             units.symbol(ch))  # fmt: skip
            map_files.append({"channel": ch, "lead_hours": lead, "file": f"maps/{name}"})
    return map_files


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
    atomic_write_text(out / "metrics.json", json.dumps(result, indent=2, sort_keys=True) + "\n")
    atomic_write_text(out / "per_lead.csv", per_lead_csv(scores))
    with atomic_path(out / "plots") as tmp:  # a new directory: no stale curve of another headline channel survives
        tmp.mkdir()
        for ch in headline:
            for name in ("rmse", "acc"):
                (tmp / f"{name}_{ch}.csv").write_text(curve_csv(scores, name, ch))
    summary = {
        "channels": scores.channels,
        "units": {ch: units.symbol(ch) for ch in scores.channels},
        "headline": list(headline),
        "key_leads_hours": list(key_leads),
        "leads_hours": scores.leads_hours,
        "n_inits": scores.n_inits,
        "maps": write_maps(out, scores, latitude, longitude),
        "map_init": scores.map_init,
        **(info or {}),
    }
    atomic_write_text(out / "evaluation.json", json.dumps(summary, indent=2, sort_keys=True, default=str) + "\n")
    return result


# ----------------------------------------------------------------------------------------------------------------
# CLI


def _parser() -> argparse.ArgumentParser:
    p = cliargs.parser("evaluate", __doc__, "params", "model", "shards", "stats", "device")
    p.add_argument("--out", default="results", help="output directory (default: results/)")
    return p


def check_channels(names: Sequence[str], channels: Sequence[str], key: str, params_path) -> None:
    missing = [n for n in names if n not in channels]
    if missing:
        raise EvaluationError(
            f"{params_path}: {key} names {missing}, not among the data's channels {list(channels)}. "
            f"Fix: change '{key}' in {params_path}."
        )


@dataclass
class Plan:
    """Everything an evaluation run needs, checked before the first rollout."""

    model: object
    meta: dict
    normalizer: object
    reader: ShardReader
    lead_hours: int
    n_steps: int
    headline: list[str]
    map_channels: list[str]
    inits: np.ndarray


def plan(args: argparse.Namespace, params) -> Plan:
    """Load the model and the shards and check params against them (errors name the key and the fix)."""
    from .inference import check_grid, load_forecaster

    cfg = params.evaluate
    model, meta, normalizer = load_forecaster(args.model, args.stats, args.device)
    reader = ShardReader(args.shards)
    check_grid(meta, reader, args.model)
    lead_hours = int(meta.get("lead_hours", params.train.lead_hours))
    n_steps = cfg.max_lead_hours // lead_hours
    if n_steps < 1:
        raise EvaluationError(
            f"{args.params}: evaluate.max_lead_hours ({cfg.max_lead_hours}) is shorter than one model step "
            f"({lead_hours} h). Fix: raise evaluate.max_lead_hours."
        )
    headline = list(cfg.headline)
    map_channels = list(cfg.map_channels) or headline
    check_channels(headline, reader.channels, "evaluate.headline", args.params)
    check_channels(map_channels, reader.channels, "evaluate.map_channels", args.params)
    inits = test_inits(reader, params.data.splits.test, cfg.init_every_hours, lead_hours, n_steps)
    return Plan(model, meta, normalizer, reader, lead_hours, n_steps, headline, map_channels, inits)


def run(p: Plan, params, device: str) -> Scores:
    """The climatology of the train split, then the scores of every rollout."""
    from . import climatology
    from .inference import deterministic, model_forecaster

    cfg = params.evaluate
    valid = (p.inits[:, None] + (np.arange(1, p.n_steps + 1) * p.lead_hours * HOUR)[None]).ravel()
    clim = climatology.compute(p.reader, params.data.splits.train, cfg.climatology_window_days, valid)
    print(
        f"evaluate: {len(p.inits)} initial times x {p.n_steps} steps of {p.lead_hours} h, "
        f"{len(p.reader.channels)} channels",
        file=sys.stderr,
    )
    forecaster = model_forecaster(p.model, p.normalizer, p.lead_hours, p.reader.latitude, p.reader.longitude)
    leads = [p.lead_hours * (s + 1) for s in range(p.n_steps)]
    map_leads = select_leads(cfg.map_leads_hours, leads)
    with deterministic(device):
        return score(forecaster, p.reader, p.inits, p.n_steps, p.lead_hours, clim, cfg.batch_size, p.map_channels,
                     map_leads)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    from . import provenance
    from .config import load_params

    args = _parser().parse_args(argv)
    params = load_params(args.params)
    cfg = params.evaluate
    provenance.ensure_clean_or_allowed(cfg.allow_dirty, "evaluate")
    p = plan(args, params)
    scores = run(p, params, args.device)
    info = {
        "init_times": [str(p.inits[0].astype("datetime64[m]")), str(p.inits[-1].astype("datetime64[m]"))],
        "init_every_hours": cfg.init_every_hours,
        "lead_hours": p.lead_hours,
        "test_split": list(params.data.splits.test),
        "train_split": list(params.data.splits.train),
        "climatology_window_days": cfg.climatology_window_days,
        "model": p.meta.get("model"),
        "model_step": p.meta.get("step"),
        "model_provenance": p.meta.get("provenance"),
    }
    out = Path(args.out)
    lat, lon = p.reader.latitude, p.reader.longitude
    result = write_results(out, scores, p.headline, cfg.key_leads_hours, lat, lon, info)
    command = None if argv is None else [Path(sys.executable).name, "-m", __name__, *argv]
    provenance.write_provenance(
        out / "provenance.json",
        params=params,
        command=command,
        inputs={args.model: None, args.shards: None, args.stats: None},
    )
    for ch in p.headline:
        row = ", ".join(f"{h}: {v}" for h, v in result["rmse"][ch]["model"].items())
        print(f"evaluate: RMSE {ch} (model, {units.symbol(ch)}) {row}", file=sys.stderr)
    print(f"evaluate: wrote {out}/metrics.json, per_lead.csv, plots/, maps/, provenance.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
