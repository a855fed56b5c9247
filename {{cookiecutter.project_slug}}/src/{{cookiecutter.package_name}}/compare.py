"""Is experiment A better than experiment B? Score differences with paired block-bootstrap intervals.

    <package> compare A B [--leads 24 72] [--channels geopotential_500 ...] [--json OUT]

A and B are each a results folder (`results`, or any folder holding scores/per_init.nc) or a git revision or
`dvc exp` name, whose results/scores/per_init.nc is read from git and the DVC cache (or the DVC remote) at that
commit. The two are paired on the initial times they share: RMSE (from the per-initial-time MSE) and ACC of the
model forecast, A - B, with the interval of significance.paired_bootstrap, resampling the same initial times for
both. Scores are recomputed on the common initial times, so they can differ from either run's metrics.json when
the runs' test periods differ. For RMSE a negative difference means A is better; for ACC a positive one.

The bootstrap settings (evaluate.significance: samples, block_length, confidence) and the default channels and
leads (evaluate.headline, evaluate.key_leads_hours) are A's params.yaml at its revision, or the current
params.yaml when A is a folder. samples 0 (no intervals in evaluate) takes significance.DEFAULT_SAMPLES here.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import xarray as xr
import yaml

from . import per_init, significance
from .errors import ComparisonError
from .tables import rounded

RESULTS = "results"
# score -> (statistic of paired_bootstrap, per-step variable, how it reads)
SCORES = {"rmse": ("rmse", "mse", "lower is better"), "acc": ("mean", "acc", "higher is better")}


@dataclass(frozen=True)
class Settings:
    """The bootstrap's settings and the default selection (evaluate.* of a params.yaml)."""

    samples: int = significance.DEFAULT_SAMPLES
    block_length: int = 0  # 0: automatic per lead
    confidence: float = significance.DEFAULT_CONFIDENCE
    seed: int = 0
    channels: tuple[str, ...] = ()
    leads_hours: tuple[int, ...] = ()

    @classmethod
    def from_params(cls, raw: dict | None) -> Settings:
        evaluate = (raw or {}).get("evaluate") or {}
        sig = evaluate.get("significance") or {}
        return cls(samples=int(sig.get("samples") or significance.DEFAULT_SAMPLES),
                   block_length=int(sig.get("block_length") or 0),
                   confidence=float(sig.get("confidence") or significance.DEFAULT_CONFIDENCE),
                   seed=int((raw or {}).get("seed") or 0), channels=tuple(evaluate.get("headline") or ()),
                   leads_hours=tuple(int(h) for h in evaluate.get("key_leads_hours") or ()))  # fmt: skip


@dataclass(frozen=True)
class Row:
    score: str  # rmse | acc
    channel: str
    lead_hours: int
    a: float
    b: float
    difference: float  # a - b
    low: float
    high: float
    significant: bool


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    n_common: int
    confidence: float
    samples: int
    block_lengths: dict[int, int]  # lead -> initial times per block
    rows: list[Row]


# ----------------------------------------------------------------------------------------------------------------
# reading an experiment


def load(source: str, root: Path) -> tuple[xr.Dataset, dict | None]:
    """The per-initial-time scores of a results folder or a revision, and the params.yaml that goes with them."""
    folder = Path(source)
    if folder.is_dir() or folder.suffix == ".nc":
        path = folder if folder.suffix == ".nc" else folder / per_init.FILE
        if not path.is_file():
            raise ComparisonError(f"{path} is missing: {source} has no per-initial-time scores. Fix: rerun the "
                                  "evaluate stage (`dvc repro evaluate`), which writes them.")
        params = root / "params.yaml"
        return per_init.read(path, str(path)), yaml.safe_load(params.read_text()) if params.is_file() else None
    return _load_revision(source, root)


def resolve(rev: str, root: Path) -> str:
    """A git revision or `dvc exp` name -> its commit."""
    from dvc.scm import SCM, RevError, resolve_rev

    try:
        return resolve_rev(SCM(str(root)), rev)
    except (RevError, Exception) as exc:  # noqa: BLE001 - not a git repo, or an unknown name: one message
        raise ComparisonError(f"'{rev}' is neither a results folder nor a git revision or `dvc exp` name in {root} "
                              f"({exc}). Fix: give a folder holding {per_init.FILE}, or a name from `git log` / "
                              "`dvc exp list`.") from exc


def _load_revision(rev: str, root: Path) -> tuple[xr.Dataset, dict | None]:
    from dvc.api import DVCFileSystem

    sha = resolve(rev, root)
    path = f"{RESULTS}/{per_init.FILE}"
    fs = DVCFileSystem(str(root), rev=sha)
    try:
        content = fs.read_bytes(path)
    except Exception as exc:  # noqa: BLE001 - DVC raises FileNotFoundError or its own fetch errors
        raise ComparisonError(f"{rev}: {path} cannot be read at {sha[:7]} ({type(exc).__name__}: {exc}). Fix: if "
                              "that run was evaluated before per-initial-time scores were written, rerun it "
                              f"(`dvc exp run`); else fetch its outputs (`dvc pull` / `dvc exp pull`).") from exc
    raw = yaml.safe_load(fs.read_text("params.yaml")) if fs.isfile("params.yaml") else None
    return per_init.read(content, f"{rev}:{path}"), raw


# ----------------------------------------------------------------------------------------------------------------
# the comparison


