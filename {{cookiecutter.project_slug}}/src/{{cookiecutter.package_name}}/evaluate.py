"""Score autoregressive rollouts on the test split against persistence and climatology (WB2 definitions).

    python -m <package>.evaluate --params params.yaml --model models/model.pt --shards data/shards \
        --stats data/stats.json --climatology data/climatology.zarr --out results/

Forecasts start every evaluate.init_every_hours in the test split (all their valid times inside it) and run in
steps of train.lead_hours up to evaluate.max_lead_hours. Three forecasts are scored at every lead, in physical units:
  model        the rollout of models/model.pt
  persistence  the initial state, unchanged
  climatology  data/climatology.zarr, the climatology stage's output (climatology.py; refused if made with other
               params); every valid time's (day of year, hour) is checked in it before the first rollout
Scores (metrics.py): RMSE, bias, ACC, per channel (a level is a channel: geopotential_500) and lead; the
headline of metrics.json. Optional evaluations (extras.py decides which run, scorers.py computes them as the
rollouts stream past, sections.py writes them): scores per WB2 region (and land / sea with evaluate.land_sea_mask),
zonal energy spectra, paired block-bootstrap significance of model - baseline, an ensemble (CRPS, spread-skill,
rank histograms; evaluate.ensemble.members > 1), scores at weather stations (evaluate.stations.file), and maps of
the mean error. Memory is bounded by a batch of initial times (evaluate.batch_size) whatever their number.

Outputs in --out: the results files (results.py: metrics.json, per_lead.csv, plots/, maps/, scores/ with
scores/per_init.nc, the global scores of every initial time for `<package> compare`, evaluation.json), and
  wb2/                  forecast.zarr, truth.zarr, climatology.zarr in WB2 layout with CF attributes, zarr
                        format 2 (export.py): exactly the states scored; empty when evaluate.export_forecast is false
  provenance.json       commit, dirty flag, params hash, input hashes (incl. station / mask / member files),
                        versions, hardware of this run
"""

from __future__ import annotations

import argparse
import itertools
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from . import cliargs, metrics, units
from .errors import EvaluationError
from .inference import HOUR, ShardReader
from .results import FORECASTS, Scores, select_leads, write_results
from .scorers import Step

if TYPE_CHECKING:
    from .climatology_store import Climatology
    from .extras import Extras


