"""Shared pytest fixtures and settings."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "test" / "fixtures"
SHARED = REPO.parent / "shared"

# Two cores on CI: keep torch from oversubscribing when several processes run.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="module")
def tiny():
    """The `tiny` network with deterministic synthetic weights on the CPU (tests must not modify it)."""
    from loger_core.model import build_model
    from loger_core.model.synthetic_weights import fill_deterministic_

    return fill_deterministic_(build_model("tiny", device="meta"))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = SHARED / "data"
    if not path.is_dir():
        pytest.skip(f"../shared/data is absent ({path}): real-data tests need the shared folder beside the checkout")
    return path
