"""Our evaluation == lm-evaluation-harness's, end to end, on ≥ 200 real examples of each task.

A tiny GPT with random weights is exported to Hugging Face format (gpt.export_hf); the harness (`lm_eval`, its `hf`
backend, its own task configs with only the data source replaced by the fixtures: bench/lm_eval_offline.py) scores it
in a subprocess with no network; we score our model in this process. Accuracies must be equal exactly, perplexities
and bits per byte to 1e-4 relative. The model's 96-token context sends the fixtures through every path of our
scorer (packed endings, single rows, rows cut to the window; multi-window WikiText documents).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from eval_helpers import HELLASWAG, LAMBADA, hellaswag_rows, lambada_texts, peaky_gpt, wikitext_paragraphs

from gpt import export_hf
from gpt.eval import (
    hellaswag_metrics,
    lambada_metrics,
    score_hellaswag,
    score_lambada,
    wikitext_metrics,
    wikitext_scores,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """(ours, theirs): {task: {metric: value}} from the same weights and the same 200+ examples per task."""
    tmp = tmp_path_factory.mktemp("parity")
    model = peaky_gpt()
    export_hf(model, tmp / "hf")
    docs = wikitext_paragraphs()  # 201 real documents (WikiText-2 test paragraphs), up to ~500 tokens each
    pages = tmp / "pages.jsonl"
    pages.write_text("".join(json.dumps({"page": d}) + "\n" for d in docs), encoding="utf-8")
    out = tmp / "harness.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp / "hf_home"), "TOKENIZERS_PARALLELISM": "false"}
    cmd = [
        sys.executable,
        str(ROOT / "bench" / "lm_eval_offline.py"),
        "--hf-dir",
        str(tmp / "hf"),
        "--hellaswag",
        str(HELLASWAG),
        "--lambada",
        str(LAMBADA),
        "--wikitext-pages",
        str(pages),
        "--batch-size",
        "1",
        "--out",
        str(out),
    ]  # fmt: skip  (batch 1: fastest for the harness on a CPU)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    theirs = json.loads(out.read_text())["results"]

    rows, texts = hellaswag_rows(), lambada_texts()
    assert len(rows) == len(texts) == 200 and len(docs) == 201
    metrics = hellaswag_metrics(score_hellaswag(model, rows, "harness"), "harness")
    metrics += lambada_metrics(score_lambada(model, texts))
    metrics += wikitext_metrics(docs, wikitext_scores(model, docs), 96, 96)
    ours: dict[str, dict[str, float]] = {}
    for m in metrics:
        ours.setdefault(m.task, {})[m.metric] = m.value
    return ours, theirs


def test_hellaswag_acc_and_acc_norm_equal_the_harness(both):
    ours, theirs = both
    assert theirs["hellaswag"]["sample_len"] == 200
    assert ours["hellaswag"]["acc"] == theirs["hellaswag"]["acc"]
    assert ours["hellaswag"]["acc_norm"] == theirs["hellaswag"]["acc_norm"]
    assert ours["hellaswag"]["acc"] != ours["hellaswag"]["acc_norm"]  # two different decisions, both matched


def test_lambada_acc_and_perplexity_equal_the_harness(both):
    ours, theirs = both
    assert theirs["lambada"]["sample_len"] == 200
    assert ours["lambada"]["acc"] == theirs["lambada"]["acc"]
    assert ours["lambada"]["perplexity"] == pytest.approx(theirs["lambada"]["perplexity"], rel=1e-4)


def test_wikitext_word_perplexity_and_bits_per_byte_equal_the_harness(both):
    ours, theirs = both
    assert theirs["wikitext"]["sample_len"] == 201
    for metric in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        assert ours["wikitext"][metric] == pytest.approx(theirs["wikitext"][metric], rel=1e-4), metric
