"""Look inside a GPT: attention weights, the residual stream, the logit lens, the sampler's odds, per-token loss.

    tr = trace(model, idx)                      # one forward of the model's own code, recorded by hooks
    tr.attentions[layer, 0, head]               # (T, T) who attends to whom
    lens = logit_lens(model, idx, k=5)          # what each layer would predict if it were the last
    dist = next_token_distribution(tr.logits[:, -1], temperature=0.8, top_k=40)
    token_losses(model, idx)                    # (B, T - 1) nats: how surprised the model is by each token

Every function runs the model's own forward (SDPA attention, its LayerNorms and MLPs) and records what passes
through it with forward hooks, so the numbers here are the numbers the model computes — nothing is re-implemented
except the attention weights themselves, which SDPA never materialises: they are computed from the recorded
queries and keys as softmax(q kᵀ / √D) under the causal mask, the same formula as gpt.model.manual_attention.
The tests hold them to the model: weights @ V reproduces the attention output.

Shapes: B batch, T tokens, L = n_layer, H = n_head, D = head_dim, C = n_embd, V = vocab_size. The residual stream
has L + 1 entries: index 0 is the input (token + position embeddings), index i the output of block i; the logit
lens reads all L + 1 of them. Functions switch the model to eval mode (no dropout) for the call and run under
torch.inference_mode; inputs longer than the context raise the model's own ValueError (crop them first).
The page `scripts/explain.py` and notebook 08 both call these functions, so they never disagree.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
import torch.nn.functional as F

from gpt.model import GPT
from gpt.onednn import fp32_linears
from gpt.sampling import SamplingParams


class Trace(NamedTuple):
    """What one forward pass computed, recorded (see trace())."""

    logits: torch.Tensor  # (B, T, V) the model's output, exactly model(idx); (B, 1, V) with last_only
    residuals: torch.Tensor  # (L + 1, B, T, C) the residual stream: embeddings, then after each block
    attentions: torch.Tensor | None  # (L, B, H, T, T) float32 attention weights; None if not asked for


class LogitLens(NamedTuple):
    """Each layer's residual read out through ln_f and the tied head, as if the layers above it were not there
    (nostalgebraist, "interpreting GPT: the logit lens", 2020). Index 0 = the embeddings, index L = the model."""

    top_ids: torch.Tensor  # (L + 1, B, T, k) the k likeliest next tokens by layer and position, likeliest first
    top_probs: torch.Tensor  # (L + 1, B, T, k) their probabilities (float32)
    next_token_probs: torch.Tensor  # (L + 1, B, T - 1) probability given to the token that really comes next

    @staticmethod
    def layer_names(n_layer: int) -> list[str]:
        """Row labels: ["embeddings", "block 1", ..., "block L"]."""
        return ["embeddings"] + [f"block {i}" for i in range(1, n_layer + 1)]


class NextTokenDistribution(NamedTuple):
    """The next-token odds before and after the sampling knobs (see next_token_distribution())."""

    probs: torch.Tensor  # (B, V) softmax(logits): the model's own distribution, temperature 1, nothing cut
    filtered: torch.Tensor  # (B, V) what sample_next_token draws from at these settings (zeros for cut tokens)


@contextmanager
def _record(model: GPT) -> Iterator[dict[str, list[torch.Tensor]]]:
    """Forward hooks that collect the residual stream (the embedding sum, then each block's output) and each
    attention layer's fused q|k|v projection (B, T, 3C) while the model runs; removed on exit."""
    rec: dict[str, list[torch.Tensor]] = {"residuals": [], "qkv": []}
    save = lambda key: lambda module, args, out: rec[key].append(out)
    t = model.transformer
    handles = [t.drop.register_forward_hook(save("residuals"))]  # wte(idx) + wpe(pos); dropout is off in eval
    for block in t.h:
        handles.append(block.attn.c_attn.register_forward_hook(save("qkv")))
        handles.append(block.register_forward_hook(save("residuals")))
    try:
        yield rec
    finally:
        for h in handles:
            h.remove()


@contextmanager
def _eval_mode(model: GPT) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)


def attention_from_qkv(qkv: torch.Tensor, n_head: int) -> torch.Tensor:
    """The attention weights softmax(q kᵀ / √D) with the causal mask, from one layer's c_attn output.

    qkv (B, T, 3C), the fused projection [q | k | v] → (B, H, T, T) float32: row t (the query, token t) holds how
    much token t reads from each key position s ≤ t; every row sums to 1 and is 0 above the diagonal. The same
    formula as gpt.model.manual_attention, which SDPA computes without keeping the weights (Vaswani et al. 2017, eq. 1).
    """
    B, T, C3 = qkv.shape
    q, k, _ = qkv.float().split(C3 // 3, dim=2)  # float32 whatever the model's dtype: these are for looking at
    q = q.view(B, T, n_head, -1).transpose(1, 2)  # (B, H, T, D)
    k = k.view(B, T, n_head, -1).transpose(1, 2)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, H, T, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=qkv.device).tril()
    return scores.masked_fill(~causal, float("-inf")).softmax(dim=-1)


