"""The Configure form: generated from config.py's models, the CLI's messages, and a save that keeps every comment."""

from __future__ import annotations

import difflib
import importlib
import shutil

import pytest
import yaml


@pytest.fixture(scope="module")
def ui(pkg_name):
    return {m: importlib.import_module(f"{pkg_name}.ui.{m}") for m in ("schema", "params_file")}


@pytest.fixture()
def params(project_root, tmp_path, monkeypatch):
    """A copy of the project's params.yaml in a folder of its own, the current directory (as the CLI runs)."""
    path = tmp_path / "params.yaml"
    shutil.copyfile(project_root / "params.yaml", path)
    monkeypatch.chdir(tmp_path)
    return path


def test_form_follows_the_models_and_the_file(ui, params):
    schema, params_file = ui["schema"], ui["params_file"]
    text = params.read_text()
    fields = {f.key: f for g in schema.groups(params_file.key_comments(text)) for f in g.fields}
    assert fields["model.name"].kind == "choice" and fields["model.name"].choices == ("unet", "vit")
    assert fields["model.depth"].bounds == ">= 1, <= 6" and fields["model.width"].bounds == ">= 4"
    assert fields["train.lr"].kind == "float" and fields["train.lr"].bounds == "> 0"
    assert fields["train.deterministic"].kind == "bool" and fields["data.splits.train"].kind == "list"
    assert fields["train.lr"].help == "peak learning rate (AdamW)"
    assert fields["data.source"].help.startswith('"synthetic" (built in, no download)')  # a '#' inside quotes
    sections = {g.key for g in schema.groups()}
    leaves = {k for k in _leaves(yaml.safe_load(text), sections)}
    assert leaves == set(fields)  # one field per key of params.yaml, no more
    assert all(fields[k].help for k in leaves), [k for k in leaves if not fields[k].help]
    assert {"evaluate.spectra", "evaluate.significance", "evaluate.ensemble", "evaluate.stations"} <= sections


def _leaves(tree, sections, prefix=""):
    """The keys of params.yaml that are values: a mapping is a section only where the models say so (data.rename
    is a value that happens to be a mapping)."""
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and dotted in sections:
            yield from _leaves(value, sections, dotted + ".")
        else:
            yield dotted


def test_fields_come_from_the_annotations_not_the_names(ui):
    """Every kind of annotation, in a model of made-up names: the form is driven by the types alone."""
    from typing import Literal

    from pydantic import BaseModel, Field

    schema = ui["schema"]

    class Inner(BaseModel):
        pair: tuple[float, float] = (1.0, 2.0)

    class Outer(BaseModel):
        paths: str | list[str] = "here"
        table: dict[str, int] = {}
        maybe: int | None = None
        steps: list[int] = Field(default_factory=lambda: [1, 2])
        mode: Literal["a", "b"] = "a"
        inner: Inner = Inner()

    groups = schema.groups(model=Outer)
    assert [g.key for g in groups] == ["", "inner"]
    fields = {f.key: f for g in groups for f in g.fields}
    got = {k: (f.kind, f.members, f.type, f.default) for k, f in fields.items()}
    assert got == {
        "paths": ("union", ("str", "list"), "str or list of str", "here"),
        "table": ("mapping", (), "mapping str: int", {}),
        "maybe": ("union", ("int", "none"), "int or empty", None),
        "steps": ("list", (), "list of int", [1, 2]),
        "mode": ("choice", (), "one of a | b", "a"),
        "inner.pair": ("list", (), "list [float, float]", [1.0, 2.0]),
    }
    parse = schema.parse
    assert parse(fields["paths"], "[a/*.nc, b/*.nc]") == ["a/*.nc", "b/*.nc"]
    assert parse(fields["paths"], "2000") == "2000" and parse(fields["paths"], "") == ""  # text, not a number
    assert parse(fields["paths"], "{a: 1}") == "{a: 1}"  # a mapping is no member: the text is a path
    with pytest.raises(ValueError, match=r"bad value for 'paths': '\[a, b' \(not valid YAML"):
        parse(fields["paths"], "[a, b")  # a list with a typo, not a path that starts with '['
    assert parse(fields["table"], "{x: 1, y-z: 2}") == {"x": 1, "y-z": 2}
    assert parse(fields["maybe"], "") is None and parse(fields["maybe"], "3") == 3
    assert parse(fields["maybe"], "x") == "x"  # left bad for the validator


