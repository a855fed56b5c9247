"""Typed models of params.yaml.

Every section is a pydantic model that forbids unknown keys, so a typo stops the run with one message that
names the file, the key and the closest valid key; a wrong type names the key, the value and the expected type.
"""

from __future__ import annotations

import difflib
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ParamsError
from .regionboxes import WB2_REGIONS
from .regionboxes import check_names as check_region_names

DEFAULT_PARAMS = Path("params.yaml")


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _parse_time(value: str) -> datetime:
    try:
        return datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not an ISO date/time such as '2000-01-01' or '2000-01-01T06:00'") from exc


class SyntheticConfig(Section):
    nlat: int = Field(32, ge=4)
    nlon: int = Field(64, ge=8)
    levels: list[int] = [500, 850]
    step_hours: int = Field(6, ge=1, le=24)


class SplitsConfig(Section):
    train: tuple[str, str]
    val: tuple[str, str]
    test: tuple[str, str]

    @field_validator("train", "val", "test")
    @classmethod
    def _ordered(cls, value: tuple[str, str]) -> tuple[str, str]:
        start, end = (_parse_time(v) for v in value)
        if end < start:
            raise ValueError(f"the range ends ({value[1]}) before it starts ({value[0]})")
        return value

    @model_validator(mode="after")
    def _disjoint(self) -> SplitsConfig:
        ranges = sorted((tuple(map(_parse_time, r)), name) for name, r in self.ranges().items())
        for (a, name_a), (b, name_b) in zip(ranges, ranges[1:], strict=False):
            if b[0] <= a[1]:
                raise ValueError(
                    f"@data.splits: splits '{name_a}' and '{name_b}' overlap; make each start after the other ends"
                )
        return self

    def ranges(self) -> dict[str, tuple[str, str]]:
        return {"train": self.train, "val": self.val, "test": self.test}


class DataConfig(Section):
    source: str | list[str] = "synthetic"  # one entry, or a list (e.g. one glob per variable, as RDA/CDS ship them)
    variables: list[str] = []  # WeatherBench2 names
    rename: dict[str, str] = {}  # source variable name -> WeatherBench2 name, for names the built-in table lacks
    levels: list[int] = []
    start: str = "2000-01-01"
    end: str = "2001-03-31T18:00"
    time_stride: int = Field(1, ge=1)
    coarsen: int = Field(1, ge=1)
    block_size: int = Field(240, ge=2)
    grid: str = ""  # "" = the source grid (or data.coarsen); else a named grid ("240x121", "1.5deg") or a grid file
    static: list[str] = []  # time-invariant input fields (WeatherBench2 names), e.g. land_sea_mask
    static_source: str | list[str] = ""  # where data.static comes from; "" = data.source
    splits: SplitsConfig
    synthetic: SyntheticConfig = SyntheticConfig()

    @field_validator("start", "end")
    @classmethod
    def _iso(cls, value: str) -> str:
        _parse_time(value)
        return value

    @field_validator("source")
    @classmethod
    def _entries(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list) and (not value or not all(value)):
            raise ValueError("a list of sources must hold at least one non-empty path or glob")
        return value

    @model_validator(mode="after")
    def _static_and_grid(self) -> DataConfig:
        both = sorted(set(self.static) & set(self.variables))
        if both:
            raise ValueError(f"@data.static: {both} are also in data.variables; a field is either predicted or static")
        for key in ("variables", "static"):
            names = getattr(self, key)
            if len(set(names)) != len(names):
                raise ValueError(f"@data.{key}: {names} lists a name twice")
        if self.grid and self.coarsen > 1:
            raise ValueError(f"@data.coarsen: {self.coarsen} and data.grid {self.grid!r} both regrid; keep one "
                             "(data.coarsen: 1 with data.grid)")
        return self

    @model_validator(mode="after")
    def _splits_inside_the_data(self) -> DataConfig:
        start, end = _parse_time(self.start), _parse_time(self.end)
        if end < start:
            raise ValueError(f"@data.end: {self.end!r} is before data.start {self.start!r}; make data.end later")
        for name, (lo, hi) in self.splits.ranges().items():
            if _parse_time(lo) < start or _parse_time(hi) > end:
                raise ValueError(
                    f"@data.splits.{name}: [{lo}, {hi}] reaches outside the data (data.start {self.start} .. "
                    f"data.end {self.end}); move the split inside that range, or widen data.start/data.end"
                )
        return self

    @model_validator(mode="after")
    def _source_needs_variables(self) -> DataConfig:
        if self.source != "synthetic" and not self.variables:
            raise ValueError(
                f"@data.variables: the source {self.source!r} needs data.variables, a list of the variables to use"
                " (e.g. [geopotential, temperature, 2m_temperature])"
            )
        return self


