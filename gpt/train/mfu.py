"""MFU (model FLOPs utilisation): the training FLOPs a model needs per token, and the peak a device offers.

    mfu = estimate_mfu(tokens_per_sec, flops_per_token(cfg.model, seq_len), device_peak_flops(device, dtype))

The FLOP count is nanoGPT's (after the PaLM paper, appendix B); the peaks come from NVIDIA's data sheets.
"""

from __future__ import annotations

import torch

from gpt.config import GPTConfig


def flops_per_token(config: GPTConfig, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward) as in nanoGPT / the PaLM appendix: 6·N for the weights
    (N without the position table, which is a lookup; the tied wte counts once, as the output matmul) plus
    12·L·C·T for attention scores and values. GPT-2 124M at T=1024: ≈ 855 MFLOP."""
    n = sum(
        (
            config.padded_vocab_size * config.n_embd,  # wte = lm_head
            config.n_layer * (12 * config.n_embd**2 + 13 * config.n_embd),  # attn + mlp weights, biases, 2 LNs
            2 * config.n_embd,  # ln_f
            -(0 if config.qkv_bias else config.n_layer * 3 * config.n_embd),
        )
    )
    return 6.0 * n + 12.0 * config.n_layer * config.n_embd * seq_len


# Dense peak FLOP/s per device, from NVIDIA's data sheets: (bfloat16 tensor core, TF32 tensor core).
GPU_PEAK_FLOPS = {
    "H100 PCIe": (756e12, 378e12),
    "H100": (989e12, 494e12),
    "H200": (989e12, 494e12),
    "A100": (312e12, 156e12),
}


def device_peak_flops(device: torch.device, dtype: torch.dtype) -> float | None:
    """Peak FLOP/s of one device for this dtype if it is a GPU we know, else None (pass --peak-tflops)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, (bf16, tf32) in GPU_PEAK_FLOPS.items():  # "H100 PCIe" is checked before "H100"
        if key in name:
            return bf16 if dtype == torch.bfloat16 else tf32
    return None


def estimate_mfu(tokens_per_sec: float, flops_per_tok: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: the share of the hardware's peak that the model's useful FLOPs amount to."""
    return tokens_per_sec * flops_per_tok / peak_flops
