"""The Slurm profile against a real single-node Slurm on loopback (started and stopped by the tests, see
slurm_cluster.py): the whole pipeline through `snakemake --profile slurm` as users type it, and preemption of the
training job (requeue, or the time-limit warning signal) ending with the same weights as an uninterrupted run.
The 1000-shard planning test needs no Slurm.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from conftest import bake, package_of, project_env, sh
from slurm_cluster import local_slurm, small_project_factory  # noqa: F401 (fixtures)

FAST_POLL = ("--slurm-init-seconds-before-status-checks", "2")  # the profile's 20 s, shortened for the test


@pytest.fixture(scope="module")
def slurm_run(local_slurm, small_project_factory, tmp_path_factory):  # noqa: F811
    """One full `snakemake --profile slurm` of a small project baked with the default answers (site: local): every
    bake has the Slurm profile, so moving to a cluster needs no re-bake; (project, snakemake's stderr)."""
    project = small_project_factory("local")
    config_home = tmp_path_factory.mktemp("config-home")  # the user's ~/.config, for `profile install`
    package = package_of(project)
    sh("python", "-m", f"{package}.cli", "profile", "install", "slurm", cwd=project, XDG_CONFIG_HOME=str(config_home))
    run = sh("snakemake", "--profile", "slurm", *FAST_POLL, "--slurm-keep-successful-logs", cwd=project,
             timeout=900, XDG_CONFIG_HOME=str(config_home))
    return project, run.stderr


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


@pytest.mark.slurm
def test_bare_profile_name_runs_the_pipeline_on_slurm(slurm_run):
    project, log = slurm_run
    assert re.search(r"Using profiles? slurm and workflow specific profile profiles/default", log), log[:500]
    for out in ("results/metrics.json", "results/report.html", "models/model.pt"):
        assert (project / out).exists(), out
    jobs = dict(re.findall(r"Job \d+ has been submitted with SLURM jobid (\d+) \(log: .*?/rule_(\w+)/", log))
    shards = sorted((project / "data" / "shards").glob("block_*.zarr"))
    assert len(shards) == 4 and list(jobs.values()).count("shard") == 4  # one Slurm job per shard
    assert {"synthesize", "stats", "train", "evaluate", "report"} <= set(jobs.values())
    train_log = (project / "logs" / "train.log").read_text()
    assert re.search(r"\[launch\] slurm: srun --nodes=1 --ntasks=1 .* -m torch\.distributed\.run --nnodes 1 "
                     r"--rdzv-backend c10d --rdzv-endpoint \S+:\d+ .*--nproc-per-node 2 ", train_log), train_log[:2000]
    assert "2 process(es) on cpu" in train_log


def running_train_job(project: Path, checkpoint: str, timeout: float = 600) -> str:
    """Wait until the train job has written `checkpoint`; its Slurm job id."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (project / "runs" / "train" / "checkpoints" / checkpoint).exists():
            out = subprocess.run(["squeue", "-h", "-o", "%i|%k|%T"], capture_output=True, text=True).stdout
            ids = [line.split("|")[0] for line in out.splitlines() if "|rule_train|RUNNING" in line]
            if ids:
                return ids[0]
        time.sleep(0.2)
    raise AssertionError(f"no running train job wrote {checkpoint} within {timeout} s")


def release_when_pending(job: str, snakemake: subprocess.Popen, timeout: float = 600) -> None:
    """Slurm holds a requeued job for ~2 minutes (BeginTime); start it once it is pending again and the old run's
    processes are gone (released earlier, the old batch script's exit status can land on the new run)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and snakemake.poll() is None:
        state = subprocess.run(["squeue", "-h", "--states=all", "-o", "%T", "-j", job], capture_output=True,
                               text=True).stdout.strip()
        old_run = subprocess.run(["pgrep", "-f", rf"slurmstepd: \[{job}\."], capture_output=True).returncode == 0
        if state == "PENDING" and not old_run:
            time.sleep(2)
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
            return
        time.sleep(0.5)
    raise AssertionError(f"job {job} did not go back to PENDING")


@pytest.mark.slurm
@pytest.mark.parametrize("how", ["scontrol requeue", "USR1 before the time limit"])
def test_preempted_training_resumes_to_the_same_weights(slurm_run, tmp_path, how):
    reference, _ = slurm_run
    project = Path(shutil.copytree(reference, tmp_path / "copy", symlinks=True))
    for out in ("runs", "models", "results", "logs/train.log", ".snakemake/slurm_logs"):
        shutil.rmtree(project / out, ignore_errors=True) if (project / out).is_dir() else (project / out).unlink(True)
    snakemake = subprocess.Popen(
        ["snakemake", "--profile", "profiles/slurm", *FAST_POLL, "--slurm-keep-successful-logs", "models/model.pt"],
        cwd=project, env=project_env(project), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    job = None
    try:
        job = running_train_job(project, "step_00000020.pt")
        if how == "scontrol requeue":  # preemption: Slurm sends SIGTERM, the trainer checkpoints, Slurm requeues
            subprocess.run(["scontrol", "requeue", job], check=True)
        else:  # --signal=USR1@300 arriving: the trainer checkpoints and exits 75, the launcher requeues the job
            subprocess.run(["scancel", "--signal=USR1", job], check=True)
        release_when_pending(job, snakemake)
        log, _ = snakemake.communicate(timeout=600)
    finally:
        if snakemake.poll() is None:  # SIGKILL: Snakemake ignores SIGTERM while it waits on jobs
            snakemake.kill()
            if job:
                subprocess.run(["scancel", job], capture_output=True)
    assert snakemake.returncode == 0, log[-4000:]
    # Snakemake followed the one Slurm job through its requeue: submitted once, finished once
    assert re.findall(r"submitted with SLURM jobid (\d+)", log) == [job], log[-3000:]
    assert "Restarts=1" in subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    train_log = (project / "logs" / "train.log").read_text()
    resumed = re.search(r"resumed from \S+step_(\d+)\.pt at step (\d+)", train_log)
    assert resumed and 20 <= int(resumed.group(2)) < 200, train_log[-2000:]
    final, uninterrupted = weights(project / "models" / "model.pt"), weights(reference / "models" / "model.pt")
    assert final.keys() == uninterrupted.keys()
    assert all(torch.equal(final[k], uninterrupted[k]) for k in final), "resumed training differs from the reference"


def test_planning_1000_shards_takes_seconds(tmp_path, artifacts):
    project = bake(tmp_path, site="generic-slurm", partition="debug")
    params = yaml.safe_load((project / "params.yaml").read_text())
    # 2000 six-hourly steps in blocks of 2 -> 1000 shards
    params["data"].update(end="2001-05-14T18:00", block_size=2, splits={
        "train": ["2000-01-01", "2000-12-31T18:00"], "val": ["2001-01-01", "2001-02-28T18:00"],
        "test": ["2001-03-01", "2001-05-14T18:00"]})
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    start = time.perf_counter()
    run = sh("snakemake", "-n", "--profile", "profiles/slurm", cwd=project, timeout=600)
    seconds = time.perf_counter() - start
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", run.stdout + run.stderr, re.M))
    assert counts.get("shard") == "1000", (run.stdout + run.stderr)[-2000:]
    (artifacts / "slurm_plan_1000_shards.txt").write_text(f"snakemake -n --profile profiles/slurm, 1000 shards: "
                                                          f"{seconds:.1f} s\n")
    print(f"planning 1000 shards: {seconds:.1f} s")
    assert seconds < 60, f"planning 1000 shards took {seconds:.0f} s"


def sbatch_line(resources: dict, requeue: bool = True) -> str:
    """The plugin's own sbatch command for a job with these resources (its code, no Slurm needed)."""
    from types import SimpleNamespace

    from snakemake_executor_plugin_slurm.submit_string import get_submit_command

    class Resources(dict):
        __getattr__ = dict.__getitem__

    job = SimpleNamespace(resources=Resources(resources), threads=1)
    params = {"run_uuid": "RUN", "slurm_logfile": "LOG", "comment_str": "rule_train", "account": "",
              "partition": f" -p {resources['slurm_partition']}", "workdir": "WD"}
    settings = SimpleNamespace(requeue=requeue, no_requeue=False, qos=None, reservation=None)
    return get_submit_command(job, params, settings)


@pytest.mark.parametrize("gpus", ["0", "1", "4"])
def test_train_job_sbatch_line(tmp_path, gpus):
    """The train rule as the slurm plugin submits it: one task per process (1 allowed), GPUs per node, the
    warning signal to the job steps (not `B:`), requeue; the jobstep runs it in the batch step (`mpi` key)."""
    project = bake(tmp_path, site="generic-slurm", partition="gpu", gpus_per_node=gpus)
    workflow = yaml.safe_load((project / "profiles/default/config.yaml").read_text())["set-resources"]["train"]
    site = yaml.safe_load((project / "profiles/slurm/config.yaml").read_text())["default-resources"]
    assert "mpi" in workflow and not workflow["mpi"]
    resources = {**site, **workflow, "slurm_extra": workflow["slurm_extra"].strip("'")}
    line = sbatch_line(resources)
    tasks = max(int(gpus), 1)
    assert f" -p gpu -t 720 --mem {workflow['mem_mb']} --nodes=1 --requeue --ntasks={tasks} " in line, line
    assert "--signal=USR1@300" in line and "B:" not in line
    assert ("--gpus-per-node=" + gpus in line) == (gpus != "0")
