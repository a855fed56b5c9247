"""Sessions of this project: `nox -s tests`, `nox -s lint`, `nox -s bench`, `nox -s scale`, `nox -s gpu`, `nox -s lock`.

Each session installs the project from requirements/lock.txt (the exact versions a reviewer gets) into its own
virtual environment under .nox/; `nox -R` reuses them.
"""

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True



def install(session: nox.Session, extras: str = "dev") -> None:
    session.install("-c", LOCK, "-e", f".[{extras}]")


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (CPU; about a minute). Pass pytest options after --, e.g. `nox -s tests -- -m 'not slow'`."""
    install(session)
    session.run("pytest", *session.posargs, env={"OMP_NUM_THREADS": "1", "DVC_NO_ANALYTICS": "1"})


@nox.session
def lint(session: nox.Session) -> None:
    """ruff: style and common bugs."""
    session.install("ruff")
    session.run("ruff", "check", "src", "tests", "benchmarks", "noxfile.py")


@nox.session
def bench(session: nox.Session) -> None:
    """Data-pipeline throughput against raw reads, measured in the same run (`-- --quick` for a small one)."""
    install(session)
    session.run("python", "benchmarks/bench_data.py", *session.posargs, env={"OMP_NUM_THREADS": "1"})


@nox.session
def scale(session: nox.Session) -> None:
    """Every stage on an ERA5-shaped 0.25 deg store, 3 then 6 weeks: peak memory and throughput (`-- --quick`)."""
    install(session)
    session.run("python", "benchmarks/bench_scale.py", *session.posargs)


@nox.session(python=False)
def gpu(session: nox.Session) -> None:
    """GPU check: bf16 ViT and UNet at 1 deg under torchrun, DDP and FSDP (<= 8 min on one H100/H200); prints step
    time, MFU, peak memory, data wait and bf16/fp32 loss parity. Runs in the current environment, so the machine's
    own CUDA build of torch is used (install the project there first). `nox -s gpu -- --cpu-smoke` on a CPU."""
    session.run("python", "benchmarks/gpu_check.py", *session.posargs, env={"PYTHONUNBUFFERED": "1"})


LOCK = "requirements/lock.txt"
LOCK_HEADER = """\
# Every Python dependency of this project at one exact version (runtime + the dev and wandb extras),
# resolved on Linux x86_64 / Python 3.11 from a fresh virtual environment. A reviewer installs exactly this:
#     pip install -r requirements/lock.txt && pip install -e . --no-deps
# torch carries no build tag: the CPU wheel (2.13.0+cpu) and a CUDA wheel (2.13.0+cu128) both satisfy it; see
# README "Install" for swapping in a cluster's CUDA build. Regenerate after editing pyproject.toml: `nox -s lock`.
"""


@nox.session(python="3.11", venv_backend="venv", reuse_venv=False)
def lock(session: nox.Session) -> None:
    """Resolve pyproject.toml's dependencies in a fresh venv and write every exact version to requirements/lock.txt."""
    import re
    from pathlib import Path

    session.install("-e", ".[dev,wandb]")
    # --all: setuptools is a runtime dependency (torch, zc.lockfile) and must be pinned too; pip itself is not
    frozen = session.run("python", "-m", "pip", "freeze", "--all", "--exclude-editable", silent=True)
    # drop the local build tag (2.13.0+cpu -> 2.13.0) so a CUDA build of the same release satisfies the lock
    lines = [re.sub(r"^(torch[a-z]*==[^+\s]+)\+\S+", r"\1", line) for line in frozen.splitlines()
             if line.strip() and not line.startswith(("#", "-e ", "pip=="))]
    Path(LOCK).parent.mkdir(exist_ok=True)
    Path(LOCK).write_text(LOCK_HEADER + "\n".join(lines) + "\n")
    session.log(f"wrote {len(lines)} pins to {LOCK}")
