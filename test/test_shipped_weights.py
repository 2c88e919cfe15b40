"""The shipped default weights: the file matches its record, the record says how it was made."""
from __future__ import annotations

import json

from loger_core.model.selection import BUNDLED_CHECKPOINT, BUNDLED_MODEL
from loger_core.training.train import file_sha256

MAX_BYTES = 25 * 1000 * 1000  # it lives in git


def test_shipped_file_hash_matches_its_record():
    record = json.loads(BUNDLED_CHECKPOINT.with_suffix(".json").read_text())
    assert file_sha256(BUNDLED_CHECKPOINT) == record["sha256"], (
        f"{BUNDLED_CHECKPOINT.name} is not the file its record describes: retrain with loger-train (it writes both)")
    assert BUNDLED_CHECKPOINT.stat().st_size <= MAX_BYTES


def test_record_says_how_the_weights_were_made():
    record = json.loads(BUNDLED_CHECKPOINT.with_suffix(".json").read_text())
    assert record["model"]["name"] == BUNDLED_MODEL == "small"
    training = record["training"]
    assert training["steps"] > 0 and training["seed"] >= 1000 and training["device"]
    assert training["wall_time_s"] > 0 and training["train_seconds_total"] > 0
    assert {"total", "points", "rotation", "translation", "conf"} <= set(training["final_losses"])
    assert training["data"]["width"] == 112 and training["data"]["height"] == 84
    assert "loger_core.training.train" in training["command"]


def test_only_the_shipped_weights_are_in_the_package():
    # Retraining replaces the file rather than adding blobs to git.
    blobs = sorted(p.name for p in BUNDLED_CHECKPOINT.parent.iterdir() if p.suffix in (".safetensors", ".pt", ".pth"))
    assert blobs == [BUNDLED_CHECKPOINT.name]
