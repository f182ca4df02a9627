"""CPU threads beside another busy program: the tiny training run's tokens/s, quiet and with a competitor
running on the same cores — for torch's default thread count (every core), for gpt.utils.cpu_threads's choice, and
for data parallelism over processes of one thread each (torchrun, gloo: the documented switch for a shared machine).

    python bench/threads.py                 # ≈ 2 minutes; also bench/run.py's `threads` section

The competitor is another torch program using every core (a 2-thread matmul loop on 2 cores), as when two runs
or a test suite share a machine. A fair share of the machine is cores / (programs running): 50% here. The
library's choice is what cpu_threads() reads from the machine while the competitor runs (gpt/utils.py:
busy_elsewhere, the threads running now).
Why processes: torch's OpenMP threads meet at a barrier after every op, so one descheduled thread stalls the
others; data-parallel processes meet once a step (the gradient all-reduce), so the OS's per-thread fair share
reaches them (2-core AMD EPYC, tiny.yaml beside the competitor: 1 process × 1 thread ≈ 2,000-2,400 tokens/s,
torchrun 2 × 1 ≈ 3,000-3,200, quiet 2 threads ≈ 5,500; issue 15).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch

from gpt import GPTConfig
from gpt.train import data_parallel_split
from gpt.utils import cpu_threads, keep_freed_memory

COMPETITOR = "import sys, torch\ntorch.set_num_threads(int(sys.argv[1]))\na = torch.randn(384, 384)\nwhile 1:\n a @ a"


def tokens_per_sec(step, tokens: int, seconds: float) -> float:
    """Steps run back to back for about `seconds` (after one warm-up step) → tokens/s."""
    step()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n < 2:
        step()
        n += 1
    return n * tokens / (time.perf_counter() - t0)


def _tiny_case(smoke: bool) -> tuple[GPTConfig, int, int]:
    """The measured run: configs/tiny.yaml's model and step (B=8, T=128), or a smoke-test model."""
    if smoke:
        return GPTConfig(vocab_size=512, context_length=32, n_layer=1, n_head=2, n_embd=32), 2, 32
    return GPTConfig.from_preset("tiny", context_length=128, vocab_multiple=64), 8, 128


def data_parallel_procs(cores: int, batch_size: int, seq_len: int) -> int:
    """Processes for the data-parallel row: the most, up to one per core, that split the step's sequences evenly
    (gpt.train.data_parallel_split on a step of batch_size sequences); 1 where none do."""
    split = data_parallel_split(batch_size * seq_len, batch_size, seq_len, cores)
    return split[0] if split else 1


@contextmanager
def competitor(cores: int, env: dict, settle: float):
    """Another torch program spinning on every core for the duration of the block (started `settle` s before)."""
    proc = subprocess.Popen([sys.executable, "-c", COMPETITOR, str(cores)], env=env)
    try:
        time.sleep(settle)
        yield
    finally:
        proc.kill()
        proc.wait()


