"""Faster decoding, apart from the teaching loop in gpt/generate.py: the same tokens, computed another way.

    model = load_model(path)                                   # fp32 on a CPU: already in the fast layout
    ids = generate(model, idx, 100, temperature=0)
    decoder = CompiledDecoder()                                # hold it: it owns compiled steps and caches
    prepare_for_decoding(model, compile=decoder.compiles("cpu"))  # the compiled CPU step reads rows: plain layout
    ids = generate(model, idx, 100, temperature=0, decoder=decoder)

- EagerDecodeStep: generate()'s eager decode step on a CPU, the model's maths written out as plain function calls
  (no module calls: ≈ 5-7% faster at 124M), with each Linear of a decode step (≤ MAX_ROWS rows) on the fastest
  kernel this machine has: gpt/matvec.c's (gpt/matvec.py: compiled on first use where a C compiler is, it streams
  fp32 weights at ≈ 95% of a plain sum's speed; GPT_DECODE_MATVEC=0 turns it off), else oneDNN's (onednn_linear:
  fp32 column-major ≈ 1.65-2× MKL's speed; bf16 packed in oneDNN's layout ≈ 1.4× F.linear where the CPU has AVX-512
  BF16; GPT_DECODE_ONEDNN=0 turns it off), else F.linear. At batch 1 with gpt/matvec.c, each block is one C call
  (matvec.blocks), not ≈ 15 torch ops each. bf16 weights at batch 1 take gpt/matvec.c's (widened to
  fp32 in registers, at the memory's speed), from batch 2 oneDNN's packed kernel where the CPU can pack them
  (PACK_MIN_BATCH). A model with hooks, subclassed modules or manual attention runs its own forward instead
  (is_plain_gpt).
- prepare_for_decoding(): where oneDNN decodes fp32 (no C compiler for gpt/matvec.c), stores each fp32 Linear weight
  column-major, the layout oneDNN and MKL read fastest; gpt/matvec.c reads the plain layout, which it keeps.
  load_model applies it (layout="decode", the default), so a notebook's load_model + generate gets it, not only the
  CLI. In place, keeping every Parameter object. Apply it before building an optimizer, never between two steps:
  torch's fused AdamW on a CPU silently computes wrong updates when its state's layout differs from the parameter's
  (measured, torch 2.13); gpt.train.configure_optimizer puts the plain layout back before building its state.
- CompiledDecoder: torch.compile of the one-token decode step with fixed shapes (the whole cache is read, masked),
  so it is built once per batch size / cache size: CUDA graphs on a GPU (no per-kernel launch cost), fused C++
  loops on a CPU (see _compile_cpu_step). It keeps one static KVCache per (model, shape), reused across calls: a
  CUDA graph replays on fixed addresses. So do not interleave two streams of one decoder on one model.
  On a CPU at batch > 1, wherever gpt/matvec.c builds, or with AMX and fp32 weights, it decodes eagerly instead
  (compile_helps()): there the compiled step lost to eager, did not beat it, or may not (matvec.blocks).

Speed (bench/generate.py: 124M, batch 1, 16-token prompt, 128 greedy tokens, against Hugging Face's generate on the
same weights; bench/results/cpu-amd-epyc-zen5-avx512bf16-2t.md, 2-core AMD EPYC Zen 5, no AMX): decoding is
bound by streaming the weights (495 MB a token in fp32). Eager fp32 (gpt/matvec.c; without it column-major oneDNN) ≈
1.6-2.6× HF; compiled ≈ 2.4-3.3× HF in fp32 and ≈ 3.6-4.4× HF fp32 with bf16 weights — the compiled CPU step is one
fused C++ loop per weight instead of a library's matrix-vector kernel (MKL streams fp32 at about half that rate,
oneDNN at two thirds). The first call per batch size / cache size compiles for 20-60 s on 2 CPU cores. On a 2-core
Intel Sapphire Rapids (AMX, issue 15) the compiled fp32 step was no faster than eager with MKL (1.01× HF vs eager
1.23×): hence compile_helps().
"""

