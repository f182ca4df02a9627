"""Decode speed: our KV-cache generate() against Hugging Face's GPT2LMHeadModel.generate — same weights, same run.

    python bench/generate.py                          # CPU: fp32 and bf16, batch 1, 16-token prompt, 128 new tokens
    python bench/generate.py --batch-sizes 1 8 --repeats 7
    python bench/generate.py --device cuda            # adds the compiled (CUDA-graph) decode step

Method. A 124M-shaped GPT with random weights (speed does not depend on their values) and the same weights loaded
into transformers' GPT2LMHeadModel (its four Conv1D weights are our nn.Linear weights transposed). Each timed call
is one whole greedy generate(): the prompt's prefill plus 127 decode steps, eos disabled, so tokens/s =
batch × new tokens / wall time. Every variant is warmed up once (compiles happen there), then the variants run
interleaved, repeat after repeat, and we report medians: on a shared machine the absolute numbers drift, the
ratios measured side by side much less — a ratio is the median of the ratios of the calls of each round. Greedy
outputs are checked equal to Hugging Face's (fp32).

The ceiling. Decoding one token at batch 1 reads every weight once, so tokens/s ≤ bandwidth / bytes per token.
Bytes per token = the parameters the decode step multiplies with: the 12 blocks and the head (the head is tied to
wte and counted once; the one wte/wpe row looked up per token is negligible) = 123.65M parameters for 124M,
494.6 MB in fp32, 247.3 MB in bf16. KV-cache reads (≈ 1% of that here) are not counted. Bandwidth is measured in
the same run, two ways: an fp32 matrix × vector on a 256 MB matrix (the faster of its two memory layouts, best of 10),
and a plain sum over a 512 MB fp32 tensor (a pure streaming read, best of 2) just before and just after every timed
call. Each call's ceiling is the largest of: the mean of the sums beside it, the mat-vec's rate, and the weight
streaming of the round's fastest variant of the same batch (bytes per token × its steps/s: a measured "ceiling" below
what a decode step did is no ceiling — on 2026-11-30 the compiled fp32 step streamed 55 GB/s where the sum measured
50 — as a peak below the achieved FLOP/s would be no peak). A variant's share of the ceiling is the median over the
rounds of its call's share. Why beside every call: on a shared machine the sum moved between 30 and 73 GB/s from one
second to the next (2-core AMD EPYC Zen 5, 2026-12-02) while a decode takes 2-5 s, and a sum measured once a round,
seconds away from the call it bounds, made the share swing from 45% to 66% between two runs of the same code.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import torch
from machine import call_seconds, sync  # bench/machine.py

from gpt import GPT, GPTConfig, generate
from gpt.fast_decode import CompiledDecoder, prepare_for_decoding
from gpt.weights import load_model, save_model

HF_TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def hf_model_from_ours(model: GPT):
    """transformers' GPT2LMHeadModel holding our model's weights (fp32, eval mode)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    c = model.config
    eot = min(50256, c.vocab_size - 1)  # GPT-2's <|endoftext|>, or the last id of a smaller test vocabulary
    hf_config = GPT2Config(vocab_size=c.vocab_size, n_positions=c.context_length, n_embd=c.n_embd, n_layer=c.n_layer,
                           n_head=c.n_head, bos_token_id=eot, eos_token_id=eot)  # fmt: skip
    hf = GPT2LMHeadModel(hf_config)
    state = {k: (v.t() if k.endswith(HF_TRANSPOSED) else v) for k, v in model.state_dict().items()}
    state = {k: v.float().contiguous() for k, v in state.items()}
    missing, unexpected = hf.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith(".attn.bias")]  # HF's causal-mask buffers, not weights
    assert not missing and not unexpected, (missing, unexpected)
    return hf.eval()


def decode_bytes_per_token(model: GPT, bytes_per_param: int) -> int:
    """Bytes of weights one decode step reads: every parameter except the embedding tables, plus the head (which
    *is* wte, counted once)."""
    c = model.config
    n = model.num_params() - model.transformer.wpe.weight.numel()  # wte stays in: it is the head
    assert n == c.padded_vocab_size * c.n_embd + model.num_params(non_embedding=True)
    return n * bytes_per_param