class ModelConfig(Section):
    name: Literal["unet", "vit"] = "unet"
    width: int = Field(32, ge=4)
    depth: int = Field(2, ge=1, le=6)
    patch_size: int = Field(4, ge=1)


class TrainConfig(Section):
    lead_hours: int = Field(6, ge=1)
    batch_size: int = Field(16, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_steps: int = Field(1200, ge=1)
    lr: float = Field(2e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(50, ge=0)
    grad_clip: float = Field(1.0, ge=0)
    rollout_steps: int = Field(1, ge=1)
    strategy: Literal["ddp", "fsdp"] = "ddp"
    precision: Literal["fp32", "bf16"] = "fp32"
    activation_checkpointing: bool = False
    num_workers: int = Field(0, ge=0)
    prefetch: int = Field(2, ge=1)
    checkpoint_every: int = Field(200, ge=1)
    keep_checkpoints: int = Field(3, ge=1)
    log_every: int = Field(20, ge=1)
    deterministic: bool = True
    init_from: str = ""
    freeze: list[str] = []
    allow_dirty: bool = False
    compile: bool = False  # torch.compile the network and loss (faster steps on a GPU after a one-off compile)


class SpectraConfig(Section):
    leads_hours: list[int] = [24, 72]
    band: tuple[float, float] = (30.0, 60.0)

    @field_validator("band")
    @classmethod
    def _band(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 <= value[0] < value[1] <= 90:
            raise ValueError(f"{list(value)} is not a band [low, high] of |latitude| with 0 <= low < high <= 90")
        return value


class SignificanceConfig(Section):
    samples: int = Field(1000, ge=0)
    block_length: int = Field(0, ge=0)
    confidence: float = Field(0.95, gt=0, lt=1)


class EnsembleConfig(Section):
    members: int = Field(1, ge=1)
    perturbation: float = Field(0.0, ge=0)
    checkpoints: list[str] = []

    @model_validator(mode="after")
    def _distinct_members(self) -> EnsembleConfig:
        if self.members > max(1, len(self.checkpoints)) and self.perturbation == 0:
            raise ValueError(
                f"@evaluate.ensemble.perturbation: {self.members} members from {max(1, len(self.checkpoints))} "
                "checkpoint(s) would be identical; set a perturbation > 0 (e.g. 0.05) or list more checkpoints"
            )
        return self


class StationsConfig(Section):
    file: str = ""
    variables: list[str] = []


class EvaluateConfig(Section):
    max_lead_hours: int = Field(72, ge=1)
    init_every_hours: int = Field(12, ge=1)
    headline: list[str] = ["geopotential_500", "temperature_850", "2m_temperature"]
    climatology_window_days: int = Field(15, ge=0)
    batch_size: int = Field(8, ge=1)
    key_leads_hours: list[int] = [6, 24, 72]
    map_channels: list[str] = []
    map_leads_hours: list[int] = [24, 72]
    allow_dirty: bool = False
    export_forecast: bool = True
    regions: list[str] = list(WB2_REGIONS)
    land_sea_mask: str = ""
    spectra: SpectraConfig = SpectraConfig()
    significance: SignificanceConfig = SignificanceConfig()
    ensemble: EnsembleConfig = EnsembleConfig()
    stations: StationsConfig = StationsConfig()

    @model_validator(mode="after")
    def _known_regions(self) -> EvaluateConfig:
        check_region_names(self.regions, has_land_sea_mask=bool(self.land_sea_mask))
        return self


class WandbConfig(Section):
    enabled: bool = False
    mode: Literal["offline", "online", "disabled"] = "offline"
    project: str = "forecast"


class Params(Section):
    seed: int = 0
    data: DataConfig
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    wandb: WandbConfig = WandbConfig()

    @model_validator(mode="after")
    def _lead_fits_data(self) -> Params:
        if self.data.source == "synthetic":
            step = self.data.synthetic.step_hours * self.data.time_stride
            if self.train.lead_hours % step:
                raise ValueError(
                    f"@train.lead_hours: {self.train.lead_hours} must be a multiple of the data time step ({step} h)"
                )
        return self

    @model_validator(mode="after")
    def _leads_within_the_rollout(self) -> Params:
        ev = self.evaluate
        if ev.max_lead_hours < self.train.lead_hours:
            raise ValueError(
                f"@evaluate.max_lead_hours: {ev.max_lead_hours} is shorter than one model step (train.lead_hours = "
                f"{self.train.lead_hours}); raise it to at least {self.train.lead_hours}"
            )
        for key in ("key_leads_hours", "map_leads_hours"):
            beyond = [h for h in getattr(ev, key) if h > ev.max_lead_hours]
            if beyond:
                raise ValueError(
                    f"@evaluate.{key}: {beyond} lie beyond evaluate.max_lead_hours ({ev.max_lead_hours}), so they "
                    f"would never be scored; drop them or raise evaluate.max_lead_hours"
                )
        return self


# ----------------------------------------------------------------------------------------------------------------
# Loading and error messages


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class that owns the key at `loc` (to list valid keys for a typo)."""
    model: Any = Params
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return None
        model = field.annotation
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _format_error(err: dict, path: Path) -> str:
    loc = tuple(err["loc"])
    key = ".".join(str(p) for p in loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        owner = _model_at(loc)
        valid = sorted(owner.model_fields) if owner else []
        close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
        hint = f"did you mean '{'.'.join(map(str, loc[:-1] + (close[0],)))}'?" if close else ""
        return (
            f"{path}: unknown key '{key}'. {hint} "
            f"Valid keys here: {', '.join(valid)}. Fix: rename or remove it."
        ).replace("  ", " ")
    if err["type"] == "missing":
        return f"{path}: missing key '{key}'. Fix: add it (see the commented defaults in the template's params.yaml)."
    value = err.get("input")
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if msg.startswith("@"):  # a check across keys names the key it is about: "@section.key: message"
        key, msg = msg[1:].split(": ", 1)
        return f"{path}: bad value for '{key}': {msg}. Fix: change '{key}' in {path}."
    return f"{path}: bad value for '{key}': {value!r} ({msg}). Fix: change '{key}' in {path}."


def validate_params(raw: Any, path: Path | str = DEFAULT_PARAMS) -> Params:
    """Validate an already-parsed params mapping; raise ParamsError with every problem, one per line."""
    path = Path(path)
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: expected a mapping of sections (seed, data, model, train, ...), got {raw!r}")
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        lines = [_format_error(err, path) for err in exc.errors()]
        raise ParamsError("\n".join(lines)) from None


def load_params(path: Path | str = DEFAULT_PARAMS) -> Params:
    """Read and validate params.yaml."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: not found. Fix: run from the project root, or pass --params PATH.")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamsError(f"{path}: not valid YAML ({exc}). Fix: correct the indentation or quoting there.") from None
    return validate_params(raw, path)


def main(argv: list[str] | None = None) -> int:
    """`<package> check-params [PATH]`: validate params.yaml and print the resolved values.

    Checks params alone (types, names, ranges, keys across sections); `<package> preflight` also checks them
    against the data."""
    from . import cliargs

    parser = cliargs.parser("check-params", main.__doc__, "params")
    parser.add_argument("path", nargs="?", help="params file (same as --params)")
    args = parser.parse_args(argv)
    path = args.path or args.params
    params = load_params(path)
    print(yaml.safe_dump(params.model_dump(mode="json"), sort_keys=False), end="")
    print(f"{path}: OK")
    return 0
