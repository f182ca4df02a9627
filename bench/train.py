#!/usr/bin/env python
"""Training throughput of GPT-2 124M on the CPU: ours against Hugging Face's GPT2LMHeadModel, in the same run.

    python bench/train.py                          # bf16 autocast and fp32, B=4, T=256, 5 timed steps each
    python bench/train.py --dtypes bf16 --repeats 9 --compile

One training step = forward + loss + backward + clip_grad_norm(1.0) + AdamW (the same fused AdamW with the same
parameter groups for both models), timed after warm-up steps; the two models' steps alternate so that noise from
other processes on the machine hits both alike; the median is reported. MFU divides the model's FLOPs per token
(gpt/train/config.py flops_per_token) × tokens/s by the peak of a big matmul of the same dtype measured in the same run.

Importable (bench/run.py uses these): measure_matmul_peak, build_case, measure_cases, markdown_table.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field

import torch
from machine import call_seconds  # bench/machine.py

from gpt import GPT, GPTConfig
from gpt.onednn import available as onednn_available
from gpt.train import configure_optimizer, flops_per_token, native_bf16_matmul, param_groups
from gpt.utils import keep_freed_memory

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}


def fast_dtype(device: str = "cpu") -> str:
    """ "bf16" where bf16 matmuls run natively (gpt.train.native_bf16_matmul), else "fp32": the dtype a tiny or
    threads benchmark trains in, as scripts/pretrain.py with dtype auto would be told to."""
    return "bf16" if native_bf16_matmul(torch.device(device)) else "fp32"


def peak_shapes(
    config: GPTConfig, tokens: int, device: str = "cpu", dtype: torch.dtype = torch.float32
) -> list[tuple[int, int, int]]:
    """(M, K, N) matmuls for the peak sweep: the model's own, with M = B·T tokens — qkv (C → 3C), MLP up (C → 4C)
    and down (4C → C), the head (C → padded vocab) — and large squares (2048² and 4096² on a CPU, 8192² on a GPU)."""
    C, Vp = config.n_embd, config.padded_vocab_size
    squares = (8192,) if str(device).startswith("cuda") else (2048, 4096)
    if dtype == torch.bfloat16 and not native_bf16_matmul(torch.device(device)):
        squares = ()  # emulated bf16 (no AVX-512 BF16 / AMX): a 2048² product takes 30 s, 4096² minutes; the model's
        # own shapes give the peak the MFU needs
    if C < 256:  # smoke-test shapes
        squares = (256,)
    return [(tokens, C, 3 * C), (tokens, C, 4 * C), (tokens, 4 * C, C), (tokens, C, Vp)] + [(n, n, n) for n in squares]


def measure_matmul_peak(
    dtype: torch.dtype,
    shapes: list[tuple[int, int, int]],
    repeats: int = 5,
    device: str = "cpu",
    winners: dict[str, str] | None = None,
) -> dict[str, float]:
    """FLOP/s of each (M, K) @ (K, N) matmul in `dtype` (median of `repeats` after warm-up), keyed "M×K·K×N".
    The MFU denominator is the best of them: a peak the model's own shapes reach here, so an MFU computed against
    it cannot come from a too-low peak (a single square matmul can miss a CPU's AMX or a GPU's best tiles).
    On a CPU each shape is timed with two kernels and the faster counts: torch's `a @ b` (MKL for fp32, oneDNN for
    bf16) and oneDNN's own (`torch.ops.mkldnn._linear_pointwise`, the kernel inductor calls). MKL reads the CPU's
    vendor: on a 2-core AMD EPYC Zen 5 its fp32 GEMMs ran at 87-174 GFLOP/s where oneDNN's reached 133-419 on the
    same shapes — a peak from MKL alone would be less than half the machine's. winners (optional) gets each shape's
    faster kernel's name."""
    out = {}
    onednn = device == "cpu" and onednn_available()
    for M, K, N in shapes:
        a, b = torch.randn(M, K, device=device).to(dtype), torch.randn(K, N, device=device).to(dtype)
        kernels = {"torch": lambda a=a, b=b: a @ b}
        if onednn:
            bt = b.t().contiguous()  # (N, K): nn.Linear's layout, x @ Wᵀ
            kernels["oneDNN"] = lambda a=a, bt=bt: torch.ops.mkldnn._linear_pointwise(a, bt, None, "none", [], "")
        best = {}
        for name, f in kernels.items():
            for _ in range(2):
                f()
            times = [call_seconds(f, device) for _ in range(repeats)]
            best[name] = 2 * M * K * N / statistics.median(times)
        key, winner = f"{M}×{K}·{K}×{N}", max(best, key=best.get)
        out[key] = best[winner]
        if winners is not None:
            winners[key] = winner
    return out


