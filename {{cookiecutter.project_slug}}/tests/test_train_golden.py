"""Golden losses: the first steps of the default training config on a tiny fixed dataset match a committed file,
so a silent change to training (loss, normalization, initialization, optimizer, schedule, sampling order, data
reading) fails a test instead of quietly changing results.

Tolerance: relative 1e-3 (plus absolute 1e-6) per step. Runs on one machine are bitwise reproducible; the margin
absorbs float differences between CPUs and torch builds (vectorized kernels sum in different orders), while any
real change to training moves these losses by far more (e.g. lr 2.0e-3 -> 2.2e-3 changes them by > 1 % within
20 steps). After an intended change, regenerate and commit the file:

    FORGE_UPDATE_GOLDEN=1 pytest tests/test_train_golden.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from test_train import make_dataset, read_log, run_main, write_params

pytestmark = pytest.mark.filterwarnings("ignore:The data type")

GOLDEN = Path(__file__).parent / "golden" / "train_losses.json"
STEPS = 20
RTOL, ATOL = 1e-3, 1e-6


def golden_losses(root: Path, **overrides) -> list[float]:
    """Template-default model and train settings (batch 16, lr 2e-3, warm-up 50, ...) on an 8 x 16 grid."""
    data = make_dataset(root)
    settings = dict(batch_size=16, warmup_steps=50, max_steps=STEPS, log_every=1, checkpoint_every=1000)
    settings.update(overrides)
    params = write_params(root, data, **settings)
    assert run_main(root, data, params) == 0
    return [float(r["loss"]) for r in read_log(root / "run" / "log.csv")]


def test_first_losses_match_golden(tmp_path):
    losses = golden_losses(tmp_path)
    if os.environ.get("FORGE_UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps({
            "what": f"loss of the first {STEPS} optimizer steps, default model/train params, tiny test dataset",
            "rtol": RTOL, "atol": ATOL, "losses": losses}, indent=1) + "\n")
        pytest.skip(f"wrote {GOLDEN}")
    golden = json.loads(GOLDEN.read_text())["losses"]
    assert len(losses) == len(golden)
    bad = [(i + 1, g, x) for i, (g, x) in enumerate(zip(golden, losses, strict=True))
           if not np.isclose(x, g, rtol=RTOL, atol=ATOL)]
    assert not bad, (f"training changed: (step, golden, now) {bad[:5]}. If intended, regenerate with "
                     "FORGE_UPDATE_GOLDEN=1 pytest tests/test_train_golden.py and commit tests/golden/.")


@pytest.mark.slow
def test_golden_tolerance_catches_a_small_change(tmp_path):
    """The tolerance is meaningful: a 10 % learning-rate change falls outside it."""
    golden = json.loads(GOLDEN.read_text())["losses"]
    changed = golden_losses(tmp_path, lr=2.2e-3)
    assert not np.allclose(changed, golden, rtol=RTOL, atol=ATOL)
