"""The decode step's matrix-vector products on a CPU, in C (gpt/matvec.c): y = x Wᵀ + b for at most MAX_ROWS rows.

    from gpt import matvec
    if matvec.available():                       # compiled on first use, ≈ 0.5 s, then cached on disk
        y = matvec.linear(x, weight, bias)       # x (R, K) fp32, weight (N, K) fp32 or bf16 contiguous → y (R, N) fp32
        matvec.blocks(x, layers, k, v, ...)      # the transformer blocks of a batch-1 decode step, in place

Why: a decode step at batch 1 is bound by streaming the weights (495 MB a token for GPT-2 124M in fp32), and no
kernel in torch's CPU build streams them at the memory's speed: over 124M's 49 matrices MKL's F.linear reached
≈ 45% of what a plain sum of the same tensors reaches, oneDNN's ≈ 65-85%, and this loop ≈ 95% (2-core AMD EPYC,
AVX2 and AVX-512; bench/generate.py reports the decode speed it gives). On a 2-core Intel Xeon with AMX, MKL's
sgemv streams fastest (28 GB/s over the 49 matrices, (in, out) layout) and this loop, with its Intel switches
(build_flags), 25.5 GB/s in fp32 and 22.5 in bf16 (16 without them); end to end the two decode fp32 equally
fast there (1.21× and 1.28× HF with the kernel, 1.21× and 1.26× through MKL, alternating bench/generate.py runs),
and the kernel keeps the plain layout (no copy at load). It reads nn.Linear's own layout (N, K), so
no weight is copied or re-laid out, and bf16 weights are widened to fp32 in registers (half the bytes to stream).

How: the C file is compiled by the system's C compiler ($CC, else cc) with -O3 -march=native -fopenmp into
$XDG_CACHE_HOME/gpt2-from-scratch (else ~/.cache/..., else a temporary folder), under a name that hashes the source,
the flags, the compiler and this CPU's model and flags — a build is never loaded on a CPU it was not built for — and
loaded with ctypes (which drops the GIL during a call). Its threads are torch's own: it links the OpenMP runtime
torch has loaded (libgomp), and each call uses torch.get_num_threads() threads, so the two never fight for cores.
Unavailable — and decode steps use oneDNN / MKL as before — when any of that fails: no compiler (or one without
OpenMP), a torch on another OpenMP runtime (Intel's libiomp, macOS), no writable folder, or MATVEC_ENV=0.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch

from gpt.utils import cpuinfo, env_flag

MAX_ROWS = 8  # rows (tokens) a call serves: decode steps; more rows are a GEMM's job (MKL reuses each weight)
MATVEC_ENV = "GPT_DECODE_MATVEC"  # "0": never build or use the kernel
SOURCE = Path(__file__).with_name("matvec.c")
FLAGS = ["-O3", "-march=native", "-fopenmp", "-fPIC", "-shared"]
# On an Intel CPU with AVX-512: 512-bit vectors (gcc's -march=native prefers 256) and matvec.c's two Intel switches.
# Over 124M's 49 matrices at one row of x (2-core Xeon with AMX): fp32 22 → 25.5 GB/s, bf16 16 → 22.5 GB/s.
INTEL_AVX512_FLAGS = ["-mprefer-vector-width=512", "-DROWS_SIDE_BY_SIDE=1", "-DBF16_PAIRS=1"]


def build_flags(vendor: str | None = None, flags: str | None = None) -> list[str]:
    """The compiler flags for this CPU: FLAGS, plus INTEL_AVX512_FLAGS on an Intel CPU with AVX-512. vendor, flags:
    /proc/cpuinfo's "vendor_id" and "flags" by default."""
    vendor = cpuinfo("vendor_id") if vendor is None else vendor
    flags = cpuinfo("flags") if flags is None else flags
    intel_avx512 = vendor == "GenuineIntel" and "avx512f" in (flags or "").split()
    return FLAGS + (INTEL_AVX512_FLAGS if intel_avx512 else [])