@dataclass
class Case:
    name: str  # e.g. "ours" / "hf"
    dtype: str  # "bf16" (autocast) or "fp32"
    step: Callable[[], float]  # runs one training step, returns its loss
    flops_per_token: float
    compiled: bool = False
    times: list[float] = field(default_factory=list)


def _batch(batch_size: int, seq_len: int, vocab_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (batch_size, seq_len + 1), generator=g)
    return ids[:, :-1].contiguous(), ids[:, 1:].contiguous()


def build_case(
    name: str,
    dtype: str,
    batch_size: int = 4,
    seq_len: int = 256,
    compile: bool = False,
    device: str = "cpu",
    config: GPTConfig | None = None,
    ddp: bool = False,
) -> Case:
    """A model (GPT-2 124M unless `config`) with its optimizer and one fixed batch, as a step() closure.
    name: 'ours' or 'hf'. Ours trains as scripts/pretrain.py does: vocabulary padded to a multiple of 64, fused
    AdamW, and on a CPU the loss without materialised logits (gpt/loss.py); on a GPU the plain logits path.
    ddp: ours wrapped in DistributedDataParallel, as scripts/pretrain.py under torchrun (the caller has initialised
    the process group): backward all-reduces the gradients."""
    torch.manual_seed(0)
    config = config or GPTConfig.from_preset("124M")
    device_type = torch.device(device).type
    x, y = (t.to(device) for t in _batch(batch_size, seq_len, config.vocab_size))
    amp = torch.autocast(device_type, dtype=torch.bfloat16) if dtype == "bf16" else nullcontext()
    if name == "ours":
        cfg = dataclasses.replace(config, vocab_multiple=64)  # the padded vocabulary our configs train with
        model = GPT(cfg).to(device).train()
        opt = configure_optimizer(model, lr=1e-4, weight_decay=0.1, device_type=device_type)
        fwd = torch.nn.parallel.DistributedDataParallel(model) if ddp else model
        fwd = torch.compile(fwd) if compile else fwd
        logits = device_type != "cpu"

        def loss_fn():
            return fwd(x, y, return_logits=logits).loss  # on a CPU: no (B, T, V) logits

    elif name == "hf":
        from transformers import GPT2Config, GPT2LMHeadModel

        c = config
        eot = min(50256, c.vocab_size - 1)  # GPT-2's <|endoftext|>, or the last id of a smaller test vocabulary
        hf_cfg = GPT2Config(vocab_size=c.vocab_size, n_positions=c.context_length, n_embd=c.n_embd, n_layer=c.n_layer,
                            n_head=c.n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,  # no dropout, as ours
                            bos_token_id=eot, eos_token_id=eot)  # fmt: skip
        model = GPT2LMHeadModel(hf_cfg).to(device).train()  # transformers picks SDPA attention by default, as we do
        opt = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-4, betas=(0.9, 0.95), fused=True)
        cfg = config
        fwd = torch.compile(model) if compile else model

        def loss_fn():  # HF shifts labels itself: labels = the input ids gives the same next-token objective
            return fwd(input_ids=x, labels=x).loss

    else:
        raise ValueError(f"unknown case {name!r}; use 'ours' or 'hf'")

    def step() -> float:
        with amp:
            loss = loss_fn()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    label = name + (" (compiled)" if compile else "")
    return Case(label, dtype, step, flops_per_token(cfg, seq_len), compiled=compile)


def measure_cases(cases: list[Case], warmup: int = 2, repeats: int = 5) -> None:
    """Warm every case up, then time `repeats` rounds in which every case runs one step (interleaved)."""
    for case in cases:
        for _ in range(warmup):
            case.step()
    for _ in range(repeats):
        for case in cases:
            t0 = time.perf_counter()
            case.step()
            case.times.append(time.perf_counter() - t0)


