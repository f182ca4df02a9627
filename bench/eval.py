#!/usr/bin/env python
"""HellaSwag validation throughput: ours against lm-evaluation-harness, same model, same examples, same run.

    python bench/eval.py --data-dir data/eval                        # the full pass: 10,042 examples (CPU: hours)
    python bench/eval.py --data-dir data/eval --limit 40             # a quick look (≈ 2 minutes on 2 CPU cores)
    python bench/eval.py --device cuda --dtype bfloat16 --batch-size 64

Both score the harness's `hellaswag` task (its preprocessing, every ending's log-likelihood) on GPT-2 124M:
the weights in weights/gpt2-124M.safetensors when present, else random ones (speed does not depend on their
values). The harness loads the same weights, exported to a Hugging Face directory, through its `hf` backend
(bench/lm_eval_offline.py, in a subprocess, offline). Tokens/s counts the same work for both: the tokens of every
(context + ending) the harness feeds the model, 4 per example, over the wall time of scoring (model loading
excluded; each side's tokenization and bookkeeping included). Both must also agree on acc and acc_norm.
Writes bench/results/eval-<machine>.md and .json.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import argparse
import json
import os
import subprocess
import tempfile
import time

import torch
from run import environment, log, machine_name, write_atomic  # bench/run.py

from gpt import GPT, GPTConfig, export_hf
from gpt.eval import hellaswag_metrics, load_task, score_hellaswag
from gpt.eval.hellaswag import build_request
from gpt.tokenizer import get_tokenizer
from gpt.utils import get_device, get_dtype
from gpt.weights import load_model

WEIGHTS = ROOT / "weights" / "gpt2-124M.safetensors"


def harness_tokens(rows: list[dict]) -> int:
    """Tokens the harness feeds the model: every (context + ending)[:-1], cut to 1024, 4 per example."""
    enc = get_tokenizer()
    n = 0
    for row in rows:
        (ctx, endings), _ = build_request(enc, row, "harness")
        n += sum(min(len(ctx) + len(e) - 1, 1024) for e in endings)
    return n


def markdown(env: dict, r: dict) -> str:
    return "\n".join([
        f"# HellaSwag evaluation speed: {env['machine']}", "",
        f"`{env['command']}` · {env['date']}", "",
        f"GPT-2 124M ({r['weights']}), {r['examples']:,} HellaSwag validation examples "
        f"({'the full split' if r['examples'] == 10_042 else 'a subset: --limit'}), harness scoring, "
        f"{r['dtype']}, batch size {r['batch_size']}, device {env['device']}, torch {env['torch']}, "
        f"lm_eval {r['lm_eval']}, {env['threads']} threads. Tokens: {r['tokens']:,} (every context + ending the "
        "harness feeds the model).", "",
        "| | seconds | tokens/s | acc | acc_norm |", "|---|---:|---:|---:|---:|",
        *[f"| {name} | {r[k + '_s']:.1f} | {r[k + '_tok_s']:,.0f} | {r[k + '_acc']:.4f} | {r[k + '_acc_norm']:.4f} |"
          for name, k in (("ours (`gpt/eval`)", "ours"), ("lm-evaluation-harness `hf`", "harness"))], "",
        f"**{r['speedup']:.2f}× the harness's tokens/s** (goal ≥ 1.5×). Ours packs each example's four endings behind "
        "one copy of the context (one forward pass instead of four) and applies the output layer only where a token "
        "is scored.", "",
    ])  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=ROOT / "data" / "eval", help="holds hellaswag_val.jsonl")
    p.add_argument("--limit", type=int, default=None, help="the first N examples (default: all 10,042)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", type=Path, default=None, help="default: bench/results/eval-<machine>.md")
    args = p.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        print(f"error: --limit must be >= 1, got {args.limit}", file=sys.stderr)
        return 2
    try:
        device = get_device(args.device)
        rows, _ = load_task("hellaswag", args.data_dir)
    except Exception as e:  # noqa: BLE001  (one line for any setup problem: device, data)
        print(f"error: {e}", file=sys.stderr)
        return 2
    rows = rows[: args.limit]
    env = environment(str(device))
    env["machine"] = machine_name(str(device))
    env["command"] = "python bench/eval.py " + " ".join(sys.argv[1:] if argv is None else argv)
    out = args.out or ROOT / "bench" / "results" / f"eval-{env['machine']}.md"
    real = WEIGHTS.is_file()
    torch.manual_seed(0)  # random weights: the same ones in every run, so runs' accuracies compare too
    model = load_model(WEIGHTS, device=device) if real else GPT(GPTConfig.from_preset("124M")).to(device).eval()
    r = {"weights": "OpenAI's weights" if real else "random weights", "examples": len(rows),
         "dtype": args.dtype, "batch_size": args.batch_size, "tokens": harness_tokens(rows)}  # fmt: skip

    with tempfile.TemporaryDirectory() as tmp:
        export_hf(model, Path(tmp) / "hf")  # float32, as the file holds it; both sides cast to --dtype
        data = Path(tmp) / "hellaswag.jsonl"  # exactly these rows, so the harness prepares no more than it scores
        data.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        log(f"harness: {len(rows):,} examples, {r['tokens']:,} tokens")
        cmd = [sys.executable, str(ROOT / "bench" / "lm_eval_offline.py"), "--hf-dir", str(Path(tmp) / "hf"),
               "--hellaswag", str(data), "--device", str(device), "--dtype", args.dtype,
               "--batch-size", str(args.batch_size), "--out", str(Path(tmp) / "harness.json")]  # fmt: skip
        env_vars = {**os.environ, "HF_HOME": str(Path(tmp) / "hf_home")}
        if subprocess.run(cmd, env=env_vars, stdout=subprocess.DEVNULL).returncode:
            print("error: lm-evaluation-harness failed (above); pip install -r requirements-dev.txt", file=sys.stderr)
            return 1
        harness = json.loads((Path(tmp) / "harness.json").read_text(encoding="utf-8"))
    r["lm_eval"] = harness["lm_eval"]
    r["harness_s"] = harness["seconds"]
    r["harness_acc"], r["harness_acc_norm"] = (harness["results"]["hellaswag"][k] for k in ("acc", "acc_norm"))

    log("ours")
    model = model.to(get_dtype(args.dtype))
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    scores = score_hellaswag(model, rows, "harness", batch_size=args.batch_size, progress=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    r["ours_s"] = time.perf_counter() - t0
    r["ours_acc"], r["ours_acc_norm"] = (m.value for m in hellaswag_metrics(scores, "harness"))
    r["ours_tok_s"], r["harness_tok_s"] = r["tokens"] / r["ours_s"], r["tokens"] / r["harness_s"]
    r["speedup"] = r["ours_tok_s"] / r["harness_tok_s"]

    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, markdown(env, r))
    write_atomic(out.with_suffix(".json"), json.dumps({"environment": env, "results": r}, indent=1) + "\n")
    print(markdown(env, r))
    log(f"wrote {out} and {out.with_suffix('.json').name}")
    return 0


if __name__ == "__main__":
    from gpt.utils import run_script

    run_script(main)  # UTF-8 output whatever the console's encoding; Ctrl-C → one line, exit 130
