"""Runs that die cleanly, through the launcher the workflow uses (launcher -> torchrun -> 2 gloo workers):
kill -9 of the launcher's process group leaves no process behind and a rerun resumes bit for bit; SIGTERM to the
launcher's PID alone ends in checkpoint + exit 75; a second run on a locked run folder fails at once."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import (
    PACKAGE,
    last_logged_step,
    launch_command,
    make_dataset,
    pids_mentioning,
    run_main,
    seeded_random,
    subprocess_env,
    weights,
    write_params,
)

checkpoint = importlib.import_module(f"{PACKAGE}.checkpoint")
errors = importlib.import_module(f"{PACKAGE}.errors")
lifetime = importlib.import_module(f"{PACKAGE}.lifetime")

pytestmark = [pytest.mark.filterwarnings("ignore:The data type")]

SETTINGS = dict(batch_size=4, max_steps=24, checkpoint_every=1, keep_checkpoints=2, warmup_steps=4, log_every=1)


def _start(root, data, params, run: str) -> subprocess.Popen:
    """The launcher with 2 processes, in a process group of its own (so the test can kill that group)."""
    return subprocess.Popen(launch_command(root, data, params, run, nproc=2), cwd=root, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for_step(proc: subprocess.Popen, log, step: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while last_logged_step(log) < step:
        assert proc.poll() is None, f"exit {proc.returncode} before step {step}\n{proc.communicate()[1][-4000:]}"
        assert time.monotonic() < deadline, f"no step {step} within {timeout} s"
        time.sleep(0.02)


def _gone(marker: str, timeout: float = 15) -> list[int]:
    """Processes still mentioning `marker` after waiting up to `timeout` seconds for them to end."""
    deadline = time.monotonic() + timeout
    while (left := pids_mentioning(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


@pytest.mark.slow
def test_kill_9_of_the_launcher_group_leaves_no_process_and_the_rerun_is_bitwise(tmp_path):
    data = make_dataset(tmp_path, ntimes=48, block=24)
    params = write_params(tmp_path, data, **SETTINGS)
    ref = subprocess.run(launch_command(tmp_path, data, params, "ref", nproc=2), cwd=tmp_path, env=subprocess_env(),
                         capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-4000:]

    at = seeded_random().randint(3, SETTINGS["max_steps"] - 8)
    print("kill -9 at step", at)
    run_dir = tmp_path / "run"
    proc = _start(tmp_path, data, params, "run")
    _wait_for_step(proc, run_dir / "log.csv", at)
    alive = pids_mentioning(str(run_dir))
    assert len(alive) >= 4, alive  # launcher, torchrun, 2 workers (each in a session of its own)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher's group: the launcher and torchrun, not the workers
    proc.communicate(timeout=60)
    killed_at = last_logged_step(run_dir / "log.csv")
    assert not _gone(str(run_dir), timeout=5), "workers outlived their launcher"
    # ... and trained no further (orphans would go on to the end and write the model)
    assert last_logged_step(run_dir / "log.csv") <= killed_at + 1 and not (run_dir / "model.pt").exists()

    again = subprocess.run(launch_command(tmp_path, data, params, "run", nproc=2), cwd=tmp_path,
                           env=subprocess_env(), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "resumed from" in again.stderr
    expected, got = weights(tmp_path / "ref" / "model.pt"), weights(run_dir / "model.pt")
    assert all(torch.equal(got[k], expected[k]) for k in expected), f"weights differ after kill -9 at step {at}"


@pytest.mark.slow
def test_sigterm_to_the_launcher_pid_alone_checkpoints_and_exits_75(tmp_path):
    data = make_dataset(tmp_path, ntimes=48, block=24)
    params = write_params(tmp_path, data, **{**SETTINGS, "max_steps": 400, "checkpoint_every": 1000})
    run_dir = tmp_path / "run"
    proc = _start(tmp_path, data, params, "run")
    _wait_for_step(proc, run_dir / "log.csv", 2)
    proc.send_signal(signal.SIGTERM)  # the launcher only: torchrun and the workers hear it from the launcher
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, f"exit {proc.returncode}\n{err[-4000:]}"
    stopped = int((run_dir / "REQUEUE").read_text())
    assert 2 <= stopped < 400
    assert checkpoint.list_checkpoints(run_dir / "checkpoints")[0].name == f"step_{stopped:08d}.pt"
    assert not _gone(str(run_dir))


def test_a_second_run_on_a_locked_run_folder_fails_at_once(tmp_path):
    data = make_dataset(tmp_path, ntimes=48, block=24)
    params = write_params(tmp_path, data, max_steps=2)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "log.csv").write_text("kept\n")
    hold = (f"from {PACKAGE}.lifetime import RunLock; import time; RunLock({str(run_dir)!r}).acquire(); "
            "print('locked', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", hold], env=subprocess_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        launched = subprocess.run(launch_command(tmp_path, data, params, "run", nproc=2), cwd=tmp_path,
                                  env=subprocess_env(), capture_output=True, text=True, timeout=120)
        assert launched.returncode == errors.USER_ERROR_EXIT_CODE, launched.stderr[-3000:]
        assert f"another training run is using this run folder (pid {holder.pid} " in launched.stderr
        assert time.monotonic() - started < 20  # no rendezvous, no hang
        with pytest.raises(errors.ForgeError, match=f"{run_dir}: another training run is using this run folder"):
            run_main(tmp_path, data, params)  # the trainer itself (1 process, no launcher) checks too
        assert (run_dir / "log.csv").read_text() == "kept\n"  # nothing in the folder was touched
    finally:
        holder.kill()
        holder.wait()
    with lifetime.RunLock(run_dir):  # the kernel released the dead holder's lock
        pass
