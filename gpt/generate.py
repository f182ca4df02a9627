"""Sampling from a GPT: choose the next token (greedy, temperature, top-k, top-p), then loop with a KV cache.

    ids = generate(model, idx, 100, temperature=0.8, top_k=200)           # (B, T) → (B, T + 100)
    outs = generate(model, [[15496, 11], [40]], 20, temperature=0)        # unequal prompts → list of id lists
    for tok in generate_stream(model, idx, 100): ...                      # (B,) ids, one step at a time

How the loop runs (gpt-fast's split):
- prefill(): the prompt goes through the model once; every layer's keys/values land in a preallocated KVCache
  (gpt/model.py), and only the last position's logits are computed.
- decode_one_token(): one new token per sequence, attending over the cache: a token of compute, not a sequence.
  Eager decoding reads only the cache slots used so far. With compile=True the step keeps fixed shapes (the whole
  cache is read, masked) so torch.compile builds it once: CUDA graphs on a GPU (no per-kernel launch cost), fused
  C++ loops on a CPU (see _compile_cpu_decode).
- use_cache=False is the reference: a full forward over the window at every step. Tests hold the two equal.

Unequal prompts are left-padded: row b's prompt sits at the right end of the (B, T) buffer after pad_b pad
columns. The pad columns get attention masked off (a pad token attends only to itself, so no row of the mask is
empty — an all-masked row would be NaN) and position ids count from each row's first real token, so every row
computes what it would alone. All rows then share one cache slot per step.

Past the context length (sliding window with re-prefill): GPT-2's positions are learned absolute embeddings, so a
cached key cannot be shifted to a new position. When the next token does not fit, the window drops its oldest
`slide` tokens (default context_length // 4) and the kept context_length - slide + 1 tokens are prefilled again at
positions 0, 1, ...; decoding then continues from the cache. Each token therefore sees between
context_length - slide + 1 and context_length tokens of context. slide=1 is nanoGPT's exact `idx[:, -ctx:]`
window, at the price of a full forward per token. The uncached reference uses the same window rule, so the two
agree token for token. In a batch the window slides for all rows together (they share cache slots), so past the
context a short prompt may see less context than it would alone.

Speed (bench/generate.py: 124M, batch 1, 16-token prompt, 128 greedy tokens, against Hugging Face's generate on
the same weights, on a shared 2-core Sapphire Rapids with 1 and 2 threads): decoding is bound by streaming the
weights (495 MB a token in fp32). Eager fp32 with prepare_for_decoding() ≈ 1.2× HF; compile=True ≈ 1.9-2.3× HF
in fp32 and ≈ 2.3-2.9× HF fp32 with bf16 weights — the compiled CPU step is one fused C++ loop per weight instead
of MKL's matrix-vector kernel, which streams fp32 at two thirds of that rate and bf16 at half.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator, Sequence

import torch

from gpt.model import GPT, KVCache

Prompts = Sequence[Sequence[int] | torch.Tensor]


# ---- choosing the next token ---------------------------------------------------------------------------------------
def check_sampling_args(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raise a ValueError naming the bad argument (called before any compute, so mistakes fail fast)."""
    if not temperature >= 0:  # also rejects NaN
        raise ValueError(f"temperature must be >= 0 (0 means greedy), got {temperature}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be an integer >= 1 (or None for no limit), got {top_k!r}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (1 keeps every token), got {top_p}")


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


def sample_next_token(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """logits (B, V) → next ids (B,). temperature 0 is greedy (argmax); otherwise sample from
    softmax(logits / temperature) restricted by filter_logits(top_k, top_p). A seeded `generator` makes it
    reproducible."""
    check_sampling_args(temperature, top_k, top_p)
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits.float() / temperature, top_k, top_p)  # fp32: bf16 would zero rare tokens' odds
    return torch.multinomial(logits.softmax(dim=-1), num_samples=1, generator=generator).squeeze(-1)


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


def _decode_static(model, tok, cache, input_pos, positions, valid):
    # The compiled step. Reads all max_len slots, masked to slots ≤ input_pos and to each row's non-pad slots
    # (valid (B or 1, 1, 1, max_len)), and looks its position ids up in positions (B, max_len) itself, so every
    # input keeps its shape and storage from one token to the next.
    slots = torch.arange(valid.size(-1), device=valid.device)
    position_ids = positions[:, input_pos] if positions is not None else None
    return decode_one_token(model, tok, cache, input_pos, position_ids, valid & (slots <= input_pos))