def _openmp_runtimes() -> list[str]:
    """The OpenMP runtimes mapped into this process (Linux: /proc/self/maps), by file path."""
    try:
        maps = Path("/proc/self/maps").read_text(encoding="utf-8")
    except OSError:
        return []
    return sorted(set(re.findall(r"(/\S*lib(?:gomp|iomp5|omp)[\w.-]*\.so[\w.]*)", maps)))


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    for folder in (Path(base) / "gpt2-from-scratch", Path(tempfile.gettempdir()) / f"gpt2-from-scratch-{os.getuid()}"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if os.access(folder, os.W_OK):
                return folder
        except OSError:
            continue
    raise OSError("no writable folder for the compiled kernel")


def _cpu_identity() -> str:
    model = cpuinfo("model name")
    return platform.processor() + platform.machine() if model is None else f"{model}|{cpuinfo('flags')}"


def _whole_elf(path: Path) -> bool:
    """Whether a shared library file is whole: its section header table, which the linker writes last, ends within
    the file. A cut file (a copy interrupted, a disk filled) would kill the process when loaded (SIGBUS)."""
    try:
        with open(path, "rb") as f:
            head, size = f.read(64), os.fstat(f.fileno()).st_size
    except OSError:
        return False
    if len(head) < 64 or head[:5] != b"\x7fELF\x02":  # 64-bit ELF
        return False
    order = "little" if head[5] == 1 else "big"
    shoff, shentsize, shnum = (int.from_bytes(head[a:b], order) for a, b in ((40, 48), (58, 60), (60, 62)))
    return shnum > 0 and shoff + shentsize * shnum <= size


def _build(cc: str, gomp: str, flags: list[str] | None = None) -> Path:
    """Compile matvec.c for this CPU (with build_flags(), or `flags`) unless a build for it is cached; returns the
    shared library's path. Several processes may build at once (DDP ranks, test workers): each writes a file of its
    own, then renames it into place, so a reader never sees half a library."""
    source = SOURCE.read_bytes()
    version = subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60).stdout
    flags = build_flags() if flags is None else flags
    parts = [source, " ".join(flags).encode(), version.encode(), _cpu_identity().encode(), gomp.encode()]
    key = hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]
    lib = _cache_dir() / f"matvec-{key}.so"
    if lib.exists() and _whole_elf(lib):
        return lib
    tmp = lib.with_name(f"{lib.name}.{os.getpid()}.tmp")
    try:
        cmd = [cc, *flags, str(SOURCE), "-o", str(tmp)]  # needs libgomp.so.1: in this process, the one torch loaded
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            raise OSError(f"{' '.join(cmd)} failed: {r.stderr.strip()[-500:]}")
        if not _whole_elf(tmp):
            raise OSError(f"{cc} wrote no whole shared library")
        os.replace(tmp, lib)
    finally:
        tmp.unlink(missing_ok=True)
    return lib


_loaded: list[Path] = []  # the shared library's path, once loaded


def _build_path() -> Path | None:
    """Where the loaded kernel's shared library is (None: not loaded)."""
    return _loaded[-1] if _library() is not None else None


def _torch_runtime(runtimes: list[str]) -> str | None:
    """The OpenMP runtime torch's threads run on, among those mapped into this process: the one inside torch's own
    folder (a pip wheel's torch/lib/libgomp.so.1), else the only one. Other packages' wheels bring private copies
    under renamed files (scikit-learn's scikit_learn.libs/libgomp-<hash>.so, loaded by `import sklearn` and by
    TensorFlow, which torch.utils.tensorboard imports where it is installed): a library linked against libgomp.so.1
    cannot bind to those, so they neither serve nor disturb the kernel. None when it cannot tell."""
    torch_dir = os.path.dirname(torch.__file__) + os.sep
    own = [r for r in runtimes if r.startswith(torch_dir)]
    if len(own) == 1:
        return own[0]
    return runtimes[0] if len(runtimes) == 1 else None


@functools.cache
def _library() -> ctypes.CDLL | None:
    if env_flag(MATVEC_ENV) is False:
        return None
    runtimes = _openmp_runtimes()
    runtime = _torch_runtime(runtimes)
    cc = shutil.which(os.environ.get("CC") or "cc")
    if runtime is None or "gomp" not in Path(runtime).name or cc is None:
        return None  # torch on another OpenMP runtime (or none found, or no telling which), or no compiler
    try:
        path = _build(cc, runtime)
        try:
            lib = ctypes.CDLL(str(path))
        except OSError:  # a cached build that does not load (damaged, or for another system): built again, once
            path.unlink(missing_ok=True)
            lib = ctypes.CDLL(str(_build(cc, runtime)))
    except (OSError, subprocess.SubprocessError):
        return None
    _loaded.append(path)
    if _openmp_runtimes() != runtimes:  # it brought a second OpenMP runtime after all: two thread pools would fight
        return None
    return _declare(lib)


def _declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    ptr, size = ctypes.c_void_p, ctypes.c_long
    for fn in (lib.matvec_f32, lib.matvec_bf16):
        fn.argtypes, fn.restype = [ptr, ptr, ptr, ptr, size, size, size, ctypes.c_int], None
    for fn in (lib.blocks_f32, lib.blocks_bf16):
        fn.argtypes = [ptr, ptr, ptr, ptr, ptr, size, size, size, size, size, size, ptr, ptr, ctypes.c_int]
        fn.restype = None
    return lib