def test_inits(
    reader: ShardReader, test_range: Sequence[str], init_every_hours: int, lead_hours: int, n_steps: int
) -> np.ndarray:
    """Initial times every `init_every_hours` in the test split whose forecasts end inside it.

    When init_every_hours divides a day, they sit at fixed hours of the day counted from 00Z (12: 00Z and 12Z, as
    WB2), whatever hour the split starts at; initial times the data lack (12Z in daily data) are skipped.
    """
    max_lead_hours = lead_hours * n_steps
    times = reader.times_in(*test_range)
    if len(times) == 0:
        raise EvaluationError(
            f"{reader.dir}: no time steps in the test split {list(test_range)}. "
            "Fix: check data.splits.test in params.yaml against the shards."
        )
    every = init_every_hours * HOUR
    start = times[0]
    if 24 % init_every_hours == 0:
        midnight = start.astype("datetime64[D]").astype("datetime64[ns]")
        start = midnight - ((midnight - start) // every) * every  # the first whole multiple of `every` after 00Z
    last_valid = min(np.datetime64(test_range[1], "ns"), times[-1])
    candidates = np.arange(start, last_valid - max_lead_hours * HOUR + np.timedelta64(1, "ns"), every).astype(
        "datetime64[ns]"
    )
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
    sink: Callable | None = None,
    scorers: Sequence = (),
    members: Callable | None = None,
) -> Scores:
    """Roll out `forecaster(x0, init_times, n_steps)` (an iterator of (B, C, H, W) states) from every initial time
    and score it, persistence and `clim` (a Climatology) against the shards' states. `sink(rows, lead_index,
    states)`, if given, receives every scored state as it is made (lead index 0: the initial state). Each of
    `scorers` (scorers.py) receives every scored step; `members`, an ensemble forecaster (iterator of
    (M, B, C, H, W)), runs beside the model from the same initial states and its members reach them as Step.members.

    Per-step spatial means go into arrays indexed by (initial time, lead, channel); the time means are taken once
    at the end, so the result does not depend on batch_size's grouping of the sums.
    """
    weights = metrics.cell_area_weights(reader.latitude)
    n, c = len(inits), len(reader.channels)
    per = {s: {f: np.zeros((n, n_steps, c)) for f in FORECASTS} for s in ("mse", "acc", "bias")}
    leads = [lead_hours * (s + 1) for s in range(n_steps)]
    map_idx = [(reader.channels.index(ch), ch) for ch in map_channels]
    maps: dict[tuple[str, int], dict[str, np.ndarray]] = {}
    for b0 in range(0, n, batch_size):
        batch = inits[b0 : b0 + batch_size]
        rows = slice(b0, b0 + len(batch))
        x0 = reader.read(batch)
        if sink:
            sink(rows, 0, x0)
        ensemble_runs = members(x0, batch, n_steps) if members else itertools.repeat(None)
        s = -1
        for s, (state, member_states) in enumerate(zip(forecaster(x0, batch, n_steps), ensemble_runs, strict=False)):
            if sink:
                sink(rows, s + 1, state)
            valid = batch + leads[s] * HOUR
            truth, ref = reader.read(valid), clim.at(valid)
            step = Step(rows, s, leads[s], valid, truth, ref, {"model": state, "persistence": x0, "climatology": ref},
                        member_states)  # fmt: skip
            _score_globally(per, step, weights)
            for scorer in scorers:
                scorer.add(step)
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
        per_step=per,
        init_times=np.asarray(inits),
        sections={scorer.name: scorer.result() for scorer in scorers},
    )


def _score_globally(per: dict, step: Step, weights: np.ndarray) -> None:
    """The per-step global RMSE / bias / ACC terms of every forecast of a step (metrics.py)."""
    at = (step.rows, step.lead_index)
    for name, fc in step.forecasts.items():
        per["mse"][name][at] = metrics.mse_per_step(fc, step.truth, weights)
        per["bias"][name][at] = metrics.bias_per_step(fc, step.truth, weights)
        per["acc"][name][at] = metrics.acc_per_step(fc, step.truth, step.climatology, weights)


# ----------------------------------------------------------------------------------------------------------------
# CLI


def _parser() -> argparse.ArgumentParser:
    p = cliargs.parser("evaluate", __doc__, "params", "model", "shards", "stats", "device")
    p.add_argument("--climatology", default="data/climatology.zarr",
                   help="climatology store (the climatology stage's output; default: %(default)s)")
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

    meta: dict
    forecaster: Callable
    reader: ShardReader
    lead_hours: int
    n_steps: int
    headline: list[str]
    map_channels: list[str]
    map_leads: list[int]
    inits: np.ndarray
    clim: Climatology
    extras: Extras

    @property
    def leads(self) -> list[int]:
        return [self.lead_hours * (s + 1) for s in range(self.n_steps)]


def plan(args: argparse.Namespace, params) -> Plan:
    """Load the model(s) and the shards and check params against them (errors name the key and the fix)."""
    from . import climatology, extras
    from .inference import check_grid, load_forecaster, model_forecaster

    cfg = params.evaluate
    model, meta, normalizer = load_forecaster(args.model, args.stats, args.device, shards=args.shards)
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
    leads = [lead_hours * (s + 1) for s in range(n_steps)]
    clim = climatology.load(args.climatology, params, reader.channels, reader.latitude, reader.longitude)
    clim.check((inits[:, None] + (np.asarray(leads) * HOUR)[None]).ravel())  # every valid time, before any rollout
    map_leads = select_leads(cfg.map_leads_hours, leads)
    forecaster = model_forecaster(model, normalizer, lead_hours, reader.latitude, reader.longitude)
    members = []
    if cfg.ensemble.members > 1:
        members = extras.load_member_forecasters(cfg, args.model, args.stats, args.device, meta, reader, forecaster)
    options = extras.setup(params, args.params, reader, inits, leads, map_leads, members, normalizer.std)
    return Plan(meta, forecaster, reader, lead_hours, n_steps, headline, map_channels, map_leads, inits, clim, options)


