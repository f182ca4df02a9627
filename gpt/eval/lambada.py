"""LAMBADA (Paperno et al. 2016), OpenAI's detokenized test set: predict a passage's last word from the rest.

This is lm-evaluation-harness's `lambada_openai`: context = every space-separated word but the last, target =
" " + the last word (tokenized together with the context, see encode_pair). acc: every target token is the greedy
choice; perplexity: exp(−mean over passages of the target's summed log-probability). GPT-2 124M: acc 0.3256,
perplexity 40.06. (The GPT-2 paper's 45.99 / 35.13 used OpenAI's own detokenization and a stop-word filter.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from gpt.eval.results import Metric, accuracy, sample_stderr
from gpt.eval.scoring import ContinuationScore, encode_pair, score_continuations


def split_passage(text: str) -> tuple[str, str]:
    """(context, " " + last word), splitting on single spaces exactly as the harness's task template does."""
    words = text.split(" ")
    return " ".join(words[:-1]), " " + words[-1]


def score_lambada(model: torch.nn.Module, texts: Sequence[str], enc=None, **kwargs) -> list[ContinuationScore]:
    """The target's score for each passage; kwargs go to score_continuations (batch_size, progress, ...)."""
    if enc is None:
        from gpt.tokenizer import get_tokenizer

        enc = get_tokenizer()
    requests = []
    for text in texts:
        ctx, target = encode_pair(enc, *split_passage(text))
        requests.append((ctx, [target]))
    return [s[0] for s in score_continuations(model, requests, desc="lambada", **kwargs)]


def lambada_metrics(scores: Sequence[ContinuationScore]) -> list[Metric]:
    lls = [s.logprob for s in scores]
    ppl = math.exp(-sum(lls) / len(lls))
    se = sample_stderr(lls)
    return [
        accuracy("lambada", "acc", [s.is_greedy for s in scores], unit="fraction of last words predicted greedily"),
        Metric("lambada", "perplexity", ppl, None if se is None else ppl * se, len(lls),
               "exp(-mean log p(last word)), per passage"),
    ]  # fmt: skip
