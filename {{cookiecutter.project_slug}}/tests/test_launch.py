"""The training launcher: which command it builds on a laptop, inside Slurm and inside PBS, and its exit codes.

No scheduler is needed: the Slurm queries (`scontrol`) are replaced by a stand-in, the PBS node file is a temp file.
"""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time

import pytest

TRAIN_ARGS = ["--params", "params.yaml", "--run-dir", "runs/train", "--log", "results/train_log.csv"]


@pytest.fixture()
def launch(pkg_name):
    return importlib.import_module(f"{pkg_name}.launch")


def after(cmd: list[str], flag: str) -> str:
    return cmd[cmd.index(flag) + 1]


def test_one_process_trains_in_process(launch):
    plan = launch.plan(1, 1, TRAIN_ARGS, env={})
    assert plan.mode == "inprocess" and plan.command is None and plan.train_args == TRAIN_ARGS


def test_one_node_several_processes_use_torchrun_standalone(launch, pkg_name):
    cmd = launch.plan(1, 4, TRAIN_ARGS, env={}).command
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--standalone" in cmd and after(cmd, "--nproc-per-node") == "4"
    assert "SIGUSR1" in after(cmd, "--signals-to-handle")  # torchrun must not die of Slurm's warning signal
    # the train options follow `--`, so torchrun's parser never sees --log (it would take it for --log-dir)
    assert cmd[cmd.index("-m", 3):] == ["-m", f"{pkg_name}.train", "--", *TRAIN_ARGS]


def test_several_nodes_without_a_scheduler_is_a_clear_error(launch, pkg):
    with pytest.raises(pkg.errors.ForgeError, match="needs a Slurm or PBS allocation"):
        launch.plan(2, 1, TRAIN_ARGS, env={})


def fake_scontrol(launch, monkeypatch, nodes: list[str], cpus: int):
    def run(cmd):
        if cmd[:3] == ["scontrol", "show", "job"]:
            return f"JobId={cmd[-1]} NumNodes={len(nodes)} NumCPUs={cpus * len(nodes)} NodeList=n[1-{len(nodes)}]\n"
        if cmd[:3] == ["scontrol", "show", "hostnames"]:
            return "\n".join(nodes) + "\n"
        raise AssertionError(cmd)

    monkeypatch.setattr(launch, "_run", run)


def test_slurm_runs_one_torchrun_per_node_through_srun(launch, monkeypatch, pkg_name):
    # Snakemake's slurm-jobstep strips SLURM_JOB_NODELIST & co: the launcher asks scontrol for the allocation
    fake_scontrol(launch, monkeypatch, ["n1", "n2"], cpus=32)
    plan = launch.plan(2, 4, TRAIN_ARGS, env={"SLURM_JOB_ID": "4242"})
    cmd = plan.command
    assert plan.mode == "slurm" and cmd[0] == "srun"
    assert {"--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--cpus-per-task=32"} <= set(cmd)
    assert after(cmd, "--nnodes") == "2" and after(cmd, "--nproc-per-node") == "4"
    assert after(cmd, "--rdzv-backend") == "c10d" and after(cmd, "--rdzv-id") == "4242"
    assert after(cmd, "--rdzv-endpoint") == "n1:29742"  # head node : 29500 + job id mod 1000
    assert cmd[-len(TRAIN_ARGS) - 3:] == ["-m", f"{pkg_name}.train", "--", *TRAIN_ARGS]


