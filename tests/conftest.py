"""Shared test setup: the repo root on sys.path (the package imports without installing), few threads, seeds."""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import torch  # noqa: E402

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# session-scoped OpenAI / Hugging Face weight fixtures, built once for all test files
pytest_plugins = ["weights_fixtures"]