from __future__ import annotations

import functools
import weakref

import torch

from gpt import matvec
from gpt.generate import decode_one_token
from gpt.model import GPT, MLP, Block, CausalSelfAttention, KVCache
from gpt.onednn import available as onednn_available
from gpt.utils import cpu_flags, env_flag

CACHE_ROUNDING = 256  # cache lengths are rounded up to a multiple of this, so a few graphs serve every request
COMPILE_ENV = "GPT_DECODE_COMPILE"  # "1" / "0": force the compiled CPU decode step on or off (default: compile_helps)
ONEDNN_ENV = "GPT_DECODE_ONEDNN"  # "0": eager CPU decode steps keep F.linear (MKL; bf16 unpacked), see onednn_linear


MAX_ROWS = 8  # oneDNN's kernel serves inputs of at most this many rows: decode steps; prefills are the model's GEMMs
PACK_MIN_STEPS = 32  # bf16: packing costs 45-75 ms (124M) and saves ≈ 4 ms a decode step: shorter runs skip it
# bf16 at batch 1: gpt/matvec.c streams the weights at the memory's speed and beats packed oneDNN (124M on a 2-core
# AMD EPYC Zen 4: 78 vs 59 tok/s; its 49 mat-vecs read bf16 at 28-31 GB/s, a plain sum 26-30); from 2 rows on each
# weight serves several rows, oneDNN's blocked kernel catches up (batch 2: 106 vs 103 tok/s) and wins (batch 8: 298
# vs 150), so it packs. Not yet measured on Zen 5 or Intel: bench/run.py's "ours bfloat16 eager" row there tells.
PACK_MIN_BATCH = 2


def _onednn_applies(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, dtype: torch.dtype) -> bool:
    # oneDNN's op: CPU tensors of one dtype, a few rows, no autograd (it has no backward), and a contiguous bias (it
    # reads a strided or expanded bias as if it were contiguous: wrong values)
    return (x.dtype == dtype and w.dtype == dtype and x.device.type == "cpu" and x.dim() >= 2
            and x.numel() <= MAX_ROWS * x.size(-1) and not torch.is_grad_enabled()
            and (b is None or b.is_contiguous()))  # fmt: skip


def onednn_linear(module: torch.nn.Linear, pack: bool = False):
    """module's computation as a function x → y, like F.linear(x, module.weight, module.bias), through oneDNN's
    kernel (the one inductor calls) where it applies: a CPU, at most MAX_ROWS rows, no autograd, fp32 weights
    (pack=False) or bf16 ones (pack=True). Any other input runs F.linear. The weight and bias are read at each call,
    so a replaced or changed weight is used as it is.
    fp32: oneDNN's kernel on the weight as it is. Same values as F.linear to fp32 rounding (4e-5 on 768-long dot
    products of N(0, 1) values).
    bf16 (pack=True): a copy of the weight in oneDNN's own blocked layout, made here (45-75 ms and the weights' size
    again in memory for 124M, freed with the function); given a plain bf16 weight the kernel would re-lay it out at
    every call. A weight changed since (in place or replaced) is noticed and runs F.linear; an edit through
    `.data` (`p.data.mul_(...)`), which torch does not count as a change, is not: call generate() again after one.
    Why: a decode step is bound by streaming the weights. Over GPT-2 124M's own uncached matrices (500 MB) oneDNN
    streams the fp32 column-major layout at 37.5-48 GB/s where MKL's x @ W reaches 22, and the packed bf16 weights at
    43 GB/s where F.linear's bf16 reaches 26 (2-core AMD EPYC, torch 2.13; issue 15)."""
    linear_pointwise = torch.ops.mkldnn._linear_pointwise
    dtype = torch.bfloat16 if pack else torch.float32
    w0 = module.weight
    if pack:
        packed = torch.ops.mkldnn._reorder_linear_weight(w0.detach().contiguous(), 1)
        version, ptr = w0._version, w0.data_ptr()

    def linear(x: torch.Tensor) -> torch.Tensor:  # (..., in) → (..., out)
        w, b = module.weight, module.bias
        if _onednn_applies(x, w, b, dtype):
            if not pack:
                return linear_pointwise(x, w, b, "none", [], "")
            if w is w0 and w._version == version and w.data_ptr() == ptr:  # the packed copy is still the weight
                return linear_pointwise(x, packed, b, "none", [], "")
        return torch.nn.functional.linear(x, w, b)

    return linear


