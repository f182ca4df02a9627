#!/usr/bin/env python
"""Every benchmark in one command, ours side by side with Hugging Face in the same run; writes
bench/results/<machine>.md (tables, and issue 15's goals each marked met / not met), .png (chart) and .json.

    python bench/run.py                        # the CPU suite: ≈ 10 minutes on 2 cores (566 s here), more the
                                               #   first time, while torch.compile fills its cache
    python bench/run.py --quick                # 3 repeats, no compiled decode
    python bench/run.py --device cuda          # on a GPU: training at T=1024 (bf16, compiled), CUDA-graph decode
    python bench/run.py --only decode train    # some sections: peak, decode, train, threads, load, data
    python bench/run.py --smoke                # tiny shapes, a minute: checks the harness (tests/test_bench.py)

Sections (each a function below, each timing after warm-up and reporting medians over repeats):
  peak    the machine's matmul FLOP/s in bf16 and fp32 (the MFU denominator): per dtype the best of a sweep of the
          training step's own matmul shapes and large squares, measured here, now;
  decode  generate() vs transformers' generate(): batch 1 and 8, fp32 and bf16, eager and compiled (bench/generate.py);
  train   GPT-2 124M training steps vs GPT2LMHeadModel with the same fused AdamW, bf16 autocast and fp32, with MFU
          against the measured peak, and on a GPU against the datasheet's (989 TFLOP/s bf16 for H100/H200)
          (bench/train.py);
  threads the tiny training run quiet and beside another busy program, with torch's default thread count and with
          gpt.utils.cpu_threads's (bench/threads.py);
  load    converting 124M-shaped OpenAI and HF checkpoints, and loading the result: time and peak RSS
          (bench/load_memory.py; needs TensorFlow for the OpenAI-layout fixture);
  data    scripts/prepare_data.py's throughput on the embedded corpus in MB/s of text, against tiktoken encoding the
          same text in memory (the tokenizer alone: the floor for any data pipeline using it).
The machine's name is derived from its CPU or GPU model; numbers from one file compare with each other, not with
another machine's.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import argparse
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time

import generate as bench_generate  # bench/generate.py
import torch
import train as bench_train  # bench/train.py
from goals import check_goals, markdown_goals  # bench/goals.py
from machine import environment, machine_name  # bench/machine.py
from threads import markdown_threads, measure_threads  # bench/threads.py

from gpt import GPTConfig
from gpt.train import compile_pays, device_peak_flops
from gpt.utils import keep_freed_memory

SECTIONS = ("peak", "decode", "train", "threads", "load", "data")
DTYPE_NAMES = {"bf16": torch.bfloat16, "fp32": torch.float32}
SMOKE_CONFIG = GPTConfig(vocab_size=512, context_length=64, n_layer=2, n_head=2, n_embd=64)


# ---- sections ------------------------------------------------------------------------------------------------------
def run_peak(args) -> dict:
    """Per dtype: the best FLOP/s of a sweep of the training step's own matmul shapes and large squares."""
    config = SMOKE_CONFIG if args.smoke else GPTConfig.from_preset("124M")
    B, T = train_shape(args)
    native_bf16 = bench_train.fast_dtype(args.device) == "bf16"
    # emulated bf16 (no AVX-512 BF16 / AMX): 1-20 GFLOP/s, minutes per shape, and no bf16 training row to divide
    winners = {d: {} for d in DTYPE_NAMES}  # per dtype and shape: the faster kernel (torch's a @ b or oneDNN's)
    sweep = {d: bench_train.measure_matmul_peak(dt, bench_train.peak_shapes(config, B * T, args.device, dt),
                                                repeats=args.repeats, device=args.device, winners=winners[d])
             for d, dt in DTYPE_NAMES.items() if d != "bf16" or native_bf16}  # fmt: skip
    return {**{d: max(s.values()) for d, s in sweep.items()}, "sweep": sweep, "winners": winners}


