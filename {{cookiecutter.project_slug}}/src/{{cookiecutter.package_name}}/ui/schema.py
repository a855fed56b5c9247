"""The Configure form, generated from config.py's pydantic models: one field per params.yaml key.

A field knows its type, its choices (a Literal), its bounds (ge/gt/le/lt) and its default; the help text is the
key's comment in params.yaml. What a person types is read the way the CLI reads params.yaml (a YAML value), so
`validate_params` then gives exactly the CLI's message for a bad value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal, get_args, get_origin

import annotated_types
import yaml
from pydantic import BaseModel

from ..config import Params


@dataclass(frozen=True)
class FormField:
    key: str  # dotted, as in `dvc exp run -S train.lr=...`
    kind: str  # int | float | bool | str | choice | list | yaml
    default: Any = None
    required: bool = False
    choices: tuple = ()
    bounds: str = ""  # e.g. ">= 4", "1 ... 6", "> 0"
    help: str = ""

    @property
    def name(self) -> str:
        return self.key.rsplit(".", 1)[-1]


@dataclass
class Group:
    key: str  # "" for the top-level keys (seed)
    help: str = ""
    fields: list[FormField] = field(default_factory=list)


def _kind(annotation: Any) -> tuple[str, tuple]:
    origin = get_origin(annotation)
    if origin is Literal:
        return "choice", get_args(annotation)
    if origin in (list, tuple):
        return "list", ()
    if annotation is bool:
        return "bool", ()
    if annotation in (int, float, str):
        return annotation.__name__, ()
    return "yaml", ()


def _bounds(metadata: list) -> str:
    low = high = ""
    for m in metadata:
        if isinstance(m, annotated_types.Ge):
            low = f">= {m.ge}"
        elif isinstance(m, annotated_types.Gt):
            low = f"> {m.gt}"
        elif isinstance(m, annotated_types.Le):
            high = f"<= {m.le}"
        elif isinstance(m, annotated_types.Lt):
            high = f"< {m.lt}"
    return ", ".join(b for b in (low, high) if b)


def groups(comments: dict[str, str] | None = None, model: type[BaseModel] = Params) -> list[Group]:
    """The form: a group per section (nested sections are groups of their own), in the models' (= the file's) order."""
    comments = comments or {}
    out: list[Group] = []

    def walk(cls: type[BaseModel], prefix: str) -> None:
        group = Group(prefix, comments.get(prefix, ""))
        out.append(group)
        nested = []
        for name, info in cls.model_fields.items():
            key = f"{prefix}.{name}" if prefix else name
            annotation = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                nested.append((annotation, key))
                continue
            kind, choices = _kind(annotation)
            default = None if info.is_required() else info.default
            if isinstance(default, BaseModel):
                default = default.model_dump(mode="json")
            group.fields.append(FormField(key, kind, default, info.is_required(), choices,
                                          _bounds(info.metadata), comments.get(key, "")))
        for annotation, key in nested:
            walk(annotation, key)

    walk(model, "")
    return [g for g in out if g.fields]


def fields_by_key(model: type[BaseModel] = Params) -> dict[str, FormField]:
    return {f.key: f for g in groups(model=model) for f in g.fields}


def parse(form_field: FormField, text: str) -> Any:
    """The value `text` stands for, read as params.yaml would read it (so bad input stays bad for the validator)."""
    if form_field.kind in ("str", "choice") and all(isinstance(c, str) for c in form_field.choices):
        return text
    if form_field.kind == "bool" and text.strip().lower() in ("true", "false"):
        return text.strip().lower() == "true"
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        return text  # the validator names it as a bad value of this key
    if form_field.kind == "float":
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # 1e-3: YAML 1.1 reads it as a string, a person means a number
            try:
                return float(value)
            except ValueError:
                return value
    return value


def text_of(value: Any) -> str:
    """The form's text for a value; parse(field, text_of(v)) == v."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple, dict)):
        return yaml.safe_dump(list(value) if isinstance(value, tuple) else value, default_flow_style=True,
                              width=math.inf).strip()
    return str(value)


def lookup(tree: Any, key: str, default: Any = None) -> Any:
    for part in key.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return default
        tree = tree[part]
    return tree