_WRITTEN_OUT = (GPT, Block, CausalSelfAttention, MLP, torch.nn.Linear, torch.nn.LayerNorm, torch.nn.Embedding,
                torch.nn.Dropout, torch.nn.GELU, torch.nn.ModuleDict, torch.nn.ModuleList)  # fmt: skip
_FORWARDS = {k: k.forward for k in _WRITTEN_OUT}  # each module class EagerDecodeStep writes out, its forward as defined


def is_plain_gpt(model: torch.nn.Module) -> bool:
    """Whether EagerDecodeStep computes exactly what model(...) would: a GPT built of this repository's own module
    classes (no subclass, no parametrization, no forward replaced on an instance or a class), with no forward hooks
    anywhere (a hook expects its module to be called: gpt/introspect.py records activations that way), SDPA
    attention ("manual" is the same maths with other roundings), in eval mode (no dropout). ≈ 30 µs for 124M."""
    mod = torch.nn.modules.module
    if type(model) is not GPT or model.training or mod._global_forward_hooks or mod._global_forward_pre_hooks:
        return False
    stack = [model]  # a walk of our own: model.modules() takes 3× as long, and this runs at every decode step
    while stack:
        m = stack.pop()
        if m is None:  # a submodule slot set to None
            continue
        kind = type(m)
        if (_FORWARDS.get(kind) is not kind.forward or "forward" in m.__dict__
                or m._forward_hooks or m._forward_pre_hooks):  # fmt: skip
            return False
        stack.extend(m._modules.values())
    return all(b.attn.attn_impl == "sdpa" for b in model.transformer.h)