def available() -> bool:
    """Whether the kernel is built and loaded (building it on the first call: ≈ 0.5 s, once per machine)."""
    return _library() is not None


def applies(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> bool:
    """Whether linear(x, w, b) runs the kernel: CPU tensors; x fp32 and contiguous with at most MAX_ROWS rows; w a
    contiguous (N, K) fp32 or bf16 matrix; b None or a contiguous fp32 (N,); no autograd (the kernel has no
    backward)."""
    return (x.device.type == "cpu" and w.device.type == "cpu" and x.dtype == torch.float32 and x.is_contiguous()
            and w.dtype in (torch.float32, torch.bfloat16) and w.dim() == 2 and w.is_contiguous()
            and x.size(-1) == w.size(1) and x.numel() <= MAX_ROWS * w.size(1)
            and (b is None or (b.dtype == torch.float32 and b.is_contiguous() and b.shape == (w.size(0),)
                               and b.device.type == "cpu"))
            and not (torch.is_grad_enabled() and (x.requires_grad or w.requires_grad
                                                   or (b is not None and b.requires_grad))))  # fmt: skip


def linear(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear(x, w, b) through the kernel: x (..., K) fp32, w (N, K), b (N,) or None → (..., N) fp32, for inputs
    applies() accepts (the caller checks; anything else is undefined). Not differentiable."""
    return _run(_library(), x, w, b)


def _run(lib: ctypes.CDLL, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    y = torch.empty(*x.shape[:-1], w.size(0), dtype=torch.float32)
    fn = lib.matvec_f32 if w.dtype == torch.float32 else lib.matvec_bf16
    fn(x.data_ptr(), w.data_ptr(), None if b is None else b.data_ptr(), y.data_ptr(), x.numel() // x.size(-1),
       w.size(0), w.size(1), torch.get_num_threads())  # fmt: skip
    return y


BLOCK_PARAMS = 12  # tensors a block hands the kernel, in matvec.c's order (see blocks())


def blocks(x: torch.Tensor, layers: list[list], k: list, v: list, pos: int, mask: torch.Tensor | None, s_len: int,
           n_head: int, eps: list[float]) -> None:  # fmt: skip
    """The transformer blocks of a decode step at batch 1, in place, one after the other: x += attn(ln_1(x));
    x += mlp(ln_2(x)) with GPT-2's tanh GELU — one call, one parallel region, instead of ≈ 15 torch ops a block.

    x (C,) fp32 contiguous, the residual stream (for a bf16 model: bf16 values, kept rounded to bf16 as the model's
    bf16 forward rounds). layers: per block, BLOCK_PARAMS tensors — ln_1 weight, bias; c_attn weight (3C, C), bias;
    attn c_proj weight (C, C), bias; ln_2 weight, bias; c_fc weight (4C, C), bias; mlp c_proj weight (C, 4C), bias —
    contiguous CPU tensors of one dtype, fp32 or bf16; the four Linear biases may be None. k, v: per block its
    cache (1, H, max_len, D), contiguous, that dtype: the token's key and value are written at slot pos, and it
    attends to slots < s_len where mask (s_len,) bool is True (None: all). eps: ln_1's and ln_2's, per block
    (2 × blocks floats).
    The caller checks all of that (gpt/fast_decode.py: _c_blocks); anything else is undefined."""
    _blocks(_library(), x, layers, k, v, pos, mask, s_len, n_head, eps)


def _blocks(lib, x, layers, k, v, pos, mask, s_len, n_head, eps) -> None:
    n, c, ptr = len(layers), x.numel(), ctypes.c_void_p
    params = (ptr * (BLOCK_PARAMS * n))(*(None if t is None else t.data_ptr() for p in layers for t in p))
    ks, vs = (ptr * n)(*(t.data_ptr() for t in k)), (ptr * n)(*(t.data_ptr() for t in v))
    eps32 = torch.tensor(eps, dtype=torch.float32)  # ln_1's, ln_2's, per block
    buf = torch.empty(18 * c + n_head * s_len)  # scratch: matvec.c's decode_block
    fn = lib.blocks_bf16 if k[0].dtype == torch.bfloat16 else lib.blocks_f32
    fn(x.data_ptr(), params, ks, vs, None if mask is None else mask.data_ptr(), n, c, n_head, k[0].size(2), pos, s_len,
       eps32.data_ptr(), buf.data_ptr(), torch.get_num_threads())  # fmt: skip