def trace(model: GPT, idx: torch.Tensor, attentions: bool = True, last_only: bool = False) -> Trace:
    """Run model(idx) once and record it. idx (B, T) token ids, T ≤ context_length.

    Returns Trace(logits (B, T, V), residuals (L + 1, B, T, C), attentions (L, B, H, T, T) or None).
    attentions=False skips the weights (they cost L·H·T² floats: 600 MB for 124M at T = 1024); last_only=True
    computes the logits of the last position only, (B, 1, V), as the sampler does (the head is 31% of 124M's FLOPs)."""
    with _eval_mode(model), _record(model) as rec:
        logits = model(idx, last_only=last_only)  # the model's own forward: SDPA, fused kernels and all
        att = [attention_from_qkv(qkv, model.config.n_head) for qkv in rec["qkv"]] if attentions else None
    return Trace(logits, torch.stack(rec["residuals"]), torch.stack(att) if att is not None else None)


def attention_weights(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """idx (B, T) → (L, B, H, T, T) float32 attention weights of every layer and head (see attention_from_qkv)."""
    return trace(model, idx).attentions


def residual_stream(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """idx (B, T) → (L + 1, B, T, C): the embeddings, then the residual stream after each block."""
    return trace(model, idx, attentions=False).residuals


def unembed(model: GPT, residual: torch.Tensor) -> torch.Tensor:
    """Residual vectors (..., C) → logits (..., V) through the model's own final LayerNorm and tied head."""
    with _eval_mode(model), fp32_linears(residual.device):  # fp32 on AMD: oneDNN's matmul (gpt/onednn.py)
        return model.lm_head(model.transformer.ln_f(residual))[..., : model.config.vocab_size]


def logit_lens(model: GPT, idx: torch.Tensor, k: int = 5, residuals: torch.Tensor | None = None) -> LogitLens:
    """Each layer's prediction: softmax(lm_head(ln_f(residual))) for every layer, position and batch row.

    idx (B, T) → LogitLens(top_ids (L + 1, B, T, k), top_probs (L + 1, B, T, k), next_token_probs (L + 1, B, T - 1)).
    The last layer's row is the model's own output distribution. residuals (L + 1, B, T, C) from an earlier
    trace() saves a forward. One layer at a time: the full (L + 1, B, T, V) probabilities would be 2.7 GB for 124M
    at T = 1024."""
    if residuals is None:
        residuals = residual_stream(model, idx)
    k = min(k, model.config.vocab_size)
    tops, top_ps, nexts = [], [], []
    for resid in residuals:  # (B, T, C)
        probs = unembed(model, resid).float().softmax(dim=-1)  # (B, T, V)
        p, i = probs.topk(k, dim=-1)
        tops.append(i)
        top_ps.append(p)
        nexts.append(probs[:, :-1].gather(-1, idx[:, 1:, None].to(probs.device)).squeeze(-1))  # (B, T - 1)
    return LogitLens(torch.stack(tops), torch.stack(top_ps), torch.stack(nexts))


def next_token_distribution(
    logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> NextTokenDistribution:
    """The next-token odds a sampler sees: logits (B, V) (or (V,)) of one position → NextTokenDistribution of
    (B, V) float32 probabilities (or (V,)), `probs` untouched and `filtered` after temperature / top-k / top-p.

    `filtered` is SamplingParams(temperature, top_k, top_p).probs(logits), exactly what gpt.sampling draws from:
    softmax of filter_logits(logits / temperature, top_k, top_p) in float32; temperature 0 (greedy) puts all mass
    on the argmax.
    Raises ValueError for bad settings (the sampler's own check)."""
    params = SamplingParams(temperature, top_k, top_p)  # the sampler's own checks
    squeeze = logits.dim() == 1
    logits = logits[None] if squeeze else logits
    probs = logits.float().softmax(dim=-1)
    filtered = params.probs(logits)  # the very function the sampler draws from
    if squeeze:
        return NextTokenDistribution(probs[0], filtered[0])
    return NextTokenDistribution(probs, filtered)


def token_losses(model: GPT, idx: torch.Tensor, logits: torch.Tensor | None = None) -> torch.Tensor:
    """idx (B, T) → (B, T - 1) float32 cross-entropy in nats of each token given the ones before it: entry t is
    -log p(idx[:, t + 1] | idx[:, :t + 1]). Their mean is the model's loss on the text; exp(loss) is the
    perplexity per token. The first token has no loss (nothing predicts it), so T may be context_length + 1.
    logits (B, T, V) from trace(model, idx) saves the forward."""
    if logits is None:
        with _eval_mode(model):
            logits = model(idx[:, :-1])  # (B, T - 1, V): the last token predicts nothing we can score
    targets = idx[:, 1:].to(logits.device)
    return F.cross_entropy(logits[:, : targets.size(1)].float().transpose(1, 2), targets, reduction="none")