def _ddp_worker(seconds: float, smoke: bool) -> None:
    """One torchrun process: the same global step (B·T tokens) split over the processes, steps for ≈ `seconds`;
    rank 0 prints {"tok_s": ...} (global tokens/s) as the last line of stdout."""
    import torch.distributed as dist
    import train as bench_train  # bench/train.py

    dist.init_process_group("gloo")
    world, rank = dist.get_world_size(), dist.get_rank()
    torch.set_num_threads(cpu_threads(world))  # as scripts/pretrain.py does under torchrun
    config, B, T = _tiny_case(smoke)
    case = bench_train.build_case("ours", bench_train.fast_dtype(), B // world, T, config=config, ddp=True)
    case.step()  # warm-up
    go = torch.ones(1, dtype=torch.int64)
    n, t0 = 0, time.perf_counter()
    while True:  # rank 0 decides when to stop, so every process runs the same number of steps
        if rank == 0:
            go.fill_(int(time.perf_counter() - t0 < seconds or n < 2))
        dist.broadcast(go, 0)
        if not go.item():
            break
        case.step()
        n += 1
    tok_s = n * B * T / (time.perf_counter() - t0)
    if rank == 0:
        print(json.dumps({"tok_s": tok_s}), flush=True)
    dist.destroy_process_group()


def _ddp_tokens_per_sec(procs: int, seconds: float, smoke: bool, env: dict) -> float:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}", __file__,
           "--ddp-worker", f"--seconds={seconds}"] + (["--smoke"] if smoke else [])  # fmt: skip
    r = subprocess.run(cmd, env={**env, "GPT_THREADS": "1"}, capture_output=True, text=True, encoding="utf-8",
                       timeout=600, cwd=ROOT)  # fmt: skip
    if r.returncode != 0:
        raise RuntimeError(f"the torchrun worker failed (exit {r.returncode}):\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])["tok_s"]


def measure_threads(seconds: float = 6.0, smoke: bool = False, log=print) -> dict:
    import train as bench_train  # bench/train.py

    cores = len(os.sched_getaffinity(0))
    config, B, T = _tiny_case(smoke)
    case = bench_train.build_case("ours", bench_train.fast_dtype(), B, T, config=config)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "GPT_THREADS")}
    procs = data_parallel_procs(cores, B, T)
    with competitor(cores, env, settle=2.0):  # what a run would read beside it
        chosen = cpu_threads(cpus=cores) if "GPT_THREADS" not in os.environ else cores
    variants = {"torch default (every core)": cores, "cpu_threads() beside the competitor": chosen}
    if procs > 1:
        variants[f"data parallel: torchrun --nproc-per-node {procs}, 1 thread each"] = None

    def measure(k: int | None) -> float:  # k threads in this process, or None: the torchrun processes
        if k is None:
            return _ddp_tokens_per_sec(procs, seconds, smoke, env)
        torch.set_num_threads(k)
        return tokens_per_sec(case.step, B * T, seconds)

    before = torch.get_num_threads()
    rows = []
    try:
        for name, k in variants.items():
            quiet = measure(k)
            with competitor(cores, env, settle=1.0):
                busy = measure(k)
            n = f"{procs} × 1" if k is None else str(k)
            rows.append({"threads": name, "n": n, "quiet_tok_s": quiet, "busy_tok_s": busy})
            log(f"  threads {n} ({name}): quiet {quiet:,.0f} tok/s, beside the competitor {busy:,.0f} tok/s")
    finally:
        torch.set_num_threads(before)
    quiet_best = max(r["quiet_tok_s"] for r in rows)
    best = max(rows[1:], key=lambda r: r["busy_tok_s"])  # the library's choices: cpu_threads(), data parallel
    model = (
        "a tiny smoke-test GPT"
        if smoke
        else f"configs/tiny.yaml's model (7.2M), {bench_train.fast_dtype()}, B=8, T=128"
    )
    return {"cores": cores, "rows": rows, "quiet_tok_s": quiet_best, "busy_tok_s": best["busy_tok_s"],
            "busy_choice": best["threads"], "model": model}  # fmt: skip


def markdown_threads(t: dict) -> list[str]:
    L = [f"## CPU threads beside a busy program ({t['model']})", ""]
    L += [f"Training tokens/s quiet, then with another torch program using all {t['cores']} cores; share = beside "
          "it / the best quiet speed (a fair share is 50% with two programs). The goal takes the best of the "
          "library's choices beside it: cpu_threads() in one process, or the documented switch for a shared machine, "
          "`torchrun --standalone --nproc-per-node N scripts/pretrain.py …` (one thread each).", ""]  # fmt: skip
    L += ["| threads | n | quiet tok/s | beside the competitor tok/s | share |", "|---|---:|---:|---:|---:|"]
    for r in t["rows"]:
        L += [f"| {r['threads']} | {r['n']} | {r['quiet_tok_s']:,.0f} | {r['busy_tok_s']:,.0f} | "
              f"{r['busy_tok_s'] / t['quiet_tok_s']:.0%} |"]  # fmt: skip
    return L + [""]


if __name__ == "__main__":
    from gpt.utils import utf8_stdio

    utf8_stdio()
    keep_freed_memory()  # as scripts/pretrain.py does on a CPU
    sys.path.insert(0, str(ROOT / "bench"))
    if "--ddp-worker" in sys.argv:  # launched by _ddp_tokens_per_sec through torchrun
        secs = next(float(a.split("=", 1)[1]) for a in sys.argv if a.startswith("--seconds="))
        _ddp_worker(secs, "--smoke" in sys.argv)
    else:
        print("\n".join(markdown_threads(measure_threads())))
