"""fp32 matmuls on a CPU through oneDNN's kernel instead of MKL's, where MKL leaves half the machine unused.

    from gpt.onednn import fp32_linears
    with fp32_linears(device):               # a no-op where it does not pay (see fp32_pays)
        loss = model(x, y).loss              # every fp32 F.linear of the forward runs oneDNN's kernel; so does backward
    loss.backward()

Why: torch's fp32 matmul on a CPU is MKL's, and MKL picks its code by the CPU's vendor. On a 2-core AMD EPYC Zen 5
(AVX-512) MKL ran GPT-2 124M's training matmuls (1024 tokens) at 158-189 GFLOP/s and oneDNN's kernel — the one
torch.compile's inductor calls, `torch.ops.mkldnn._linear_pointwise` — at 333-399 (backward's weight gradients
292-320); with oneDNN held to AVX2 the loss's GEMMs ran 103-221 against MKL's 100-184. bf16 matmuls go to oneDNN
already. So on CPUs not made by Intel, fp32 training runs its Linear layers and its output layer's loss (gpt/loss.py)
through oneDNN; on Intel CPUs MKL keeps them (its own vendor's: not measured here, no Intel session yet).
GPT_ONEDNN_FP32=0/1 overrides the choice.

How: a TorchFunctionMode that sees every F.linear call made inside it and sends fp32 CPU ones without autocast to
_Linear, an autograd Function whose forward and backward call the oneDNN kernel. Results equal F.linear's to fp32
rounding (another summation order). Not for torch.compile (it traces the model's own F.linear; compile and this
mode are alternatives: scripts/pretrain.py uses this one only when it does not compile).
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import torch
from torch.overrides import TorchFunctionMode

ONEDNN_ENV = "GPT_ONEDNN_FP32"  # "0": fp32 CPU matmuls stay on torch's own (MKL); "1": oneDNN whatever the vendor


def _cpu_vendor() -> str:
    try:
        m = re.search(r"^vendor_id\s*:\s*(\S+)", Path("/proc/cpuinfo").read_text(encoding="utf-8"), re.M)
    except OSError:
        return ""
    return m.group(1) if m else ""


@functools.cache
def fp32_pays() -> bool:
    """Whether fp32 CPU matmuls go through oneDNN's kernel: where torch has it, on CPUs whose vendor is known and
    not Intel (GPT_ONEDNN_FP32=0/1 overrides). Decided once per process."""
    if not (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")):
        return False
    env = os.environ.get(ONEDNN_ENV)
    if env is not None:
        return env != "0"
    vendor = _cpu_vendor()
    return vendor not in ("", "GenuineIntel")


def applies(*tensors: torch.Tensor | None) -> bool:
    """Whether a matmul of these tensors (None: an absent bias) goes through oneDNN: all fp32 on a CPU, and
    fp32_pays()."""
    return all(t is None or (t.device.type == "cpu" and t.dtype == torch.float32) for t in tensors) and fp32_pays()


def mm_t(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x @ wᵀ: x (N, K), w (M, K), any strides → (N, M) fp32; oneDNN's kernel for fp32 CPU tensors where
    fp32_pays(), else torch's matmul."""
    if applies(x, w):
        return torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")
    return x @ w.t()


class _Linear(torch.autograd.Function):
    """F.linear(x, w, b) with oneDNN's kernel in forward and backward: x (..., in), w (out, in), b (out,) or None."""

    @staticmethod
    def forward(ctx, x, w, b):
        x2 = x.reshape(-1, x.size(-1)).contiguous()  # (N, in)
        y = torch.ops.mkldnn._linear_pointwise(x2, w, b, "none", [], "")  # (N, out)
        ctx.save_for_backward(x2, w)
        ctx.shape, ctx.has_bias = x.shape, b is not None
        return y.view(*x.shape[:-1], w.size(0))

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        x2, w = ctx.saved_tensors
        dy2 = dy.reshape(-1, dy.size(-1)).contiguous()  # (N, out)
        lin = torch.ops.mkldnn._linear_pointwise
        dx = lin(dy2, w.t(), None, "none", [], "").view(ctx.shape) if ctx.needs_input_grad[0] else None  # dy W
        dw = lin(dy2.t().contiguous(), x2.t(), None, "none", [], "") if ctx.needs_input_grad[1] else None  # dyᵀ x
        db = dy2.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return dx, dw, db


class _Mode(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.linear and not kwargs and len(args) in (2, 3):
            x, w, b = (*args, None)[:3]
            if (w.dim() == 2 and (b is None or (b.dim() == 1 and b.is_contiguous())) and applies(x, w, b)
                    and not torch.is_autocast_enabled("cpu")):  # fmt: skip
                return _Linear.apply(x, w, b)
        return func(*args, **kwargs)


class fp32_linears:  # noqa: N801 (a context manager, used like a function: `with fp32_linears(device):`)
    """Inside it, fp32 F.linear calls on `device` (a CPU) run oneDNN's kernel where fp32_pays(); elsewhere it does
    nothing. Reusable: each `with` enters a fresh mode."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.active = torch.device(device).type == "cpu" and fp32_pays()
        self._modes: list[_Mode] = []

    def __enter__(self) -> fp32_linears:
        if self.active:
            self._modes.append(_Mode())
            self._modes[-1].__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.active:
            self._modes.pop().__exit__(*exc)
