"""Shared by the tests that drive scripts in-process: each script's main(argv), and the Shakespeare corpus prepared
once per session (a pytest plugin, registered in conftest.py)."""

import importlib.util
from pathlib import Path

import pytest

from gpt.data import prepare_data

ROOT = Path(__file__).resolve().parents[1]


def load_main(name: str):
    """scripts/<name>.py's main(argv), imported from its file (scripts/ is not a package)."""
    spec = importlib.util.spec_from_file_location(f"script_{name}", ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture(scope="session")
def shakespeare_prepared(tmp_path_factory) -> Path:
    """data/shakespeare tokenized (train.bin, val.bin, meta.json) in a temp directory; treat it as read-only."""
    out = tmp_path_factory.mktemp("shakespeare_prepared")
    prepare_data([ROOT / "data" / "shakespeare"], out, val_fraction=0.1, progress=False)
    return out
