"""Generating text: a prompt's prefill, then one token at a time from a KV cache, sampling each next token.

    ids = generate(model, idx, 100, temperature=0.8, top_k=200)           # (B, T) → (B, T + 100)
    outs = generate(model, [[15496, 11], [40]], 20, temperature=0)        # unequal prompts → list of id lists
    for tok in generate_stream(model, idx, 100): ...                      # (B,) ids, one step at a time

How the loop runs (gpt-fast's split):
- prefill(): the prompt goes through the model once; every layer's keys/values land in a preallocated KVCache
  (gpt/model.py), and only the last position's logits are computed.
- decode_one_token(): one new token per sequence, attending over the cache: a token of compute, not a sequence.
  Eager decoding reads only the cache slots used so far. A CompiledDecoder (gpt/fast_decode.py) instead keeps
  fixed shapes (the whole cache is read, masked), so torch.compile builds the step once.
- each step's logits go to SamplingParams.sample (gpt/sampling.py): greedy, temperature, top-k, top-p.
- use_cache=False is the reference: a full forward over the window at every step. Tests hold the two equal.

Unequal prompts are left-padded (gpt/padding.py): pad columns are masked off and position ids count from each
row's first real token, so every row computes what it would alone, and all rows share one cache slot per step.

Past the context length (sliding window with re-prefill): GPT-2's positions are learned absolute embeddings, so a
cached key cannot be shifted to a new position. When the next token does not fit, the window drops its oldest
`slide` tokens (default context_length // 4) and the kept context_length - slide + 1 tokens are prefilled again at
positions 0, 1, ...; decoding then continues from the cache. Each token therefore sees between
context_length - slide + 1 and context_length tokens of context. slide=1 is nanoGPT's exact `idx[:, -ctx:]`
window, at the price of a full forward per token. The uncached reference uses the same window rule, so the two
agree token for token. In a batch the window slides for all rows together (they share cache slots), so past the
context a short prompt may see less context than it would alone.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch

from gpt.model import GPT, KVCache
from gpt.padding import Prompts, prefill_mask, prompt_buffer, window_inputs
from gpt.sampling import SamplingParams

if TYPE_CHECKING:
    from gpt.fast_decode import CompiledDecoder


# ---- the two model calls -------------------------------------------------------------------------------------------
def prefill(
    model: GPT,
    idx: torch.Tensor,
    cache: KVCache,
    position_ids: torch.Tensor | None = None,
    attn_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """idx (B, T) → logits (B, V) of the last position, after writing the T tokens' keys/values at cache slots
    0..T-1. position_ids (B, T) / attn_mask (B, 1, T, T) describe left padding; None means none."""
    input_pos = torch.arange(idx.size(1), device=idx.device)
    return model(
        idx, input_pos=input_pos, kv_cache=cache, position_ids=position_ids, attn_mask=attn_mask, last_only=True
    )[:, -1]


def decode_one_token(
    model: GPT,
    tok: torch.Tensor,
    cache: KVCache,
    input_pos: torch.Tensor,
    position_ids: torch.Tensor | None,
    attn_mask: torch.Tensor,
) -> torch.Tensor:
    """tok (B, 1) written at cache slot input_pos (1,) → logits (B, V). attn_mask (B or 1, 1, 1, S) says which of
    the first S slots each row may read: S = slot + 1 when eager (read only what is filled), S = max_len when
    compiled (fixed shapes). position_ids (B, 1) for left-padded rows; None means position = slot."""
    return model(tok, input_pos=input_pos, kv_cache=cache, position_ids=position_ids, attn_mask=attn_mask)[:, -1]


@contextmanager
def _eval_mode(model: GPT):
    """Dropout off while sampling (sampling must not depend on it); the caller's train/eval mode comes back after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


