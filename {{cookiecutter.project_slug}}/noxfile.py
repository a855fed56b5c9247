"""Sessions of this project: `nox -s tests`, `nox -s lint`, `nox -s bench`, `nox -s lock`.

Each session installs the project from requirements/lock.txt (the exact versions a reviewer gets) into its own
virtual environment under .nox/; `nox -R` reuses them.
"""

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True

LOCK = "requirements/lock.txt"


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
