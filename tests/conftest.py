"""Fixtures for the template's tests: bake projects with real cookiecutter, run real git, DVC and Snakemake.

The session's virtual environment (made by `nox -s tests`) already holds the generated project's dependencies;
a baked project is installed into it with `pip install --no-deps -e`, as a user would after `pip install -e .`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cookiecutter.main import cookiecutter

TEMPLATE = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DEFAULT_SLUG = "my-forecast"
DEFAULT_PACKAGE = "my_forecast"
ARTIFACTS = Path(os.environ.get("FORGE_ARTIFACTS", TEMPLATE / "artifacts"))

# The source-fingerprint stage as `dvc status` and `dvc repro` name it: it has its own dvc.yaml (dvcfile.DVC_FILES), so
# that its run on every `dvc repro` rewrites its own small lock file, not the pipeline's dvc.lock
FINGERPRINT_STAGE = "workflow/dvc.yaml:fingerprint"
E2E_TRAIN_STEPS = 300  # train.max_steps of the shared end-to-end project (the default, and the demo's, is 1200)
CI_ENV = {
    "DVC_NO_ANALYTICS": "1",
    "WANDB_MODE": "offline",
    "OMP_NUM_THREADS": "1",
    "GIT_AUTHOR_NAME": "Forge Test",
    "GIT_AUTHOR_EMAIL": "forge-test@example.org",
    "GIT_COMMITTER_NAME": "Forge Test",
    "GIT_COMMITTER_EMAIL": "forge-test@example.org",
}


def project_env(project: Path | None = None, **extra: str) -> dict[str, str]:
    """The environment of a user who activated the venv: its bin/ first on PATH."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(CI_ENV)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    if project is not None:
        env["PYTHONPATH"] = str(project / "src")
    env.update(extra)
    return env


def sh(*cmd: str | Path, cwd: Path, check: bool = True, timeout: float = 1800, **env: str):
    """Run a command like a user in the project folder; on failure show its output."""
    result = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=project_env(cwd, **env), capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} exited {result.returncode}\n--- stdout\n{result.stdout[-6000:]}"
            f"\n--- stderr\n{result.stderr[-6000:]}"
        )
    return result


def clean_copy(source: Path, dest: Path) -> Path:
    """The files a clone of the template has (tracked or not ignored): no caches or venvs of this checkout."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=source, capture_output=True, check=True,
    ).stdout.decode().split("\0")
    for rel in filter(None, listed):
        if (source / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / rel, dest / rel)
    return dest


_CLEAN_TEMPLATE: list[Path] = []


def shipped_template() -> Path:
    """One clean copy of the template per test session."""
    if not _CLEAN_TEMPLATE:
        import tempfile

        _CLEAN_TEMPLATE.append(clean_copy(TEMPLATE, Path(tempfile.mkdtemp(prefix="forge-template-"))))
    return _CLEAN_TEMPLATE[0]


def bake(out_dir: Path, template: Path | None = None, **answers: str) -> Path:
    """Bake the template non-interactively, like `cookiecutter <template> --no-input key=value ...`."""
    template = template or shipped_template()
    out_dir.mkdir(parents=True, exist_ok=True)
    old = dict(os.environ)
    os.environ.update(CI_ENV)
    try:
        return Path(cookiecutter(str(template), no_input=True, extra_context=answers, output_dir=str(out_dir)))
    finally:
        os.environ.clear()
        os.environ.update(old)


def package_of(project: Path) -> str:
    """A bake's Python package: the folder of src/ that holds cli.py."""
    return next(p.parent.name for p in (project / "src").glob("*/cli.py"))


