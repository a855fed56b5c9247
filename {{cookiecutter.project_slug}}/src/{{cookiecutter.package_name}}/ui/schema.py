"""The Configure form, generated from config.py's pydantic models: one field per params.yaml key.

Everything comes from the annotations, nothing from key names: a nested section is a group of its own; a field
knows its kind (int, float, bool, str, a Literal's choices, a list or tuple, a mapping, a union such as
`str | list[str]`), its bounds (ge/gt/le/lt) and its default; the help text is the key's comment in params.yaml.
Lists and mappings are typed as flow YAML (`[6, 24]`, `{tmp2m: 2m_temperature}`); a union takes a typed value of
one of its non-string members and otherwise the text as it is. What a person types is read the way the CLI reads
params.yaml (a YAML value), so `validate_params` then gives exactly the CLI's message for a bad value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
import yaml
from pydantic import BaseModel, TypeAdapter
from pydantic.fields import FieldInfo

from ..config import Params
from ..errors import ParamsError


@dataclass(frozen=True)
class FormField:
    key: str  # dotted, as in `dvc exp run -S train.lr=...`
    kind: str  # int | float | bool | str | choice | list | mapping | union | none | yaml
    default: Any = None  # as params.yaml spells it (JSON-able: a tuple default is a list)
    required: bool = False
    choices: tuple = ()  # the values of a choice
    bounds: str = ""  # e.g. ">= 4", "1 ... 6", "> 0"
    help: str = ""
    members: tuple[str, ...] = ()  # the kinds a union accepts, e.g. ("str", "list")
    type: str = ""  # what the value is, for a person: "int", "list of str", "str or list of str", ...

    @property
    def name(self) -> str:
        return self.key.rsplit(".", 1)[-1]

    @property
    def default_text(self) -> str:
        """The default as the form writes it, when it is short enough to show beside the field."""
        text = "" if self.required else text_of(self.default)
        return text if len(text) <= 40 else ""


@dataclass
class Group:
    key: str  # "" for the top-level keys (seed)
    help: str = ""
    fields: list[FormField] = field(default_factory=list)


def _members(annotation: Any) -> tuple | None:
    """The member types of a union (`str | list[str]`, `Optional[int]`), else None."""
    return get_args(annotation) if get_origin(annotation) in (Union, UnionType) else None


def _kind(annotation: Any) -> str:
    origin = get_origin(annotation) or annotation
    if origin is Literal:
        return "choice"
    if _members(annotation) is not None:
        return "union"
    if origin in (list, tuple, set, frozenset):
        return "list"
    if origin in (dict, Mapping):
        return "mapping"
    if annotation is type(None):
        return "none"
    if annotation in (bool, int, float, str):
        return annotation.__name__
    return "yaml"


def describe(annotation: Any) -> str:
    """A type as a person reads it: 'list of int', 'str or list of str', 'mapping str: str', 'one of a | b'."""
    args = get_args(annotation)
    kind = _kind(annotation)
    if kind == "choice":
        return "one of " + " | ".join(map(str, args))
    if kind == "union":
        return " or ".join(describe(a) for a in args)
    if kind == "list" and len(args) == 2 and args[1] is Ellipsis:
        return f"list of {describe(args[0])}"
    if kind == "list" and get_origin(annotation) is tuple and args:
        return f"list [{', '.join(describe(a) for a in args)}]"
    if kind == "list":
        return f"list of {describe(args[0])}" if args else "list"
    if kind == "mapping":
        return f"mapping {describe(args[0])}: {describe(args[1])}" if args else "mapping"
    if kind == "none":
        return "empty"
    return getattr(annotation, "__name__", None) or str(annotation)


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


def _form_field(key: str, info: FieldInfo, help_text: str) -> FormField:
    annotation, required = info.annotation, info.is_required()
    default = None if required else TypeAdapter(annotation).dump_python(
        info.get_default(call_default_factory=True), mode="json")
    kind = _kind(annotation)
    choices = get_args(annotation) if kind == "choice" else ()
    members = tuple(_kind(a) for a in _members(annotation) or ())
    return FormField(key, kind, default, required, choices, _bounds(info.metadata), help_text, members,
                     describe(annotation))


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
            group.fields.append(_form_field(key, info, comments.get(key, "")))
        for annotation, key in nested:
            walk(annotation, key)

    walk(model, "")
    return [g for g in out if g.fields]


def fields_by_key(model: type[BaseModel] = Params) -> dict[str, FormField]:
    return {f.key: f for g in groups(model=model) for f in g.fields}


_IS_KIND = {  # a YAML value that a union's member of this kind takes as it is
    "list": lambda v: isinstance(v, list),
    "mapping": lambda v: isinstance(v, dict),
    "bool": lambda v: isinstance(v, bool),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
}


def _yaml_value(text: str) -> Any:
    try:
        return yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        return text  # the validator names it as a bad value of this key


def _parse_union(form_field: FormField, text: str) -> Any:
    """`str | list[str]`: '[a, b]' is a list, anything else the text itself; `int | None`: '' is None."""
    members = form_field.members
    if not text.strip() and "none" in members:
        return None
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        if text.lstrip()[:1] in ("[", "{"):  # meant as a list or mapping: not a path that happens to start so
            raise ParamsError(f"params.yaml: bad value for '{form_field.key}': {text!r} (not valid YAML: "
                              f"{str(exc).splitlines()[0]}). Fix: close the brackets, or quote a path.") from None
        value = text
    if any(_IS_KIND.get(kind, lambda v: False)(value) for kind in members):
        return value
    return text if {"str", "choice"} & set(members) else value


def parse(form_field: FormField, text: str) -> Any:
    """The value `text` stands for, read as params.yaml would read it (so bad input stays bad for the validator)."""
    if form_field.kind in ("str", "choice") and all(isinstance(c, str) for c in form_field.choices):
        return text
    if form_field.kind == "union":
        return _parse_union(form_field, text)
    if form_field.kind == "bool" and text.strip().lower() in ("true", "false"):
        return text.strip().lower() == "true"
    value = _yaml_value(text)
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
