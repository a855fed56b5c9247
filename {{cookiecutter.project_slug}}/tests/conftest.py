"""Shared fixtures. The package is found under src/, never named, so these tests run in any baked project."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PACKAGE = os.environ.get("FORGE_PKG") or next(p.parent.name for p in sorted((PROJECT_ROOT / "src").glob("*/cli.py")))

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def pkg():
    """The project's package module."""
    return importlib.import_module(PACKAGE)


@pytest.fixture(scope="session")
def pkg_name() -> str:
    return PACKAGE


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT


@pytest.fixture()
def python() -> str:
    return sys.executable
