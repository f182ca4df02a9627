"""Devices and processes: the CUDA guard, the training device, the autocast dtype, and torchrun's DDP ranks.

    device = resolve_device(cfg, dist_info_from_env().local_rank)   # raises CudaGuardError without a usable GPU
    amp_dtype = autocast_dtype(cfg, device)          # auto: bfloat16 where bf16 matmuls are native, else float32
    if cfg.compile and compile_pays(device): model = torch.compile(model)   # not on a CPU, where it is slower

scripts/pretrain.py turns a CudaGuardError into its one-line `error: ...` and exit code 1.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from gpt.utils import cpu_flags, env_flag

if TYPE_CHECKING:
    from gpt.train.config import TrainConfig


class CudaGuardError(RuntimeError):
    """The run asked for a GPU (the default) but none is usable; the message lists the options."""


def cuda_guard_message() -> str:
    if torch.version.cuda is None:
        why = f"this PyTorch ({torch.__version__}) is a CPU-only build, without CUDA support"
    else:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        why = (
            f"this PyTorch ({torch.__version__}, built for CUDA {torch.version.cuda}) finds no usable GPU"
            + (f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else "")
            + "; check the driver with `nvidia-smi`"
        )
    return (
        "CUDA is not available, and pretraining is sized for a GPU.\n"
        f"  Why: {why}.\n"
        "  Options:\n"
        "    1. Fix CUDA: install a PyTorch build that matches your driver (https://pytorch.org/get-started/locally/)"
        " and check that `python -c 'import torch; print(torch.cuda.is_available())'` prints True.\n"
        "    2. On an Apple-silicon Mac: add --device mps.\n"
        "    3. Train on the CPU with the CPU-sized config:\n"
        "         python scripts/pretrain.py --config configs/tiny.yaml --force-cpu"
    )


def resolve_device(cfg: TrainConfig, local_rank: int = 0) -> torch.device:
    """The training device. 'auto' means CUDA; without CUDA it raises CudaGuardError unless --force-cpu (or an
    explicit --device cpu / mps) says the CPU or MPS is meant."""
    name = cfg.device.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if cfg.force_cpu:
            return torch.device("cpu")
        raise CudaGuardError(cuda_guard_message())
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CudaGuardError(cuda_guard_message())
        return torch.device("cuda", local_rank) if name == "cuda" else torch.device(name)
    if name == "mps":
        from gpt.utils import mps_available

        if not mps_available():
            raise ValueError("--device mps asked for, but Apple's MPS backend is not available on this machine")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device {cfg.device!r}; use auto, cuda, cpu or mps")


def autocast_dtype(cfg: TrainConfig, device: torch.device, flags: frozenset[str] | None = None) -> torch.dtype:
    """The autocast dtype of a run: `dtype: auto` takes bfloat16 wherever bf16 matmuls run natively
    (native_bf16_matmul: CUDA with bf16, a CPU with AVX-512 BF16 or AMX) and float32 (no autocast) elsewhere,
    MPS included; `bfloat16` and `float32` are taken as asked. `flags`: the CPU's feature flags (from
    /proc/cpuinfo if None)."""
    if cfg.dtype == "auto":
        native = device.type in ("cuda", "cpu") and native_bf16_matmul(device, flags)
        return torch.bfloat16 if native else torch.float32
    return torch.bfloat16 if cfg.dtype == "bfloat16" else torch.float32


def native_bf16_matmul(device: torch.device, flags: frozenset[str] | None = None) -> bool:
    """Whether bf16 matmuls run at the hardware's speed on this device: CUDA with bf16 support; a CPU with AVX-512
    BF16 or AMX (`flags`: its feature flags, read from /proc/cpuinfo if None). A CPU without them (AVX2 only: AMD
    Zen 3, Intel before Cooper Lake) runs torch's bf16 matmul as a slow emulation: 20 GFLOP/s against 176 for fp32
    on a (1024×768)·(768×3072) product, 2-core AMD EPYC (Zen 3), torch 2.13 — bf16 autocast training there is
    several times slower than fp32 (issue 15)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return True  # MPS and others: as the backend provides it
    return emulated_matmul_note(torch.bfloat16, device, flags) is None