def test_every_value_of_the_file_round_trips_through_the_form(ui, params):
    """What the page shows for each key reads back as the file's value (an empty static_source stays '', not
    None; a mapping stays a mapping) ..."""
    schema, params_file = ui["schema"], ui["params_file"]
    raw = params_file.read_raw(params.read_text())
    fields = schema.fields_by_key()
    for key, f in fields.items():
        value = schema.lookup(raw, key, f.default)
        assert schema.parse(f, schema.text_of(value)) == value, key
    # ... so the untouched form is no change at all, and other values of the same keys round-trip too
    texts = {key: schema.text_of(schema.lookup(raw, key, f.default)) for key, f in fields.items()}
    assert params_file.changes_from_form(raw, texts, fields) == {}
    for key, value in {"data.source": ["era5/t2m/*.nc", "era5/z/*.nc"], "data.static_source": "inv/*.nc",
                       "data.rename": {"tmp2m": "2m_temperature", "VAR_2T": "2m_temperature"},
                       "evaluate.spectra.band": [20.0, 70.5]}.items():
        assert schema.parse(fields[key], schema.text_of(value)) == value, key


def test_save_of_lists_mappings_and_unions_keeps_every_comment(ui, params, pkg_name):
    """A value changes type (data.source from one path to a list), a mapping is filled, a union takes a path: only
    those lines change, each keeps its comment, and the CLI reads exactly the values entered."""
    schema, params_file = ui["schema"], ui["params_file"]
    before = params.read_text()
    raw = params_file.read_raw(before)
    texts = {"data.source": "[era5/t2m/*.nc, 'era5/z*.nc']", "data.variables": "[2m_temperature, geopotential]",
             "data.rename": "{tmp2m: 2m_temperature, VAR_2T: 2m_temperature}", "data.static": "[land_sea_mask]",
             "data.static_source": "era5/invariant.nc", "evaluate.spectra.band": "[20, 70.5]"}
    changes = params_file.changes_from_form(raw, texts, schema.fields_by_key())
    assert sorted(changes) == sorted(texts)
    params_file.save(params, changes)
    after = params.read_text()
    diff = [d for d in difflib.ndiff(before.splitlines(), after.splitlines()) if d[:1] in "+-"]
    assert len(diff) == 2 * len(changes), "\n".join(diff)
    for old, new in zip(diff[0::2], diff[1::2], strict=True):  # same key, same comment, value on the key's line
        assert old[2:].split(":")[0] == new[2:].split(":")[0]
        assert old[old.index(" #"):].strip() == new[new.index(" #"):].strip()
    assert "  rename: {tmp2m: 2m_temperature, VAR_2T: 2m_temperature} #" in after
    config = importlib.import_module(f"{pkg_name}.config")
    loaded = config.load_params(params)
    assert loaded.data.source == ["era5/t2m/*.nc", "era5/z*.nc"] and loaded.data.static_source == "era5/invariant.nc"
    assert loaded.data.rename == {"tmp2m": "2m_temperature", "VAR_2T": "2m_temperature"}
    assert loaded.evaluate.spectra.band == (20.0, 70.5)
    # and back: one path again, an empty mapping
    params_file.save(params, {"data.source": "synthetic", "data.rename": {}, "data.variables": []})
    loaded = config.load_params(params)
    assert (loaded.data.source, loaded.data.rename, loaded.data.variables) == ("synthetic", {}, [])
    assert [line[line.index(" #"):] for line in before.splitlines() if " #" in line] == \
           [line[line.index(" #"):] for line in params.read_text().splitlines() if " #" in line]


def test_a_bad_list_or_mapping_writes_nothing_and_gets_the_clis_message(ui, params, pkg_name, capsys):
    schema, params_file = ui["schema"], ui["params_file"]
    before = params.read_bytes()
    raw = params_file.read_raw(params.read_text())
    fields = schema.fields_by_key()
    cli = importlib.import_module(f"{pkg_name}.cli")
    for key, text, line, says in (
            ("data.source", "[era5/a.nc, 5]", "  source: [era5/a.nc, 5]  ",
             "bad value for 'data.source': ['era5/a.nc', 5] (expected str or list[str])"),  # one line, no 'str' key
            ("data.rename", "{tmp2m: 5}", "  rename: {tmp2m: 5}  ", "bad value for 'data.rename.tmp2m': 5")):
        changes = params_file.changes_from_form(raw, {key: text}, fields)
        with pytest.raises(Exception) as caught:
            params_file.save(params, changes)
        assert params.read_bytes() == before
        by_key, other = params_file.errors_by_key(caught.value, list(fields))
        assert list(by_key) == [key] and len(by_key[key]) == 1 and not other, str(caught.value)
        assert says in by_key[key][0]
        name = key.split(".")[1]
        bad = params.read_text().replace(next(x for x in params.read_text().splitlines()
                                              if x.startswith(f"  {name}: ")).split("#")[0], line)
        params.write_text(bad)
        assert cli.main(["check-params"]) != 0
        assert capsys.readouterr().err.strip() == f"error: {by_key[key][0]}"
        params.write_bytes(before)


