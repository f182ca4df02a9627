"""Log-likelihood of continuations: the one primitive every task here is built on.

    scores = score_continuations(model, [(context_ids, [cont_a, cont_b, ...]), ...], batch_size=16)
    scores[i][j].logprob      # Σ log p(cont_j token | everything before it), nats

A request is a context and one or more continuations scored after it (HellaSwag: four endings; LAMBADA: one target
word; perplexity: one window). Each continuation's tokens are scored exactly as lm-evaluation-harness's `hf` model
does: the input is (context + continuation)[:-1], cut from the left to the model's context length (so the model
always sees at most `context_length` tokens), and the continuation's log-probabilities come from the last
len(continuation) positions; `is_greedy` says every continuation token was the argmax.

Speed without a KV cache: the continuations of one request share its context, so when they fit in one window they
are packed into one row — context, then each continuation (minus its last token) — with an attention mask that lets
each continuation see the context and itself, never another continuation, and position ids that restart after the
context. HellaSwag's four endings then cost one pass over the context instead of four. The mask and positions make
every score equal (to float rounding) to the one-continuation-per-row computation.

Padding never changes a score: rows are right-padded, and a real token never attends to a later position (causal)
nor to a pad (mask). Rows are sorted by length so that a batch holds rows of similar length.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from gpt.onednn import mm_t
from gpt.utils import progress_bar

Request = tuple[Sequence[int], Sequence[Sequence[int]]]  # (context ids, [continuation ids, ...])


class ContinuationScore(NamedTuple):
    logprob: float  # Σ over the continuation's tokens of log p(token | what precedes it), in nats
    n_tokens: int  # tokens in the continuation
    is_greedy: bool  # every continuation token is the model's argmax at its position


class _Row(NamedTuple):
    tokens: list[int]  # input ids
    positions: list[int]  # position ids (restart after the context for packed continuations)
    segments: list[int]  # 0 = context, j + 1 = continuation j (packed rows); attention stays within 0 and own
    targets: list[tuple[int, int, list[int], list[int]]]  # (request, continuation, predicting positions, token ids)


def encode_pair(enc, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Context and continuation ids the way lm-evaluation-harness makes them for a causal model: trailing spaces of
    the context move to the continuation, the whole string is encoded once, and the continuation is what follows
    the context's own encoding (so a merge across the boundary is tokenized as in the whole text)."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    whole = enc.encode(context + continuation, allowed_special="all")
    ctx = enc.encode(context, allowed_special="all")
    return ctx, whole[len(ctx) :]


def _rows(requests: Sequence[Request], window: int) -> list[_Row]:
    rows = []
    for r, (ctx, conts) in enumerate(requests):
        ctx, conts = list(ctx), [list(c) for c in conts]
        if not ctx:
            raise ValueError(f"request {r} has an empty context; start it with <|endoftext|> (as the harness does)")
        if any(not 1 <= len(c) <= window for c in conts):
            raise ValueError(f"request {r}: every continuation needs 1 to {window} (the context length) tokens")
        if len(conts) > 1 and len(ctx) + sum(len(c) - 1 for c in conts) <= window:
            tokens, positions, segments, targets = list(ctx), list(range(len(ctx))), [0] * len(ctx), []
            for j, c in enumerate(conts):
                start = len(tokens)  # this continuation's first input position in the row
                predicting = [len(ctx) - 1] + list(range(start, start + len(c) - 1))
                tokens += c[:-1]
                positions += range(len(ctx), len(ctx) + len(c) - 1)
                segments += [j + 1] * (len(c) - 1)
                targets.append((r, j, predicting, c))
            rows.append(_Row(tokens, positions, segments, targets))
            continue
        for j, c in enumerate(conts):  # one row each: what the harness feeds the model, cut to the window
            tokens = (ctx + c)[-(window + 1) :][:-1]
            T = len(tokens)
            rows.append(_Row(tokens, list(range(T)), [0] * T, [(r, j, list(range(T - len(c), T)), c)]))
    return rows


def _attention_mask(segments: torch.Tensor) -> torch.Tensor:
    """(B, T) segment ids (-1 = padding) → (B, 1, T, T) bool, True = may attend: causal, and a key is either context
    (0) or in the query's own segment. A pad query sees the pads up to itself, so no softmax row is empty."""
    T = segments.size(1)
    causal = torch.ones(T, T, dtype=torch.bool, device=segments.device).tril()
    q, k = segments[:, :, None], segments[:, None, :]  # (B, T, 1), (B, 1, T)
    return (causal & ((k == 0) | (k == q)))[:, None]