def _compile_cpu_decode():
    """torch.compile of the decode step for a CPU: inductor, with one-row matmuls (x @ W, x (1, K)) rewritten as
    sum_k x[k] · W[k, :] by inductor's own decompose_mm_pass.

    A decode step is bound by streaming weights. For a single row, MKL's fp32 kernel streams them at ~60-70% of what
    a plain vectorised reduction reaches here, and oneDNN's bf16 kernel at half; as a multiply-and-sum, inductor
    emits one C++ loop per weight (bf16 or fp32 in, fp32 accumulation) and fuses the LayerNorms, GELU, bias and
    residual adds around those loops. The pass also materialises each matmul's input first, so the LayerNorm/GELU
    in front of it is computed once, not once per output row. Its CPU size limit (2048) would leave out the MLP
    and the head, so we lift it: a module-level setting, read only when the pass is enabled, as it is below.
    Batched rows (M > 1) stay on MKL, whose GEMM reuses each weight M times.
    """
    from torch._inductor.fx_passes import decompose_mem_bound_mm

    decompose_mem_bound_mm.cpu_max_other_dimension_decomposition = 1 << 30
    options = {"post_grad_fusion_options": {"decompose_mm_pass": {}}}
    return torch.compile(_decode_static, fullgraph=True, dynamic=False, options=options)


_compiled_steps: dict[str, object] = {}  # device type → compiled _decode_static (torch.compile caches per shape)
_static_caches: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model → {(B, max_len, dtype): KVCache}


def _compiled_decode(device: torch.device):
    if device.type not in _compiled_steps:
        if device.type == "cuda":  # CUDA graphs: one replay per token instead of ~150 kernel launches
            step = torch.compile(_decode_static, mode="reduce-overhead", fullgraph=True, dynamic=False)
        elif device.type == "cpu":
            step = _compile_cpu_decode()
        else:
            step = torch.compile(_decode_static, fullgraph=True)
        _compiled_steps[device.type] = step
    return _compiled_steps[device.type]


def _static_cache(model: GPT, batch_size: int, max_len: int, dtype: torch.dtype, device: torch.device) -> KVCache:
    """One cache per (model, B, max_len, dtype), reused across generate() calls: a CUDA graph replays on fixed
    addresses, so a fresh cache each call would mean recording the graph again."""
    per_model = _static_caches.setdefault(model, {})
    key = (batch_size, max_len, dtype, device)
    if key not in per_model:
        cache = KVCache(model.config, batch_size, max_len, device=device, dtype=dtype)
        if device.type == "cuda":
            for buf in cache.k + cache.v:
                torch._dynamo.mark_static_address(buf)
        per_model[key] = cache
    return per_model[key]


def prepare_for_decoding(model: GPT, compile: bool = False) -> GPT:
    """Lay the weights out for fast decoding, in place (same values, shapes and parameter names); returns model.

    Eager decoding on a CPU in fp32: each nn.Linear weight (out, in) is stored column-major, i.e. as the
    contiguous (in, out) matrix it is the transpose of. F.linear then calls MKL's x @ W kernel, which streams the
    weights ≈1.4× faster here than the x @ Wᵀ kernel the row-major layout gets — and streaming weights is what a
    decode step costs. The price is one copy of each weight, once. Everything else (bf16, whose oneDNN kernel
    prefers the row-major layout; compile=True, whose fused loops read rows; GPUs) is left as it is.
    """
    if compile or model.lm_head.weight.device.type != "cpu" or model.lm_head.weight.dtype != torch.float32:
        return model
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module.weight.is_contiguous():
            w = module.weight
            module.weight = torch.nn.Parameter(w.detach().t().contiguous().t(), requires_grad=w.requires_grad)
    model.transformer.wte.weight = model.lm_head.weight  # keep the tie: one Parameter, now column-major
    return model


