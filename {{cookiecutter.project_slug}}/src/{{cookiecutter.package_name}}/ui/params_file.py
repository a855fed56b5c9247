"""params.yaml as the person who edits it sees it: each key's comment, and a save that keeps every comment.

A save never leaves a half-valid file: the whole result is validated with config.validate_params (the CLI's
messages) before anything is written; the new text is read back and must give exactly the intended values; then
it replaces the file atomically. The round trip (ruamel.yaml) keeps comments, key order, quoting and flow lists,
so only the lines of the changed keys differ.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import io
import math
import re
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.representer import RoundTripRepresenter
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, SingleQuotedScalarString

from ..config import validate_params
from ..errors import ForgeError, ParamsError
from ..fileio import atomic_write_text
from .schema import FormField, lookup, parse

PARAMS = "params.yaml"  # as the CLI names it in its messages (it runs from the project root)
_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w-]*):(?P<rest>.*)$")
_MESSAGE_KEY = re.compile(r"^[^:]+: (?:bad value for|unknown key|missing key) '([^']+)'")


# ----------------------------------------------------------------------------------------------------------------
# reading


def _comment(rest: str) -> str:
    """The comment at the end of a YAML line's value part (a '#' after a blank, outside quotes)."""
    quote = ""
    for i, ch in enumerate(rest):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or rest[i - 1] in " \t"):
            return rest[i + 1:].strip()
    return ""


def key_comments(text: str) -> dict[str, str]:
    """dotted key -> its end-of-line comment, for every key of a block-style YAML file."""
    stack: list[tuple[int, str]] = []
    out = {}
    for line in text.splitlines():
        m = _KEY_LINE.match(line)
        if not m:
            continue
        indent = len(m["indent"])
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, m["key"]))
        comment = _comment(m["rest"])
        if comment:
            out[".".join(k for _, k in stack)] = comment
    return out


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def read_raw(text: str) -> dict:
    """The file as the CLI reads it (PyYAML), or a ParamsError with the CLI's wording."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ParamsError(f"{PARAMS}: not valid YAML ({exc}). Fix: correct the indentation or quoting there.") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{PARAMS}: expected a mapping of sections (seed, data, model, train, ...), got {raw!r}")
    return raw


# ----------------------------------------------------------------------------------------------------------------
# the form's values against the file


def changes_from_form(raw: dict, texts: dict[str, str], fields: dict[str, FormField]) -> dict[str, Any]:
    """{key: new value} for every form value that differs from the file. Unknown keys are a ParamsError."""
    unknown = sorted(set(texts) - set(fields))
    if unknown:
        raise unknown_key(unknown[0], fields)
    missing = object()
    changes = {}
    for key, text in texts.items():
        value = parse(fields[key], str(text))
        current = lookup(raw, key, missing)
        if current is missing and value == fields[key].default:
            continue  # left at the default the file omits
        if current is missing or value != current or isinstance(value, bool) != isinstance(current, bool):
            changes[key] = value
    return changes


def unknown_key(key: str, fields: dict[str, FormField]) -> ParamsError:
    close = difflib.get_close_matches(key, fields, n=1, cutoff=0.6)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return ParamsError(f"{PARAMS}: unknown key '{key}'.{hint} Fix: use a key of params.yaml, e.g. train.lr.")


def with_changes(raw: dict, changes: dict[str, Any]) -> dict:
    new = copy.deepcopy(raw)
    for key, value in changes.items():
        *parents, last = key.split(".")
        node = new
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return new


def errors_by_key(exc: ParamsError, keys: list[str]) -> tuple[dict[str, list[str]], list[str]]:
    """Split a ParamsError's lines into {form key: [lines]} and the lines about no single field."""
    by_key: dict[str, list[str]] = {}
    other = []
    for line in str(exc).splitlines():
        m = _MESSAGE_KEY.match(line)
        owner = None
        if m:  # "data.splits.train.1" belongs to the field "data.splits.train"
            owner = max((k for k in keys if m[1] == k or m[1].startswith(k + ".")), key=len, default=None)
        if owner:
            by_key.setdefault(owner, []).append(line)
        else:
            other.append(line)
    return by_key, other


