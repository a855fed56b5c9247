"""Fixtures for the cluster tests (imported by test_slurm.py and test_pbs.py): a real single-node Slurm on loopback,
started once per test session by tests/cluster/start-local-slurm.sh and stopped, by PID, by stop-local-slurm.sh;
and small baked projects whose whole pipeline runs in a minute or two on 2 CPUs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml
from conftest import bake, sh

CLUSTER = Path(__file__).parent / "cluster"
_RUNNING = {"users": 0, "started": None}


def _start() -> Path:
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail("the Slurm tests start slurmctld/slurmd themselves: they need root on Debian/Ubuntu "
                    "(CI: .ci/run; or run `nox -s slurm` as root in a container)")
    started = Path(tempfile.mkdtemp(prefix="forge-slurm-")) / "started"
    done = subprocess.run([CLUSTER / "start-local-slurm.sh"], env={**os.environ, "SLURM_STARTED": str(started)},
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        _stop(started)
        pytest.fail(f"start-local-slurm.sh failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return started


def _stop(started: Path) -> None:
    subprocess.run([CLUSTER / "stop-local-slurm.sh"], env={**os.environ, "SLURM_STARTED": str(started)},
                   capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="session")
def local_slurm():
    """A running single-node Slurm (partition `debug`, no accounting); the daemons this run started are stopped
    at the end. Shared by the modules that import it (one start, one stop)."""
    if _RUNNING["users"] == 0:
        _RUNNING["started"] = _start()
    _RUNNING["users"] += 1
    yield _RUNNING["started"]
    _RUNNING["users"] -= 1
    if _RUNNING["users"] == 0:
        _stop(_RUNNING["started"])


def small_params(project: Path, max_steps: int = 200) -> None:
    """4 shards of a 16 x 32 grid, a tiny U-Net, a short training with a checkpoint every 10 steps."""
    path = project / "params.yaml"
    p = yaml.safe_load(path.read_text())
    p["data"].update(end="2000-03-31T18:00", block_size=96, splits={
        "train": ["2000-01-01", "2000-02-29T18:00"], "val": ["2000-03-01", "2000-03-10T18:00"],
        "test": ["2000-03-11", "2000-03-31T18:00"]})
    p["data"]["synthetic"].update(nlat=16, nlon=32)
    p["model"].update(width=8, depth=1)
    p["train"].update(batch_size=4, max_steps=max_steps, warmup_steps=5, checkpoint_every=10, log_every=10)
    p["evaluate"].update(max_lead_hours=24, init_every_hours=48, key_leads_hours=[6, 24], map_leads_hours=[24],
                         climatology_window_days=45, batch_size=4)
    path.write_text(yaml.safe_dump(p, sort_keys=False))


def small_resources(project: Path) -> None:
    """Per-rule resources that fit a 2-CPU CI node: training as 2 CPU processes (gloo), like a 2-GPU node."""
    path = project / "profiles" / "default" / "config.yaml"
    profile = yaml.safe_load(path.read_text())
    for resources in profile["set-resources"].values():
        resources.update(mem_mb=1000, cpus_per_task=1, runtime=15)
    profile["set-resources"]["train"].update(tasks=2, mem_mb=3000)
    path.write_text(yaml.safe_dump(profile, sort_keys=False))


@pytest.fixture(scope="session")
def small_project_factory(tmp_path_factory):
    """bake(site, **answers) -> a small project, its params and resources committed (training refuses dirty code)."""

    def make(site: str, **answers: str) -> Path:
        project = bake(tmp_path_factory.mktemp(f"cluster-{site}"), site=site, gpus_per_node="0", **answers)
        small_params(project)
        small_resources(project)
        sh("git", "commit", "-qam", "Small settings for the cluster tests", cwd=project)
        return project

    return make
