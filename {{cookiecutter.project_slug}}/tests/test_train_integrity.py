"""Files a run reads back carry a checksum checked on read: a damaged checkpoint, model file or stats.json stops
with a message naming the file (or, for the newest checkpoint, is skipped for the one before, with a warning)."""

from __future__ import annotations

import importlib
import json

import pytest
import torch
from conftest import PACKAGE, garble_tensor_bytes, make_dataset, model_file, read_log, run_main, weights, write_params

checkpoint = importlib.import_module(f"{PACKAGE}.checkpoint")
errors = importlib.import_module(f"{PACKAGE}.errors")
integrity = importlib.import_module(f"{PACKAGE}.integrity")
models = importlib.import_module(f"{PACKAGE}.models")
modelfile = importlib.import_module(f"{PACKAGE}.modelfile")

pytestmark = pytest.mark.filterwarnings("ignore:The data type .* does not have a Zarr V3 specification")


# ----------------------------------------------------------------------------------------------------------------
# checkpoints


def _four_steps(root, data):
    params = write_params(root, data, max_steps=4, checkpoint_every=2)
    assert run_main(root, data, params) == 0
    newest = checkpoint.list_checkpoints(root / "run" / "checkpoints")[0]
    assert newest.name == "step_00000004.pt"
    return newest


@pytest.mark.parametrize("damage", ["truncated", "garbled"])
def test_damaged_newest_checkpoint_is_skipped_with_a_warning_naming_it(tmp_path, data, damage):
    newest = _four_steps(tmp_path, data)
    if damage == "truncated":  # as after a crash on a non-atomic filesystem: torch.load fails
        newest.write_bytes(newest.read_bytes()[:1000])
        reason = "unreadable"
    else:  # a flipped block inside the weights: torch.load succeeds, the values are wrong
        garble_tensor_bytes(newest, _stored(newest, "stem.0.weight"))
        reason = "does not match the checksum"
    with pytest.warns(UserWarning, match=f"skipping damaged checkpoint .*step_00000004.pt: .*{reason}"):
        state, path = checkpoint.load_latest(newest.parent)
    assert path.name == "step_00000002.pt" and state["step"] == 2
    # Training resumes from the one before and ends where an uninterrupted run ends, bit for bit.
    params = write_params(tmp_path, data, max_steps=6, checkpoint_every=2)
    with pytest.warns(UserWarning, match="skipping damaged checkpoint .*step_00000004"):
        assert run_main(tmp_path, data, params) == 0
    assert [int(r["step"]) for r in read_log(tmp_path / "run" / "log.csv")] == [1, 2, 3, 4, 5, 6]
    (tmp_path / "ref").mkdir()
    assert run_main(tmp_path / "ref", data, write_params(tmp_path / "ref", data, max_steps=6, checkpoint_every=2)) == 0
    got, expected = weights(tmp_path / "run" / "model.pt"), weights(tmp_path / "ref" / "run" / "model.pt")
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def _stored(path, name: str) -> torch.Tensor:
    """A tensor as stored in the file (read without the checksum check)."""
    return torch.load(path, weights_only=True)["state_dict"][name]


def test_every_checkpoint_damaged_is_an_error_not_a_fresh_start(tmp_path, data):
    newest = _four_steps(tmp_path, data)
    for path in checkpoint.list_checkpoints(newest.parent):
        path.write_bytes(b"\0" * 100)
    params = write_params(tmp_path, data, max_steps=6, checkpoint_every=2)
    with pytest.warns(UserWarning), pytest.raises(errors.IntegrityError, match=r"every checkpoint is damaged .*Fix:"):
        run_main(tmp_path, data, params)


# ----------------------------------------------------------------------------------------------------------------
# models/model.pt


def test_garbled_model_file_stops_with_the_file_and_the_fix(tmp_path):
    path = tmp_path / "models" / "model.pt"
    saved = model_file()
    saved.save(path)
    garble_tensor_bytes(path, saved.state_dict["head.weight"])
    torch.load(path, weights_only=True)  # still loads: only the checksum notices
    for load in (modelfile.ModelFile.load, models.load_model):  # load_model: what evaluation and forecast call
        with pytest.raises(errors.IntegrityError) as err:
            load(path)
        message = str(err.value)
        assert str(path) in message and "does not match the checksum" in message
        assert "dvc checkout models/model.pt" in message and "retrain" in message


def test_truncated_or_foreign_model_file_names_the_file(tmp_path):
    path = tmp_path / "model.pt"
    model_file().save(path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(errors.IntegrityError, match=f"{path}: unreadable .*Fix: restore the file"):
        models.load_model(path)
    torch.save({"state_dict": {}}, path)  # a file from elsewhere (or an older version): no checksum
    with pytest.raises(errors.IntegrityError, match=f"{path}: has no 'sha256' checksum"):
        models.load_model(path)


# ----------------------------------------------------------------------------------------------------------------
# stats.json (written by the stats step with its checksum, read by training)


def _edit_stats(path, drop: str = "", **changes):
    """Edit stats.json by hand (the checksum is left as it was)."""
    stats = json.loads(path.read_text())
    stats.update(changes)
    stats.pop(drop, None)
    path.write_text(json.dumps(stats, indent=1))


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda p: _edit_stats(p, std=[10 * s for s in json.loads(p.read_text())["std"]]),
         "does not match the checksum"),
        (lambda p: p.write_text(p.read_text()[:-40]), "not valid JSON"),
        (lambda p: _edit_stats(p, drop="sha256"), "has no 'sha256' checksum"),
        (lambda p: integrity.write_json_with_checksum(p, {**integrity.read_stats(p), "std": [0.0] * 5}),
         "'std' is not a finite positive number for geopotential_500"),
        (lambda p: p.unlink(), "not found"),
    ],
    ids=["std_x10", "truncated", "no_checksum", "zero_std", "missing"],
)
def test_damaged_stats_stop_training_naming_the_file(tmp_path, damage, message):
    data = make_dataset(tmp_path, ntimes=48)
    damage(data["stats"])
    params = write_params(tmp_path, data, max_steps=2)
    with pytest.raises(errors.IntegrityError) as err:
        run_main(tmp_path, data, params)
    assert str(data["stats"]) in str(err.value) and message in str(err.value)
    assert "dvc repro stats" in str(err.value)
    assert not (tmp_path / "run" / "checkpoints").exists()  # stopped before training


def test_stats_checksum_roundtrip(tmp_path):
    path = tmp_path / "stats.json"
    stats = {"channels": ["a"], "mean": [1.5], "std": [2.0], "diff_std": [0.5], "time_step_hours": 6}
    integrity.write_json_with_checksum(path, stats)
    assert json.loads(path.read_text())["sha256"] == integrity.json_sha256(stats)
    assert integrity.read_stats(path) == stats
