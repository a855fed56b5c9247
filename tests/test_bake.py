"""Every combination of the choice questions bakes into a clean, lintable, testable project."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import BIN, TEMPLATE, bake, project_env, sh

QUESTIONS = json.loads((TEMPLATE / "cookiecutter.json").read_text())
CHOICES = {k: v for k, v in QUESTIONS.items() if isinstance(v, list) and not k.startswith("_")}
assert set(CHOICES) == {"license", "model", "site", "use_wandb"}, f"update the bake matrix for {sorted(CHOICES)}"
MATRIX = [dict(zip(CHOICES, values, strict=True)) for values in itertools.product(*CHOICES.values())]
ACCOUNT = {"derecho": "UABC0001", "casper": "UABC0001"}
# Template syntax left over: any Jinja tag or a cookiecutter variable. Python files are copied without rendering, so
# there `{{` is an f-string brace; GitHub Actions' own `${{ ... }}` expressions are not Jinja either.
UNRENDERED = re.compile(r"\{\{-?\s*cookiecutter|\{%|\{#|cookiecutter\.[a-z_]+")
UNRENDERED_OUTSIDE_PYTHON = re.compile(r"(?<!\$)\{\{")
SITE_PROFILE = {"local": None, "generic-slurm": "slurm", "generic-pbs": "pbs", "derecho": "pbs", "casper": "pbs"}


def combo_id(combo: dict) -> str:
    return "-".join(combo.values())


def answers(combo: dict) -> dict:
    return {**combo, "account": ACCOUNT.get(combo["site"], "")}


def text_files(project: Path):
    for path in project.rglob("*"):
        if path.is_file() and ".git" not in path.parts and path.suffix not in {".png", ".pt", ".zarr"}:
            try:
                yield path, path.read_text()
            except UnicodeDecodeError:
                continue


@pytest.fixture(scope="module")
def matrix_bakes(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("matrix")
    return {combo_id(c): bake(root / combo_id(c), **answers(c)) for c in MATRIX}


@pytest.mark.parametrize("combo", MATRIX, ids=combo_id)
def test_bake_renders_completely(combo, matrix_bakes):
    project = matrix_bakes[combo_id(combo)]
    leftovers = [
        f"{p.relative_to(project)}: {m.group(0)!r}"
        for p, t in text_files(project)
        for m in [UNRENDERED.search(t) or (p.suffix != ".py" and UNRENDERED_OUTSIDE_PYTHON.search(t))]
        if m
    ]
    assert not leftovers, "unrendered template syntax:\n" + "\n".join(leftovers)
    assert not any("{{" in part or "cookiecutter" in part for p in project.rglob("*") for part in p.parts[-1:])

    # Every structured file parses, and params.yaml is valid for the project's own config model.
    tomllib.loads((project / "pyproject.toml").read_text())
    for path in [*project.rglob("*.yaml"), *project.rglob("*.yml")]:
        list(yaml.safe_load_all(path.read_text()))
    params = yaml.safe_load((project / "params.yaml").read_text())
    assert params["model"]["name"] == combo["model"]
    assert params["wandb"]["enabled"] is (combo["use_wandb"] == "yes")
    sh(sys.executable, "-m", "my_forecast.cli", "check-params", cwd=project)

    # Options not chosen are gone; the chosen ones are there.
    assert (project / "LICENSE").exists() and not (project / "licenses").exists()
    expected_license = {"MIT": "MIT License", "BSD-3-Clause": "BSD 3-Clause", "Apache-2.0": "Apache License"}
    assert expected_license[combo["license"]] in (project / "LICENSE").read_text()
    profiles = {p.name for p in (project / "profiles").iterdir() if p.is_dir()}
    assert profiles == {"default", "local"} | ({SITE_PROFILE[combo["site"]]} - {None})
    deps = tomllib.loads((project / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("wandb") for d in deps) is (combo["use_wandb"] == "yes")

    # git and DVC are ready: one clean commit, a default remote that exists.
    assert sh("git", "status", "--porcelain", cwd=project).stdout == ""
    assert sh("git", "log", "--oneline", cwd=project).stdout.count("\n") == 1
    assert sh("dvc", "config", "core.remote", cwd=project).stdout.strip() == "storage"
    assert Path(sh("dvc", "config", "remote.storage.url", cwd=project).stdout.strip()).is_dir()
    assert json.loads((project / ".cruft.json").read_text())["context"]["cookiecutter"]["site"] == combo["site"]


@pytest.mark.parametrize("combo", MATRIX, ids=combo_id)
def test_bake_passes_its_own_lint(combo, matrix_bakes):
    project = matrix_bakes[combo_id(combo)]
    result = subprocess.run(
        [BIN / "ruff", "check", "src", "tests", "noxfile.py"], cwd=project, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def covering_set() -> list[dict]:
    """The fewest combinations in which every answer of every question appears, the defaults (first answers) left
    out: the default bake runs its whole suite below. Combination i takes answer i of each question (wrapping)."""
    width = max(len(v) for v in CHOICES.values())
    return [{k: vs[i % len(vs)] for k, vs in CHOICES.items()} for i in range(1, width)]


def test_covering_set_covers_every_answer():
    combos = covering_set()
    for question, options in CHOICES.items():
        seen = {c[question] for c in combos} | {options[0]}  # the default bake's whole suite covers answer 0
        assert seen == set(options), (question, seen)
    assert len(combos) == max(len(v) for v in CHOICES.values()) - 1


@pytest.mark.parametrize("combo", covering_set(), ids=combo_id)
def test_bake_passes_its_own_test_suite(combo, tmp_path):
    """The project's own suite (fast part; the slow part runs on the default bake below), on its own bake so that
    pytest-xdist can run these in any worker."""
    project = bake(tmp_path, **answers(combo))
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-m", "not slow", "-p", "no:cacheprovider"],
        cwd=project,
        env=project_env(project),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-4000:]
    assert re.search(r"\d+ passed", result.stdout), result.stdout[-2000:]


def test_default_bake_passes_its_whole_test_suite(tmp_path, artifacts):
    """The default project's full suite, slow tests included (DDP/FSDP under torchrun, resume, report in Chromium)."""
    project = bake(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA"],
        cwd=project,
        env=project_env(project, FORGE_ARTIFACTS=str(artifacts)),
        capture_output=True,
        text=True,
    )
    (artifacts / "generated-suite.log").write_text(result.stdout + result.stderr)
    print(result.stdout[-3000:])
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-4000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary) and "skipped" not in summary and "failed" not in summary, summary
