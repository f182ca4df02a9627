"""gpt/matvec.c through gpt/matvec.py: the decode step's matrix-vector kernel computes F.linear, is built once per
machine (and safely by several processes at once), shares torch's OpenMP runtime, and stands aside cleanly where
it cannot be built."""

import copy
import ctypes
import functools
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpt import matvec
from gpt.config import GPTConfig
from gpt.fast_decode import block_tensors
from gpt.model import Block, KVCache

ROOT = Path(__file__).resolve().parents[1]
F = torch.nn.functional

needs_kernel = pytest.mark.skipif(not matvec.available(), reason="gpt/matvec.c cannot be built here (no C compiler?)")


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env})  # fmt: skip


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n, k", [(300, 96), (7, 13), (1, 5), (2304, 768), (50, 3072)])
def test_the_kernel_computes_f_linear(n, k, dtype):
    g = torch.Generator().manual_seed(n * k)
    w = torch.randn(n, k, generator=g).to(dtype)
    b = torch.randn(n, generator=g)
    for rows in range(1, matvec.MAX_ROWS + 1):  # 1 to 8 rows: the pairs of rows and an odd last one
        x = torch.randn(rows, k, generator=g)
        for bias in (b, None):
            assert matvec.applies(x, w, bias)
            y = matvec.linear(x, w, bias)
            ref = F.linear(x.double(), w.double(), None if bias is None else bias.double())  # exact products
            assert y.dtype == torch.float32 and y.shape == (rows, n)
            torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5 * k**0.5)
    x3 = torch.randn(2, 1, k, generator=g)  # (B, 1, K), as a decode step has it
    torch.testing.assert_close(matvec.linear(x3, w, b), F.linear(x3, w.float(), b), rtol=1e-5, atol=1e-4)


def test_the_intel_switches_are_built_on_intel_cpus_with_avx512_only():
    intel = matvec.build_flags("GenuineIntel", "fpu avx2 avx512f avx512_bf16 amx_tile")
    assert intel == matvec.FLAGS + matvec.INTEL_AVX512_FLAGS and "-DBF16_PAIRS=1" in intel
    assert matvec.build_flags("AuthenticAMD", "fpu avx2 avx512f avx512_bf16") == matvec.FLAGS  # as measured on AMD
    assert matvec.build_flags("GenuineIntel", "fpu avx2 fma") == matvec.FLAGS  # no AVX-512
    assert matvec.build_flags("GenuineIntel", "avx512fp16") == matvec.FLAGS  # whole flags only


@needs_kernel
@pytest.mark.parametrize("switches", ["amd", "intel"])
def test_either_vendors_loops_compute_f_linear_on_any_cpu(switches, tmp_path, monkeypatch):
    # This machine runs one of matvec.c's two sets of loops (build_flags); build the other one too, so that CI on
    # either vendor checks both. -mprefer-vector-width is x86's: the two switches alone elsewhere.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    extra = [f for f in matvec.INTEL_AVX512_FLAGS if f.startswith("-D") or platform.machine() in ("x86_64", "AMD64")]
    flags = matvec.FLAGS + (extra if switches == "intel" else [])
    runtime = matvec._torch_runtime(matvec._openmp_runtimes())
    lib = matvec._declare(ctypes.CDLL(str(matvec._build(shutil.which("cc"), runtime, flags))))
    g = torch.Generator().manual_seed(0)
    for n, k in [(300, 96), (7, 13), (50, 3072), (9, 8192), (5, 8194)]:  # odd k and k > WIDEN_MAX: the plain loops
        for dtype in (torch.float32, torch.bfloat16):
            w, b = torch.randn(n, k, generator=g).to(dtype), torch.randn(n, generator=g)
            for rows in (1, 2, 3):
                x = torch.randn(rows, k, generator=g)
                ref = F.linear(x.double(), w.double(), b.double())
                torch.testing.assert_close(matvec._run(lib, x, w, b).double(), ref, rtol=1e-5, atol=1e-5 * k**0.5)
    for dtype in (torch.float32, torch.bfloat16):
        check_block(functools.partial(matvec._blocks, lib), dtype, masked=True, n_embd=48, n_head=3, qkv_bias=True)


