"""Shared by the evaluation tests: the real fixtures (tests/fixtures/eval/, see SOURCE.md there) and a tiny model."""

from __future__ import annotations

from pathlib import Path

import torch

from gpt import GPT, GPTConfig
from gpt.eval import split_wikitext_articles
from gpt.eval.data import read_file

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "eval"
HELLASWAG = FIXTURES / "hellaswag_val_200.jsonl"
LAMBADA = FIXTURES / "lambada_openai_test_200.jsonl"
WIKITEXT = FIXTURES / "wikitext2_test_head.tokens"

# GPT-2's vocabulary (the tasks are tokenized with its BPE), everything else tiny. A context of 96 tokens makes the
# fixtures take every path of the scorer: HellaSwag rows packed four endings to a row, rows one ending each, and
# rows cut from the left to the window (long WikiHow contexts, long LAMBADA passages).
TINY_EVAL = GPTConfig(vocab_size=50257, context_length=96, n_layer=2, n_head=2, n_embd=32)


def peaky_gpt(seed: int = 0, config: GPTConfig = TINY_EVAL) -> GPT:
    """Random weights, with matrices drawn at std 0.3 instead of GPT-2's 0.02: confident, varied predictions, so the
    choices the tasks make are far from the near-ties that float rounding could flip."""
    torch.manual_seed(seed)
    model = GPT(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.3)
    return model.eval()


def hellaswag_rows() -> list[dict]:
    return read_file("hellaswag", HELLASWAG)


def lambada_texts() -> list[str]:
    return read_file("lambada", LAMBADA)


def wikitext_articles() -> list[str]:
    return split_wikitext_articles(WIKITEXT.read_text(encoding="utf-8"))


def wikitext_paragraphs() -> list[str]:
    """The fixture's 201 paragraph lines (no headings, no blank lines): short real documents."""
    lines = WIKITEXT.read_text(encoding="utf-8").split("\n")
    return [line for line in lines if line.strip() and not line.strip().startswith("=")]