def train_shape(args) -> tuple[int, int]:
    """(B, T) of the training section: tiny for --smoke, 16 × 1024 on a GPU, 4 × 256 on a CPU."""
    if args.smoke:
        return 2, 32
    return (args.train_batch or 16, 1024) if args.device.startswith("cuda") else (args.train_batch or 4, 256)


def run_decode(args) -> dict:
    config = SMOKE_CONFIG if args.smoke else None
    cuda = args.device.startswith("cuda")
    compile = cuda or not (args.quick or args.smoke)  # compiled variants: 20-60 s of compiling each on a CPU
    out = {"rows": [], "bandwidth": None, "new_tokens": 8 if args.smoke else 128, "prompt_len": 16,
           "model": "a tiny smoke-test GPT" if args.smoke else "GPT-2 124M"}  # fmt: skip
    for batch in (1, 8):
        rows, bw = bench_generate.measure_decode(
            batch_size=batch, dtypes=("float32", "bfloat16"), device=args.device, new_tokens=out["new_tokens"],
            prompt_len=out["prompt_len"], repeats=args.repeats, compile=compile, config=config, log=log,
        )  # fmt: skip
        out["rows"] += [vars(r) for r in rows]
        out["bandwidth"] = out["bandwidth"] or bw  # batch 1's: the ceiling the goals use
    return out


def run_train(args, peaks: dict | None) -> dict:
    cuda = args.device.startswith("cuda")
    config = SMOKE_CONFIG if args.smoke else GPTConfig.from_preset("124M")
    B, T = train_shape(args)
    dtypes = ("bf16",) if cuda else ("bf16", "fp32")  # fp32 is not how anyone trains on a GPU
    native_bf16 = bench_train.fast_dtype(args.device) == "bf16"
    if not native_bf16:  # emulated bf16 matmuls: a 124M bf16 step takes most of a minute; fp32 is how one trains here
        dtypes = ("fp32",)
    out = {
        "batch_size": B,
        "seq_len": T,
        "rows": [],
        "model": "a tiny smoke-test GPT" if args.smoke else "GPT-2 124M",
        "compile_pays": compile_pays(torch.device(args.device)),
        "native_bf16": native_bf16,
    }  # what scripts/pretrain.py does with compile: true
    for d in dtypes:  # one dtype at a time: at most four models and their optimizer states in memory
        # on a GPU both models are compiled, as a real run would be; on a CPU both run eager, as scripts/pretrain.py
        # does there (gpt/train/device.py: compile_pays; checked below)
        compiled = cuda
        cases = [
            bench_train.build_case(name, d, B, T, compile=compiled, device=args.device, config=config)
            for name in ("hf", "ours")
        ]
        log(f"  train {d}: warming up{' (compiling)' if compiled else ''}")
        bench_train.measure_cases(cases, warmup=3 if compiled else 2, repeats=args.repeats)
        for c in cases:
            tok_s = bench_train.tokens_per_sec(c, B * T)
            row = dict(model=c.name, dtype=d, tokens_per_sec=tok_s, step_s=statistics.median(c.times),
                       flops_per_token=c.flops_per_token)  # fmt: skip
            if peaks:
                row["mfu_measured_peak"] = tok_s * c.flops_per_token / peaks[d]
            datasheet = device_peak_flops(torch.device(args.device), DTYPE_NAMES[d]) if cuda else None
            if datasheet:
                row["mfu_datasheet"] = tok_s * c.flops_per_token / datasheet
            out["rows"].append(row)
            c.step = None  # free the model before the next dtype's
        log(f"  train {d}: " + ", ".join(f"{r['model']} {r['tokens_per_sec']:,.0f} tok/s"
                                         for r in out["rows"] if r["dtype"] == d))  # fmt: skip
    if not cuda and not (args.quick or args.smoke):
        # what `compile: true` would give on this CPU, so that compile_pays()'s answer is checked against it; in a
        # process of its own, as a compiled model slows the eager steps that follow it (bench/train.py compile_check)
        d = bench_train.fast_dtype(args.device)
        log(f"  train {d}: ours eager vs compiled, in another process (compiling)")
        cmd = [sys.executable, str(Path(__file__).with_name("train.py")), "--compile-check", "--dtypes", d,
               "--batch-size", str(B), "--seq-len", str(T), "--repeats", str(args.repeats)]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8")
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
        out["compile_check"] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def run_load(args) -> dict:
    import load_memory  # bench/load_memory.py

    try:
        import tensorflow  # noqa: F401  (writes the OpenAI-layout fixture)

        sources = ("openai", "hf")
    except ImportError:
        sources = ("hf",)
        log("  load: TensorFlow is not installed, so only the Hugging Face layout is measured")
    return {"rows": load_memory.run(sources), "target_ratio": load_memory.TARGET_RATIO}


