"""Starting a run from pretrained weights (e.g. OpenAI's GPT-2, converted) instead of a random init."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from gpt.model import GPT
from gpt.weights import load_model


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
