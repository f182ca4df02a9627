#!/usr/bin/env python
"""The CPU-sized run end to end: configs/tiny.yaml on the embedded Shakespeare corpus, timed.

    python bench/pretrain_tiny.py                 # target: validation loss <= 5.0 within 10 minutes on 2 CPU cores

Runs scripts/pretrain.py in a fresh run directory (data preparation included if it is missing) and reports the
wall time, the final validation loss and when validation first reached the target, read from metrics.jsonl.
Importable: run_tiny(...) returns those numbers as a dict (bench/run.py uses it).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import argparse
import shutil
import subprocess
import time

from gpt.train.tracking import read_metrics


def run_tiny(
    config: str = "configs/tiny.yaml", out_dir: str = "runs/bench-tiny", target: float = 5.0, extra: list[str] = ()
) -> dict:
    """Train with `config` from scratch into out_dir (replaced); return wall time and validation numbers."""
    shutil.rmtree(ROOT / out_dir, ignore_errors=True)
    cmd = [sys.executable, "scripts/pretrain.py", "--config", config, "--force-cpu", "--out-dir", out_dir,
           "--wandb-mode", "disabled", "--no-progress", *extra]  # fmt: skip
    t0 = time.time()
    subprocess.run(cmd, cwd=ROOT, check=True)
    wall = time.time() - t0
    records = read_metrics(ROOT / out_dir / "metrics.jsonl")
    val = [(r["step"], r["val/loss"], r["time"]) for r in records if "val/loss" in r]
    first_hit = next(((s, v, t - t0) for s, v, t in val if v <= target), None)
    train_tok_s = [r["train/tokens_per_sec"] for r in records if "train/tokens_per_sec" in r]
    return {
        "config": config,
        "wall_s": wall,
        "final_step": val[-1][0],
        "final_val_loss": val[-1][1],
        "initial_val_loss": val[0][1],
        "target": target,
        "first_step_at_target": first_hit[0] if first_hit else None,
        "seconds_to_target": first_hit[2] if first_hit else None,
        "median_tokens_per_sec": sorted(train_tok_s)[len(train_tok_s) // 2] if train_tok_s else None,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--config", default="configs/tiny.yaml")
    p.add_argument("--out-dir", default="runs/bench-tiny")
    p.add_argument("--target", type=float, default=5.0)
    args, extra = p.parse_known_args(argv)  # anything else goes to pretrain.py (e.g. --max-steps 100)
    r = run_tiny(args.config, args.out_dir, args.target, extra)
    hit = f"step {r['first_step_at_target']} after {r['seconds_to_target']:.0f} s" if r["seconds_to_target"] else "no"
    print("\n| config | wall time | val loss: start → end | first ≤ target | median train tokens/s |")
    print("|---|---:|---:|---:|---:|")
    print(
        f"| {r['config']} | {r['wall_s']:.0f} s | {r['initial_val_loss']:.3f} → {r['final_val_loss']:.3f} "
        f"(step {r['final_step']}) | {hit} (target {r['target']}) | {r['median_tokens_per_sec']:,.0f} |"
    )
    return 0 if r["final_val_loss"] <= args.target else 1


if __name__ == "__main__":
    from gpt.utils import run_script

    run_script(main)  # UTF-8 output whatever the console's encoding; Ctrl-C → one line, exit 130
