"""Sessions of the template repository.

    python3 -m nox -s demo      bake the default project into ./demo, install it, `dvc repro`, print the scores
    python3 -m nox -s tests     the test suite: bake matrix, bad input, end to end, reviewer flow, report in Chromium
    python3 -m nox -s slurm     cluster tests against a real single-node Slurm on loopback (root, Debian)
    python3 -m nox -s test-env  only the environment that tests and slurm share (.nox/test-env, installed only when
                                its inputs change; CI builds it first, then runs the two sessions side by side)
    python3 -m nox -s lint      ruff on the template's code and on a baked project
    python3 -m nox -s bench     data-pipeline benchmark of a baked project (`-- --quick` for a small one)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.default_venv_backend = "venv"

ROOT = Path(__file__).parent
ARTIFACTS = ROOT / "artifacts"
ENV = {"DVC_NO_ANALYTICS": "1", "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1", "FORGE_ARTIFACTS": str(ARTIFACTS)}


def bake_default(session: nox.Session, out_dir: Path, *answers: str) -> Path:
    """`cookiecutter <this repo> --no-input` into out_dir; returns the project folder."""
    session.run("cookiecutter", str(ROOT), "--no-input", "-f", "-o", str(out_dir), *answers, env=ENV)
    return out_dir / "my-forecast"


def install_template_tools(session: nox.Session) -> None:
    session.install("-e", ".[dev]")


def install_project(session: nox.Session, project: Path, editable: bool = True) -> None:
    """The project's dependencies at the exact versions of its lock file, then the project itself."""
    lock = project / "requirements" / "lock.txt"
    constraint = ["-c", str(lock)] if lock.exists() else []
    session.install(*constraint, *(["-e"] if editable else []), f"{project}[dev,wandb]")


TEST_ENV = ROOT / ".nox" / "test-env"  # one environment for `tests` and `slurm`
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"
# What the test environment is made of: when none of these files changed, it is reused without a pip call.
TEST_ENV_INPUTS = ("pyproject.toml", "{{cookiecutter.project_slug}}/pyproject.toml",
                   "{{cookiecutter.project_slug}}/requirements/lock.txt")


def pip_find_links(python: Path) -> list[str]:
    """The local wheel folders pip is configured with (PIP_FIND_LINKS, pip.conf): uv does not read pip's
    configuration, and a machine's folder may hold torch's CPU build."""
    import re

    listed = subprocess.run([str(python), "-m", "pip", "config", "list"], capture_output=True, text=True).stdout
    found = [os.environ.get("PIP_FIND_LINKS", ""), *re.findall(r"find-links='([^']*)'", listed)]
    return list(dict.fromkeys(link for links in found for link in links.split()))


