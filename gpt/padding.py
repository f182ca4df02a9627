"""Prompts of unequal length in one batch: left padding, and the position ids and masks that make it invisible.

Row b's prompt sits at the right end of the (B, T) buffer after pad_b pad columns. The pad columns get attention
masked off (a pad token attends only to itself, so no row of the mask is empty — an all-masked row would be NaN)
and position ids count from each row's first real token, so every row computes what it would alone. All rows then
share one cache slot per step (gpt/generate.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

Prompts = Sequence[Sequence[int] | torch.Tensor]


def left_pad(prompts: Prompts, pad_id: int = 0, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """[[5, 6, 7], [8]] → idx [[5, 6, 7], [pad, pad, 8]] (B, T) and lengths [3, 1] (B,)."""
    rows = [p.tolist() if isinstance(p, torch.Tensor) else list(p) for p in prompts]
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError("every prompt needs at least one token")
    T = max(len(r) for r in rows)
    idx = torch.tensor([[pad_id] * (T - len(r)) + r for r in rows], dtype=torch.long, device=device)
    return idx, torch.tensor([len(r) for r in rows], dtype=torch.long, device=device)


def prompt_buffer(
    idx: torch.Tensor | Prompts,
    max_new_tokens: int,
    prompt_lengths: Sequence[int] | torch.Tensor | None,
    device: torch.device,
) -> tuple[torch.Tensor, int, list[int]]:
    """The prompts in a (B, T + max_new_tokens) buffer on `device`, their common length T and each row's pad
    count. idx is a (B, T) tensor (left-padded when prompt_lengths (B,) is given) or a list of prompts of any
    lengths. Raises ValueError on an empty prompt, a bad shape or bad prompt_lengths."""
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


def window_inputs(pads: list[int], start: int, n_slots: int, device) -> tuple[torch.Tensor | None, torch.Tensor]:
    """For a window starting at buffer column `start`, over n_slots columns/cache slots: position ids
    (B, n_slots), each row counting from its first real token, and valid (B, 1, 1, n_slots), the slots holding
    real tokens — or (None, all-True (1, 1, 1, n_slots)) when no row has padding left in the window."""
    win_pads = [max(0, p - start) for p in pads]  # pad columns still inside the window (host ints: no sync)
    slots = torch.arange(n_slots, device=device)
    if not any(win_pads):
        return None, torch.ones(1, 1, 1, n_slots, dtype=torch.bool, device=device)
    win_pads = torch.tensor(win_pads, device=device)[:, None]  # (B, 1)
    return (slots - win_pads).clamp(min=0), (slots >= win_pads)[:, None, None, :]


def prefill_mask(valid: torch.Tensor, T: int) -> torch.Tensor:
    """(B or 1, 1, T, T): causal, and no reading of pad slots — but a pad token reads itself, since a row with
    nothing to attend to would be NaN, and NaN keys/values poison the rows that mask them (0 · NaN = NaN)."""
    causal = torch.ones(T, T, dtype=torch.bool, device=valid.device).tril()
    return (causal & valid[..., :T]) | torch.eye(T, dtype=torch.bool, device=valid.device)