def check_block(run, dtype, masked, n_embd, n_head, qkv_bias, seed=0):
    """run (matvec.blocks' arguments) on a Block of random weights at slot 5 of a cache: it must compute what the
    Block's forward computes in fp64 (the exact maths for these weights), and write the same key and value into
    the cache, as closely as the Block's own forward at that dtype does (fp32: sums in another order; bf16: the
    same rounding points)."""
    torch.manual_seed(seed)
    config = GPTConfig(n_layer=1, n_embd=n_embd, n_head=n_head, vocab_size=64, context_length=16, qkv_bias=qkv_bias)
    block = Block(config).eval()
    with torch.no_grad():
        for prm in block.parameters():
            prm.copy_(torch.randn_like(prm) * (0.3 if prm.dim() == 2 else 1.0))  # LayerNorm weights ≠ 1, biases ≠ 0
    block = block.to(dtype)
    pos, D = 5, n_embd // n_head
    keys, values = (torch.randn(1, n_head, config.context_length, D).to(dtype) for _ in range(2))  # earlier tokens
    mask = torch.tensor([True, False, True, True, False, True]) if masked else None  # slots < 6; pos 5 is allowed
    x = torch.randn(n_embd).to(dtype)

    def forward(b, dt):  # the Block's own forward at dtype dt: (new x, cache)
        cache = KVCache(config, 1, dtype=dt)
        cache.k[0].copy_(keys), cache.v[0].copy_(values)
        m = torch.ones(1, 1, 1, pos + 1, dtype=torch.bool) if mask is None else mask.view(1, 1, 1, -1)
        with torch.no_grad():
            y = b(x.to(dt).view(1, 1, -1), cache, 0, torch.tensor([pos]), m)
        return y.view(-1).double(), cache

    exact, exact_cache = forward(copy.deepcopy(block).double(), torch.float64)
    cache = KVCache(config, 1, dtype=dtype)
    cache.k[0].copy_(keys), cache.v[0].copy_(values)
    xf = x.float().clone()  # (x.float() is x itself in fp32)
    run(xf, [block_tensors(block)], cache.k, cache.v, pos, mask, pos + 1, n_head, [1e-5, 1e-5])
    own, own_cache = forward(block, dtype)
    scale = exact.abs().max()
    assert (xf.double() - exact).abs().max() <= 2 * (own - exact).abs().max() + 1e-6 * scale, (xf, own, exact)
    if dtype == torch.bfloat16:
        assert torch.equal(xf, xf.bfloat16().float())  # the residual stream holds bf16 values, as the model's
    for ours, theirs, ref in zip(cache.k + cache.v, own_cache.k + own_cache.v, exact_cache.k + exact_cache.v):
        assert (ours.double() - ref).abs().max() <= 2 * (theirs.double() - ref).abs().max() + 1e-6 * ref.abs().max()
    others = torch.arange(config.context_length) != pos  # every other slot is left as it was
    assert torch.equal(cache.k[0][:, :, others], keys[:, :, others])
    assert torch.equal(cache.v[0][:, :, others], values[:, :, others])


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("masked", [False, True], ids=["all slots", "masked slots"])
@pytest.mark.parametrize("n_embd, n_head, qkv_bias", [(48, 3, True), (50, 5, False), (768, 12, True)])
def test_the_block_kernel_computes_what_the_models_block_computes(dtype, masked, n_embd, n_head, qkv_bias):
    # (50, 5): 3C = 150 rows, not a multiple of 4 (the kernel's tail), odd head size, no Q/K/V bias (None)
    check_block(matvec.blocks, dtype, masked, n_embd, n_head, qkv_bias)


@needs_kernel
def test_each_output_is_one_threads_sum_so_the_thread_count_does_not_change_a_bit():
    w, x, b = torch.randn(1000, 768), torch.randn(3, 768), torch.randn(1000)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = matvec.linear(x, w, b)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(matvec.linear(x, w, b), one)


def test_the_kernel_applies_only_to_what_it_computes():
    w, x, b = torch.randn(300, 96), torch.randn(1, 96), torch.randn(300)
    assert matvec.applies(x, w, b) and matvec.applies(x, w.bfloat16(), b) and matvec.applies(x, w, None)
    assert not matvec.applies(torch.randn(9, 96), w, b)  # more than MAX_ROWS rows: a GEMM's job
    assert not matvec.applies(x, w.t().contiguous().t(), b)  # column-major weight
    assert not matvec.applies(x, w, torch.randn(600)[::2])  # strided bias
    assert not matvec.applies(x, w, b.bfloat16())  # the kernel adds an fp32 bias
    assert not matvec.applies(x.bfloat16(), w, b)  # it reads fp32 inputs
    assert not matvec.applies(torch.randn(1, 95), w, b)  # shapes that do not fit
    assert not matvec.applies(x, w, torch.randn(299))
    assert not matvec.applies(x, w.half(), b)
    wg = w.clone().requires_grad_()
    assert not matvec.applies(x, wg, b)  # autograd: the kernel has no backward
    with torch.no_grad():
        assert matvec.applies(x, wg, b)


