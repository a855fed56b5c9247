"""Every combination of the choice questions bakes into a clean, lintable, testable project."""

from __future__ import annotations

import ast
import itertools
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import BIN, TEMPLATE, bake, pip_install_editable, project_env, sh

QUESTIONS = json.loads((TEMPLATE / "cookiecutter.json").read_text())
# Questions with a fixed set of answers are free text (so a bad answer reaches the pre-generation hook's message, not
# cookiecutter's traceback); their options are listed once, in `_choices`, the first one being the default.
CHOICES = QUESTIONS["_choices"]
assert set(CHOICES) == {"license", "model", "site", "use_wandb"}, f"update the bake matrix for {sorted(CHOICES)}"
assert all(QUESTIONS[k] == v[0] for k, v in CHOICES.items())
MATRIX = [dict(zip(CHOICES, values, strict=True)) for values in itertools.product(*CHOICES.values())]
ACCOUNT = {"derecho": "UABC0001", "casper": "UABC0001"}
# Template syntax left over: any Jinja tag or a cookiecutter variable. Python files are copied without rendering, so
# there `{{` is an f-string brace; GitHub Actions' own `${{ ... }}` expressions are not Jinja either.
UNRENDERED = re.compile(r"\{\{-?\s*cookiecutter|\{%|\{#|cookiecutter\.[a-z_]+")
UNRENDERED_OUTSIDE_PYTHON = re.compile(r"(?<!\$)\{\{")
PBS_SITES = ("generic-pbs", "derecho", "casper")


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
        if p.suffix != ".j2"  # Jinja templates the package itself renders (cookiecutter copies them unrendered)
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
    # Every bake has every site profile; the site's presets land in its scheduler's profile.
    profiles = {p.name for p in (project / "profiles").iterdir() if p.is_dir()}
    assert profiles == {"default", "local", "slurm", "pbs"}
    slurm = yaml.safe_load((project / "profiles/slurm/config.yaml").read_text())["default-resources"]
    pbs = yaml.safe_load((project / "profiles/pbs/config.yaml").read_text())["default-resources"]
    assert ("slurm_partition" in slurm) is (combo["site"] == "generic-slurm")
    assert ("pbs_queue" in pbs) is (combo["site"] in PBS_SITES)
    assert (slurm.get("slurm_account"), pbs.get("pbs_account")) == (ACCOUNT.get(combo["site"]),) * 2
    # Secrets are never committed, and the README says where they go.
    ignored = sh("git", "check-ignore", ".env", ".netrc", ".dvc/config.local", "keys.local", cwd=project).stdout
    assert ignored.split() == [".env", ".netrc", ".dvc/config.local", "keys.local"]
    assert "## Credentials" in (project / "README.md").read_text()
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


def test_default_bake_is_lint_clean_and_runs_on_slurm_and_pbs(tmp_path):
    """`snakemake --lint` finds nothing (it exits 1 on any lint); a `site=local` project plans the pipeline with the
    Slurm profile by its bare name (installed by `profile install slurm`) and with the PBS profile."""
    project = bake(tmp_path / "default")
    lint = sh("snakemake", "--lint", cwd=project, check=False)
    assert lint.returncode == 0, lint.stdout[-4000:] + lint.stderr[-4000:]
    config = tmp_path / "config-home"
    sh(sys.executable, "-m", "my_forecast.cli", "profile", "install", "slurm", cwd=project, XDG_CONFIG_HOME=str(config))
    for profile in ("slurm", "profiles/pbs"):
        plan = sh("snakemake", "-n", "--profile", profile, cwd=project, XDG_CONFIG_HOME=str(config))
        assert re.search(r"^train\s+1$", plan.stdout + plan.stderr, re.M), (plan.stdout + plan.stderr)[-3000:]


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


# An answer changes only these files of a bake (Python code and tests are copied unrendered), which
# test_answers_change_only_the_rendered_files keeps true; profiles/ is a folder.
RENDERED_BY_ANSWERS = {"LICENSE", "README.md", "params.yaml", "pyproject.toml", ".cruft.json", ".dvc/config",
                       "profiles/"}
# The generated tests that read those files of the project itself: through the project_root fixture, or a profile.
READS_THE_PROJECT = re.compile(r"project_root|PROJECT_ROOT|profiles/")