def matvec_bandwidth(device: str = "cpu", repeats: int = 10) -> float:
    """GB/s of an fp32 matrix × vector, best of both memory layouts: 8192² (256 MB, beyond the caches of the CPUs
    measured so far but one: a 2-core Intel Xeon VM reports 480 MiB of L3 — there MKL read 30-32 GB/s on it and on a
    16384² matrix alike, 2026-12-02), 16384² on a GPU (1 GB, 20× an H100's L2)."""
    n = 16384 if str(device).startswith("cuda") else 8192
    W = torch.randn(n, n, device=device)
    x = torch.randn(1, n, device=device)
    best = 0.0
    for f in (lambda: x @ W.T, lambda: x @ W):  # (out, in) storage, then (in, out) storage
        f()
        times = [call_seconds(f, device) for _ in range(repeats)]
        best = max(best, W.numel() * 4 / min(times) / 1e9)  # the best repeat: others sharing the machine only slow it
    return best


def stream_bandwidth(device: str = "cpu", repeats: int = 10, a: torch.Tensor | None = None) -> float:
    """GB/s of summing a 512 MB fp32 tensor (or `a`): reading memory with (almost) nothing else to do. Best of
    `repeats`."""
    a = torch.randn(128 * 2**20, device=device) if a is None else a
    a.sum()
    times = [call_seconds(a.sum, device) for _ in range(repeats)]
    return a.numel() * 4 / min(times) / 1e9


def share_of_ceiling(streamed: list[float], beside: list[float], matvec: float, fastest: list[float]) -> float:
    """A variant's share of the bandwidth ceiling: the median over rounds of streamed[r] (GB/s of weights its call
    read in round r) / that call's ceiling, the largest of beside[r] (the mean of the sums just before and after the
    call), the mat-vec's GB/s, and fastest[r] (the round's fastest variant: no ceiling below what a call reached)."""
    return statistics.median(s / max(b, matvec, f) for s, b, f in zip(streamed, beside, fastest, strict=True))


@dataclass
class Row:
    name: str  # what ran: "hf float32", "ours float32 eager", ...
    dtype: str
    batch_size: int
    tok_s: float  # median tokens/s (batch × new tokens / time of one generate call)
    ratio_vs_hf: float  # its speed / Hugging Face fp32's: the median of the two calls' ratios, round by round
    frac_ceiling: float  # median over rounds of its weight streaming / that call's ceiling (see the module docstring)
    same_tokens: bool  # greedy output equals Hugging Face fp32's
    compiled: bool = False  # its decode step ran compiled (a "compiled" variant may decode eagerly: compile_helps)
    round_tok_s: tuple[float, ...] = ()  # tokens/s of its call in each round, in order (ratios per round: goals.py)


