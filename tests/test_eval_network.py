"""OpenAI's real GPT-2 124M on the full HellaSwag validation split and LAMBADA test: our numbers equal the published
ones (README, section "Evaluate"). Needs the internet (weights and test sets, ≈ 510 MB) and time: minutes on a GPU,
about an hour on a laptop CPU. Skipped by default; run with `python -m pytest -m network tests/test_eval_network.py`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PUBLISHED = {  # (task, metric): value — build-nanogpt for completion style, lm-evaluation-harness for the others
    ("hellaswag", "completion_acc"): 0.2859,
    ("hellaswag", "completion_acc_norm"): 0.2955,
    ("hellaswag", "acc"): 0.2892,
    ("hellaswag", "acc_norm"): 0.3114,
    ("lambada", "acc"): 0.3256,
    ("lambada", "perplexity"): 40.06,
}


@pytest.mark.network
@pytest.mark.slow
def test_real_124m_reproduces_the_published_hellaswag_and_lambada_numbers(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "load_openai_weights.py"), "--model-size", "124M"],
                       cwd=ROOT, capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    out = tmp_path / "results.json"
    cmd = [sys.executable, str(ROOT / "scripts" / "evaluate.py"), "--model-size", "124M", "--tasks",
           "hellaswag,lambada", "--out", str(out), "--quiet"]  # fmt: skip
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    got = {(m["task"], m["metric"]): m for m in json.loads(out.read_text())["results"]}
    assert got[("hellaswag", "acc")]["n"] == 10_042 and got[("lambada", "acc")]["n"] == 5_153
    for key, value in PUBLISHED.items():
        if key[1] == "perplexity":
            assert got[key]["value"] == pytest.approx(value, rel=1e-3), key
        else:
            assert got[key]["value"] == pytest.approx(value, abs=1e-3), key
