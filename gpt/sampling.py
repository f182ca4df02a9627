"""Choosing the next token from logits: greedy, temperature, top-k, top-p (nucleus).

    nxt = sample_next_token(logits, temperature=0.8, top_k=200, generator=g)   # (B, V) → (B,)
    params = SamplingParams(temperature=0.8, top_p=0.95)                       # checked once, here
    nxt = params.sample(logits, g)                                             # what generate()'s loop calls

Temperature divides the logits before the softmax (< 1 sharper, > 1 flatter, 0 means argmax). top-k keeps the k
likeliest tokens (Fan et al. 2018); top-p keeps the smallest set whose probabilities reach p (Holtzman et al. 2019,
"The Curious Case of Neural Text Degeneration"). The kept logits are left unchanged, so the softmax renormalises
over the kept set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


def filter_logits(logits: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """logits (B, V) with every token outside the top_k likeliest, and then outside the smallest set whose
    probabilities sum to at least top_p (nucleus), set to -inf. Kept logits are unchanged."""
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]  # (B, 1) the k-th largest logit
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        drop = probs.cumsum(dim=-1) - probs >= top_p  # the likelier tokens before this one already reach p
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))  # back to vocabulary order
    return logits


@dataclass(frozen=True)
class SamplingParams:
    """How to pick each next token; checked when built, so a loop can use it every step without checking again.
    Raises ValueError naming the bad field."""

    temperature: float = 1.0  # 0 → greedy (argmax); < 1 sharper, > 1 more random
    top_k: int | None = None  # sample among the k likeliest tokens only; None → no limit
    top_p: float | None = None  # nucleus: the smallest set of tokens with probability mass >= p; None or 1 → all

    def __post_init__(self) -> None:
        if not 0 <= self.temperature < float("inf"):  # also rejects NaN
            raise ValueError(f"temperature must be >= 0 and finite (0 means greedy), got {self.temperature}")
        k = self.top_k
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise ValueError(f"top_k must be an integer >= 1 (or None for no limit), got {k!r}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1] (1 keeps every token), got {self.top_p}")

    def sample(self, logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """logits (B, V) → next ids (B,): argmax at temperature 0, else a draw from softmax(logits / temperature)
        restricted by filter_logits(top_k, top_p). A seeded `generator` makes the draw reproducible."""
        if self.temperature == 0:
            return logits.argmax(dim=-1)
        return torch.multinomial(self.probs(logits), num_samples=1, generator=generator).squeeze(-1)

    def probs(self, logits: torch.Tensor) -> torch.Tensor:
        """logits (B, V) → (B, V) float32: the distribution `sample` draws from (one-hot on the argmax at
        temperature 0). gpt/introspect.py shows exactly this."""
        if self.temperature == 0:
            return torch.nn.functional.one_hot(logits.argmax(dim=-1), logits.size(-1)).float()
        logits = logits.float()  # fp32: bf16 zeroes rare odds
        # Shifted so the largest is 0 before dividing: a tiny temperature then sends the others to -inf, never the
        # largest to inf (inf - inf = NaN). The divisor is a float32: kept within its normal range (1.2e-38 to
        # 3.4e38) so it never flushes to 0 or inf (-inf / inf = NaN); beyond, the result is already the limit
        # (the argmax, ties sharing it; uniform over the tokens with finite logits).
        f32 = torch.finfo(torch.float32)
        t = min(max(self.temperature, f32.tiny), f32.max)
        logits = (logits - logits.amax(dim=-1, keepdim=True)) / t
        return filter_logits(logits, self.top_k, self.top_p).softmax(dim=-1)  # temperature first, then the cuts


def sample_next_token(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """logits (B, V) → next ids (B,): SamplingParams(temperature, top_k, top_p).sample(logits, generator).
    temperature 0 is greedy; a seeded `generator` makes it reproducible. Raises ValueError on a bad argument."""
    return SamplingParams(temperature, top_k, top_p).sample(logits, generator)
