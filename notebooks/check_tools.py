"""What every exercise check shares: a small model, and the ✓ / AssertionError reporting (notebooks/checks.py)."""

from __future__ import annotations


import torch

from gpt import GPT, GPTConfig

SMALL = GPTConfig(vocab_size=100, context_length=32, n_layer=2, n_head=2, n_embd=16)  # a model that runs in ms


def ok(message: str) -> None:
    print(f"✓ {message}")


def small_model(config: GPTConfig = SMALL, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(config).eval()


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def expect_close(actual, expected, what: str, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    expect(actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)}")
    gap = (actual.double() - expected.double()).abs().max().item() if actual.numel() else 0.0
    expect(torch.allclose(actual.double(), expected.double(), atol=atol, rtol=rtol), f"{what}: off by up to {gap:.2e}")