def test_values_read_like_the_file(ui, project_root):
    schema = ui["schema"]
    raw = yaml.safe_load((project_root / "params.yaml").read_text())
    fields = schema.fields_by_key()
    assert schema.parse(fields["train.lr"], "1e-3") == 0.001  # a number, though YAML 1.1 reads a string
    assert schema.parse(fields["train.lr"], "2") == 2.0 and isinstance(schema.parse(fields["train.lr"], "2"), float)
    assert schema.parse(fields["model.width"], "48") == 48
    assert schema.parse(fields["model.width"], "abc") == "abc"  # left bad for the validator to name
    assert schema.parse(fields["data.start"], "2000-01-01") == "2000-01-01"  # a string field stays a string
    assert schema.parse(fields["evaluate.key_leads_hours"], "[6, 24]") == [6, 24]
    for key in ("data.splits.train", "evaluate.headline", "train.deterministic", "train.lr", "seed"):
        value = schema.lookup(raw, key)
        assert schema.parse(fields[key], schema.text_of(value)) == value, key


def test_messages_are_the_clis(ui, params, pkg_name, capsys):
    """The form's message for a bad value is the line `check-params` prints for the same value in the file."""
    params_file, schema = ui["params_file"], ui["schema"]
    raw = params_file.read_raw(params.read_text())
    fields = schema.fields_by_key()
    changes = params_file.changes_from_form(raw, {"model.width": "2", "train.lr": "0.001"}, fields)
    with pytest.raises(Exception) as caught:
        params_file.validate(raw, changes)
    by_key, other = params_file.errors_by_key(caught.value, list(fields))
    assert list(by_key) == ["model.width"] and not other
    params.write_text(params.read_text().replace("  width: 32 ", "  width: 2  "))
    cli = importlib.import_module(f"{pkg_name}.cli")
    assert cli.main(["check-params"]) != 0
    assert capsys.readouterr().err.strip() == f"error: {by_key['model.width'][0]}"


def test_save_keeps_every_comment_and_changes_only_those_lines(ui, params, pkg_name):
    params_file = ui["params_file"]
    before = params.read_text()
    changes = {"train.lr": 1e-05, "model.width": 48, "data.end": "2001-04-30T18:00",
               "evaluate.key_leads_hours": [6, 24]}
    params_file.save(params, changes)
    after = params.read_text()
    diff = [d for d in difflib.ndiff(before.splitlines(), after.splitlines()) if d[:1] in "+-"]
    assert len(diff) == 2 * len(changes), "\n".join(diff)
    for old, new in zip(diff[0::2], diff[1::2], strict=True):  # same key, same comment at the same column
        assert old[2:].split(":")[0] == new[2:].split(":")[0]
        assert old.index("#") == new.index("#") and old[old.index("#"):] == new[new.index("#"):]
    assert '  end: "2001-04-30T18:00"' in after and "key_leads_hours: [6, 24]" in after  # quotes and flow list kept
    config = importlib.import_module(f"{pkg_name}.config")
    loaded = config.load_params(params)  # what the CLI reads: floats as floats
    assert (loaded.train.lr, loaded.model.width, loaded.data.end) == (1e-05, 48, "2001-04-30T18:00")
    assert isinstance(yaml.safe_load(after)["train"]["lr"], float)


def test_an_invalid_save_writes_nothing(ui, params):
    params_file = ui["params_file"]
    before = params.read_bytes()
    with pytest.raises(Exception, match=r"bad value for 'model.depth'"):
        params_file.save(params, {"model.depth": 9, "train.lr": 0.001})
    with pytest.raises(Exception, match="changed on disk"):
        params_file.save(params, {"train.lr": 0.001}, expected_sha256="0" * 64)
    assert params.read_bytes() == before
    assert not [p for p in params.parent.iterdir() if p.name != "params.yaml"]  # no temp file left behind


def test_an_unknown_key_names_the_closest(ui, params):
    params_file = ui["params_file"]
    raw = params_file.read_raw(params.read_text())
    with pytest.raises(ValueError, match=r"unknown key 'train.lrr'. Did you mean 'train.lr'\?"):
        params_file.changes_from_form(raw, {"train.lrr": "0.1"}, ui["schema"].fields_by_key())