def run(p: Plan, params, device: str, out: Path) -> Scores:
    """The scores of every rollout (and of the options: extras.py) and the significance of model - baselines; the
    WB2 export in out/wb2."""
    from . import export
    from .inference import deterministic
    from .scorers import baseline_significance

    cfg = params.evaluate
    print(
        f"evaluate: {len(p.inits)} initial times x {p.n_steps} steps of {p.lead_hours} h, "
        f"{len(p.reader.channels)} channels" + (f", {p.extras.n_members} members" if p.extras.members else ""),
        file=sys.stderr,
    )
    scorers = p.extras.scorers(p.reader, p.n_steps, p.leads, p.map_channels, cfg, params.seed)
    attrs = export.model_attrs(p.meta, "forge evaluate")
    wb2 = export.evaluation_export(out / "wb2", cfg.export_forecast, p.reader, p.inits, p.lead_hours, p.n_steps,
                                   p.clim, attrs, cfg.batch_size)  # fmt: skip
    with deterministic(device), wb2 as sink:
        scores = score(p.forecaster, p.reader, p.inits, p.n_steps, p.lead_hours, p.clim, cfg.batch_size,
                       p.map_channels, p.map_leads, sink, scorers, p.extras.members)  # fmt: skip
    if p.extras.significance:
        key_leads = select_leads(cfg.key_leads_hours, p.leads)
        scores.sections["significance"] = baseline_significance(
            scores.per_step, p.leads, key_leads, cfg.significance, cfg.init_every_hours, params.seed
        )
    return scores


def main(argv: list[str] | None = None) -> int:
    from . import climatology, provenance
    from .config import load_params

    args = _parser().parse_args(argv)
    params = load_params(args.params)
    cfg = params.evaluate
    provenance.ensure_clean_or_allowed(cfg.allow_dirty, "evaluate")
    p = plan(args, params)
    out = Path(args.out)
    scores = run(p, params, args.device, out)
    info = {
        "init_times": [str(p.inits[0].astype("datetime64[m]")), str(p.inits[-1].astype("datetime64[m]"))],
        "init_every_hours": cfg.init_every_hours,
        "lead_hours": p.lead_hours,
        "test_split": list(params.data.splits.test),
        "train_split": list(params.data.splits.train),
        "climatology": climatology.provenance(params),
        "model": p.meta.get("model"),
        "model_step": p.meta.get("step"),
        "model_provenance": p.meta.get("provenance"),
        **p.extras.describe(),
        "ensemble": cfg.ensemble.model_dump(mode="json") if p.extras.members else None,
        "stations_file": cfg.stations.file or None,
        "spectra_band": list(cfg.spectra.band),
    }
    lat, lon = p.reader.latitude, p.reader.longitude
    result = write_results(out, scores, p.headline, cfg.key_leads_hours, lat, lon, info)
    command = None if argv is None else [Path(sys.executable).name, "-m", __name__, *argv]
    optional = [cfg.stations.file, cfg.land_sea_mask, *cfg.ensemble.checkpoints]
    provenance.write_provenance(
        out / "provenance.json",
        params=params,
        command=command,
        inputs={path: None for path in (args.model, args.shards, args.stats, args.climatology, *optional) if path},
    )
    for ch in p.headline:
        row = ", ".join(f"{h}: {v}" for h, v in result["rmse"][ch]["model"].items())
        print(f"evaluate: RMSE {ch} (model, {units.symbol(ch)}) {row}", file=sys.stderr)
    print(f"evaluate: wrote {out}/metrics.json, per_lead.csv, plots/, maps/, scores/, wb2/, provenance.json",
          file=sys.stderr)  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