# ---- prompts of unequal length -------------------------------------------------------------------------------------
def left_pad(prompts: Prompts, pad_id: int = 0, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """[[5, 6, 7], [8]] → idx [[5, 6, 7], [pad, pad, 8]] (B, T) and lengths [3, 1] (B,)."""
    rows = [p.tolist() if isinstance(p, torch.Tensor) else list(p) for p in prompts]
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError("every prompt needs at least one token")
    T = max(len(r) for r in rows)
    idx = torch.tensor([[pad_id] * (T - len(r)) + r for r in rows], dtype=torch.long, device=device)
    return idx, torch.tensor([len(r) for r in rows], dtype=torch.long, device=device)


def _window_inputs(pads: list[int], start: int, n_slots: int, device):
    """For a window starting at buffer column `start`, over n_slots columns/cache slots: position ids
    (B, n_slots), each row counting from its first real token, and valid (B, 1, 1, n_slots), the slots holding
    real tokens — or (None, all-True (1, 1, 1, n_slots)) when no row has padding left in the window."""
    win_pads = [max(0, p - start) for p in pads]  # pad columns still inside the window (host ints: no sync)
    slots = torch.arange(n_slots, device=device)
    if not any(win_pads):
        return None, torch.ones(1, 1, 1, n_slots, dtype=torch.bool, device=device)
    win_pads = torch.tensor(win_pads, device=device)[:, None]  # (B, 1)
    return (slots - win_pads).clamp(min=0), (slots >= win_pads)[:, None, None, :]


def _prefill_mask(valid: torch.Tensor, T: int) -> torch.Tensor:
    """(B or 1, 1, T, T): causal, and no reading of pad slots — but a pad token reads itself, since a row with
    nothing to attend to would be NaN, and NaN keys/values poison the rows that mask them (0 · NaN = NaN)."""
    causal = torch.ones(T, T, dtype=torch.bool, device=valid.device).tril()
    return (causal & valid[..., :T]) | torch.eye(T, dtype=torch.bool, device=valid.device)


# ---- the loop ------------------------------------------------------------------------------------------------------
def _sampling_loop(
    model: GPT,
    seq: torch.Tensor,
    T: int,
    pads: list[int],
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    eos_id: int | None,
    generator: torch.Generator | None,
    use_cache: bool,
    compile: bool,
    slide: int | None,
) -> Iterator[torch.Tensor]:
    """Fill seq[:, T:] (seq (B, T + max_new_tokens), row b left-padded by pads[b]) and yield each step's ids (B,).

    The model always sees the window seq[:, start:L]; `start` moves only when the window would pass the context
    length — by the same rule with or without the cache, which is what makes the two paths agree."""
    if max_new_tokens == 0:
        return
    B, device, ctx = seq.size(0), seq.device, model.config.context_length
    slide = max(1, ctx // 4) if slide is None else slide
    if not 1 <= slide <= ctx:
        raise ValueError(f"slide must be in [1, context_length={ctx}], got {slide}")
    keep = ctx - slide + 1  # window length right after a slide, the newest token included
    start, L = max(0, T - ctx), T  # a prompt longer than the context keeps its last ctx tokens
    done = torch.zeros(B, dtype=torch.bool, device=device) if eos_id is not None else None

    def window_logits():
        """Logits (B, V) after the last token of seq[:, start:L]: a prefill that refills the cache, or (uncached)
        a full forward. Also returns the window's position ids and valid-slot mask, for decoding after it."""
        Tw = L - start
        positions, valid = _window_inputs(pads, start, max_len if use_cache else Tw, device)
        pos_ids = positions[:, :Tw] if positions is not None else None
        mask = _prefill_mask(valid, Tw)
        if use_cache:
            return prefill(model, seq[:, start:L], cache, pos_ids, mask), positions, valid
        if positions is None:  # no padding: plain causal attention (SDPA's is_causal path)
            return model(seq[:, start:L], last_only=True)[:, -1], None, None
        return model(seq[:, start:L], position_ids=pos_ids, attn_mask=mask, last_only=True)[:, -1], None, None

    if use_cache:
        dtype = next(model.parameters()).dtype
        max_len = min(ctx, L - start + max_new_tokens - 1)  # the last sampled token is never fed back
        if compile:  # round up, so that a few cache sizes (and compiled graphs) serve every request
            max_len = min(ctx, -(-max_len // 256) * 256)
            cache = _static_cache(model, B, max_len, dtype, device)
            step_fn = _compiled_decode(device)
        else:
            cache = KVCache(model.config, B, max(1, max_len), device=device, dtype=dtype)
        input_pos = torch.zeros(1, dtype=torch.long, device=device)  # updated in place: no allocation, no sync
        logits, positions, valid = window_logits()

    for step in range(max_new_tokens):
        if not use_cache:
            if L - start > ctx:
                start = L - keep
            logits, _, _ = window_logits()
        nxt = sample_next_token(logits, temperature, top_k, top_p, generator)  # (B,)
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
        if compile:
            if device.type == "cuda":
                torch.compiler.cudagraph_mark_step_begin()  # the previous step's outputs are no longer read
            logits = step_fn(model, nxt[:, None], cache, input_pos, positions, valid)
        else:
            pos_ids = positions[:, slot : slot + 1] if positions is not None else None
            logits = decode_one_token(model, nxt[:, None], cache, input_pos, pos_ids, valid[..., : slot + 1])


def _prepare(model, idx, max_new_tokens, temperature, top_k, top_p, prompt_lengths):
    check_sampling_args(temperature, top_k, top_p)
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    device = next(model.parameters()).device
    if isinstance(idx, torch.Tensor):
        if idx.dim() != 2 or idx.size(1) == 0:
            raise ValueError(f"idx must be (B, T) token ids with T >= 1, got shape {tuple(idx.shape)}")
        T = idx.size(1)
        lengths = [T] * idx.size(0) if prompt_lengths is None else [int(n) for n in prompt_lengths]
        if len(lengths) != idx.size(0) or not all(1 <= n <= T for n in lengths):
            raise ValueError(f"prompt_lengths must be B={idx.size(0)} integers in [1, {T}], got {lengths}")
        idx = idx.to(device)
    else:
        idx, lengths = left_pad(idx, device=device)
        lengths, T = lengths.tolist(), idx.size(1)
    seq = torch.empty(idx.size(0), T + max_new_tokens, dtype=torch.long, device=device)
    seq[:, :T] = idx
    return seq, T, [T - n for n in lengths]


@torch.inference_mode()
def generate_stream(
    model: GPT,
    idx: torch.Tensor | Prompts,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
    *,
    prompt_lengths: Sequence[int] | torch.Tensor | None = None,
    use_cache: bool = True,
    compile: bool = False,
    slide: int | None = None,
) -> Iterator[torch.Tensor]:
    """Like generate(), but yields each step's new ids (B,) as soon as they are sampled (for streaming text).
    Stops after max_new_tokens steps, or once every row has emitted eos_id."""
    seq, T, pads = _prepare(model, idx, max_new_tokens, temperature, top_k, top_p, prompt_lengths)
    was_training = model.training
    model.eval()  # dropout off: sampling must not depend on it
    try:
        yield from _sampling_loop(
            model, seq, T, pads, max_new_tokens, temperature, top_k, top_p, eos_id, generator, use_cache, compile, slide
        )
    finally:
        model.train(was_training)


def generate(
    model: GPT,
    idx: torch.Tensor | Prompts,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
    *,
    prompt_lengths: Sequence[int] | torch.Tensor | None = None,
    use_cache: bool = True,
    compile: bool = False,
    slide: int | None = None,
) -> torch.Tensor | list[list[int]]:
    """Continue prompts by up to max_new_tokens tokens.

    idx: a (B, T) tensor of ids → returns (B, T + n) with the prompts unchanged; n = max_new_tokens, or fewer
         when every row has emitted eos_id (a row that finished early is filled with eos_id after it).
         prompt_lengths (B,): the rows are left-padded and row b's prompt is its last prompt_lengths[b] ids.
    idx: a list of prompts (lists or 1-D tensors of ids, any lengths) → a list of id lists, each its prompt and
         continuation, cut after eos_id.
    temperature 0 is greedy; top_k / top_p restrict sampling (see sample_next_token); generator makes it
    reproducible. use_cache=False recomputes the whole window every step (the reference the tests compare with).
    compile=True compiles the decode step: the first call per batch size / cache size pays 20-60 s on 2 CPU
    cores, later ones decode ≈1.5-1.9× faster than eager on a CPU at batch 1; on CUDA it replays CUDA graphs.
    It keeps one cache per model and shape, so do not interleave two compiled streams on one model; and it wants
    the natural weight layout (prepare_for_decoding(model, compile=True) leaves it so).
    slide: tokens dropped from the window when it reaches the context length (module docstring).
    """
    seq, T, pads = _prepare(model, idx, max_new_tokens, temperature, top_k, top_p, prompt_lengths)
    was_training = model.training
    model.eval()
    steps = 0
    loop = _sampling_loop(
        model, seq, T, pads, max_new_tokens, temperature, top_k, top_p, eos_id, generator, use_cache, compile, slide
    )
    try:
        with torch.inference_mode():
            for _ in loop:
                steps += 1
    finally:
        model.train(was_training)
    seq = seq[:, : T + steps]
    if isinstance(idx, torch.Tensor):
        return seq
    out = []
    for row, pad in zip(seq.tolist(), pads):
        row = row[pad:]
        if eos_id is not None and eos_id in row[T - pad :]:
            row = row[: row.index(eos_id, T - pad) + 1]
        out.append(row)
    return out