def test_env(session: nox.Session) -> Path:
    """The python of the test environment: the template's tools and a default bake's dependencies (each test then
    installs its own bake). Shared by `tests` and `slurm`, built once and rebuilt only when its inputs change.
    Installed with uv (pinned in the template's dev tools): about 40 s where pip takes over 3 minutes."""
    import hashlib
    import tomllib

    python = TEST_ENV / "bin" / "python"
    stamp = TEST_ENV / "forge-inputs.sha256"
    digest = hashlib.sha256(b"".join((ROOT / p).read_bytes() for p in TEST_ENV_INPUTS)).hexdigest()
    if python.exists() and stamp.exists() and stamp.read_text() == digest:
        session.log(f"test environment {TEST_ENV} is up to date (inputs unchanged): no install")
        return python
    started = time.perf_counter()
    session.run(sys.executable, "-m", "venv", "--clear", str(TEST_ENV))
    dev_tools = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["dev"]
    session.run(str(python), "-m", "pip", "install", "-q", next(d for d in dev_tools if d.startswith("uv=")))
    # --compile-bytecode, as pip does: uv leaves it to the first import, and where PYTHONDONTWRITEBYTECODE is set (this
    # CI machine) every process then compiles pandas, xarray, torch... again: 3 s instead of 1 s to import xarray,
    # paid by each of the suite's thousand-odd subprocesses (the uv-installed CI ran 1.9 x longer than pip's)
    uv = [str(TEST_ENV / "bin" / "uv"), "pip", "install", "--compile-bytecode", "--python", str(python)]
    session.run(*uv, "-q", "-e", f"{ROOT}[dev]")
    # torch's CPU build first (~200 MB; from PyPI, Linux gets the CUDA build, ~2.5 GB with its nvidia-* wheels): the
    # tests run on CPUs. From pip's local wheel folders, else PyTorch's CPU index (one quick try: where it is out of
    # reach, a registry-only CI, that costs seconds); if neither has it, the lock install below takes it from PyPI.
    lock = (ROOT / TEST_ENV_INPUTS[2]).read_text()
    torch_pin = next(line.strip() for line in lock.splitlines() if line.startswith("torch=="))
    folders = [arg for link in pip_find_links(python) for arg in ("--find-links", link)]
    quick = {**os.environ, "UV_HTTP_TIMEOUT": "10", "UV_HTTP_RETRIES": "0"}
    for source in [[*folders, "--no-index"]] * bool(folders) + [["--index-url", CPU_TORCH_INDEX]]:
        session.log(" ".join(tried := [*uv, "-q", "--no-deps", *source, torch_pin]))
        if subprocess.run(tried, env=quick).returncode == 0:
            break
    deps = Path(tempfile.mkdtemp(prefix="forge-deps-"))
    bin_dir = str(TEST_ENV / "bin")
    session.run(f"{bin_dir}/cookiecutter", str(ROOT), "--no-input", "-f", "-o", str(deps), env=ENV)
    project = deps / "my-forecast"
    session.run(*uv, "-q", "-c", str(project / "requirements" / "lock.txt"), f"{project}[dev,wandb]")
    session.run(str(TEST_ENV / "bin" / "uv"), "pip", "uninstall", "-q", "--python", str(python), "my-forecast")
    stamp.write_text(digest)
    session.log(f"test environment installed in {time.perf_counter() - started:.0f} s")
    return python


def pytest_with_count(session: nox.Session, python: Path, *args: str, env: dict[str, str] | None = None) -> None:
    """pytest in the test environment, failing when it ran no test or skipped one (a skipped test is not a passing
    test). The test environment's bin/ comes first on PATH, as for a user who activated it."""
    report = Path(tempfile.mkdtemp()) / "junit.xml"
    path = f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    session.run(str(python), "-m", "pytest", f"--junitxml={report}", *args,
                env={**ENV, "PATH": path, "VIRTUAL_ENV": str(python.parent.parent), **(env or {})})
    suites = ET.parse(report).getroot()
    suites = [suites] if suites.tag == "testsuite" else list(suites)
    ran = sum(int(s.get("tests", 0)) for s in suites)
    skipped = sum(int(s.get("skipped", 0)) for s in suites)
    session.log(f"pytest ran {ran} tests, skipped {skipped}")
    for artifact in sorted(ARTIFACTS.rglob("*")) if ARTIFACTS.exists() else []:
        if artifact.is_file():
            session.log(f"artifact: {artifact}")
    if ran == 0:
        session.error("pytest ran no test")
    if skipped and os.environ.get("FORGE_ALLOW_SKIPS") != "1":
        session.error(f"{skipped} test(s) skipped; a skipped test is not a passing test (FORGE_ALLOW_SKIPS=1 to allow)")