def run_data(args) -> dict:
    from gpt.data import list_text_files, prepare_data
    from gpt.tokenizer import get_tokenizer

    corpus = ROOT / "data" / "shakespeare"
    files = list_text_files([corpus / "sonnets.txt", corpus / "lovers_complaint.txt"] if args.smoke else [corpus])
    mb = sum(p.stat().st_size for p in files) / 1e6
    enc = get_tokenizer()
    texts = [p.read_text(encoding="utf-8") for p in files]
    ours, bare = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats + 1):  # the first round is the warm-up
            out = Path(tmp) / f"prepared{i}"
            t0 = time.perf_counter()
            prepare_data(files, out, val_fraction=0.1 if len(files) > 10 else 0.5, progress=False)
            t1 = time.perf_counter()
            for t in texts:
                enc.encode_ordinary(t)
            t2 = time.perf_counter()
            shutil.rmtree(out)
            if i:
                ours.append(t1 - t0)
                bare.append(t2 - t1)
    return {"megabytes": mb, "files": len(files), "ours_mb_s": mb / statistics.median(ours),
            "tiktoken_mb_s": mb / statistics.median(bare)}  # fmt: skip


# ---- the report ----------------------------------------------------------------------------------------------------
def fmt_mfu(row: dict, key: str) -> str:
    return f"{100 * row[key]:.1f}%" if key in row else "–"


