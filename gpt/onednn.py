"""fp32 matmuls on a CPU through oneDNN's kernel instead of MKL's, where MKL leaves half the machine unused.

    class GPT(nn.Module):
        @fp32_forward                        # gpt/model.py: every forward of the model, training or inference
        def forward(self, idx, ...): ...
    with fp32_linears(device):               # any other code: a no-op where it does not pay (see fp32_pays)
        logits = model.lm_head(h)            # every fp32 F.linear inside runs oneDNN's kernel; so does its backward

Why: torch's fp32 matmul on a CPU is MKL's, and MKL picks its code by the CPU's vendor. On a 2-core AMD EPYC Zen 5
(AVX-512) MKL ran GPT-2 124M's training matmuls (1024 tokens) at 158-189 GFLOP/s and oneDNN's kernel — the one
torch.compile's inductor calls, `torch.ops.mkldnn._linear_pointwise` — at 333-399 (backward's weight gradients
292-320); with oneDNN held to AVX2 the loss's GEMMs ran 103-221 against MKL's 100-184. bf16 matmuls go to oneDNN
already. So on CPUs not made by Intel, fp32 training runs its Linear layers and its output layer's loss (gpt/loss.py)
through oneDNN; on Intel CPUs MKL keeps them: on a 2-core Xeon with AMX, MKL beat oneDNN on every shape of
bench/run.py's matmul sweep (fp32 0.34-0.37 TFLOP/s; bench/results/cpu-intel-xeon-processor-amx-2t.md).
GPT_ONEDNN_FP32=0/1 overrides the choice. Inference gains as much: 124M's fp32 forward on that Zen 5 took 32 ms for
16 tokens with oneDNN against 65 with MKL, 0.42 s against 0.81 for 4 × 128 tokens, and a decode step through the
forward (batch 1 with a hook, or batch 16) 19 ms against 32 — evaluation, prefill, perplexity and explain pages run
GPT.forward, so they all take it (generate()'s own batch ≤ 8 decode step is gpt/fast_decode.py's, apart from this).

How: a TorchFunctionMode that sees every F.linear call made inside it and sends fp32 CPU ones without autocast to
_Linear, an autograd Function whose forward and backward call the oneDNN kernel. Results equal F.linear's to fp32
rounding (another summation order). Not for torch.compile (it traces the model's own F.linear; compile and this
mode are alternatives: fp32_forward steps aside while torch.compile traces). The mode sees every torch call made
inside it (a few µs each: ≈ 1 ms in a 124M forward), so it is entered only where it will route something: fp32
parameters on a CPU, no autocast, fp32_pays().
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from gpt.utils import cpuinfo, env_flag

ONEDNN_ENV = "GPT_ONEDNN_FP32"  # 0/false: fp32 CPU matmuls stay on torch's own (MKL); 1/true: oneDNN on any CPU


def _cpu_vendor() -> str:
    return cpuinfo("vendor_id") or ""  # "AuthenticAMD", "GenuineIntel"; "" where unknown


def available() -> bool:
    """Whether this torch build has oneDNN and its linear op (`torch.ops.mkldnn._linear_pointwise`)."""
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except (AttributeError, RuntimeError):
        return False


@functools.cache
def fp32_pays() -> bool:
    """Whether fp32 CPU matmuls go through oneDNN's kernel: where torch has it, on CPUs whose vendor is known and
    not Intel (GPT_ONEDNN_FP32=0/1 overrides). Decided once per process."""
    if not available():
        return False
    forced = env_flag(ONEDNN_ENV)
    if forced is not None:
        return forced
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


_entered = threading.local()  # .depth: modes of ours this thread is inside (torch's mode stack is per thread too)


def _depth() -> int:
    return getattr(_entered, "depth", 0)


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
        self._modes: list[_Mode | None] = []

    def __enter__(self) -> fp32_linears:
        mode = _Mode() if self.active and _depth() == 0 else None  # inside another: that one routes the calls, and
        if mode is not None:  # a second would only add its overhead to every call
            mode.__enter__()
            _entered.depth = _depth() + 1
        self._modes.append(mode)
        return self

    def __exit__(self, *exc) -> None:
        mode = self._modes.pop()
        if mode is not None:
            _entered.depth = _depth() - 1
            mode.__exit__(*exc)


def fp32_forward(forward: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for a module's forward(self, idx, ...): runs it inside fp32_linears when that routes something —
    idx on a CPU, the module's parameters fp32, autocast off, fp32_pays() — and not while torch.compile traces it
    (the compiled graph has its own kernels; torch.compiler.is_compiling() is a constant there, so tracing skips the
    mode). Elsewhere forward runs as written."""

    @functools.wraps(forward)
    def wrapped(self: torch.nn.Module, idx: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        if (torch.compiler.is_compiling() or idx.device.type != "cpu" or _depth() or not fp32_pays()
                or torch.is_autocast_enabled("cpu") or next(self.parameters()).dtype != torch.float32):  # fmt: skip
            return forward(self, idx, *args, **kwargs)
        with fp32_linears("cpu"):
            return forward(self, idx, *args, **kwargs)

    return wrapped
