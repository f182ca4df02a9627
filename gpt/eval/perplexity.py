"""Perplexity of a text with a sliding window, and lm-evaluation-harness's `wikitext` task.

A model with a context of W tokens cannot see a whole document at once, so the text is scored in windows. With
s = [<|endoftext|>] + ids (the end-of-text token gives the first token something to condition on), every token of
ids is predicted exactly once:

    window 0   input s[0 : W]            scores ids[0 : W]              (each token with all the text before it)
    window k   input s[e - W : e]        scores the `stride` tokens up to ids[e - 1], e = W + k·stride
    last       input s[N - W : N]        scores what is left (fewer than stride tokens, with more context)

so after the first window each scored token sees at least W − stride tokens of context (Hugging Face's "perplexity
of fixed-length models"). stride = W gives disjoint windows: exactly the harness's rolling log-likelihood
(get_rolling_token_windows with context_len 1, then make_disjoint_window). The same text scores very differently
under different windows and strides (GPT-2 124M on WikiText-2: from ~38 with short disjoint windows down to ~25
with a long overlapping one), which is why every result states its window and stride.

The `wikitext` task is the harness's: WikiText-2 raw test, one document per article, each article detokenized
(wikitext_detokenize below) and scored on its own with an <|endoftext|> before it; then
    word_perplexity = exp(−Σ log p / Σ words),   byte_perplexity = exp(−Σ log p / Σ bytes),
    bits_per_byte = −Σ log p / Σ bytes / ln 2,
where words (whitespace-separated) and UTF-8 bytes are counted in the article *before* detokenization, as the
harness does. We add token_perplexity = exp(−Σ log p / Σ GPT-2 tokens), the number a training loss compares to.
(The GPT-2 paper's 29.41 was computed differently: its own detokenizer, normalised per original WikiText token.)
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import NamedTuple

import torch

from gpt.eval.results import Metric
from gpt.eval.scoring import score_continuations
from gpt.tokenizer import EOT_ID


class Window(NamedTuple):
    begin: int  # input is s[begin:end], s = [prefix] + ids
    end: int
    n_scored: int  # the last n_scored predictions are scored: ids[end - n_scored : end]


class TextScore(NamedTuple):
    logprob: float  # Σ log p over every token of the text (nats)
    n_tokens: int

    @property
    def perplexity(self) -> float:
        return math.exp(-self.logprob / self.n_tokens)


def window_plan(n_tokens: int, window: int, stride: int | None = None) -> list[Window]:
    """The windows that score n_tokens tokens exactly once (see the module docstring); stride defaults to window."""
    stride = window if stride is None else stride
    if not 1 <= stride <= window:
        raise ValueError(f"stride must be in [1, window={window}], got {stride}")
    plan, done = [], 0
    while done < n_tokens:
        end = min(done + (stride if done else window), n_tokens)
        plan.append(Window(max(0, end - window), end, end - done))
        done = end
    return plan


def score_texts(
    model: torch.nn.Module,
    texts_ids: Sequence[Sequence[int]],
    *,
    window: int | None = None,
    stride: int | None = None,
    prefix: int = EOT_ID,
    **kwargs,
) -> list[TextScore]:
    """Σ log p of each token list (each scored on its own, `prefix` before it) with the sliding window.
    window defaults to the model's context length; kwargs go to score_continuations (batch_size, progress)."""
    window = window or model.config.context_length
    requests, owner = [], []
    for t, ids in enumerate(texts_ids):
        s = [prefix, *ids]
        for w in window_plan(len(ids), window, stride):
            first = w.end - w.n_scored + 1  # s-index of the first scored token
            requests.append((s[w.begin : first], [s[first : w.end + 1]]))  # input = (ctx + cont)[:-1] = s[begin:end]
            owner.append(t)
    scores = score_continuations(model, requests, window=window, **kwargs)
    totals = [0.0] * len(texts_ids)
    for t, (sc,) in zip(owner, scores):
        totals[t] += sc.logprob
    return [TextScore(total, len(ids)) for total, ids in zip(totals, texts_ids)]