def pip_install_editable(project: Path) -> None:
    """`pip install -e` of a bake (its console script, as a user's venv has it), by the test environment's uv
    (noxfile.py: test_env), once per package name: the script is the same for every bake of that name (its entry point
    `<package>.cli:main`; PYTHONPATH picks each test's own code). Installing again while another worker's pipeline
    runs the script would take it away for a moment (`command not found`); the lock keeps two installs apart."""
    import fcntl

    package = package_of(project)
    with open(BIN.parent / ".forge-pip.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (BIN / package).exists():
            return
        subprocess.run([BIN / "uv", "pip", "install", "-q", "--python", sys.executable, "--no-deps",
                        "--no-build-isolation", "-e", project], check=True)


def read(path: Path) -> str:
    return path.read_text()


# pytest-xdist (`nox -s tests`: -n 2 --dist loadgroup): the tests that share a fixture made once per pytest process
# run in one worker, as one unit, or each worker would make it again (two full pipelines). The units are decided
# here, by test file or name, in the controlling process (which collects nothing): xdist's own `xdist_group` marks
# are lost on pytest 9.2 (pytest-xdist#1386). The collection check below keeps these tables true.
SHARED_FIXTURES = {"reproduced_project": "e2e", "matrix_bakes": "bake-matrix", "good_run": "bad-params"}
GROUP_OF_FILE = {"tests/test_e2e.py": "e2e", "tests/test_reviewer_flow.py": "e2e",
                 "tests/test_bad_params.py": "bad-params"}
GROUP_OF_TEST = {"test_bake_renders_completely": "bake-matrix", "test_bake_passes_its_own_lint": "bake-matrix",
                 "test_answers_change_only_the_rendered_files": "bake-matrix"}


def xdist_unit(nodeid: str) -> str:
    path, _, name = nodeid.partition("::")
    return GROUP_OF_FILE.get(path) or GROUP_OF_TEST.get(name.split("[")[0]) or nodeid


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """Load scheduling over the units of xdist_unit; the biggest units (the shared fixtures' groups) go first, to
    different workers, and single tests fill in around them."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return xdist_unit(nodeid)

        def _assign_work_unit(self, node) -> None:
            """A worker always holds the unit after the one it runs (xdist's heuristic), which waits for it: behind one
            of the longest units, that is a short unit, so that the next long one goes to the other worker."""
            running = {unit for unit, tests in self.assigned_work.get(node, {}).items() if not all(tests.values())}
            if running & set(LONGEST_FIRST):
                short = next((unit for unit in self.workqueue if unit not in LONGEST_FIRST), None)
                if short is not None:
                    self.workqueue.move_to_end(short, last=False)
            super()._assign_work_unit(node)

    return SharedFixtureScheduling(config, log)


# The longest units (minutes each), in the order they start (noxfile.py keeps this order: --no-loadscope-reorder): one
# per worker, the next one to the first worker free; the short ones then fill in around them.
SUITE = "tests/test_bake.py::test_default_bake_passes_its_whole_test_suite"
LONGEST_FIRST = (f"{SUITE}[slow]", "e2e", f"{SUITE}[quick]")


def pytest_collection_modifyitems(config, items):
    rank = {unit: i for i, unit in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(xdist_unit(item.nodeid), len(rank)))  # stable: the rest keep their order
    for item in items:
        for fixture, group in SHARED_FIXTURES.items():
            if fixture in getattr(item, "fixturenames", ()) and xdist_unit(item.nodeid) != group:
                raise pytest.UsageError(f"{item.nodeid} uses the shared fixture {fixture} but is not in the xdist "
                                        f"group {group!r}: add its file to GROUP_OF_FILE or its name to GROUP_OF_TEST "
                                        "in tests/conftest.py")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def reproduced_project(tmp_path_factory) -> Path:
    """The default bake with CI-sized training, installed, after one full `dvc repro`, its results committed and pushed.

    Shared by the end-to-end tests (each test that changes it works on its own `git clone`).
    """
    if shutil.which("git") is None:
        pytest.fail("git is required")
    root = tmp_path_factory.mktemp("e2e")
    project = bake(root)
    pip_install_editable(project)
    # The smallest training that still shows every property these tests check: 300 steps beat persistence and
    # climatology at every lead with a margin (Z500 at 24 h: 0.33 x persistence, 0.30 at the default 1200 steps), and a
    # reviewer's rerun reproduces them byte for byte whatever the length. A user's edit, committed before the run.
    params = project / "params.yaml"
    params.write_text(re.sub(r"(?m)^(  max_steps: )1200\b", rf"\g<1>{E2E_TRAIN_STEPS}", params.read_text(), count=1))
    assert f"max_steps: {E2E_TRAIN_STEPS}" in params.read_text()
    sh("git", "commit", "-qam", f"CI-sized training: {E2E_TRAIN_STEPS} steps", cwd=project)
    sh("dvc", "repro", cwd=project, timeout=3600)
    sh("git", "add", "-A", cwd=project)
    sh("git", "commit", "-q", "-m", "Results of the default pipeline", cwd=project)
    sh("dvc", "push", cwd=project)
    return project