def markdown(env: dict, results: dict) -> str:
    L = [f"# Benchmarks: {env['machine']}", ""]
    L += [f"`{env['command']}` · {env['date']}", ""]
    L += ["| | |", "|---|---|"]
    dev = env.get("gpu") or "CPU"
    about = [env["cpu_flags"] or "flags unknown", env.get("cpu_family_model")]  # the latter since 2026-12-02
    cpu = f"{env['cpu']} ({'; '.join(filter(None, about))})"
    L += [f"| device | {env['device']} ({dev}) |", f"| CPU | {cpu} |"]
    L += [f"| cores / torch threads | {env['cores']} / {env['threads']} |"]
    L += [f"| torch / transformers / python | {env['torch']} / {env['transformers']} / {env['python']} |", ""]
    L += ["Medians over repeats after warm-up; ours and the peer alternate in each round, so background load hits "
          "both alike. Ratios measured side by side are the numbers to compare; absolute ones move with the machine's "
          "load.", ""]  # fmt: skip
    L += markdown_goals(check_goals(results))
    if "peak" in results:
        p = results["peak"]
        L += ["## Matmul peak (measured in this run)", ""]
        bf16_peak = f"{p['bf16'] / 1e12:.3f} TFLOP/s" if "bf16" in p else "not measured"
        L += [f"bf16 {bf16_peak} · fp32 {p['fp32'] / 1e12:.3f} TFLOP/s: per dtype the best of a sweep of the training "
              "step's own matmuls (M = B·T tokens) and large squares, the MFU denominator; on a CPU each shape is "
              "timed with torch's `a @ b` (MKL for fp32) and with oneDNN's kernel, and the faster counts (named "
              "after each number; bench/train.py: measure_matmul_peak).", ""]  # fmt: skip
        if "sweep" in p:
            bf16_sweep, win = p["sweep"].get("bf16", {}), p.get("winners", {})

            def cell(d, shape, value):
                by = win.get(d, {}).get(shape)
                return "–" if value is None else f"{value / 1e12:.3f}" + (f" ({by})" if by else "")

            L += ["| (M×K)·(K×N) | bf16 TFLOP/s | fp32 TFLOP/s |", "|---|---:|---:|"]
            for shape in p["sweep"]["fp32"]:
                L += [f"| {shape} | {cell('bf16', shape, bf16_sweep.get(shape))} | "
                      f"{cell('fp32', shape, p['sweep']['fp32'][shape])} |"]  # fmt: skip
            L += [""]
            if len(bf16_sweep) < len(p["sweep"]["fp32"]):
                L += ["–: not measured. Without AVX-512 BF16 or AMX torch emulates bf16 matmuls (1-20 GFLOP/s here: "
                      "minutes per shape), and no bf16 training row needs the peak.", ""]  # fmt: skip
    if "decode" in results:
        d = results["decode"]
        bw = d["bandwidth"]
        L += ["## Decode: generate() vs transformers generate()", ""]
        L += [f"{d['model']} with random weights (speed does not depend on their values), greedy, prompt "
              f"{d['prompt_len']} tokens + {d['new_tokens']} new, tokens/s = batch × new tokens / time of one generate "
              "call. Memory bandwidth measured here (at batch 1): fp32 mat-vec "
              f"{bw['matvec']:.1f} GB/s, streaming sum {bw['stream']:.1f} GB/s (median of the sums measured just "
              f"before and after every timed call; they ranged {bw.get('stream_min', 0):.1f}-"
              f"{bw.get('stream_max', 0):.1f} GB/s), the fastest variant's own weight streaming "
              f"{bw.get('achieved', 0):.1f} GB/s. Each call's ceiling (batch × bandwidth / bytes of weights per token) "
              "uses the largest of the mat-vec's rate, the mean of the sums beside that call and the round's fastest "
              "variant; a share is the median over the rounds (bench/generate.py).", ""]  # fmt: skip
        L += ["| variant | batch | tok/s | × HF fp32 | of bandwidth ceiling | same tokens as HF |"]
        L += ["|---|---:|---:|---:|---:|:---:|"]
        for r in d["rows"]:
            L += [f"| {r['name']} | {r['batch_size']} | {r['tok_s']:,.1f} | {r['ratio_vs_hf']:.2f} | "
                  f"{r['frac_ceiling']:.0%} | {'yes' if r['same_tokens'] else 'no'} |"]  # fmt: skip
        L += [""]
    if "train" in results:
        t = results["train"]
        L += [f"## Training: {t['model']} steps vs GPT2LMHeadModel, same fused AdamW", ""]
        L += [f"B = {t['batch_size']}, T = {t['seq_len']} ({t['batch_size'] * t['seq_len']:,} tokens per step); a step "
              "is forward + loss + backward + clip + AdamW. MFU = tokens/s × FLOPs per token (6N + attention, "
              "gpt/train/config.py) / peak.", ""]  # fmt: skip
        if not t.get("native_bf16", True):
            L += ["No bf16 rows: this CPU has no native bf16 matmul (no AVX-512 BF16 or AMX), so torch emulates it "
                  "several times slower than fp32 (gpt/train/device.py: native_bf16_matmul); one trains in fp32 "
                  "here, and scripts/pretrain.py warns when bf16 is asked for.", ""]  # fmt: skip
        L += ["| model | dtype | tokens/s | step (s) | × HF | MFU (measured peak) | MFU (datasheet peak) |"]
        L += ["|---|---|---:|---:|---:|---:|---:|"]
        hf = {r["dtype"]: r["tokens_per_sec"] for r in t["rows"] if r["model"].startswith("hf")}
        for r in t["rows"]:
            L += [f"| {r['model']} | {r['dtype']} | {r['tokens_per_sec']:,.0f} | {r['step_s']:.3f} | "
                  f"{r['tokens_per_sec'] / hf[r['dtype']]:.2f} | {fmt_mfu(r, 'mfu_measured_peak')} | "
                  f"{fmt_mfu(r, 'mfu_datasheet')} |"]  # fmt: skip
        L += [""]
        if "compile_check" in t:
            c = t["compile_check"]
            L += [f"torch.compile on this CPU ({c['dtype']}, ours, in a process of its own: a compiled model slows the "
                  f"eager steps after it): compiled {c['compiled_tok_s']:,.0f} tok/s vs eager {c['eager_tok_s']:,.0f} "
                  f"tok/s, {c['compiled_tok_s'] / c['eager_tok_s']:.2f}×; `compile: true` here "
                  f"{'compiles' if t['compile_pays'] else 'trains eagerly'} (gpt/train/device.py: compile_pays).",
                  ""]  # fmt: skip
    if "threads" in results:
        L += markdown_threads(results["threads"])
    if "load" in results:
        import load_memory

        L += ["## Weight conversion and loading (124M-shaped checkpoints in the real layouts)", ""]
        L += [load_memory.markdown_table(results["load"]["rows"]), ""]
        L += [f"Peak RSS counts what the work itself holds (VmHWM after − RSS before); target for loading: ≤ "
              f"{results['load']['target_ratio']}× the file size.", ""]  # fmt: skip
    if "data" in results:
        d = results["data"]
        L += ["## Data preparation", ""]
        L += ["| pipeline | MB/s of text |", "|---|---:|"]
        L += [f"| ours: prepare_data ({d['files']} files, {d['megabytes']:.1f} MB → train.bin/val.bin) | "
              f"{d['ours_mb_s']:.1f} |"]  # fmt: skip
        L += [f"| tiktoken encode_ordinary alone, in memory | {d['tiktoken_mb_s']:.1f} |", ""]
    return "\n".join(L)