def tokens_per_sec(case: Case, tokens_per_step: int) -> float:
    return tokens_per_step / statistics.median(case.times)


def markdown_table(cases: list[Case], tokens_per_step: int, peaks: dict[str, float]) -> str:
    rows = [
        "| model | dtype | tokens/s (median) | step time (s) | × HF (same dtype, both eager or both compiled) "
        "| MFU vs measured matmul peak |",
        "|---|---|---:|---:|---:|---:|",
    ]
    hf = {(c.dtype, c.compiled): tokens_per_sec(c, tokens_per_step) for c in cases if c.name.startswith("hf")}
    for c in cases:
        tps = tokens_per_sec(c, tokens_per_step)
        ref = hf.get((c.dtype, c.compiled))
        ratio = f"{tps / ref:.2f}" if ref else "–"
        mfu = tps * c.flops_per_token / peaks[c.dtype]
        rows.append(
            f"| {c.name} | {c.dtype} | {tps:,.0f} | {statistics.median(c.times):.3f} | {ratio} | {100 * mfu:.1f}% |"
        )
    return "\n".join(rows)


def compile_check(dtype: str = "bf16", batch_size: int = 4, seq_len: int = 256, repeats: int = 5) -> dict:
    """Our eager training step against the same step torch.compile'd, interleaved: {"eager_tok_s", "compiled_tok_s"}.
    Run it in a process of its own (`python bench/train.py --compile-check`): once a model has been compiled, the
    process's later eager steps ran 10-40% slower (HF's bf16 step 1.72 → 2.35-2.60 s, ours 1.51 → 1.69-1.76 s on a
    2-core AMD EPYC, torch 2.13), so it would skew every measurement made after it. The eager steps here run after
    the compile too: if anything, the ratio flatters compiling."""
    cases = [build_case("ours", dtype, batch_size, seq_len, compile=c) for c in (False, True)]
    measure_cases(cases, warmup=3, repeats=repeats)
    eager, compiled = (tokens_per_sec(c, batch_size * seq_len) for c in cases)
    return {"dtype": dtype, "eager_tok_s": eager, "compiled_tok_s": compiled}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="GPT-2 124M training tokens/s on the CPU: ours vs Hugging Face")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--dtypes", nargs="+", default=["bf16", "fp32"], choices=list(DTYPES))
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd versions of both models")
    p.add_argument("--compile-check", action="store_true",
                   help="only ours eager vs compiled (first dtype), as one JSON line (bench/run.py)")  # fmt: skip
    args = p.parse_args(argv)
    keep_freed_memory()  # as scripts/pretrain.py does on a CPU; process-wide, so both models' steps have it
    if args.compile_check:
        import json

        print(json.dumps(compile_check(args.dtypes[0], args.batch_size, args.seq_len, args.repeats)), flush=True)
        return 0

    tokens = args.batch_size * args.seq_len
    shapes = peak_shapes(GPTConfig.from_preset("124M"), tokens)
    peaks = {d: max(measure_matmul_peak(DTYPES[d], shapes).values()) for d in args.dtypes}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; B={args.batch_size}, T={args.seq_len}")
    peak_text = ", ".join(f"{d} {peaks[d] / 1e9:,.0f} GFLOP/s" for d in args.dtypes)
    print(f"matmul peak (best of a shape sweep): {peak_text}\n")
    all_cases = []
    for d in args.dtypes:  # one dtype at a time keeps at most four 124M models (and their AdamW states) in memory
        cases = [build_case(n, d, args.batch_size, args.seq_len) for n in ("hf", "ours")]
        if args.compile:
            cases += [build_case(n, d, args.batch_size, args.seq_len, compile=True) for n in ("hf", "ours")]
        measure_cases(cases, args.warmup, args.repeats)
        for c in cases:
            c.step = None  # free the models before building the next dtype's
        all_cases += cases
    print(markdown_table(all_cases, tokens, peaks))
    return 0


if __name__ == "__main__":
    from gpt.utils import run_script

    run_script(main)  # UTF-8 output whatever the console's encoding; Ctrl-C → one line, exit 130