_NATIVE_FLAGS = {torch.bfloat16: ({"avx512_bf16", "amx_bf16"}, "AVX-512 BF16 or AMX"),
                 torch.float16: ({"avx512_fp16", "amx_fp16"}, "AVX-512 FP16 or AMX-FP16")}  # fmt: skip


def emulated_matmul_note(dtype: torch.dtype, device: torch.device, flags: frozenset[str] | None = None) -> str | None:
    """Why `dtype` matmuls are slow on this device, or None where they run natively: on a CPU, bfloat16 without
    AVX-512 BF16 or AMX and float16 without AVX-512 FP16 or AMX-FP16 are emulated by torch (measured on a 2-core AMD
    EPYC Zen 5, torch 2.13, a (1024×768)·(768×3072) product: float16 1 GFLOP/s, float32 132, bfloat16 644; bf16 on
    an AVX2-only Zen 3: 20 against fp32's 176). `flags`: the CPU's feature flags (/proc/cpuinfo's if None). GPUs and
    float32: None. Whether AVX-512 FP16 makes torch's fp16 matmul fast is unmeasured here (no such CPU yet)."""
    if device.type != "cpu" or dtype not in _NATIVE_FLAGS:
        return None
    needed, names = _NATIVE_FLAGS[dtype]
    if needed & (cpu_flags() if flags is None else flags):
        return None
    name = str(dtype).removeprefix("torch.")
    return f"this CPU has no {names}, so torch emulates {name} matmuls, several times slower than float32"


def bf16_warning(amp_dtype: torch.dtype, device: torch.device) -> str | None:
    """The warning to print when bf16 autocast was asked for where it is slow (native_bf16_matmul), else None."""
    if amp_dtype != torch.bfloat16 or native_bf16_matmul(device):
        return None
    return (
        "warning: bfloat16 autocast on this CPU (no AVX-512 BF16 or AMX) emulates its matmuls, several times "
        "slower than float32; pass --dtype float32 (or auto) to train faster"
    )


COMPILE_ENV = "GPT_TRAIN_COMPILE"  # "1" / "0": compile the training model or not, whatever compile_pays() says


def compile_pays(device: torch.device) -> bool:
    """Whether a run with `compile: true` compiles its model on this device, or trains eagerly because compiling
    would be slower — so that `compile: true` is never the slower choice (issue 15).

    CPU: no. A compiled training step measured 0.66-0.99× the eager one's speed on every case tried (2-core AMD
    EPYC, torch 2.13: 124M bf16 0.66-0.91×, 124M fp32 0.99×, a 4-layer model bf16 0.78× and fp32 0.96×; the 124M
    numbers are re-measured by bench/run.py's training section), after 30-40 s of compiling. Our eager CPU step
    already avoids the logits (gpt/loss.py) and its matmuls run near the machine's peak, so inductor has little
    left to fuse. Elsewhere (CUDA, MPS): yes, as configured.
    COMPILE_ENV=1/0 overrides it. The same answer every time on one machine: no timing involved."""
    forced = env_flag(COMPILE_ENV)
    return device.type != "cpu" if forced is None else forced


@dataclass
class DistInfo:
    rank: int = 0  # this process among all processes
    local_rank: int = 0  # this process on this machine (its GPU index)
    world_size: int = 1
    ddp: bool = False
    local_world_size: int = 1  # processes on this machine

    @property
    def launcher(self) -> str:
        """The command that starts this run again the same way (for a resume hint): python, or torchrun with the
        process count it had (--standalone where every process is on this machine)."""
        if not self.ddp:
            return "python"
        if self.local_world_size == self.world_size:
            return f"torchrun --standalone --nproc-per-node {self.world_size}"
        nodes = self.world_size // self.local_world_size
        return f"torchrun --nnodes {nodes} --nproc-per-node {self.local_world_size} …"

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info_from_env() -> DistInfo:
    """torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; a plain `python` run has none of them."""
    if "RANK" not in os.environ:
        return DistInfo()
    return DistInfo(
        rank=int(os.environ["RANK"]),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        world_size=int(os.environ["WORLD_SIZE"]),
        ddp=True,
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", os.environ["WORLD_SIZE"])),
    )
