"""Shared test setup: the repo root on sys.path (the package imports without installing), one thread, seeds.

One OpenMP thread per process: the tests use tiny models, and several processes run at once (CLI subprocesses,
notebook kernels, 2 torchrun workers); with 2 spinning OpenMP threads each on a 2-core machine, tiny ops ran up to
200x slower. Subprocesses inherit OMP_NUM_THREADS.
"""

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ["OMP_NUM_THREADS"] = "1"  # before torch is imported, and inherited by subprocesses
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import torch  # noqa: E402

torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` (tests/test_cuda.py) are skipped, with the reason shown, where torch sees no GPU."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False); see bench/gpu_check.sh")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# session-scoped OpenAI / Hugging Face weight fixtures, built once for all test files
pytest_plugins = ["weights_fixtures", "script_fixtures"]