@nox.session(python=False)
def demo(session: nox.Session) -> None:
    """Bake the default project into ./demo (or the folder given after --), install it, run `dvc repro`."""
    out_dir = Path(session.posargs[0] if session.posargs else ROOT / "demo").resolve()
    if (out_dir / "my-forecast").exists():
        session.error(f"{out_dir / 'my-forecast'} exists; remove it or pass another folder: nox -s demo -- DIR")
    venv = out_dir / ".venv"
    session.run(sys.executable, "-m", "venv", str(venv))
    py = str(venv / "bin" / "python")
    session.run(py, "-m", "pip", "install", "-q", "cookiecutter==2.7.1")
    session.run(str(venv / "bin" / "cookiecutter"), str(ROOT), "--no-input", "-o", str(out_dir), env=ENV)
    project = out_dir / "my-forecast"
    lock = project / "requirements" / "lock.txt"
    session.run(py, "-m", "pip", "install", "-q", *(["-c", str(lock)] if lock.exists() else []), "-e", str(project))
    bin_path = f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}"  # the stages call snakemake from the demo venv
    dvc = str(venv / "bin" / "dvc")
    session.chdir(project)
    # The whole pipeline, as `dvc repro` would run it, with a 4-member ensemble so the report shows its section
    # (an experiment in the workspace: `git diff params.yaml` shows the one change).
    session.run(dvc, "exp", "run", "-S", "evaluate.ensemble.members=4", env={**ENV, "PATH": bin_path})
    metrics = json.loads((project / "results" / "metrics.json").read_text())["rmse"]
    lines = [f"{'RMSE':<18} {'lead':>5}  {'model':>10} {'persistence':>12} {'climatology':>12}"]
    for channel in ("geopotential_500", "temperature_850", "2m_temperature"):
        for lead in ("6h", "24h", "72h"):
            row = metrics[channel]
            lines.append(
                f"{channel:<18} {lead:>5}  {row['model'][lead]:>10.4g} {row['persistence'][lead]:>12.4g}"
                f" {row['climatology'][lead]:>12.4g}"
            )
    print("\n".join(lines))
    session.log("all scores: `dvc metrics show` in the project; curves: `dvc plots show`")
    session.log(f"report: {project / 'results' / 'report.html'}   activate: source {venv}/bin/activate")


@nox.session(python=False)
def tests(session: nox.Session) -> None:
    """The whole suite (no cluster): about 25 minutes on 2 cores. Pass pytest options after --.

    Two pytest-xdist workers: the end-to-end tests (one shared `dvc repro`, group "e2e") and the slow half of the
    default bake's own suite start first, one in each; its quick half goes to the first worker free, and the bake
    matrix, bad input, the covering bakes and the template updates fill in (tests/conftest.py: LONGEST_FIRST)."""
    python = test_env(session)
    ARTIFACTS.mkdir(exist_ok=True)
    # No cluster here: Snakemake's Slurm plugin runs `scontrol show config` each time Snakemake starts, and where a
    # slurm.conf names a controller that is not running (a machine's leftover), that waits 10 s per call.
    pytest_with_count(session, python, "-m", "not slurm", "-n", "2", "--dist", "loadgroup", "--no-loadscope-reorder",
                      "--durations=25",
                      *session.posargs, env={"SLURM_CONF": os.devnull})


@nox.session(python=False, name="test-env")
def build_test_env(session: nox.Session) -> None:
    """Only the test environment of `tests` and `slurm`: CI builds it once, then runs the two at the same time (the
    Slurm tests mostly wait on the scheduler), each seeing it up to date."""
    test_env(session)


@nox.session(python=False)
def slurm(session: nox.Session) -> None:
    """The cluster tests against a real single-node Slurm (started and stopped by the tests); the test environment
    of `tests`, reused."""
    python = test_env(session)
    pytest_with_count(session, python, "-m", "slurm", "--durations=10", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff on the template's tests and noxfile, and on a freshly baked project."""
    session.install("ruff", "cookiecutter==2.7.1")
    session.run("ruff", "check", "tests", "noxfile.py")
    out_dir = Path(tempfile.mkdtemp(prefix="forge-lint-"))
    project = bake_default(session, out_dir)
    session.chdir(project)
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py")
    shutil.rmtree(out_dir, ignore_errors=True)


@nox.session
def bench(session: nox.Session) -> None:
    """The data benchmark of the generated project, run on a fresh bake (`nox -s bench -- --quick`)."""
    install_template_tools(session)
    out_dir = Path(tempfile.mkdtemp(prefix="forge-bench-"))
    project = bake_default(session, out_dir)
    install_project(session, project)
    session.chdir(project)
    session.run("python", "benchmarks/bench_data.py", *session.posargs, env=ENV)
