"""Bad input gets one clear error naming the question or key and the fix, and deletes nothing already there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import BIN, CI_ENV, bake, project_env, shipped_template

# (answers, the question the message must name, words the message must contain)
BAD_ANSWERS = [
    ({"project_slug": "My Forecast"}, "project_slug", "lowercase"),
    ({"project_slug": "9lives"}, "project_slug", "starting with a letter"),
    ({"package_name": "my-forecast"}, "package_name", "valid lowercase Python package name"),
    ({"package_name": "class"}, "package_name", "valid lowercase Python package name"),
    ({"package_name": "torch"}, "package_name", "shadow"),
    ({"author_email": "not-an-email"}, "author_email", "e-mail"),
    ({"site": "derecho", "account": ""}, "account", "required on Derecho"),
    ({"site": "casper", "account": "bad account!"}, "account", "project code"),
    ({"gpus_per_node": "-2"}, "gpus_per_node", "whole number from 0 to 16"),
    ({"gpus_per_node": "four"}, "gpus_per_node", "whole number"),
    ({"data_source": "ftp://example.org/era5.zarr"}, "data_source", "unsupported URL scheme"),
    ({"data_source": "/data/era5.csv"}, "data_source", "zarr store or netCDF"),
    ({"dvc_remote": "dropbox://me/remote"}, "dvc_remote", "URL scheme DVC cannot use"),
    ({"site": "generic-slurm", "partition": ""}, "partition", "partition"),
    ({"model": "transformer9000"}, "model", "is not one of the options. Fix: use one of unet, vit"),
    ({"site": "derecko"}, "site", "did you mean 'derecho'?"),
    ({"license": "mit"}, "license", "did you mean 'MIT'?"),
    ({"use_wandb": "maybe"}, "use_wandb", "use one of no, yes"),
]


@pytest.mark.parametrize(
    "answers,question,words", BAD_ANSWERS, ids=[f"{q}:{list(a.values())[-1]}" for a, q, _ in BAD_ANSWERS]
)
def test_bad_cookiecutter_answer(tmp_path, answers, question, words):
    keep = tmp_path / "earlier-work.txt"
    keep.write_text("produced before the failed bake")
    args = [f"{k}={v}" for k, v in answers.items()]
    result = subprocess.run(
        [BIN / "cookiecutter", shipped_template(), "--no-input", "-o", tmp_path, *args],
        capture_output=True, text=True, env={**project_env(), **CI_ENV},
    )  # fmt: skip
    assert result.returncode != 0
    message = [line for line in result.stderr.splitlines() if line.strip().startswith(f"{question} = ")]
    assert len(message) == 1, result.stderr
    assert words in message[0] and "Fix:" in message[0], message[0]
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr
    # Nothing produced: no half-made project, and what was in the folder is untouched.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["earlier-work.txt"]
    assert keep.read_text() == "produced before the failed bake"


def set_key(params: dict, dotted: str, value) -> dict:
    node = params
    *parents, last = dotted.split(".")
    for part in parents:
        node = node[part]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return params


class _Delete:
    def __repr__(self) -> str:  # a stable test id (pytest-xdist workers must collect the same ids)
        return "<delete>"


DELETE = _Delete()
# (key to set, value, words the one message must contain)
BAD_PARAMS = [
    ("train.lrr", 0.001, "unknown key 'train.lrr'. did you mean 'train.lr'?"),
    ("train.lr", "fast", "bad value for 'train.lr': 'fast'"),
    ("train.lr", -1.0, "greater than 0"),
    ("train.strategy", "zero3", "'ddp' or 'fsdp'"),
    ("train.precision", "fp16", "'fp32' or 'bf16'"),
    ("train.batch_size", 0, "greater than or equal to 1"),
    ("train.lead_hours", 5, "multiple of the data time step"),
    ("model.name", "resnet", "'unet' or 'vit'"),
    ("modle", {"name": "unet"}, "unknown key 'modle'. did you mean 'model'?"),
    ("data.splits.test", ["2000-06-01", "2000-07-01"], "'train' and 'test' overlap"),
    ("data.splits.val", ["2001-02-01", "2001-01-01"], "ends"),
    ("data.start", "yesterday", "not an ISO date"),
    ("data.source", "/data/era5.zarr", "bad value for 'data.variables'"),
    ("data.splits", DELETE, "missing key 'data.splits'"),
    ("evaluate.max_lead_hours", "3 days", "valid integer"),
    ("wandb.mode", "cloud", "'offline', 'online' or 'disabled'"),
    ("data.end", "1999-06-30", "bad value for 'data.end': '1999-06-30' is before data.start"),
    ("evaluate.key_leads_hours", [6, 24, 96], "[96] lie beyond evaluate.max_lead_hours (72)"),
]


@pytest.fixture(scope="module")
def default_project(tmp_path_factory) -> Path:
    return bake(tmp_path_factory.mktemp("bad-params"))


@pytest.mark.parametrize("key,value,words", BAD_PARAMS, ids=[f"{k}={v}" for k, v, _ in BAD_PARAMS])
def test_bad_params(default_project, key, value, words):
    params_file = default_project / "params.yaml"
    original = params_file.read_text()
    try:
        params_file.write_text(yaml.safe_dump(set_key(yaml.safe_load(original), key, value), sort_keys=False))
        env = project_env(default_project)
        result = subprocess.run(
            [sys.executable, "-m", "my_forecast.cli", "check-params"], cwd=default_project, env=env,
            capture_output=True, text=True,
        )  # fmt: skip
        assert result.returncode == 2, result.stdout + result.stderr
        errors = [line for line in result.stderr.splitlines() if "params.yaml" in line]
        assert len(errors) == 1, result.stderr
        assert words in errors[0] and "Fix:" in errors[0], errors[0]
        assert "Traceback" not in result.stderr
        # Snakemake (and so `dvc repro` and the cluster profiles) stops at the same message before any job.
        plan = subprocess.run(
            [BIN / "snakemake", "-n", "--cores", "1"], cwd=default_project, env=env, capture_output=True, text=True
        )
        assert plan.returncode != 0 and words in (plan.stdout + plan.stderr)
    finally:
        params_file.write_text(original)