class EagerDecodeStep:
    """generate()'s eager decode step on a CPU, written out: decode_one_token's maths for one token per row, as
    direct calls to the functions GPT.forward's modules call, with every Linear through gpt/matvec.c's kernel
    (kernel=True: fp32, or bf16 weights widened in the kernel) or oneDNN's (onednn=True: fp32 weights; pack=True: bf16
    ones packed here), else F.linear.

    step = EagerDecodeStep(model)                       # once per generate() call
    logits = step(tok, cache, input_pos, position_ids, attn_mask)   # the arguments of decode_one_token

    Why: at batch 1 a GPT-2 124M decode step spends ≈ 10-13 ms streaming 495 MB of fp32 weights, and the model's
    ≈ 160 module calls and per-Linear dispatch come on top: through the modules a step took ≈ 1.25× the time of its
    49 matrix-vector products alone, written out ≈ 1.2× (the rest: oneDNN's ≈ 12 µs a call, attention, LayerNorms);
    generate() at fp32 batch 1 went from 1.67-1.70× to 1.80-1.90× HF in alternating bench/generate.py runs (2-core
    AMD EPYC, issue 15); reading the model at every step (below) costs ≈ 1.5% of that back.
    What it skips is bookkeeping, not maths: same kernels, same order, so the logits equal model(...)'s with the
    same Linear kernels bit for bit (tests/test_fast_decode.py). Everything is read from the model at each step —
    modules, weights, settings — and a step runs the model's own forward instead when is_plain_gpt() says no (a hook
    registered, a module swapped while a generate_stream is paused) or under autocast (oneDNN's op ignores it).
    pack=True (bf16): each Linear's weight is packed for oneDNN here, once; see onednn_linear for what it notices.
    With the kernel at batch 1, all blocks are one call of gpt/matvec.c (matvec.blocks: LayerNorms, Q/K/V, cache
    write, attention, GELU and residual adds in C, one parallel region) wherever _c_blocks accepts the model: the
    ≈ 15 torch ops of a block cost ≈ 0.4 ms on a 2-core Intel Xeon (issue 15), ≈ 5 ms a 124M step outside its
    mat-vecs, and fp32 generate() went from 1.21× to 1.44× HF, bf16 from 1.73× to 2.18× with one call per block
    (bench/generate.py); one call for all blocks saved another 0.3-0.6 ms a step. Its
    sums and exp run in another order than torch's: fp32 logits agree to fp32 rounding, bf16 ones round at the
    model's bf16 rounding points and are as close to the exact model's as its own bf16 forward's
    (tests/test_matvec.py, tests/test_decode_kernel.py) — a bf16 near tie may go the other way."""

    def __init__(self, model: GPT, pack: bool = False, onednn: bool = True, kernel: bool = False) -> None:
        self.model, self.onednn, self.kernel = model, onednn, kernel
        self.packed: dict[torch.nn.Module, object] = {}  # Linear → its packed onednn_linear (bf16)
        if pack:
            self.packed = {m: onednn_linear(m, pack=True) for m in model.modules() if type(m) is torch.nn.Linear}

    def __call__(
        self,
        tok: torch.Tensor,
        cache: KVCache,
        input_pos: torch.Tensor,
        position_ids: torch.Tensor | None,
        attn_mask: torch.Tensor,
    ) -> torch.Tensor:
        """tok (B, 1) written at cache slot input_pos (1,) → logits (B, V); see decode_one_token."""
        model = self.model
        if not is_plain_gpt(model) or torch.is_autocast_enabled(tok.device.type):
            return decode_one_token(model, tok, cache, input_pos, position_ids, attn_mask)
        F, packed, linear_pointwise = torch.nn.functional, self.packed, torch.ops.mkldnn._linear_pointwise
        cfg, t = model.config, model.transformer
        B, C, H = tok.size(0), cfg.n_embd, cfg.n_head
        fast = B <= MAX_ROWS and tok.device.type == "cpu" and not torch.is_grad_enabled()
        onednn, kernel = self.onednn and fast, self.kernel and fast
        f32 = torch.float32

        def linear(module: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:  # module(x), see onednn_linear
            if module in packed:  # packed at the start (bf16); a Linear swapped in since is not
                return packed[module](x)
            w, b = module.weight, module.bias
            if (kernel and w.dim() == 2 and w.is_contiguous() and x.size(-1) == w.size(1)
                    and (b is None or (b.shape == w.shape[:1] and b.device == w.device))):  # fmt: skip
                # matvec.applies, its per-step parts checked above (rows, device, autograd)
                if w.dtype == x.dtype == f32 and w.device == x.device and (b is None or b.dtype == f32):
                    return matvec.linear(x.contiguous(), w, None if b is None else b.contiguous())
                if w.dtype == x.dtype == torch.bfloat16 and w.device == x.device:  # widened to fp32 in the kernel
                    y = matvec.linear(x.float(), w, None if b is None else b.float())
                    return y.to(torch.bfloat16)  # rounded once, as F.linear's bf16 output is
            if onednn and w.dtype == x.dtype == f32 and (b is None or b.is_contiguous()):
                return linear_pointwise(x, w, b, "none", [], "")  # _onednn_applies, its per-step parts checked above
            return F.linear(x, w, b)

        S = attn_mask.size(-1)  # the slots this step reads
        mask = None if bool(attn_mask.all()) else attn_mask  # SDPA's unmasked path: the same values, bit for bit
        pos = input_pos if position_ids is None else position_ids
        x = F.embedding(tok, t.wte.weight) + F.embedding(pos, t.wpe.weight)  # (B, 1, C)
        blocks = _c_blocks(model, cache, input_pos, attn_mask) if kernel and B == 1 and not packed else None
        if blocks is not None:  # every block in one call of gpt/matvec.c (matvec.blocks)
            xf, slot = x.float().view(C), int(input_pos[0])  # fp32 residual stream, bf16-rounded for a bf16 model
            eps = [e for b in t.h for e in (b.ln_1.eps, b.ln_2.eps)]
            matvec.blocks(xf, blocks, cache.k, cache.v, slot, None if mask is None else mask.view(S), S, H, eps)
            x = xf.view(B, 1, C).to(x.dtype)
        for i, block in enumerate(t.h if blocks is None else ()):
            ln_1, attn, ln_2, mlp = block.ln_1, block.attn, block.ln_2, block.mlp
            h = F.layer_norm(x, ln_1.normalized_shape, ln_1.weight, ln_1.bias, ln_1.eps)
            q, k, v = linear(attn.c_attn, h).view(B, 3, H, C // H).unbind(1)  # 3 × (B, H, D): heads side by side
            k_all, v_all = cache.update(i, input_pos, k[:, :, None], v[:, :, None])  # (B, H, max_len, D)
            y = F.scaled_dot_product_attention(
                q[:, :, None], k_all[:, :, :S].to(q.dtype), v_all[:, :, :S].to(q.dtype), attn_mask=mask
            )  # (B, H, 1, D)
            x = x + linear(attn.c_proj, y.transpose(1, 2).reshape(B, 1, C))
            h = F.layer_norm(x, ln_2.normalized_shape, ln_2.weight, ln_2.bias, ln_2.eps)
            x = x + linear(mlp.c_proj, F.gelu(linear(mlp.c_fc, h), approximate=mlp.gelu.approximate))
        x = F.layer_norm(x, t.ln_f.normalized_shape, t.ln_f.weight, t.ln_f.bias, t.ln_f.eps)
        return linear(model.lm_head, x)[:, -1, : cfg.vocab_size]  # (B, V): padding rows of the head dropped


def block_tensors(block: Block) -> list:
    """A block's parameter tensors in matvec.blocks's order: ln_1, attention's c_attn and c_proj, ln_2, the MLP's
    c_fc and c_proj, each weight then bias (None where a module has none). Read from the modules' parameter dicts
    (nn.Module's attribute lookup costs ≈ 1 µs a name, ≈ 0.25 ms a 124M step), else as attributes: a bias or weight
    a user made a buffer or a plain tensor is still read."""
    mods, attn, mlp = block._modules, block.attn._modules, block.mlp._modules
    get = [mods["ln_1"], attn["c_attn"], attn["c_proj"], mods["ln_2"], mlp["c_fc"], mlp["c_proj"]]
    return [m._parameters[n] if n in m._parameters else getattr(m, n, None) for m in get for n in ("weight", "bias")]


def _c_blocks(model: GPT, cache: KVCache, input_pos: torch.Tensor, attn_mask: torch.Tensor) -> list[list] | None:
    """Each block's tensors in matvec.blocks's order, where gpt/matvec.c can decode every block of this step at
    batch 1 (matvec.blocks's conditions: one dtype, fp32 or bf16, for every tensor of a block and its cache, all
    contiguous, GELU's tanh form, the slot inside the cache, a contiguous bool mask), else None."""
    dt, C = model.lm_head.weight.dtype, model.config.n_embd
    slot = int(input_pos[0]) if input_pos.numel() == 1 else -1
    if (dt not in (torch.float32, torch.bfloat16) or not 0 <= slot < cache.max_len or attn_mask.dtype != torch.bool
            or attn_mask.numel() != attn_mask.size(-1) or not attn_mask.is_contiguous()):  # fmt: skip
        return None
    shapes = [torch.Size(s) for s in ((C,), (C,), (3 * C, C), (3 * C,), (C, C), (C,), (C,), (C,), (4 * C, C), (4 * C,),
                                      (C, 4 * C), (C,))]  # fmt: skip
    blocks = []
    for i, block in enumerate(model.transformer.h):
        params = block_tensors(block)
        if block.mlp.gelu.approximate != "tanh" or any(params[j] is None for j in (0, 1, 2, 4, 6, 7, 8, 10)):
            return None
        if not all(p is None or (p.dtype is dt and p.is_cpu and p.shape == shape and p.is_contiguous())
                   for p, shape in zip(params, shapes)):  # fmt: skip
            return None
        k, v = cache.k[i], cache.v[i]
        if k.dtype != dt or v.dtype != dt or k.size(0) != 1 or not (k.is_contiguous() and v.is_contiguous()):
            return None
        blocks.append(params)
    return blocks


def eager_step(model: GPT, steps: int = PACK_MIN_STEPS, batch_size: int = PACK_MIN_BATCH):
    """The eager decode step for one generate() call (at most `steps` steps of `batch_size` rows), a function with
    decode_one_token's arguments less the model: EagerDecodeStep where it applies — a CPU, a model is_plain_gpt()
    accepts — with its Linears through gpt/matvec.c where it builds (fp32; bf16 at batch 1), else oneDNN: fp32
    weights as they are, bf16 ones packed when steps ≥ PACK_MIN_STEPS and batch_size ≥ PACK_MIN_BATCH or without
    the kernel (ONEDNN_ENV=0, or a torch build without oneDNN: F.linear); else decode_one_token on the model."""
    w = next(model.parameters())
    if w.device.type != "cpu" or not is_plain_gpt(model):
        return functools.partial(decode_one_token, model)
    onednn, kernel = env_flag(ONEDNN_ENV) is not False and onednn_available(), matvec.available()
    if w.dtype == torch.float32:
        return EagerDecodeStep(model, onednn=onednn, kernel=kernel)
    pack = steps >= PACK_MIN_STEPS and (batch_size >= PACK_MIN_BATCH or not kernel)
    if onednn and w.dtype == torch.bfloat16 and pack:
        try:
            return EagerDecodeStep(model, pack=True)
        except RuntimeError:  # a CPU oneDNN cannot pack bf16 for (no AVX-512 BF16 / AVX-NE-CONVERT): the kernel
            pass
    return EagerDecodeStep(model, onednn=False, kernel=w.dtype == torch.bfloat16 and kernel)


@functools.cache
def compile_helps(device_type: str = "cpu", batch_size: int = 1, dtype: torch.dtype = torch.float32) -> bool:
    """Whether CompiledDecoder compiles the decode step for this device type, batch size and weight dtype, or
    generate() decodes eagerly instead — so that compiling is never the slower choice.

    CUDA: always (CUDA graphs). CPU: batch 1 only — at batch 8 the rows go to MKL / oneDNN either way, and compiled
    bf16 lost to eager (an earlier bench/results/cpu-amd-epyc-avx512bf16-2t.md, in git history: 1.95× vs 2.54×
    HF). At batch 1, fp32 weights compile except on a CPU with AMX (Intel Sapphire Rapids and later): there MKL's fp32
    kernel streamed as fast as the compiled loop (issue 15, 2-core SPR: fp32 compiled 1.01× HF vs eager 1.23×); bf16
    weights compile only where gpt/matvec.c cannot be built: eager bf16 at batch 1 runs it at the memory's speed
    (PACK_MIN_BATCH), and the compiled step was no faster (2-core AMD EPYC Zen 4: 0.95× eager round by round, 78.9
    vs 79.4 tok/s; bench/results/cpu-amd-epyc-zen4-avx512bf16-2t.md), while without the kernel it was (SPR, eager on
    F.linear: 1.29× vs 0.98× HF). Since eager steps at batch 1 run each block in one call of gpt/matvec.c
    (matvec.blocks: the fusion the compiled step was for, ≈ 5 ms of a 27 ms fp32 124M step on a 2-core Intel Xeon),
    fp32 weights decode eagerly too wherever the kernel builds: compiled fp32 had been 1.07× eager on a Zen 4 and
    1.27× on a Zen 5 (bench/results), margins the block's gain may have closed or turned, unmeasured on AMD so far —
    eager cannot be the slower of the two. (To measure: `GPT_DECODE_COMPILE=1 python bench/generate.py --compile`
    against `python bench/generate.py`.)
    Decided by the CPU's flags, the batch size and the dtype alone — the same answer every time on one machine, no
    timing involved; COMPILE_ENV=1/0 overrides it. Cached per process."""
    forced = env_flag(COMPILE_ENV)
    if forced is not None:
        return forced
    if device_type != "cpu":
        return True
    if batch_size != 1 or matvec.available():  # batched rows: MKL / oneDNN either way; batch 1: matvec.blocks
        return False
    return dtype == torch.bfloat16 or not {"amx_bf16", "amx_tile"} & cpu_flags()


def column_major_pays() -> bool:
    """Whether fp32 weights decode faster column-major on this machine: where gpt/matvec.c cannot be built (no C
    compiler, another OpenMP runtime), so that oneDNN's kernel streams them; the C kernel reads nn.Linear's own
    row-major layout."""
    return not matvec.available()


def uses_column_major(model: GPT, compile: bool = False) -> bool:
    """Whether prepare_for_decoding stores the Linear weights column-major: fp32 on a CPU, decoded eagerly by
    oneDNN (column_major_pays)."""
    w = model.lm_head.weight
    return not compile and w.device.type == "cpu" and w.dtype == torch.float32 and column_major_pays()


@torch.no_grad()
def prepare_for_decoding(model: GPT, compile: bool = False) -> GPT:
    """Lay the weights out for fast decoding, in place (same values, shapes, names and Parameter objects); returns
    model. Cheap when already done: it only checks strides.

    Eager decoding on a CPU in fp32 where gpt/matvec.c cannot be built (column_major_pays): each nn.Linear weight
    (out, in) is stored column-major, i.e. as the contiguous (in, out) matrix it is the transpose of. Both library
    kernels stream that layout faster — MKL's x @ W ≈ 1.3× its x @ Wᵀ, oneDNN's (onednn_linear) 37.5-38 vs 32-33
    GB/s — and streaming weights is what a decode step costs. The price is one copy of each weight, once.
    Everything else (gpt/matvec.c's kernel, which streams rows; bf16, whose oneDNN kernel prefers the row-major
    layout; compile=True, a compiled CPU step, whose fused loops read rows; GPUs) gets the plain row-major layout
    back if it had the other one.
    The Parameter objects stay (only their .data changes) and the model still trains: gradients and an optimizer
    state built afterwards follow the weights' layout (tests/test_fast_decode.py). Not between optimizer steps:
    see the module docstring (fused AdamW).
    """
    col = uses_column_major(model, compile)
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            w = module.weight
            if col and w.is_contiguous():
                w.data = w.data.t().contiguous().t()
            elif not col and not w.is_contiguous():
                w.data = w.data.contiguous()
    return model


def _decode_static(model, tok, cache, input_pos, positions, valid):
    # The compiled step. Reads all max_len slots, masked to slots ≤ input_pos and to each row's non-pad slots
    # (valid (B or 1, 1, 1, max_len)), and looks its position ids up in positions (B, max_len) itself, so every
    # input keeps its shape and storage from one token to the next.
    slots = torch.arange(valid.size(-1), device=valid.device)
    position_ids = positions[:, input_pos] if positions is not None else None
    return decode_one_token(model, tok, cache, input_pos, position_ids, valid & (slots <= input_pos))


def _compile_cpu_step():
    """torch.compile of the decode step for a CPU: inductor, with one-row matmuls (x @ W, x (1, K)) rewritten as
    sum_k x[k] · W[k, :] by inductor's own decompose_mm_pass.

    A decode step is bound by streaming weights. For a single row, MKL's fp32 kernel streams them at ~60-70% of what
    a plain vectorised reduction reaches here, and oneDNN's bf16 kernel at half; as a multiply-and-sum, inductor
    emits one C++ loop per weight (bf16 or fp32 in, fp32 accumulation) and fuses the LayerNorms, GELU, bias and
    residual adds around those loops. The pass also materialises each matmul's input first, so the LayerNorm/GELU
    in front of it is computed once, not once per output row. Its CPU size limit (2048) would leave out the MLP
    and the head, so we lift it: a process-wide inductor setting, read only when the pass is enabled (as it is
    here, per compiled function), so other compiled code is unaffected.
    Batched rows (M > 1) stay on MKL, whose GEMM reuses each weight M times.
    """
    from torch._inductor.fx_passes import decompose_mem_bound_mm

    decompose_mem_bound_mm.cpu_max_other_dimension_decomposition = 1 << 30
    options = {"post_grad_fusion_options": {"decompose_mm_pass": {}}}
    return torch.compile(_decode_static, fullgraph=True, dynamic=False, options=options)


class CompiledDecoder:
    """A compiled decode step and its static caches, owned by whoever holds this object (generate(decoder=...)).

    Build one and reuse it: torch.compile caches a graph per shape on it, and it keeps one KVCache per (model,
    batch size, cache length, dtype, device) for as long as the model lives.
    compile: None (default) compiles where compile_helps(device type) says it pays, and otherwise lets generate()
    decode eagerly (never slower than eager); True / False force it either way."""

    def __init__(self, compile: bool | None = None) -> None:
        self._compile = compile
        self._steps: dict[str, object] = {}  # device type → compiled _decode_static
        self._caches: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model → {shape key: KVCache}

    def compiles(self, device_type: str, batch_size: int = 1, dtype: torch.dtype = torch.float32) -> bool:
        """Whether this decoder compiles the step for this device type, batch size and weight dtype; False →
        generate() decodes eagerly."""
        return compile_helps(device_type, batch_size, dtype) if self._compile is None else self._compile

    def cache(self, model: GPT, batch_size: int, max_len: int) -> KVCache:
        """A KVCache of at least max_len slots (rounded up to CACHE_ROUNDING, at most the context length), in the
        model's dtype and device, reused across calls."""
        max_len = min(model.config.context_length, -(-max_len // CACHE_ROUNDING) * CACHE_ROUNDING)
        p = next(model.parameters())
        per_model = self._caches.setdefault(model, {})
        key = (batch_size, max_len, p.dtype, p.device)
        if key not in per_model:
            cache = KVCache(model.config, batch_size, max_len, device=p.device, dtype=p.dtype)
            if p.device.type == "cuda":
                for buf in cache.k + cache.v:
                    torch._dynamo.mark_static_address(buf)
            per_model[key] = cache
        return per_model[key]

    def step(
        self,
        model: GPT,
        tok: torch.Tensor,
        cache: KVCache,
        input_pos: torch.Tensor,
        positions: torch.Tensor | None,
        valid: torch.Tensor,
    ) -> torch.Tensor:
        """tok (B, 1) written at cache slot input_pos (1,) → logits (B, V). positions (B, max_len): each slot's
        position id for left-padded rows (None → slot); valid (B or 1, 1, 1, max_len): the rows' non-pad slots."""
        device = tok.device
        if device.type not in self._steps:
            if device.type == "cuda":  # CUDA graphs: one replay per token instead of ~150 kernel launches
                self._steps["cuda"] = torch.compile(
                    _decode_static, mode="reduce-overhead", fullgraph=True, dynamic=False
                )
            elif device.type == "cpu":
                self._steps["cpu"] = _compile_cpu_step()
            else:
                self._steps[device.type] = torch.compile(_decode_static, fullgraph=True)
        if device.type == "cuda":
            torch.compiler.cudagraph_mark_step_begin()  # the previous step's outputs are no longer read
        return self._steps[device.type](model, tok, cache, input_pos, positions, valid)
