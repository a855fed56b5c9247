"""The GPU check (benchmarks/gpu_check.py) in its CPU smoke mode: every run finishes and reports each figure; a run
that outlives its time box is killed and reported, and the check does not hang."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def run_check(tmp_path: Path, *args: str, timeout: float) -> tuple[subprocess.CompletedProcess, dict]:
    summary = tmp_path / "summary.json"
    done = subprocess.run([sys.executable, str(SCRIPT), "--cpu-smoke", "--json", str(summary), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=tmp_path)
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


def test_a_run_past_its_time_box_is_killed_and_reported(tmp_path):
    t0 = time.perf_counter()
    done, summary = run_check(tmp_path, "--models", "vit", "--strategies", "ddp", "--box", "2", timeout=300)
    assert done.returncode == 1, done.stdout[-3000:]
    (run,) = summary["runs"]
    assert run["error"] == "timed out after 2 s (killed)", run
    assert "vit   ddp   FAILED: timed out" in done.stdout
    assert time.perf_counter() - t0 < 120  # the orchestrator itself (synthesizing the data) plus the 2 s box
