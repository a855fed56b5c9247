"""The PBS profile: the qsub command lines Snakemake produces for Derecho and Casper, the status script's mapping of
PBS job states, and (with the local Slurm of `nox -s slurm`) real jobs through PBS-style qsub/qstat/qdel.

The first two use a fake qsub/qstat (tests/cluster/fake-pbs) and need no scheduler; the last uses Debian's
slurm-wlm-torque wrappers over the single-node Slurm that tests/test_slurm.py starts.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from conftest import BIN, bake, sh
from slurm_cluster import local_slurm, small_project_factory  # noqa: F401 (fixtures)

CLUSTER = Path(__file__).parent / "cluster"
FAKE_PBS = CLUSTER / "fake-pbs"


def fake_inputs(project: Path, *extra: str) -> None:
    """Empty stand-ins for the upstream outputs (oldest first), so Snakemake plans only the rule under test."""
    count = sh("python", "-c", "import importlib, sys; sys.path.insert(0, 'src'); "
               "pkg = next(p.parent.name for p in __import__('pathlib').Path('src').glob('*/cli.py')); "
               "c = importlib.import_module(pkg + '.config'); s = importlib.import_module(pkg + '.data.shard'); "
               "print(len(s.plan_blocks(c.load_params('params.yaml'))))", cwd=project).stdout
    paths = ["data/source.fingerprint.json", "data/synthetic.zarr",
             *[f"data/shards/block_{i:04d}.zarr" for i in range(int(count))],
             "data/stats.json", "data/climatology.zarr", "data/stations.csv", *extra]
    for age, rel in zip(range(len(paths), 0, -1), paths, strict=True):
        path = project / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.mkdir() if rel.endswith(".zarr") else path.write_text("{}")
        os.utime(path, (time.time() - 10 * age, time.time() - 10 * age))


def submitted(project: Path, target: str, tmp_path: Path, *args: str) -> list[list[str]]:
    """The qsub argument lists of one `snakemake --profile profiles/pbs TARGET` (the fake qsub runs nothing)."""
    log = tmp_path / f"qsub-{target.replace('/', '_')}.log"
    sh("snakemake", "--profile", "profiles/pbs", "--retries", "0", "--latency-wait", "0",
       "--seconds-between-status-checks", "1", target, *args, cwd=project, check=False, timeout=300,
       FAKE_PBS_LOG=str(log), FAKE_PBS_EXIT="1", PATH=f"{FAKE_PBS}{os.pathsep}{BIN}{os.pathsep}{os.environ['PATH']}")
    assert log.exists(), "the PBS profile submitted nothing"
    return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.fixture(scope="module")
def pbs_sites(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pbs-sites")
    return {site: bake(root / site, site=site, account="UABC0001") for site in ("derecho", "casper")}


# site -> rule -> the qsub line after `qsub` (the log path and the job script follow)
EXPECTED = {
    "derecho": {
        "train": "-N train -l select=1:ncpus=64:ngpus=4:mem=128000mb -l walltime=12:00:00 -A UABC0001 -q main",
        "evaluate": "-N evaluate -l select=1:ncpus=4:mem=16000mb -l walltime=02:00:00 -A UABC0001 -q develop",
    },
    "casper": {
        "train": "-N train -l select=1:ncpus=8:ngpus=1:mem=32000mb -l walltime=12:00:00 -A UABC0001 -q casper",
        "evaluate": "-N evaluate -l select=1:ncpus=4:mem=16000mb -l walltime=02:00:00 -A UABC0001 -q casper",
    },
}


@pytest.mark.parametrize("site", ["derecho", "casper"])
def test_qsub_lines_of_the_site_presets(pbs_sites, site, tmp_path):
    project = pbs_sites[site]
    assert sorted(p.name for p in (project / "profiles").iterdir()) == ["default", "local", "pbs", "slurm"]
    fake_inputs(project, "models/model.pt")
    # evaluate first: the failed (fake) train job's outputs are deleted by Snakemake
    (evaluate,) = submitted(project, "results/metrics.json", tmp_path, "--allowed-rules", "evaluate")
    (train,) = submitted(project, "models/model.pt", tmp_path, "--forcerun", "train")
    for rule, argv in (("train", train), ("evaluate", evaluate)):
        assert " ".join(argv[: argv.index("-j")]) == EXPECTED[site][rule]
        assert argv[argv.index("-j"):-1] == ["-j", "oe", "-o", str(project / "logs" / "pbs" / f"{rule}.log"),
                                             "-r", "y", "-V"]
        assert Path(argv[-1]).name.startswith("snakejob."), argv[-1]


def test_submit_dry_run_prints_the_qsub_command(pbs_sites, tmp_path):
    project = pbs_sites["derecho"]
    jobscript = tmp_path / "job.sh"
    props = {"rule": "shard", "wildcards": {"block": "0003"}, "threads": 1,
             "resources": {"nodes": 1, "tasks": 1, "cpus_per_task": 1, "mem_mb": 4000, "runtime": 30,
                           "pbs_account": "UABC0001", "pbs_queue": "develop", "pbs_extra": "-l job_priority=economy"}}
    jobscript.write_text(f"#!/bin/sh\n# properties = {json.dumps(props)}\necho hi\n")
    out = sh("python3", project / "profiles/pbs/pbs-submit.py", "--dry-run", jobscript, cwd=tmp_path).stdout
    assert out.strip() == (
        "qsub -N shard -l select=1:ncpus=1:mem=4000mb -l walltime=00:30:00 -A UABC0001 -q develop -j oe "
        f"-o {tmp_path}/logs/pbs/shard/0003.log -r y -V -l job_priority=economy {jobscript}")


@pytest.mark.parametrize(("state", "exit_status", "expected"), [
    ("Q", "", "running"), ("H", "", "running"), ("R", "", "running"), ("E", "", "running"),
    ("F", "0", "success"), ("F", "1", "failed"), ("F", "-29", "failed"), ("F", "271", "failed"),
    ("X", "0", "success"), ("unknown", "", "failed"),
])
def test_status_script_maps_pbs_states(pbs_sites, state, exit_status, expected):
    project = pbs_sites["casper"]
    env = {**os.environ, "PATH": f"{FAKE_PBS}{os.pathsep}{os.environ['PATH']}",
           "FAKE_PBS_STATE": state, "FAKE_PBS_EXIT": exit_status}
    done = subprocess.run([project / "profiles/pbs/pbs-status.py", "12.desched1"], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{expected}\n"


# ---------------------------------------------------------------------------------------------------------------
# Real jobs through PBS-style commands (slurm-wlm-torque over the local Slurm started by test_slurm.py's fixture)


@pytest.mark.slurm
def test_pbs_profile_runs_jobs_through_qsub_qstat_qdel(local_slurm, small_project_factory, tmp_path):  # noqa: F811
    project = small_project_factory("generic-pbs", partition="debug")
    run = sh("snakemake", "--profile", "profiles/pbs", "--seconds-between-status-checks", "2", "data/stats.json",
             cwd=project, timeout=600)
    assert (project / "data" / "stats.json").exists(), run.stderr[-3000:]
    assert "Submitted job" in run.stderr and "with external jobid" in run.stderr
    assert sorted(p.name for p in (project / "logs" / "pbs" / "shard").iterdir())  # qsub -o logs, one per shard
    status = project / "profiles/pbs/pbs-status.py"

    def state_of(job_id: str, until: set[str]) -> str:
        for _ in range(120):
            out = sh(status, job_id, cwd=project).stdout.strip()
            if out in until:
                return out
            time.sleep(0.5)
        return out

    script = tmp_path / "job.sh"
    script.write_text(f"#!/bin/sh\n# properties = {json.dumps({'rule': 'check', 'resources': {'runtime': 5}})}\n"
                      "exit 3\n")
    submit = [project / "profiles/pbs/pbs-submit.py", script]
    failing = sh(*submit, cwd=tmp_path).stdout.strip()
    assert state_of(failing, {"success", "failed"}) == "failed"  # the exit status reaches Snakemake

    script.write_text(script.read_text().replace("exit 3", "sleep 300"))
    sleeping = sh(*submit, cwd=tmp_path).stdout.strip()
    assert state_of(sleeping, {"running"}) == "running"
    sh("qdel", sleeping, cwd=tmp_path)  # the profile's cancel command
    assert state_of(sleeping, {"success", "failed"}) == "failed"


def test_pbs_profile_is_cluster_generic_with_the_scripts_beside_it(pbs_sites):
    for project in pbs_sites.values():
        config = yaml.safe_load((project / "profiles/pbs/config.yaml").read_text())
        assert config["executor"] == "cluster-generic"
        for key in ("cluster-generic-submit-cmd", "cluster-generic-status-cmd"):
            script = project / "profiles/pbs" / config[key]
            assert script.is_file() and os.access(script, os.X_OK), script
