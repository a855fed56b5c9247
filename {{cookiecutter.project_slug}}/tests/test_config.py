"""params.yaml is validated with messages that name the key, the value and the fix."""

from __future__ import annotations

import copy
import importlib

import pytest
import yaml


@pytest.fixture(scope="module")
def config(pkg_name):
    return importlib.import_module(f"{pkg_name}.config")


@pytest.fixture(scope="module")
def raw(project_root):
    return yaml.safe_load((project_root / "params.yaml").read_text())


def edited(raw: dict, dotted: str, value) -> dict:
    out = copy.deepcopy(raw)
    node = out
    *parents, last = dotted.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    return out


def test_shipped_params_are_valid(config, project_root):
    params = config.load_params(project_root / "params.yaml")
    assert params.train.lead_hours % params.data.synthetic.step_hours == 0
    assert set(params.data.splits.ranges()) == {"train", "val", "test"}


def test_every_default_is_commented(project_root):
    """Each knob in params.yaml has a comment saying what it does."""
    for number, line in enumerate((project_root / "params.yaml").read_text().splitlines(), 1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#") and not stripped.endswith(":") and ":" in stripped:
            assert "#" in line, f"params.yaml:{number} has no comment: {line!r}"


@pytest.mark.parametrize(
    "key,value,expected",
    [
        ("train.max_step", 10, "did you mean 'train.max_steps'?"),
        ("model.widht", 10, "did you mean 'model.width'?"),
        ("evaluate.max_lead", 10, "did you mean 'evaluate.max_lead_hours'?"),
        ("train.batch_size", "big", "bad value for 'train.batch_size': 'big'"),
        ("train.deterministic", "perhaps", "bad value for 'train.deterministic'"),
        ("data.end", "1999-12-31", "bad value for 'data.end': '1999-12-31' is before data.start"),
        ("data.splits.test", ["2001-02-01", "2001-05-01"], "bad value for 'data.splits.test': [2001-02-01, "
                                                            "2001-05-01] reaches outside the data"),
        ("evaluate.key_leads_hours", [6, 96], "bad value for 'evaluate.key_leads_hours': [96] lie beyond "
                                              "evaluate.max_lead_hours (72)"),
        ("evaluate.map_leads_hours", [240], "bad value for 'evaluate.map_leads_hours': [240] lie beyond"),
        ("evaluate.max_lead_hours", 3, "bad value for 'evaluate.max_lead_hours': 3 is shorter than one model step"),
    ],
)
def test_errors_name_key_value_and_fix(config, raw, key, value, expected):
    with pytest.raises(config.ParamsError) as caught:
        config.validate_params(edited(raw, key, value), "params.yaml")
    message = str(caught.value)
    assert expected in message and "Fix:" in message and message.startswith("params.yaml: ")


def test_several_problems_are_all_reported(config, raw):
    bad = edited(edited(raw, "train.lr", "x"), "model.name", "resnet")
    with pytest.raises(config.ParamsError) as caught:
        config.validate_params(bad)
    assert len(str(caught.value).splitlines()) == 2


def test_yaml_syntax_error_names_the_file(config, tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  lr: [1,\n")
    with pytest.raises(config.ParamsError, match=r"params.yaml: not valid YAML"):
        config.load_params(path)