def _reading_names(tree: ast.Module, text: str, markers: frozenset[str] = frozenset(),
                   functions_only: bool = False) -> set[str]:
    """The module-level names (functions, fixtures, classes, constants) of a test file whose code mentions
    READS_THE_PROJECT or uses, by name or as a fixture argument, another such name or one of `markers`."""
    defs: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            defs[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and not functions_only:
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                defs.update({n.id: node for n in ast.walk(target) if isinstance(n, ast.Name)})

    def used(node: ast.AST) -> set[str]:
        names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        names |= {a.arg for n in ast.walk(node) if isinstance(n, ast.arguments)
                  for a in (*n.posonlyargs, *n.args, *n.kwonlyargs)}  # fixtures, requested by argument name
        names |= {n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        return names  # (strings: usefixtures("name"))

    reading = {name for name, node in defs.items() if READS_THE_PROJECT.search(ast.get_source_segment(text, node))}
    uses = {name: used(node) - {name} for name, node in defs.items()}
    grew = True
    while grew:
        grew = False
        for name in defs.keys() - reading:
            if uses[name] & (reading | markers):
                reading.add(name)
                grew = True
    return reading


def answer_dependent_tests(project: Path) -> list[str]:
    """pytest ids (file::test) of the bake's tests that read its rendered files (params.yaml, profiles/, ...): a test
    whose code, or the fixtures, helpers and constants of its file or conftest.py that it uses, mentions the project
    folder or a profile. Derived from the tests' code, so a new test is classified as it is written."""
    tests = project / "tests"
    conftest = (tests / "conftest.py").read_text()
    markers = frozenset(_reading_names(ast.parse(conftest), conftest, functions_only=True))  # project_root, ...
    selected = []
    for path in sorted(tests.glob("test_*.py")):
        text = path.read_text()
        tree = ast.parse(text)
        reading = _reading_names(tree, text, markers)
        selected += [f"tests/{path.name}::{node.name}" for node in tree.body
                     if isinstance(node, ast.FunctionDef) and node.name.startswith("test_") and node.name in reading]
    return selected


def project_file_names(project: Path) -> dict[str, bytes]:
    """The files the bake committed (not the caches that linting or testing it leaves) and their bytes."""
    names = sh("git", "ls-files", "-z", cwd=project).stdout.split("\0")
    return {name: (project / name).read_bytes() for name in names if name}


def test_answers_change_only_the_rendered_files(matrix_bakes):
    """Every other file is the same in every bake, so the tests that do not read these files need to run on one
    bake only (the default bake's whole suite), and the other bakes run only the tests that do."""
    default = project_file_names(matrix_bakes[combo_id(MATRIX[0])])
    for combo in MATRIX[1:]:
        files = project_file_names(matrix_bakes[combo_id(combo)])
        assert set(files) == set(default), (combo, set(files) ^ set(default))
        changed = {name for name in files if files[name] != default[name]}
        unexpected = {n for n in changed if n not in RENDERED_BY_ANSWERS and not n.startswith("profiles/")}
        assert not unexpected, (combo, unexpected)


@pytest.mark.parametrize("combo", covering_set(), ids=combo_id)
def test_bake_passes_its_own_test_suite(combo, tmp_path):
    """The project's own tests that read what the answers change (fast part; the whole suite runs on the default
    bake below, and the other tests read only files that are the same in every bake), on its own bake so that
    pytest-xdist can run these in any worker."""
    project = bake(tmp_path, **answers(combo))
    pip_install_editable(project)  # its `<package>` command, which the pipeline tests' stages run
    selected = answer_dependent_tests(project)
    files = {test.split("::")[0] for test in selected}
    assert {"tests/test_config.py", "tests/test_profiles.py"} <= files, selected
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-m", "not slow", "-p", "no:cacheprovider", *selected],
        cwd=project,
        env=project_env(project),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-4000:]
    assert re.search(r"\d+ passed", result.stdout), result.stdout[-2000:]


# The default bake's whole suite in two halves, by the project's own `slow` marker (the quick suite its README gives,
# and the rest), each an xdist unit of its own: together they are every test of the suite, and they run side by side.
SUITE_HALVES = {"slow": "slow", "quick": "not slow"}


@pytest.mark.parametrize("half", SUITE_HALVES)
def test_default_bake_passes_its_whole_test_suite(half, tmp_path, artifacts):
    """The default project's full suite, slow tests included (DDP/FSDP under torchrun, resume, report in Chromium)."""
    project = bake(tmp_path)
    pip_install_editable(project)  # installed, as its README says: the UI tests' pipelines run its `<package>` command
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", "--durations=25",
         "-m", SUITE_HALVES[half]],
        cwd=project,
        env=project_env(project, FORGE_ARTIFACTS=str(artifacts)),
        capture_output=True,
        text=True,
    )
    (artifacts / f"generated-suite-{half}.log").write_text(result.stdout + result.stderr)
    print(result.stdout[-3000:])
    assert result.returncode == 0, result.stdout[-8000:] + result.stderr[-4000:]
    summary = result.stdout.strip().splitlines()[-1]
    assert re.search(r"\d+ passed", summary) and "skipped" not in summary and "failed" not in summary, summary