def chart(results: dict, path: Path, title: str) -> None:
    """Speed relative to Hugging Face measured in the same run (1.0 = HF), each bar labelled with its tokens/s:
    decode against HF fp32 at the same batch size, training against HF at the same dtype."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = []
    if "decode" in results:
        rows = [r for r in results["decode"]["rows"] if not r["name"].startswith("hf")]
        labels = [f"{r['name'].removeprefix('ours ').replace('float32', 'fp32').replace('bfloat16', 'bf16')}, "
                  f"B={r['batch_size']}" for r in rows]  # fmt: skip
        panels.append(("decode (× HF fp32, same batch)\n", labels, [r["ratio_vs_hf"] for r in rows],
                       [r["tok_s"] for r in rows], "tab:blue"))  # fmt: skip
    if "train" in results:
        t = results["train"]
        hf = {r["dtype"]: r["tokens_per_sec"] for r in t["rows"] if r["model"].startswith("hf")}
        rows = [r for r in t["rows"] if not r["model"].startswith("hf")]
        panels.append((f"training (× HF, same dtype)\nB={t['batch_size']}, T={t['seq_len']}",
                       [f"{r['model']}, {r['dtype']}" for r in rows],
                       [r["tokens_per_sec"] / hf[r["dtype"]] for r in rows], [r["tokens_per_sec"] for r in rows],
                       "tab:orange"))  # fmt: skip
    if not panels:
        return
    fig = Figure(figsize=(1.6 + 1.1 * sum(max(3, len(p[1])) for p in panels), 4.6), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False, width_ratios=[max(3, len(p[1])) for p in panels])[0]
    for ax, (name, labels, ratios, tok_s, color) in zip(axes, panels):
        bars = ax.bar(range(len(ratios)), ratios, color=color)
        ax.bar_label(bars, labels=[f"{r:.2f}×\n{v:,.0f} tok/s" for r, v in zip(ratios, tok_s)], fontsize=7)
        ax.axhline(1.0, color="gray", lw=1, ls="--")
        ax.set_xticks(range(len(ratios)), labels, fontsize=7, rotation=30, ha="right")
        ax.set_ylim(0, max(ratios) * 1.25)
        ax.set_title(name, fontsize=9)
    axes[0].set_ylabel("speed relative to Hugging Face (dashed: 1.0)")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda / cuda:N")
    p.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="sections to run")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats per measurement (default 5; --quick 3)")
    p.add_argument("--quick", action="store_true", help="3 repeats, no compiled decode variants on a CPU")
    p.add_argument("--smoke", action="store_true",
                   help="tiny shapes, no load section: checks the harness, measures nothing useful")  # fmt: skip
    p.add_argument("--train-batch", type=int, default=None, help="sequences per training step (CPU 4, GPU 16)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--out", default=None, help="the .md to write (default bench/results/<machine>.md)")
    p.add_argument("--from-json", metavar="JSON", help="measure nothing: rewrite the .md and .png of a saved .json")
    args = p.parse_args(argv)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text(encoding="utf-8"))
        env, results = saved["environment"], saved["results"]
        out = Path(args.out) if args.out else Path(args.from_json).with_suffix(".md")
        write_atomic(out, markdown(env, results))
        chart(results, out.with_suffix(".png"), f"{env['machine']} · torch {env['torch']} · {env['threads']} threads")
        log(f"wrote {out} and {out.with_suffix('.png').name} from {args.from_json}")
        return 0
    args.repeats = args.repeats or (2 if args.smoke else 3 if args.quick else 5)
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # as scripts/pretrain.py does on a CPU; process-wide: ours and HF's steps alike
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            print("error: --device cuda, but torch sees no CUDA GPU (torch.cuda.is_available() is False)",
                  file=sys.stderr)  # fmt: skip
            return 2
        torch.set_float32_matmul_precision("high")  # TF32, as scripts/pretrain.py sets on GPUs
        args.only = [s for s in args.only if s not in ("threads", "load", "data")]  # CPU-side: run without --device

    if args.smoke:
        args.only = [s for s in args.only if s != "load"]  # 124M-shaped files only: a minute, not a smoke test
    env = environment(args.device)
    env["machine"] = machine_name(args.device) + ("-smoke" if args.smoke else "")
    out = Path(args.out) if args.out else ROOT / "bench" / "results" / f"{env['machine']}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    log(f"{env['machine']}: torch {env['torch']}, {env['threads']} threads, device {args.device} → {out}")

    results: dict = {}
    t_start = time.perf_counter()
    for section in SECTIONS:
        if section not in args.only:
            continue
        log(f"[{section}]")
        t0 = time.perf_counter()
        if section == "peak":
            results["peak"] = run_peak(args)
        elif section == "decode":
            results["decode"] = run_decode(args)
        elif section == "train":
            results["train"] = run_train(args, results.get("peak"))
        elif section == "threads":
            results["threads"] = measure_threads(seconds=1.0 if args.smoke else 6.0, smoke=args.smoke, log=log)
        elif section == "load":
            results["load"] = run_load(args)
        elif section == "data":
            results["data"] = run_data(args)
        log(f"[{section}] {time.perf_counter() - t0:.0f} s")
        # write after every section: a crash or Ctrl-C later keeps what was measured
        env["seconds"] = round(time.perf_counter() - t_start)
        write_atomic(out, markdown(env, results))
        write_atomic(out.with_suffix(".json"), json.dumps({"environment": env, "results": results}, indent=1))
    chart(results, out.with_suffix(".png"), f"{env['machine']} · torch {env['torch']} · {env['threads']} threads")
    print(markdown(env, results))
    log(f"wrote {out}, {out.with_suffix('.png').name} and {out.with_suffix('.json').name}")
    return 0


if __name__ == "__main__":
    from gpt.utils import run_script

    run_script(main)  # UTF-8 output whatever the console's encoding; Ctrl-C → one line, exit 130