def validate(raw: dict, changes: dict[str, Any]) -> dict:
    """The file's values with `changes`, validated as the CLI validates params.yaml (raises its ParamsError)."""
    new = with_changes(raw, changes)
    validate_params(new, PARAMS)
    return new


# ----------------------------------------------------------------------------------------------------------------
# writing


def _yaml11_float(value: float) -> str:
    """A float spelled so that PyYAML (YAML 1.1, the CLI's reader) reads a float back: 1.0e-05, not 1e-05."""
    if math.isnan(value):
        return ".nan"
    if math.isinf(value):
        return ".inf" if value > 0 else "-.inf"
    text = repr(value)
    if "e" not in text:
        return text if "." in text else text + ".0"
    mantissa, exponent = text.split("e")
    mantissa = mantissa if "." in mantissa else mantissa + ".0"
    sign = exponent[0] if exponent[0] in "+-" else "+"
    return f"{mantissa}e{sign}{exponent.lstrip('+-')}"


class _Representer(RoundTripRepresenter):
    """ruamel's round-trip representer, with floats that YAML 1.1 readers read as floats."""


_Representer.add_representer(float, lambda rep, value: rep.represent_scalar("tag:yaml.org,2002:float",
                                                                            _yaml11_float(value)))


def _round_trip() -> YAML:
    y = YAML()
    y.Representer = _Representer
    y.preserve_quotes = True
    y.indent(mapping=2, sequence=4, offset=2)
    y.width = 4096  # never re-wrap a long line
    return y


def _needs_quotes(text: str) -> bool:
    try:
        return yaml.safe_load(text) != text
    except yaml.YAMLError:
        return True


def _styled(old: Any, new: Any) -> Any:
    """`new` dressed like `old`: the same quotes for a string, the same (flow) list object, element by element."""
    if isinstance(new, str):
        if isinstance(old, (DoubleQuotedScalarString, SingleQuotedScalarString)):
            return type(old)(new)
        return DoubleQuotedScalarString(new) if _needs_quotes(new) else new
    if isinstance(new, (list, tuple)):
        olds = list(old) if isinstance(old, list) else []
        items = [_styled(olds[i] if i < len(olds) else (olds[0] if olds else None), v) for i, v in enumerate(new)]
        if isinstance(old, CommentedSeq):
            old[:] = items  # the same object keeps its flow style and its comment
            return old
        seq = CommentedSeq(items)
        seq.fa.set_flow_style()
        return seq
    return new


def render(text: str, changes: dict[str, Any]) -> str:
    """`text` with the values of `changes` replaced, everything else (comments, order, quoting) as it was."""
    y = _round_trip()
    doc = y.load(text)
    for key, value in changes.items():
        *parents, last = key.split(".")
        node = doc
        for part in parents:
            if part not in node:
                node[part] = CommentedMap()
            node = node[part]
        node[last] = _styled(node.get(last), value)
    out = io.StringIO()
    y.dump(doc, out)
    return out.getvalue()


def save(path: Path, changes: dict[str, Any], expected_sha256: str | None = None) -> str:
    """Write `changes` into params.yaml at `path` if the whole result is valid; return the new text.

    Raises ParamsError (the CLI's message) for invalid values and ForgeError if the file changed on disk since the
    form was loaded; in both cases the file is left byte-identical.
    """
    text = path.read_text()
    if expected_sha256 and sha256(text) != expected_sha256:
        raise ForgeError(f"{PARAMS} changed on disk since this page was loaded; nothing was saved. "
                         "Fix: reload the page and make the change again.")
    raw = read_raw(text)
    new_raw = validate(raw, changes)
    new_text = render(text, changes)
    if read_raw(new_text) != new_raw:  # never write what the CLI would read differently
        raise ForgeError(f"{PARAMS}: the edited file would not read back as the values entered; nothing was saved. "
                         "Fix: edit params.yaml by hand for this change.")
    validate_params(read_raw(new_text), PARAMS)
    atomic_write_text(path, new_text)
    return new_text
