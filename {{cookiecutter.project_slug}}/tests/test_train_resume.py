"""Preemption and crashes: SIGTERM/SIGUSR1 -> checkpoint + exit 75 -> rerun gives bitwise-identical weights;
SIGKILL during a checkpoint write never leaves the newest visible checkpoint unreadable."""

from __future__ import annotations

import importlib
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from conftest import (
    PACKAGE,
    last_logged_step,
    make_dataset,
    read_log,
    run_main,
    seeded_random,
    subprocess_env,
    train_command,
    weights,
    write_params,
)

train = importlib.import_module(f"{PACKAGE}.train")
checkpoint = importlib.import_module(f"{PACKAGE}.checkpoint")
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:The data type")]

SETTINGS = dict(batch_size=8, max_steps=120, checkpoint_every=50, keep_checkpoints=2, warmup_steps=10)


def _interrupt_at(root, data, params, run: str, at_step: int, sig: int) -> int:
    """Start training, send `sig` once the log shows step >= at_step; return the step it stopped at."""
    proc = subprocess.Popen(train_command(root, data, params, run), cwd=root, env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = root / run / "log.csv"
    while proc.poll() is None and last_logged_step(log) < at_step:
        time.sleep(0.005)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == train.REQUEUE_EXIT_CODE, f"exit {proc.returncode}\n{out[-2000:]}\n{err[-4000:]}"
    stopped = int((root / run / "REQUEUE").read_text())
    assert stopped >= at_step
    assert checkpoint.list_checkpoints(root / run / "checkpoints")[0].name == f"step_{stopped:08d}.pt"
    return stopped


def test_interrupted_and_resumed_run_is_bitwise_identical(tmp_path):
    data = make_dataset(tmp_path)
    params = write_params(tmp_path, data, **SETTINGS)
    env = subprocess_env()
    ref = subprocess.run(train_command(tmp_path, data, params, "ref"), cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=300)
    assert ref.returncode == 0, ref.stderr[-4000:]
    expected = weights(tmp_path / "ref" / "model.pt")
    expected_loss = [r["loss"] for r in read_log(tmp_path / "ref" / "log.csv")]

    rng = seeded_random()  # FORGE_TEST_SEED picks other steps; the seed and the draws are printed
    cases = [(rng.randint(3, SETTINGS["max_steps"] - 30), sig) for sig in (signal.SIGTERM, signal.SIGUSR1,
                                                                             signal.SIGTERM)]
    print("interrupt at", cases)
    for i, (at, sig) in enumerate(cases):
        run = f"run{i}"
        stopped = _interrupt_at(tmp_path, data, params, run, at, sig)
        assert stopped < SETTINGS["max_steps"]
        again = subprocess.run(train_command(tmp_path, data, params, run), cwd=tmp_path, env=env,
                               capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr[-4000:]
        assert "resumed from" in again.stderr and not (tmp_path / run / "REQUEUE").exists()
        got = weights(tmp_path / run / "model.pt")
        for k in expected:
            assert torch.equal(got[k], expected[k]), f"{k} differs after interrupt at step {stopped} ({sig})"
        assert [r["loss"] for r in read_log(tmp_path / run / "log.csv")] == expected_loss


WRITER = textwrap.dedent(
    """
    import sys, torch
    from {pkg}.checkpoint import save_checkpoint
    directory = sys.argv[1]
    big = torch.randn(12_000_000)  # ~48 MB: a write takes long enough to be killed in the middle of it
    for step in range(1, 10_000):
        save_checkpoint(directory, {{"step": step, "weights": big + step}}, step, keep=2)
        print(step, flush=True)
    """
)


def test_sigkill_during_checkpoint_write_keeps_newest_readable(tmp_path):
    ckpt_dir = tmp_path / "checkpoints"
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(pkg=PACKAGE))
    rng = seeded_random()
    kills = 0
    for _attempt in range(6):
        proc = subprocess.Popen([sys.executable, str(script), str(ckpt_dir)], env=subprocess_env(),
                                stdout=subprocess.PIPE, text=True)
        proc.stdout.readline()  # one checkpoint is complete; the next write is under way
        delay = rng.uniform(0.0, 0.4)
        print(f"kill after {delay:.3f} s")
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        kills += 1
        newest = checkpoint.list_checkpoints(ckpt_dir)[0]
        state = torch.load(newest, weights_only=True)  # must never raise
        assert state["step"] >= 1 and state["weights"].numel() == 12_000_000
        assert len(checkpoint.list_checkpoints(ckpt_dir)) <= 3
    assert kills == 6
    # Partial temp files are invisible to resume and cleaned up by the next successful save.
    state, path = checkpoint.load_latest(ckpt_dir)
    checkpoint.save_checkpoint(ckpt_dir, {"step": 10_000}, 10_000, keep=2)
    assert not list(ckpt_dir.glob(".*tmp*"))


def test_training_killed_at_random_resumes(tmp_path):
    """SIGKILL a real run (checkpoint every step) at a random moment; the rerun resumes and finishes."""
    data = make_dataset(tmp_path)
    params = write_params(tmp_path, data, batch_size=8, max_steps=60, checkpoint_every=1, keep_checkpoints=2)
    proc = subprocess.Popen(train_command(tmp_path, data, params, "run"), cwd=tmp_path, env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    at = seeded_random().randint(2, 40)
    print("kill at step", at)
    while proc.poll() is None and last_logged_step(tmp_path / "run" / "log.csv") < at:
        time.sleep(0.002)
    proc.kill()
    proc.wait()
    newest = checkpoint.list_checkpoints(tmp_path / "run" / "checkpoints")[0]
    torch.load(newest, weights_only=True)
    again = subprocess.run(train_command(tmp_path, data, params, "run"), cwd=tmp_path, env=subprocess_env(),
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-4000:]
    assert torch.load(tmp_path / "run" / "model.pt", weights_only=True)["step"] == 60



def test_a_changed_max_steps_trains_afresh(tmp_path, capsys):
    """A run's checkpoints are not resumed under another train.max_steps (`dvc exp run -S train.max_steps=...` in a
    workspace that keeps runs/): the schedule depends on it, and the longer run's final checkpoint would otherwise be
    handed back as the shorter run's model. The result equals a fresh run's, as a reviewer's clean clone makes it."""
    data = make_dataset(tmp_path)
    settings = dict(batch_size=8, checkpoint_every=4, keep_checkpoints=2, warmup_steps=2)
    params = {}
    for name, steps in (("long", 16), ("short", 8)):
        (tmp_path / name).mkdir()
        params[name] = write_params(tmp_path / name, data, max_steps=steps, **settings)
    assert run_main(tmp_path, data, params["long"], "run") == 0
    assert torch.load(tmp_path / "run" / "model.pt", weights_only=True)["step"] == 16
    capsys.readouterr()
    assert run_main(tmp_path, data, params["short"], "run") == 0
    said = "".join(capsys.readouterr())
    assert "not resuming" in said and "train.max_steps: 16 -> 8" in said, said[-2000:]
    assert run_main(tmp_path, data, params["short"], "fresh") == 0
    assert torch.load(tmp_path / "run" / "model.pt", weights_only=True)["step"] == 8
    got, expected = weights(tmp_path / "run" / "model.pt"), weights(tmp_path / "fresh" / "model.pt")
    assert all(torch.equal(got[k], expected[k]) for k in expected)
