"""CPU threads beside another busy program: the tiny training run's tokens/s, quiet and with a competitor
running on the same cores, for torch's default thread count (every core) and for gpt.utils.cpu_threads's choice.

    python bench/threads.py                 # ≈ 1 minute; also bench/run.py's `threads` section

The competitor is another torch program using every core (a 2-thread matmul loop on 2 cores), as when two runs
or a test suite share a machine. A fair share of the machine is cores / (programs running): 50% here. The
library's choice under that load is cpu_threads(load=competitor's threads): the 1-minute load average a machine
shows once the competitor has run for a minute (this benchmark does not wait for it to climb).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

from gpt import GPTConfig
from gpt.utils import cpu_threads

COMPETITOR = "import sys, torch\ntorch.set_num_threads(int(sys.argv[1]))\na = torch.randn(384, 384)\nwhile 1:\n a @ a"


def tokens_per_sec(step, tokens: int, seconds: float) -> float:
    """Steps run back to back for about `seconds` (after one warm-up step) → tokens/s."""
    step()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 2:
        step()
        n += 1
    return n * tokens / (time.perf_counter() - t0)


def measure_threads(seconds: float = 6.0, smoke: bool = False, log=print) -> dict:
    import train as bench_train  # bench/train.py

    cores = len(os.sched_getaffinity(0))
    config = GPTConfig(vocab_size=512, context_length=32, n_layer=1, n_head=2, n_embd=32) if smoke else \
        GPTConfig.from_preset("tiny", context_length=128, vocab_multiple=64)  # fmt: skip
    B, T = (2, 32) if smoke else (8, 128)  # configs/tiny.yaml's step
    case = bench_train.build_case("ours", "bf16", B, T, config=config)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "GPT_THREADS")}
    counts = {"torch default (every core)": cores, "cpu_threads() beside the competitor": cpu_threads(
        load=float(cores), cpus=cores) if "GPT_THREADS" not in os.environ else cores}  # fmt: skip
    before = torch.get_num_threads()
    rows = []
    try:
        for name, k in counts.items():
            torch.set_num_threads(k)
            quiet = tokens_per_sec(case.step, B * T, seconds)
            competitor = subprocess.Popen([sys.executable, "-c", COMPETITOR, str(cores)], env=env)
            try:
                time.sleep(1.0)  # let it start spinning
                busy = tokens_per_sec(case.step, B * T, seconds)
            finally:
                competitor.kill()
                competitor.wait()
            rows.append({"threads": name, "n": k, "quiet_tok_s": quiet, "busy_tok_s": busy})
            log(f"  threads {k} ({name}): quiet {quiet:,.0f} tok/s, beside the competitor {busy:,.0f} tok/s")
    finally:
        torch.set_num_threads(before)
    quiet_best = max(r["quiet_tok_s"] for r in rows)
    model = "a tiny smoke-test GPT" if smoke else "configs/tiny.yaml's model (7.2M), bf16, B=8, T=128"
    return {"cores": cores, "rows": rows, "quiet_tok_s": quiet_best, "busy_tok_s": rows[-1]["busy_tok_s"],
            "model": model}  # fmt: skip


def markdown_threads(t: dict) -> list[str]:
    L = [f"## CPU threads beside a busy program ({t['model']})", ""]
    L += [f"Training tokens/s quiet, then with another torch program using all {t['cores']} cores; share = beside "
          "it / the best quiet speed (a fair share is 50% with two programs).", ""]  # fmt: skip
    L += ["| threads | n | quiet tok/s | beside the competitor tok/s | share |", "|---|---:|---:|---:|---:|"]
    for r in t["rows"]:
        L += [f"| {r['threads']} | {r['n']} | {r['quiet_tok_s']:,.0f} | {r['busy_tok_s']:,.0f} | "
              f"{r['busy_tok_s'] / t['quiet_tok_s']:.0%} |"]  # fmt: skip
    return L + [""]


if __name__ == "__main__":
    from gpt.utils import utf8_stdio

    utf8_stdio()
    sys.path.insert(0, str(ROOT / "bench"))
    print("\n".join(markdown_threads(measure_threads())))