@needs_kernel
def test_one_build_per_machine_reused_by_later_processes_and_raced_safely(tmp_path):
    # several processes at once into an empty cache (DDP ranks, test workers), then one more that finds the build
    code = "from gpt import matvec; assert matvec.available(); import torch; print(matvec._build_path())"
    env = {"XDG_CACHE_HOME": str(tmp_path)}
    env_all = {**os.environ, "PYTHONPATH": str(ROOT), **env}
    procs = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env_all) for _ in range(3)]  # fmt: skip
    paths = set()
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        paths.add(out.strip())
    assert len(paths) == 1
    lib = Path(paths.pop())
    assert lib.parent == tmp_path / "gpt2-from-scratch" and lib.suffix == ".so"
    assert [f.name for f in lib.parent.iterdir()] == [lib.name]  # no temporary file left behind
    built = lib.stat().st_mtime_ns
    r = run_python(code, **env)
    assert r.returncode == 0 and r.stdout.strip() == str(lib) and lib.stat().st_mtime_ns == built  # not rebuilt


@needs_kernel
def test_a_damaged_cached_build_is_rebuilt(tmp_path):
    code = "from gpt import matvec; print(matvec.available(), matvec._build_path())"
    r = run_python(code, XDG_CACHE_HOME=str(tmp_path))
    lib = Path(r.stdout.split()[1])
    lib.write_bytes(lib.read_bytes()[:1000])  # what a full disk or a foreign copy could leave
    r = run_python(code, XDG_CACHE_HOME=str(tmp_path))
    assert r.returncode == 0 and r.stdout.split()[0] == "True", r.stderr
    assert lib.stat().st_size > 1000


@needs_kernel
def test_the_kernel_runs_on_torchs_own_openmp_runtime():
    code = ("import torch; from gpt import matvec; before = matvec._openmp_runtimes(); assert matvec.available(); "
            "matvec.linear(torch.randn(1, 64), torch.randn(64, 64)); print(before == matvec._openmp_runtimes(), "
            "len(before))")  # fmt: skip
    r = run_python(code)
    assert r.returncode == 0 and r.stdout.split() == ["True", "1"], r.stderr  # one runtime, the one torch loaded


@needs_kernel
def test_another_packages_private_openmp_copy_does_not_turn_the_kernel_off():
    # scikit-learn's wheel brings its own libgomp under a renamed file (TensorFlow imports it, and
    # torch.utils.tensorboard imports TensorFlow where it is installed); the kernel, linked against libgomp.so.1,
    # still runs on torch's. It used to count two runtimes and turn itself off for the rest of the process.
    pytest.importorskip("sklearn")
    code = ("import sklearn, torch; from gpt import matvec; before = matvec._openmp_runtimes(); "
            "y = matvec.linear(torch.randn(1, 64), torch.randn(64, 64)) if matvec.available() else None; "
            "print(matvec.available(), before == matvec._openmp_runtimes(), len(before))")  # fmt: skip
    r = run_python(code)
    assert r.returncode == 0 and r.stdout.split() == ["True", "True", "2"], (r.stdout, r.stderr)


def test_the_runtime_taken_for_torchs_is_the_one_in_torchs_folder():
    torch_lib = os.path.join(os.path.dirname(torch.__file__), "lib", "libgomp.so.1")
    private = "/site-packages/scikit_learn.libs/libgomp-e985bcbb.so.1.0.0"
    assert matvec._torch_runtime([private, torch_lib]) == torch_lib
    assert matvec._torch_runtime(["/usr/lib/x86_64-linux-gnu/libgomp.so.1"]) == "/usr/lib/x86_64-linux-gnu/libgomp.so.1"
    assert matvec._torch_runtime([private, "/usr/lib/x86_64-linux-gnu/libgomp.so.1"]) is None  # which is torch's?
    assert matvec._torch_runtime([]) is None


@pytest.mark.parametrize("env", [{"CC": "/nonexistent/cc"}, {"GPT_DECODE_MATVEC": "0"}], ids=["no compiler", "off"])
def test_without_the_kernel_decoding_falls_back_and_gives_the_same_tokens(tmp_path, env):
    code = ("import torch; from gpt import GPT, GPTConfig, generate, matvec; torch.manual_seed(0); "
            "m = GPT(GPTConfig(vocab_size=97, context_length=32, n_layer=2, n_head=3, n_embd=48)).eval(); "
            "print(matvec.available(), generate(m, torch.tensor([[1, 2, 3]]), 12, temperature=0).tolist())"
            )  # fmt: skip
    r = run_python(code, XDG_CACHE_HOME=str(tmp_path), **env)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    available, tokens = r.stdout.split(" ", 1)
    assert available == "False" and not list(tmp_path.rglob("*.so"))
    if matvec.available():
        r = run_python(code, XDG_CACHE_HOME=str(tmp_path))
        assert r.stdout.split(" ", 1) == ["True", tokens]  # the kernel's tokens: the same
