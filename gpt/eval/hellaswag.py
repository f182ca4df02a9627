"""HellaSwag (Zellers et al. 2019): pick the ending of a short scene that a language model finds likeliest.

Two scorings are in use, and published numbers differ between them, so both are here:

  completion  build-nanogpt's (Karpathy): context = `ctx` as it is, candidates " " + ending, context and ending
              tokenized apart. acc: the ending with the largest summed log-probability; acc_norm: the largest mean
              log-probability per ending token. GPT-2 124M: acc 0.2859, acc_norm 0.2955.
  harness     lm-evaluation-harness's `hellaswag` task: context = activity_label + ": " + ctx_a + " " +
              ctx_b.capitalize(), with WikiHow's artefacts removed (" [title]" → ". ", any "[...]" dropped, double
              spaces made single; endings likewise), context + " " + ending tokenized together. acc: the largest
              summed log-probability; acc_norm: the largest log-probability per *character* of the ending.
              GPT-2 124M: acc 0.2892, acc_norm 0.3114.

Ties go to the first ending, as numpy's argmax does in the harness.

During training (pretrain.py), `hellaswag_counts` scores this rank's share of the examples and returns counts to be
all-reduced; see its docstring.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

import torch

from gpt.eval.results import Metric, accuracy
from gpt.eval.scoring import encode_pair, score_continuations

STYLES = ("completion", "harness")


class EndingScores(NamedTuple):
    logprobs: list[float]  # summed log-probability of each ending's tokens (nats)
    n_tokens: list[int]  # tokens of each ending
    n_chars: list[int]  # characters of each ending as the harness counts them (preprocessed, no leading space)
    label: int  # index of the right ending

    def pred(self) -> int:
        """Ending with the largest summed log-probability (acc, both styles)."""
        return _argmax(self.logprobs)

    def pred_norm(self, style: str) -> int:
        """Ending with the largest log-probability per token (completion) or per character (harness)."""
        per = self.n_tokens if style == "completion" else self.n_chars
        return _argmax([lp / n for lp, n in zip(self.logprobs, per)])


class HellaSwagCounts(NamedTuple):
    correct: int  # examples whose pred() is the label
    correct_norm: int  # examples whose pred_norm() is the label
    n: int  # examples scored


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)  # the first of equal maxima


def harness_preprocess(text: str) -> str:
    """lm-evaluation-harness's HellaSwag text cleaning (WikiHow rows carry "[title]", "[header]", ... markers)."""
    text = text.strip().replace(" [title]", ". ")
    text = re.sub(r"\[.*?\]", "", text)
    return text.replace("  ", " ")


def harness_texts(example: dict) -> tuple[str, list[str]]:
    """(context, endings) as the harness's `hellaswag` task builds them from a raw HellaSwag row."""
    context = example["activity_label"] + ": " + example["ctx_a"] + " " + example["ctx_b"].capitalize()
    return harness_preprocess(context), [harness_preprocess(e) for e in example["endings"]]


def build_request(enc, example: dict, style: str) -> tuple[tuple[list[int], list[list[int]]], list[int]]:
    """((context ids, [ending ids × 4]), [characters of each ending]) for one row in the given style."""
    if style == "completion":
        ctx = enc.encode(example["ctx"])
        return (ctx, [enc.encode(" " + e) for e in example["endings"]]), [len(e) for e in example["endings"]]
    if style == "harness":
        context, endings = harness_texts(example)
        pairs = [encode_pair(enc, context, " " + e) for e in endings]
        # the context's ids do not depend on the ending, so the four pairs share them
        return (pairs[0][0], [cont for _, cont in pairs]), [len(e) for e in endings]
    raise ValueError(f"unknown HellaSwag scoring style {style!r}; use one of {STYLES}")


def score_hellaswag(
    model: torch.nn.Module, examples: Sequence[dict], style: str, enc=None, **kwargs
) -> list[EndingScores]:
    """EndingScores per example (HellaSwag rows: ctx, ctx_a, ctx_b, activity_label, endings, label).
    kwargs go to score_continuations (batch_size, progress, pad_to_multiple, window)."""
    if enc is None:
        from gpt.tokenizer import get_tokenizer

        enc = get_tokenizer()
    built = [build_request(enc, ex, style) for ex in examples]
    scores = score_continuations(model, [req for req, _ in built], desc=f"hellaswag ({style})", **kwargs)
    return [
        EndingScores([s.logprob for s in sc], [s.n_tokens for s in sc], chars, int(ex["label"]))
        for sc, (_, chars), ex in zip(scores, built, examples)
    ]


def hellaswag_metrics(scores: Sequence[EndingScores], style: str) -> list[Metric]:
    """acc and acc_norm with their standard errors; metric names carry the style (completion_acc, ...) except for
    the harness's, which keep the harness's names (acc, acc_norm)."""
    prefix = "completion_" if style == "completion" else ""
    norm = "mean log-prob per token" if style == "completion" else "log-prob per character"
    return [
        accuracy("hellaswag", prefix + "acc", [s.pred() == s.label for s in scores], scoring=style),
        accuracy("hellaswag", prefix + "acc_norm", [s.pred_norm(style) == s.label for s in scores],
                 scoring=style, normalised_by=norm),
    ]  # fmt: skip


def hellaswag_counts(
    model: torch.nn.Module,
    examples: Sequence[dict],
    rank: int = 0,
    world_size: int = 1,
    *,
    style: str = "completion",
    batch_size: int = 16,
    pad_to_multiple: int = 64,
    enc=None,
) -> HellaSwagCounts:
    """Score examples[rank::world_size] and count the right answers: the in-training evaluation.

    Works on the model the training loop steps (plain or torch.compile'd; pass the module inside DDP, since
    DDP's forward would try to synchronise): it is switched to eval mode and back, gradients are off, and batch
    lengths are rounded up to pad_to_multiple so a compiled model meets few distinct shapes. Under DDP, every
    rank calls this with its own rank, then

        t = torch.tensor(counts, dtype=torch.long, device=device)   # (correct, correct_norm, n)
        dist.all_reduce(t)                                           # sum over ranks
        acc_norm = t[1].item() / t[2].item()

    The ranks' shares are disjoint and together hold every example once, so the sums equal one process's counts.
    """
    scores = score_hellaswag(
        model, examples[rank::world_size], style, enc, batch_size=batch_size, pad_to_multiple=pad_to_multiple
    )
    return HellaSwagCounts(
        sum(s.pred() == s.label for s in scores), sum(s.pred_norm(style) == s.label for s in scores), len(scores)
    )
