"""The machine a benchmark ran on: its name (the report's file name) and the environment the report records."""

from __future__ import annotations

import datetime
import os
import platform
import re
import sys
import time
from collections.abc import Callable

import torch

from gpt.utils import cpu_flags as all_cpu_flags
from gpt.utils import cpuinfo


def sync(device: str | torch.device) -> None:
    """Wait until the device has run what was queued on it (CUDA runs kernels asynchronously); on a CPU, nothing."""
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def call_seconds(f: Callable[[], object], device: str | torch.device) -> float:
    """Wall seconds of one call of f, with the device's queued work finished before and after it."""
    sync(device)
    t0 = time.perf_counter()
    f()
    sync(device)
    return time.perf_counter() - t0


def cpu_model() -> str:
    return cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_flags() -> str:
    """The matmul-relevant instruction sets this CPU has (they decide what bf16 costs)."""
    flags = all_cpu_flags()
    return " ".join(f for f in ["avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"] if f in flags)


def isa_tier(flags: frozenset[str] | None = None) -> str:
    """The best matmul instruction set of this CPU, one word: amx, avx512bf16, avx512, avx2 or base. One model name
    covers several families ("AMD EPYC": Zen 3 with AVX2 only, Zen 4/5 with AVX-512 BF16), and the tier is what
    decides which fast path wins, so it is part of a report's name. flags: /proc/cpuinfo's by default."""
    flags = all_cpu_flags() if flags is None else flags
    for tier, flag in [("amx", "amx_tile"), ("avx512bf16", "avx512_bf16"), ("avx512", "avx512f"), ("avx2", "avx2")]:
        if flag in flags:
            return tier
    return "base"


# AMD's (family, first model, last model) -> core generation, as Linux's arch/x86/kernel/cpu/amd.c assigns its
# X86_FEATURE_ZEN1..ZEN5 flags (Milan is family 25 model 1, Genoa 25/17, Turin 26/2 or 26/17).
AMD_ZEN = [
    (23, 0x00, 0x2F, "zen1"), (23, 0x30, 0xAF, "zen2"),
    (25, 0x00, 0x0F, "zen3"), (25, 0x20, 0x5F, "zen3"), (25, 0x10, 0x1F, "zen4"), (25, 0x60, 0xAF, "zen4"),
    (26, 0x00, 0x2F, "zen5"), (26, 0x40, 0x4F, "zen5"), (26, 0x60, 0x7F, "zen5"),
]  # fmt: skip


def cpu_generation(vendor: str | None = None, family: str | None = None, model: str | None = None) -> str:
    """The core generation where the model name does not tell it: "AMD EPYC" covers Zen 3 (AVX2 only), Zen 4 and
    Zen 5 (AVX-512 BF16, different widths), which differ in what wins. "zen4" for an AMD family 25 model 17; for
    another AMD family/model "f<family>m<model>"; "" on other vendors or where /proc/cpuinfo is missing. (Intel's model
    names tell the generation on bare metal; under a hypervisor that reports "Intel(R) Xeon(R) Processor" and a
    made-up model (167 on the 2026-12-02 Xeon with AMX), only the instruction-set tier tells machines apart.)
    Arguments: /proc/cpuinfo's "vendor_id", "cpu family" and "model" by default."""
    vendor = cpuinfo("vendor_id") if vendor is None else vendor
    family = cpuinfo("cpu family") if family is None else family
    model = cpuinfo("model") if model is None else model
    if vendor != "AuthenticAMD" or not (family or "").isdigit() or not (model or "").isdigit():
        return ""
    f, m = int(family), int(model)
    return next((gen for fam, lo, hi, gen in AMD_ZEN if fam == f and lo <= m <= hi), f"f{f}m{m}")


def cpu_family_model() -> str | None:
    """The vendor, family and model ("AuthenticAMD family 25 model 17"): what tells one chip from another under one
    model name; None without /proc/cpuinfo (macOS, Windows)."""
    vendor = cpuinfo("vendor_id")
    return f"{vendor} family {cpuinfo('cpu family')} model {cpuinfo('model')}" if vendor else None


def machine_name(device: str) -> str:
    """A file name for this machine: the GPU model on CUDA, else the CPU model, its generation where the model name
    hides it, its instruction-set tier and the thread count (cpu-amd-epyc-zen3-avx2-2t, cpu-intel-xeon-...-amx-2t)."""
    if device.startswith("cuda"):
        raw = torch.cuda.get_device_name(torch.device(device))
    else:
        raw = f"cpu {cpu_model()} {cpu_generation()} {isa_tier()} {torch.get_num_threads()}t"
    raw = re.sub(r"\((r|tm)\)", " ", raw.lower())  # "Intel(R) Xeon(R)" -> "intel xeon"
    return re.sub(r"[^a-z0-9]+", "-", raw).strip("-")


def environment(device: str) -> dict:
    env = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "cpu_family_model": cpu_family_model(),
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "device": device,
        "command": "python bench/run.py " + " ".join(sys.argv[1:]),
    }
    try:
        import transformers

        env["transformers"] = transformers.__version__
    except ImportError:
        env["transformers"] = None
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
        env["cuda"] = torch.version.cuda
    return env
