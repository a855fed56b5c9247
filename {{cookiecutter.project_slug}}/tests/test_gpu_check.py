"""The GPU check (benchmarks/gpu_check.py) in its CPU smoke mode: every run finishes and reports each figure; a run
that outlives its time box is killed and reported, and the check does not hang."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def run_check(tmp_path: Path, *args: str, timeout: float, env: dict | None = None):
    summary = tmp_path / "summary.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--cpu-smoke", "--json", str(summary), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=tmp_path,
                          env={**os.environ, **(env or {})})
    return done, json.loads(summary.read_text()) if summary.exists() else {}


@pytest.mark.slow
def test_cpu_smoke_runs_every_model_and_strategy(tmp_path):
    done, summary = run_check(tmp_path, timeout=900)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    runs = {(r["model"], r["strategy"]): r for r in summary["runs"]}
    assert set(runs) == {("vit", "ddp"), ("vit", "fsdp"), ("unet", "ddp"), ("unet", "fsdp")}
    for r in runs.values():
        assert "error" not in r, r
        assert r["world"] == 2 and r["step_s"] > 0 and r["tflop_per_step"] > 0 and r["params"] > 0
        assert 0 <= r["data_wait_share"] < 1 and r["queue_depth"] >= 0 and r["loader_batches_per_s"] > 0
        assert len(r["loss_fp32"]) == len(r["loss_bf16"]) == 2 and r["parity_max_rel"] < 0.05
        assert r["device_norm_equal"] is True
    assert "MFU" in done.stdout and "4/4 runs finished" in done.stdout


@pytest.mark.parametrize("box", [2, 12])  # killed while torchrun starts, and once its workers run (own sessions)
def test_a_run_past_its_time_box_is_killed_and_reported(tmp_path, box):
    t0 = time.perf_counter()
    tag = f"FORGE_TEST_TAG={tmp_path}"  # inherited by every process the check starts
    done, summary = run_check(tmp_path, "--models", "vit", "--strategies", "ddp", "--box", str(box), timeout=300,
                              env={"FORGE_GPU_CHECK_STALL": "600", "FORGE_TEST_TAG": str(tmp_path)})
    assert done.returncode == 1, done.stdout[-3000:]
    (run,) = summary["runs"]
    assert run["error"] == f"timed out after {box} s (killed)", run
    assert "vit   ddp   FAILED: timed out" in done.stdout
    # the check returned (its output pipes closed: no process of the run is left holding them) soon after the box
    assert time.perf_counter() - t0 < 120 + box
    assert not processes_with(tag), f"processes of the run survived: {processes_with(tag)}"


def processes_with(entry: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and entry.encode() in (proc / "environ").read_bytes().split(b"\0"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found
