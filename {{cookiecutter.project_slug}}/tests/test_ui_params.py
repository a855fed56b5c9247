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
    leaves = {k for k in _leaves(yaml.safe_load(text))}
    assert leaves == set(fields)  # one field per key of params.yaml, no more
    assert all(fields[k].help for k in leaves), [k for k in leaves if not fields[k].help]


def _leaves(tree, prefix=""):
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _leaves(value, dotted + ".")
        else:
            yield dotted


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
    changes = {"train.lr": 1e-05, "model.width": 48, "data.start": "2000-01-02", "evaluate.key_leads_hours": [6, 24]}
    params_file.save(params, changes)
    after = params.read_text()
    diff = [d for d in difflib.ndiff(before.splitlines(), after.splitlines()) if d[:1] in "+-"]
    assert len(diff) == 2 * len(changes), "\n".join(diff)
    for old, new in zip(diff[0::2], diff[1::2], strict=True):  # same key, same comment at the same column
        assert old[2:].split(":")[0] == new[2:].split(":")[0]
        assert old.index("#") == new.index("#") and old[old.index("#"):] == new[new.index("#"):]
    assert '  start: "2000-01-02"' in after and "key_leads_hours: [6, 24]" in after  # quotes and flow list kept
    config = importlib.import_module(f"{pkg_name}.config")
    loaded = config.load_params(params)  # what the CLI reads: floats as floats
    assert (loaded.train.lr, loaded.model.width, loaded.data.start) == (1e-05, 48, "2000-01-02")
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