def measure_decode(
    batch_size: int = 1,
    dtypes: tuple[str, ...] = ("float32", "bfloat16"),
    device: str = "cpu",
    prompt_len: int = 16,
    new_tokens: int = 128,
    repeats: int = 5,
    compile: bool | None = None,
    eager: bool = True,
    seed: int = 0,
    config: GPTConfig | None = None,
    log=print,
) -> tuple[list[Row], dict[str, float]]:
    """Time generate() against HF generate, interleaved; return (rows, {"matvec": GB/s, "stream": GB/s}).
    compile=None means: compiled variants on CUDA only (on a CPU the first call compiles for 20-60 s)."""
    torch.manual_seed(seed)
    config = config or GPTConfig.from_preset("124M")
    base = GPT(config).eval()
    hf = hf_model_from_ours(base).to(device)
    compile = str(device).startswith("cuda") if compile is None else compile
    idx = torch.randint(0, config.vocab_size, (batch_size, prompt_len), device=device)

    def ours(model, use_compile):
        decoder = CompiledDecoder() if use_compile else None  # held across the repeats: compiled once
        return lambda: generate(model, idx, new_tokens, temperature=0, decoder=decoder)

    @torch.inference_mode()
    def run_hf():
        out = hf.generate(
            idx,
            attention_mask=torch.ones_like(idx),
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
            do_sample=False,
            pad_token_id=0,
        )
        return out

    variants = {"hf float32": ("float32", run_hf)}
    compiled = {"hf float32": False}
    with tempfile.TemporaryDirectory() as tmp:
        path = save_model(base, Path(tmp) / "model.safetensors")
        for name in dtypes:
            for use_compile in [False] * eager + [True] * compile:
                # the default path a user takes: load_model (which lays the weights out for decoding), then
                # generate(); "compiled" is CompiledDecoder(), which decodes eagerly where compiling does not pay
                m = load_model(path, device=device, dtype=name)
                compiles = use_compile and CompiledDecoder().compiles(
                    torch.device(device).type, batch_size, m.lm_head.weight.dtype
                )
                if compiles:
                    prepare_for_decoding(m, compile=True)
                variants[f"ours {name} {'compiled' if use_compile else 'eager'}"] = (name, ours(m, use_compile))
                compiled[f"ours {name} {'compiled' if use_compile else 'eager'}"] = compiles

    outputs = {}
    for name, (_, f) in variants.items():  # warm-up (and compile)
        t0 = time.perf_counter()
        outputs[name] = f()
        sync(device)
        log(f"  warm-up {name}: {time.perf_counter() - t0:.1f} s")
    times = {name: [] for name in variants}
    beside = {name: [] for name in variants}  # per round: the mean of the sums just before and after its call
    big = torch.randn(128 * 2**20, device=device)  # 512 MB
    streams = [stream_bandwidth(device, repeats=2, a=big)]
    for _ in range(repeats):
        for name, (_, f) in variants.items():
            times[name].append(call_seconds(f, device))
            streams.append(stream_bandwidth(device, repeats=2, a=big))
            beside[name].append((streams[-2] + streams[-1]) / 2)
    del big
    bw = {"matvec": matvec_bandwidth(device), "stream": statistics.median(streams), "stream_min": min(streams),
          "stream_max": max(streams)}  # fmt: skip

    n_tok = batch_size * new_tokens
    ref = outputs["hf float32"][:, prompt_len:]
    step_bytes = {name: decode_bytes_per_token(base, getattr(torch, dt).itemsize) for name, (dt, _) in variants.items()}
    gbs = {name: [n_tok / t / batch_size * step_bytes[name] / 1e9 for t in times[name]] for name in variants}
    fastest = [max(gbs[name][r] for name in variants) for r in range(repeats)]  # per round
    tok_s = {name: n_tok / statistics.median(times[name]) for name in variants}
    bw["achieved"] = max(tok_s[n] / batch_size * step_bytes[n] for n in variants) / 1e9  # the fastest variant's GB/s
    rows = []
    for name, (dt, _) in variants.items():
        shares = share_of_ceiling(gbs[name], beside[name], bw["matvec"], fastest)
        same = torch.equal(outputs[name][:, prompt_len:].cpu(), ref.cpu())
        ratio = statistics.median(a / b for a, b in zip(times["hf float32"], times[name], strict=True))  # per round
        rounds = tuple(n_tok / t for t in times[name])
        rows.append(Row(name, dt, batch_size, tok_s[name], ratio, shares, same, compiled[name], rounds))
    return rows, bw


def markdown_table(rows: list[Row], bw: dict[str, float]) -> str:
    lines = [
        f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads. Bandwidth measured in this run: fp32 "
        f"mat-vec {bw['matvec']:.1f} GB/s, streaming sum {bw['stream']:.1f} GB/s (median; {bw['stream_min']:.1f}-"
        f"{bw['stream_max']:.1f} beside the calls), fastest variant {bw.get('achieved', 0):.1f} GB/s; each call's "
        "ceiling uses the largest beside it.",
        "",
        "| variant | batch | tok/s | × HF fp32 | of bandwidth ceiling | same tokens as HF |",
        "|---|---:|---:|---:|---:|:---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.name} | {r.batch_size} | {r.tok_s:.1f} | {r.ratio_vs_hf:.2f} | {r.frac_ceiling:.0%} | "
            f"{'yes' if r.same_tokens else 'no'} |"
        )
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16", "float16"])
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[1])
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--compile", action="store_true", help="also time the compiled decode step on a CPU")
    p.add_argument("--no-eager", action="store_true", help="skip the eager variants")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, device {args.device}, {torch.get_num_threads()} threads", file=sys.stderr)
    for b in args.batch_sizes:
        rows, bw = measure_decode(
            batch_size=b,
            dtypes=tuple(args.dtypes),
            device=args.device,
            prompt_len=args.prompt_len,
            new_tokens=args.new_tokens,
            repeats=args.repeats,
            compile=True if args.compile else None,
            eager=not args.no_eager,
            log=lambda s: print(s, file=sys.stderr),
        )
        print(markdown_table(rows, bw) + "\n", flush=True)


if __name__ == "__main__":
    from gpt.utils import run_script

    run_script(main)  # UTF-8 output whatever the console's encoding; Ctrl-C → one line, exit 130
