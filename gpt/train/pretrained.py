"""Starting a run from pretrained weights (e.g. OpenAI's GPT-2, converted) instead of a random init."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from gpt.model import GPT
from gpt.train.config import TrainConfig
from gpt.train.optim import grad_accum_steps
from gpt.weights import load_model, read_config


def with_pretrained_architecture(cfg: TrainConfig, world_size: int = 1) -> TrainConfig:
    """cfg with the architecture of the weights at cfg.init_from (read from the file's header, no weights loaded),
    known before the training windows and the gradient accumulation are derived from it, so the run and the config
    it saves agree (a resumed run rebuilds the same windows).

    Windows: an explicit seq_len stays; None becomes the config's own model.context_length (what the config meant
    to train on), capped at the weights' context length, and is then written out. Raises ValueError when an
    explicit seq_len does not fit the weights' context or total_batch_tokens does not split into the windows
    (gradient accumulation over world_size processes), FileNotFoundError when there are no weights at init_from."""
    arch = read_config(cfg.init_from)
    if cfg.seq_len is not None and cfg.seq_len > arch.context_length:
        raise ValueError(
            f"seq_len {cfg.seq_len} is longer than the context length {arch.context_length} of the weights in "
            f"{cfg.init_from}; pass --seq-len {arch.context_length} or less"
        )
    seq_len = cfg.seq_len or min(cfg.model.context_length, arch.context_length)
    try:
        grad_accum_steps(cfg.total_batch_tokens, cfg.batch_size, seq_len, world_size)
    except ValueError as e:
        ctx = arch.context_length
        raise ValueError(f"windows are {seq_len} tokens (the weights' context length is {ctx}): {e}") from None
    model = dataclasses.replace(arch, dropout=cfg.model.dropout, vocab_multiple=cfg.model.vocab_multiple)
    return dataclasses.replace(cfg, model=model, seq_len=seq_len)


def model_from_pretrained(path: str | Path, dropout: float, vocab_multiple: int) -> GPT:
    """A GPT with the weights at `path` (file, checkpoint dir or run dir; see gpt/weights/format.py), on the CPU.
    Their architecture wins, except dropout and the vocabulary padding: padding to a multiple of 64 (50304 rows)
    is faster, and the extra rows, never a token, keep their random init (seed first for a reproducible one).
    Fewer padding rows than the file holds drops the extra ones."""
    pretrained = load_model(path, device="cpu")
    config = dataclasses.replace(pretrained.config, dropout=dropout, vocab_multiple=vocab_multiple)
    model = GPT(config)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():  # equal shapes, or more/fewer padding rows
            src = pretrained.state_dict()[name]
            tensor[: src.size(0)].copy_(src[: tensor.size(0)])
    return model