def _common(a: xr.Dataset, b: xr.Dataset, names: tuple[str, str], leads, channels) -> tuple[xr.Dataset, xr.Dataset]:
    """A and B on their shared initial times, leads and channels (the chosen ones, when given)."""
    inits = np.intersect1d(a.init_time.values, b.init_time.values)
    shared = {"lead_hours": [h for h in a.lead_hours.values.tolist() if h in b.lead_hours.values],
              "channel": [c for c in a.channel.values.tolist() if c in b.channel.values]}
    wanted = {"lead_hours": list(leads or shared["lead_hours"]), "channel": list(channels or shared["channel"])}
    missing = {k: [v for v in wanted[k] if v not in shared[k]] or ([] if wanted[k] else ["(none shared)"])
               for k in wanted}
    problems = [f"{len(inits)} common initial times (the bootstrap needs 2)"] if len(inits) < 2 else []
    problems += [f"{label} {v} not in both" for label, v in zip(("leads", "channels"), missing.values(), strict=True)
                 if v]
    if problems:
        raise ComparisonError(f"{names[0]} and {names[1]} cannot be paired: {'; '.join(problems)} (both have leads "
                              f"{shared['lead_hours']}, channels {shared['channel']}). Fix: compare runs evaluated on "
                              "overlapping test periods, leads and channels (--leads / --channels).")
    pick = {"init_time": inits, **wanted}
    return a.sel(pick), b.sel(pick)


def init_every_hours(times: np.ndarray) -> float | None:
    steps = np.diff(np.asarray(times, dtype="datetime64[ns]")) / np.timedelta64(1, "h")
    return float(steps.min()) if len(steps) else None


def compare(a: xr.Dataset, b: xr.Dataset, settings: Settings, names: tuple[str, str] = ("A", "B"),
            leads: Sequence[int] = (), channels: Sequence[str] = ()) -> Comparison:  # fmt: skip
    """Model A - model B of each score on the common initial times, per lead and channel, with intervals."""
    a, b = _common(a, b, names, leads, channels)
    every = init_every_hours(a.init_time.values)
    rows, blocks = [], {}
    for score, (statistic, var, _) in SCORES.items():
        for h in a.lead_hours.values.tolist():
            x = a[var].sel(forecast="model", lead_hours=h).values.astype(np.float64)  # (init, channel)
            y = b[var].sel(forecast="model", lead_hours=h).values.astype(np.float64)
            got = significance.paired_bootstrap(x, y, statistic, settings.samples, settings.block_length or None,
                                                settings.confidence, settings.seed, h, every)  # fmt: skip
            blocks[h] = got.block_length
            value = np.sqrt if statistic == "rmse" else (lambda m: m)
            for ci, ch in enumerate(a.channel.values.tolist()):
                rows.append(Row(score, ch, h, float(value(x[:, ci].mean())), float(value(y[:, ci].mean())),
                                float(got.difference[ci]), float(got.low[ci]), float(got.high[ci]),
                                bool(got.significant[ci])))  # fmt: skip
    return Comparison(names[0], names[1], a.sizes["init_time"], settings.confidence, settings.samples, blocks, rows)


# ----------------------------------------------------------------------------------------------------------------
# output


def table(result: Comparison) -> str:
    """The comparison as text: one block per score, a row per channel and lead."""
    pct = f"{result.confidence:.0%}"
    lines = [f"compare: A = {result.a}, B = {result.b}: {result.n_common} common initial times, "
             f"{result.samples} block-bootstrap samples (block length by lead: {result.block_lengths})"]
    width = max([len(r.channel) for r in result.rows] + [7])
    for score, (_, _, sense) in SCORES.items():
        lines += ["", f"{score.upper()} of the model ({sense})",
                  f"{'channel':<{width}}  {'lead':>5}  {'A':>10}  {'B':>10}  {'A-B':>10}  {pct + ' interval':>24}"]
        for r in (r for r in result.rows if r.score == score):
            interval = f"[{r.low:.4g}, {r.high:.4g}]"
            mark = "significant" if r.significant else "not significant"
            lines.append(f"{r.channel:<{width}}  {r.lead_hours:>4}h  {r.a:>10.4g}  {r.b:>10.4g}  "
                         f"{r.difference:>10.4g}  {interval:>24}  {mark}")  # fmt: skip
    return "\n".join(lines)


def as_json(result: Comparison) -> dict:
    out = asdict(result)
    out["rows"] = [{k: rounded(v) if isinstance(v, float) else v for k, v in row.items()} for row in out["rows"]]
    return out


def _parser() -> argparse.ArgumentParser:
    from . import cliargs

    p = cliargs.parser("compare", __doc__)
    p.add_argument("a", metavar="A", help="results folder, git revision or `dvc exp` name (the one under test)")
    p.add_argument("b", metavar="B", help="results folder, git revision or `dvc exp` name (the reference)")
    p.add_argument("--leads", type=int, nargs="+", default=None,
                   help="lead times in hours (default: A's evaluate.key_leads_hours that both have, else all)")
    p.add_argument("--channels", nargs="+", default=None,
                   help="channels (default: A's evaluate.headline that both have, else all)")
    p.add_argument("--json", type=Path, default=None, help="also write the comparison as JSON to this file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    root = Path.cwd()
    (a, raw), (b, _) = load(args.a, root), load(args.b, root)
    settings = Settings.from_params(raw)
    leads = args.leads or [h for h in settings.leads_hours if h in a.lead_hours.values and h in b.lead_hours.values]
    channels = args.channels or [c for c in settings.channels if c in a.channel.values and c in b.channel.values]
    result = compare(a, b, settings, (args.a, args.b), leads, channels)
    print(table(result))
    if args.json:
        args.json.write_text(json.dumps(as_json(result), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