def perplexity(model: torch.nn.Module, text: str, *, window: int | None = None, stride: int | None = None,
               enc=None, **kwargs) -> TextScore:  # fmt: skip
    """Token-level perplexity of one text (TextScore(...).perplexity), <|endoftext|> before it.
    Raises ValueError for a text of no tokens (its perplexity is 0/0)."""
    if enc is None:
        from gpt.tokenizer import get_tokenizer

        enc = get_tokenizer()
    ids = enc.encode(text, allowed_special="all")
    if not ids:
        raise ValueError("the text is empty: a perplexity needs at least one token")
    return score_texts(model, [ids], window=window, stride=stride, **kwargs)[0]


# ---- WikiText-2, as lm-evaluation-harness reads it -------------------------------------------------------------------
def split_wikitext_articles(text: str) -> list[str]:
    """A WikiText file (wiki.test.raw or .tokens) → one string per article: a new article starts at a top-level
    heading line " = Title = " (not " = = Section = = "). The split of the harness's dataset
    (EleutherAI/wikitext_document_level): lines re-joined with "\\n", blank-only chunks dropped, the last kept."""
    articles, lines = [], []
    for line in text.split("\n"):
        squeezed = line.replace("= = =", "===").replace("= =", "==").strip()
        if squeezed.startswith("= ") and squeezed.endswith(" ="):
            if "\n".join(lines).strip():
                articles.append("\n".join(lines))
            lines = []
        lines.append(line)
    articles.append("\n".join(lines))
    return articles


# WikiText's tokenization undone, rule by rule and in order, as lm-evaluation-harness's wikitext task does it
# (tasks/wikitext/preprocess_wikitext.py). (pattern, replacement, is_regex)
_DETOKENIZE_RULES = [
    ("s '", "s'", False),
    (r"/' [0-9]/", r"/'[0-9]/", True),  # sic: the harness's pattern has literal slashes, so it almost never matches
    (" @-@ ", "-", False), (" @,@ ", ",", False), (" @.@ ", ".", False),  # numbers: 1 @,@ 000 → 1,000
    *[(f" {p} ", f"{p} ", False) for p in ":;.!?,"],
    *[(rf"\{a}\s*([^\{b}]*?)\s*\{b}", rf"{a}\1{b}", True) for a, b in ("()", "[]", "{}")],  # ( x ) → (x)
    (r"\"\s*([^\"]*?)\s*\"", r'"\1"', True), (r"'\s*([^']*?)\s*'", r"'\1'", True),
    ("= = = =", "====", False), ("= = =", "===", False), ("= =", "==", False),
    (" ° ", "°", False), (" \n", "\n", False), ("\n ", "\n", False), (" N ", " 1 ", False), (" 's", "'s", False),
]  # fmt: skip


def wikitext_detokenize(text: str) -> str:
    for pattern, replacement, is_regex in _DETOKENIZE_RULES:
        text = re.sub(pattern, replacement, text) if is_regex else text.replace(pattern, replacement)
    return text


def wikitext_scores(model: torch.nn.Module, articles: Sequence[str], *, enc=None, **kwargs) -> list[TextScore]:
    """Each article detokenized and scored (window, stride, batch_size, progress as in score_texts)."""
    if enc is None:
        from gpt.tokenizer import get_tokenizer

        enc = get_tokenizer()
    ids = [enc.encode(wikitext_detokenize(a), allowed_special="all") for a in articles]
    return score_texts(model, ids, desc="wikitext", **kwargs)


def wikitext_metrics(articles: Sequence[str], scores: Sequence[TextScore], window: int, stride: int) -> list[Metric]:
    ll = sum(s.logprob for s in scores)
    words = sum(len(re.split(r"\s+", a)) for a in articles)
    n_bytes = sum(len(a.encode("utf-8")) for a in articles)
    tokens = sum(s.n_tokens for s in scores)
    how = dict(window=window, stride=stride)
    n = len(articles)
    return [
        Metric("wikitext", "word_perplexity", math.exp(-ll / words), None, n, "per word of the original text", how),
        Metric("wikitext", "byte_perplexity", math.exp(-ll / n_bytes), None, n, "per UTF-8 byte", how),
        Metric("wikitext", "bits_per_byte", -ll / n_bytes / math.log(2), None, n, "bits per UTF-8 byte", how),
        Metric("wikitext", "token_perplexity", math.exp(-ll / tokens), None, n, "per GPT-2 token", how),
    ]