# ---- the loop ------------------------------------------------------------------------------------------------------
@torch.inference_mode()
def generate_stream(
    model: GPT,
    idx: torch.Tensor | Prompts,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    *,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
    prompt_lengths: Sequence[int] | torch.Tensor | None = None,
    use_cache: bool = True,
    decoder: CompiledDecoder | None = None,
    slide: int | None = None,
    n_vocab: int | None = None,
) -> Iterator[torch.Tensor]:
    """Continue prompts by up to max_new_tokens tokens, yielding each step's new ids (B,) as soon as they are sampled.
    Stops after max_new_tokens steps, or once every row has emitted eos_id (a finished row keeps emitting eos_id).

    idx: a (B, T) tensor of ids (left-padded when prompt_lengths (B,) gives each row's prompt length), or a list of
         prompts (lists or 1-D tensors of ids, any lengths), left-padded here.
    temperature 0 is greedy; top_k / top_p restrict sampling (gpt/sampling.py); generator makes it reproducible.
    use_cache=False recomputes the whole window every step (the reference the tests compare with).
    decoder: a CompiledDecoder (gpt/fast_decode.py) that runs the decode step compiled where that pays; None → eager.
    slide: tokens dropped from the window when it reaches the context length (module docstring).
    n_vocab: sample only ids < n_vocab — pass the tokenizer's (enc.n_vocab) when the text is decoded with it: a model
         with more rows (vocab_size 50304 = 64 · 786) has logits for ids no tokenizer can decode. None → every id.
    Raises ValueError on a bad argument, before any compute.

    The model always sees the window seq[:, start:L]; `start` moves only when the window would pass the context
    length — by the same rule with or without the cache, which is what makes the two paths agree.
    """
    sampling = SamplingParams(temperature, top_k, top_p)  # checked once, here, not at every token
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    ctx = model.config.context_length
    slide = max(1, ctx // 4) if slide is None else slide
    if not 1 <= slide <= ctx:
        raise ValueError(f"slide must be in [1, context_length={ctx}], got {slide}")
    if n_vocab is not None and n_vocab < 1:
        raise ValueError(f"n_vocab must be >= 1 (or None for the model's whole vocabulary), got {n_vocab}")
    device = next(model.parameters()).device
    seq, T, pads = prompt_buffer(idx, max_new_tokens, prompt_lengths, device)  # (B, T + max_new_tokens)
    if max_new_tokens == 0:
        return
    B = seq.size(0)
    if decoder is not None and not decoder.compiles(device.type, B, next(model.parameters()).dtype):
        decoder = None  # compiling would not pay here (gpt/fast_decode.py: compile_helps): decode eagerly
    from gpt.fast_decode import eager_step  # (gpt/fast_decode.py imports this module)

    keep = ctx - slide + 1  # window length right after a slide, the newest token included
    start, L = max(0, T - ctx), T  # a prompt longer than the context keeps its last ctx tokens
    done = torch.zeros(B, dtype=torch.bool, device=device) if eos_id is not None else None

    def window_logits():
        """Logits (B, V) after the last token of seq[:, start:L]: a prefill that refills the cache, or (uncached)
        a full forward. Also returns the window's position ids and valid-slot mask, for decoding after it."""
        Tw = L - start
        positions, valid = window_inputs(pads, start, cache.max_len if use_cache else Tw, device)
        pos_ids = positions[:, :Tw] if positions is not None else None
        mask = prefill_mask(valid, Tw)
        if use_cache:
            return prefill(model, seq[:, start:L], cache, pos_ids, mask), positions, valid
        if positions is None:  # no padding: plain causal attention (SDPA's is_causal path)
            return model(seq[:, start:L], last_only=True)[:, -1], None, None
        return model(seq[:, start:L], position_ids=pos_ids, attn_mask=mask, last_only=True)[:, -1], None, None

    with _eval_mode(model):
        steps = 0 if decoder is not None or not use_cache else max_new_tokens - 1  # eager decode steps, at most
        step_fn = eager_step(model, steps, B)  # decode_one_token, or on a CPU the same maths written out (fast_decode)
        if use_cache:
            max_len = min(ctx, L - start + max_new_tokens - 1)  # the last sampled token is never fed back
            if decoder is not None:
                cache = decoder.cache(model, B, max_len)  # rounded up, so a few compiled graphs serve every call
            else:
                dtype = next(model.parameters()).dtype
                cache = KVCache(model.config, B, max(1, max_len), device=device, dtype=dtype)
            input_pos = torch.zeros(1, dtype=torch.long, device=device)  # updated in place: no allocation, no sync
            logits, positions, valid = window_logits()

        for step in range(max_new_tokens):
            if not use_cache:
                if L - start > ctx:
                    start = L - keep
                logits, _, _ = window_logits()
            nxt = sampling.sample(logits[:, :n_vocab], generator)  # (B,); [:, :None] is every id
            if done is not None:
                nxt = nxt.masked_fill(done, eos_id)  # finished rows keep emitting eos
                done |= nxt == eos_id
            seq[:, L] = nxt
            L += 1
            yield nxt
            if step == max_new_tokens - 1 or (done is not None and bool(done.all())):  # with eos: one sync per step
                return
            if not use_cache:
                continue
            if L - start > ctx:  # the new token does not fit: slide the window and prefill it again
                start = L - keep
                logits, positions, valid = window_logits()
                continue
            slot = L - 1 - start
            input_pos.fill_(slot)
            if decoder is not None:
                logits = decoder.step(model, nxt[:, None], cache, input_pos, positions, valid)
            else:
                pos_ids = positions[:, slot : slot + 1] if positions is not None else None
                logits = step_fn(nxt[:, None], cache, input_pos, pos_ids, valid[..., : slot + 1])


def generate(
    model: GPT, idx: torch.Tensor | Prompts, max_new_tokens: int, *args, eos_id: int | None = None, **kwargs
) -> torch.Tensor | list[list[int]]:
    """generate_stream() run to the end and collected; takes the same arguments.

    idx a (B, T) tensor → (B, T + n) tensor, the prompts unchanged; n = max_new_tokens, or fewer when every row
    has emitted eos_id (a row that finished early is filled with eos_id after it).
    idx a list of prompts → a list of id lists, each its prompt and continuation, cut after eos_id.
    """
    steps = list(generate_stream(model, idx, max_new_tokens, *args, eos_id=eos_id, **kwargs))
    device = next(model.parameters()).device
    if isinstance(idx, torch.Tensor):
        return torch.cat([idx.to(device=device, dtype=torch.long), *(s[:, None] for s in steps)], dim=1)
    new = torch.stack(steps, 1).tolist() if steps else [[] for _ in idx]
    out = []
    for prompt, cont in zip(idx, new):
        if eos_id is not None and eos_id in cont:
            cont = cont[: cont.index(eos_id) + 1]
        out.append((prompt.tolist() if isinstance(prompt, torch.Tensor) else list(prompt)) + cont)
    return out