def _token_logprobs(h: torch.Tensor, head: torch.Tensor, targets: torch.Tensor, chunk: int):
    """h (N, C) hidden states, head (V, C), targets (N,) → ([log p(target)] as floats, [target is the argmax])."""
    logp, greedy = [], []
    for i in range(0, h.size(0), chunk):
        logprobs = mm_t(h[i : i + chunk], head).float()  # (n, V) = h headᵀ; fp32 on AMD: oneDNN's (gpt/onednn.py)
        logprobs -= torch.logsumexp(logprobs, dim=-1, keepdim=True)  # log-softmax, in place
        t = targets[i : i + chunk, None]
        logp += logprobs.gather(1, t)[:, 0].double().tolist()
        greedy += (logprobs.argmax(dim=-1) == t[:, 0]).tolist()  # argmax of the log-probabilities, as the harness
    return logp, greedy


@torch.no_grad()
def score_continuations(
    model: torch.nn.Module,
    requests: Sequence[Request],
    *,
    batch_size: int = 16,
    window: int | None = None,
    pad_to_multiple: int = 1,
    progress: bool = False,
    desc: str = "scoring",
) -> list[list[ContinuationScore]]:
    """Score every continuation of every request; result[i][j] belongs to requests[i]'s continuation j.

    model: a GPT, or a torch.compile'd one: its forward gives the final hidden states (hidden_only=True) of idx (B, T)
    [with position_ids (B, T), attn_mask (B, 1, T, T)], and lm_head is applied to the scored positions only. It is
    put in eval mode for the call and its train/eval mode restored after.
    window: the longest input (default: model.config.context_length). pad_to_multiple: round each batch's length
    up (fewer distinct shapes for a compiled model to specialise on). Log-probabilities are computed in float32
    whatever the model's dtype. Raises ValueError for an empty context or a continuation longer than the window.
    """
    window = window or model.config.context_length  # (a torch.compile'd module forwards .config to the GPT)
    rows = _rows(requests, window)
    order = sorted(range(len(rows)), key=lambda i: -len(rows[i].tokens))
    device = next(model.parameters()).device
    head = model.lm_head.weight[: model.config.vocab_size]  # (V, C); padding rows (vocab_multiple) are never tokens
    # On a CPU, (N, V) logits in slices of ≤ 16 MB: malloc then reuses the same memory instead of mapping fresh pages
    # for every batch (page faults were a third of the run time); a GPU takes them whole.
    chunk = max(1, (1 << 22) // head.size(0)) if device.type == "cpu" else 1 << 30
    out: list[list[ContinuationScore | None]] = [[None] * len(conts) for _, conts in requests]
    was_training = model.training
    model.eval()
    bar = progress_bar(total=len(order), desc=desc, unit="row", disable=not progress, leave=False)
    try:
        for b in range(0, len(order), batch_size):
            batch = [rows[i] for i in order[b : b + batch_size]]
            T = max(len(r.tokens) for r in batch)
            T = min(-(-T // pad_to_multiple) * pad_to_multiple, max(T, window))
            idx = torch.zeros(len(batch), T, dtype=torch.long)
            pos = torch.zeros(len(batch), T, dtype=torch.long)
            seg = torch.full((len(batch), T), -1, dtype=torch.long)
            for i, r in enumerate(batch):
                n = len(r.tokens)
                idx[i, :n], pos[i, :n] = torch.tensor(r.tokens), torch.tensor(r.positions)
                seg[i, :n] = torch.tensor(r.segments)
            idx, pos, seg = idx.to(device), pos.to(device), seg.to(device)
            if (seg > 0).any():  # packed continuations: they must not see each other
                h = model(idx, position_ids=pos, attn_mask=_attention_mask(seg), hidden_only=True)
            else:  # plain causal rows: right padding is never attended to by a real token
                h = model(idx, hidden_only=True)  # (B, T, C)
            # the head only where a token is scored (LAMBADA: 1-3 of ~90 positions): (row, position) of each, at once
            where = [(i, p, t) for i, r in enumerate(batch) for (_, _, ps, toks) in r.targets for p, t in zip(ps, toks)]
            bi, pi, ti = (torch.tensor(x, device=device) for x in zip(*where))
            logp, greedy = _token_logprobs(h[bi, pi], head, ti, chunk)
            k = 0
            for r in batch:
                for req, j, ps, _ in r.targets:
                    n = len(ps)
                    out[req][j] = ContinuationScore(sum(logp[k : k + n]), n, all(greedy[k : k + n]))
                    k += n
            bar.update(len(batch))
    finally:
        bar.close()
        model.train(was_training)
    return out  # type: ignore[return-value]