def test_slurm_uses_the_environment_when_it_is_there(launch, monkeypatch):
    fake_scontrol(launch, monkeypatch, ["a01", "a02", "a03"], cpus=0)
    env = {"SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "a[01-03]", "SLURM_JOB_CPUS_PER_NODE": "16(x2),8"}
    cmd = launch.plan(3, 2, TRAIN_ARGS, env=env, port=12345).command
    assert "--cpus-per-task=8" in cmd and after(cmd, "--rdzv-endpoint") == "a01:12345"


def test_inside_a_slurm_job_step_is_an_error_not_a_hang(launch, monkeypatch, pkg):
    fake_scontrol(launch, monkeypatch, ["n1"], cpus=8)
    with pytest.raises(pkg.errors.ForgeError, match="mpi: 0"):
        launch.plan(1, 2, TRAIN_ARGS, env={"SLURM_JOB_ID": "1", "SLURM_STEP_ID": "0"})


def test_slurm_job_smaller_than_the_rule_asks_is_an_error(launch, monkeypatch, pkg):
    fake_scontrol(launch, monkeypatch, ["n1"], cpus=8)
    with pytest.raises(pkg.errors.ForgeError, match="asks for 2 nodes but this Slurm job has 1"):
        launch.plan(2, 1, TRAIN_ARGS, env={"SLURM_JOB_ID": "1"})


def test_pbs_runs_one_torchrun_per_node_through_mpiexec(launch, tmp_path):
    nodefile = tmp_path / "nodes"
    nodefile.write_text("dec0001\ndec0001\ndec0001\ndec0001\ndec0002\ndec0002\ndec0002\ndec0002\n")
    plan = launch.plan(2, 4, TRAIN_ARGS, env={"PBS_JOBID": "3141.desched1", "PBS_NODEFILE": str(nodefile)})
    cmd = plan.command
    assert plan.mode == "pbs" and cmd[:5] == ["mpiexec", "-n", "2", "-ppn", "1"]
    assert after(cmd, "--nnodes") == "2" and after(cmd, "--nproc-per-node") == "4"
    assert after(cmd, "--rdzv-endpoint") == "dec0001:29641" and after(cmd, "--rdzv-id") == "3141.desched1"


def test_one_pbs_node_needs_no_mpiexec(launch, tmp_path):
    nodefile = tmp_path / "nodes"
    nodefile.write_text("crhtc01\n")
    env = {"PBS_JOBID": "77.casper-pbs", "PBS_NODEFILE": str(nodefile)}
    assert "--standalone" in launch.plan(1, 2, TRAIN_ARGS, env=env).command
    assert launch.plan(1, 1, TRAIN_ARGS, env=env).mode == "inprocess"


def test_exit_code_is_the_trainers_and_75_when_it_checkpointed_on_a_signal(launch, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    args = ["--run-dir", str(run_dir)]
    plan = lambda code: launch.Plan("local", [sys.executable, "-c", f"raise SystemExit({code})"], args)  # noqa: E731
    assert launch.run(plan(0)) == 0
    assert launch.run(plan(3)) == 3
    (run_dir / "REQUEUE").write_text("28\n")  # what the trainer leaves when it checkpointed on SIGTERM/SIGUSR1
    assert launch.run(plan(1)) == launch.REQUEUE_EXIT_CODE  # torchrun reports any failed worker as 1


def test_print_shows_the_command_without_running(launch, capsys):
    assert launch.main(["--nodes", "1", "--nproc-per-node", "2", "--print", "--", *TRAIN_ARGS]) == 0
    assert "torch.distributed.run --standalone" in capsys.readouterr().err


# A stand-in for torchrun: checks that the run folder is locked on its behalf, reports a SIGTERM in a file.
CHILD = """
import fcntl, os, signal, sys, time
try:
    fcntl.flock(os.open(os.environ["FORGE_RUN_LOCK"], os.O_RDWR), fcntl.LOCK_EX | fcntl.LOCK_NB)
    sys.exit(3)  # the lock was free: the launcher did not hold it
except BlockingIOError:
    pass
def stop(signum, frame):  # written whole, then renamed: a reader never sees the file empty
    open(sys.argv[1] + ".part", "w").write(signal.Signals(signum).name)
    os.replace(sys.argv[1] + ".part", sys.argv[1])
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
time.sleep(60)
sys.exit(4)
"""


def start_launcher(pkg_name, tmp_path):
    """`launch.run` of a plan whose command is CHILD, in a process of its own; returns (process, marker file)."""
    marker = tmp_path / "signal"
    (tmp_path / "child.py").write_text(CHILD)
    plan = (f"launch.Plan('local', [sys.executable, {str(tmp_path / 'child.py')!r}, {str(marker)!r}], "
            f"['--run-dir', {str(tmp_path / 'run')!r}])")
    code = f"import sys; from {pkg_name} import launch; sys.exit(launch.run({plan}))"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.stdout.readline().strip() == "ready"  # the child runs, the lock is held for it
    return proc, marker


def test_a_signal_to_the_launcher_reaches_its_child(pkg_name, tmp_path):
    proc, marker = start_launcher(pkg_name, tmp_path)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0  # the child's exit code
    assert marker.read_text() == "SIGTERM"


def test_the_child_gets_sigterm_when_the_launcher_is_killed(pkg_name, tmp_path):
    proc, marker = start_launcher(pkg_name, tmp_path)
    proc.kill()  # SIGKILL: the launcher cannot pass anything on; the kernel's parent-death signal does
    proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.read_text() == "SIGTERM"
