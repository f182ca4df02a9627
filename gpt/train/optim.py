"""The optimizer and its schedule: AdamW with decay on matrices only, warmup + cosine, gradient accumulation.

    opt = configure_optimizer(model, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, device_type="cpu")
    lr = lr_at(step, max_lr=6e-4, min_lr=6e-5, warmup_steps=100, decay_steps=5000)
    accum = grad_accum_steps(total_batch_tokens=524_288, batch_size=16, seq_len=1024, world_size=8)  # → 4

The recipe is GPT-3's (Brown et al. 2020, appendix B) as nanoGPT uses it for GPT-2 124M.
"""

from __future__ import annotations

import math

import torch


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices (Linear weights, embeddings) only; biases and LayerNorm gains stay undecayed.
    The tied wte/lm_head weight appears once (named_parameters deduplicates shared Parameters)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def configure_optimizer(
    model: torch.nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-8,
    device_type: str = "cuda",
) -> torch.optim.AdamW:
    """AdamW over param_groups(); the fused kernel (one launch for all parameters) on CUDA and CPU, where it is
    the fastest implementation; the default (foreach) elsewhere."""
    fused = device_type in ("cuda", "cpu")
    for p in model.parameters():  # plain row-major weights for training, e.g. after load_model's decode layout;
        if not p.is_contiguous():  # in place, before the optimizer state exists (fused AdamW assumes both share
            with torch.no_grad():  # one layout: torch 2.13's CPU kernel computes wrong updates when they differ)
                p.data = p.data.contiguous()
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps, fused=fused)


def lr_at(step: int, *, max_lr: float, min_lr: float, warmup_steps: int, decay_steps: int) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup to max_lr over warmup_steps (never 0 at
    step 0), then cosine decay to min_lr at decay_steps, then min_lr."""
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= decay_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, decay_steps - warmup_steps)  # 0 → 1
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def batch_size_for(total_batch_tokens: int, batch_size: int, seq_len: int, world_size: int = 1) -> int | None:
    """The largest batch size ≤ batch_size for which world_size processes reach total_batch_tokens in whole
    micro-steps (the same training recipe, in smaller micro-batches), or None when none does: total_batch_tokens is
    not a multiple of seq_len · world_size. E.g. configs/tiny.yaml (1,024 tokens a step, 8 × 128) on 2 processes: 4."""
    per_seq = seq_len * world_size
    if total_batch_tokens % per_seq:
        return None
    k = total_batch_tokens // per_seq  # sequences per process per optimizer step
    return max(b for b in range(1, min(batch_size, k) + 1) if k % b == 0)


def data_parallel_split(
    total_batch_tokens: int, batch_size: int, seq_len: int, max_processes: int
) -> tuple[int, int | None] | None:
    """The most processes, 2 to max_processes, that reach total_batch_tokens together, with the batch size each
    needs (None: batch_size as it is; else the largest smaller one, batch_size_for); None when no 2 or more do —
    e.g. tiny.yaml (1,024 tokens, 8 × 128) on 2 CPUs: (2, 4)."""
    for procs in range(max_processes, 1, -1):
        b = batch_size_for(total_batch_tokens, batch_size, seq_len, procs)
        if b:
            return procs, (b if b != batch_size else None)
    return None


def grad_accum_steps(total_batch_tokens: int, batch_size: int, seq_len: int, world_size: int = 1) -> int:
    """Micro-steps per optimizer step so that world_size · steps · batch_size · seq_len == total_batch_tokens.
    Raises ValueError when it does not divide, naming the fix: the --batch-size that keeps total_batch_tokens
    (batch_size_for), else the nearest totals this batch size reaches, and the neighbouring total (a multiple of
    seq_len · world_size) that keeps the largest batch size, with it."""
    per_micro = batch_size * seq_len * world_size
    if total_batch_tokens % per_micro == 0:
        return total_batch_tokens // per_micro
    same = batch_size_for(total_batch_tokens, batch_size, seq_len, world_size)
    if same:
        fix = f"--batch-size {same} (the same tokens per step)"
    else:
        lo = max(per_micro, total_batch_tokens // per_micro * per_micro)
        fix = f"--total-batch-tokens {lo} or {lo + per_micro}"  # this batch size, more or fewer micro-steps
        per_seq = seq_len * world_size
        near = [max(per_seq, total_batch_tokens // per_seq * per_seq), -(-total_batch_tokens // per_seq) * per_seq]
        total, b = max(((t, batch_size_for(t, batch_size, seq_len, world_size)) for t in near), key=lambda tb: tb[1])
        if total not in (lo, lo + per_micro):
            fix += f", or --total-batch-tokens {total} --batch-size {b} (nearer)"
    raise ValueError(
        f"total_batch_tokens ({total_batch_tokens}) must be a multiple of batch_size · seq_len · processes "
        f"= {batch_size} · {seq_len} · {world_size} = {per_micro}; e.g. {fix}"
    )
