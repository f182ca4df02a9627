#!/usr/bin/env python
"""Data pipeline benchmarks (issue 13): preparation throughput against tiktoken alone, and the loader's memory.

    python bench/data.py              # full: 256 MB of text; 20,000 loader steps over a 420 MB token set
    python bench/data.py --quick      # ≈ 1-2 minutes on 2 cores: 24 MB of text; 2,000 steps over 100 MB
    python bench/data.py --only prep  # or: --only loader

prep: the same documents (the Shakespeare corpus cut into ≈ 4 KB documents, repeated) as Parquet files, prepared by
  prepare_shards with 1 process and with every core, against tiktoken's encode_ordinary over the same documents in
  one process on one core (the tokenizer alone: the floor of any pipeline that uses it). Goal: all cores ≥ 0.8 ×
  cores × the one-core tiktoken rate. Rates are MB of UTF-8 text per second of wall time, worker start-up included.
loader: resident memory (VmRSS) of a fresh process drawing batches of 16 × 1024 tokens for N steps from shards of
  random tokens: ours (TokenShards + WindowSampler: a seek and a read per window) against the long-lived np.memmap
  pattern (nanoGPT's get_batch), whose resident size climbs as the pages it touched stay mapped (nanoGPT issue #287).
  Goal: ours ends within 64 MB of where it started.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import argparse
import json
import os
import subprocess
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

B, T = 16, 1024  # loader batch: 16 windows of 1024 tokens per step


def rss_mb() -> float:
    """Resident set size of this process (Linux /proc; psutil elsewhere)."""
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
    except FileNotFoundError:
        import psutil

        return psutil.Process().memory_info().rss / 2**20


# ---- preparation throughput ------------------------------------------------------------------------------------------
def make_documents(target_mb: float) -> list[str]:
    """≈ 4 KB documents cut from the Shakespeare corpus at line ends, repeated up to target_mb of UTF-8 text."""
    text = "".join(p.read_text(encoding="utf-8") for p in sorted((ROOT / "data" / "shakespeare").glob("*.txt")))
    docs, start = [], 0
    while start < len(text):
        end = text.find("\n", start + 4000)
        end = len(text) if end < 0 else end + 1
        docs.append(text[start:end])
        start = end
    size = sum(len(d.encode("utf-8")) for d in docs)
    return docs * max(1, round(target_mb * 1e6 / size))


def bench_prep(target_mb: float, tmp: Path) -> dict:
    from gpt.data import Source, prepare_shards
    from gpt.data.pipeline import default_processes
    from gpt.tokenizer import get_tokenizer

    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    docs = make_documents(target_mb)
    mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    files = []
    for i in range(4):  # four Parquet files, like a small hub subset
        part = docs[i::4]
        files.append(tmp / f"{i:03d}_00000.parquet")
        pq.write_table(pa.table({"text": part}), files[-1], row_group_size=1000)
    enc = get_tokenizer()
    enc.encode_ordinary("warm up")
    t0 = time.perf_counter()
    n_tokens = sum(len(enc.encode_ordinary(d)) for d in docs)
    tiktoken_s = time.perf_counter() - t0
    cores = default_processes()
    rows = {"megabytes": mb, "tokens": n_tokens, "cores": cores, "tiktoken_1core_mb_s": mb / tiktoken_s}
    for label, processes in (("ours_1process", 1), ("ours_all_cores", cores)):
        out = tmp / f"out_{label}"
        t0 = time.perf_counter()
        meta = prepare_shards([Source.local(f) for f in files], out, shard_tokens=10_000_000, val_tokens=1_000_000,
                              processes=processes, progress=False)  # fmt: skip
        rows[f"{label}_mb_s"] = mb / (time.perf_counter() - t0)
        assert meta["train"]["tokens"] + meta["val"]["tokens"] == n_tokens + len(docs)  # + one EOT per document
    rows["all_cores_vs_ideal"] = rows["ours_all_cores_mb_s"] / (cores * rows["tiktoken_1core_mb_s"])
    rows["load_before"] = load_before
    rows["load_after"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return rows


# ---- loader memory ---------------------------------------------------------------------------------------------------
def make_token_set(folder: Path, tokens: int, shard_tokens: int = 100_000_000) -> Path:
    """Shards of random token ids and a meta.json, written a chunk at a time."""
    from gpt.tokenizer import TOKENIZER_SHA256

    folder.mkdir(parents=True, exist_ok=True)
    rng, shards, left, i = np.random.default_rng(0), [], tokens, 0
    while left:
        n, name = min(left, shard_tokens), f"train_{i:06d}.bin"
        with open(folder / name, "wb") as f:
            for a in range(0, n, 1 << 24):
                rng.integers(0, 50257, min(1 << 24, n - a), dtype=np.uint16).tofile(f)
        shards.append({"file": name, "tokens": n, "sha256": ""})
        left, i = left - n, i + 1
    (folder / "val_000000.bin").write_bytes(np.zeros(4096, np.uint16).tobytes())
    meta = {"tokenizer_sha256": TOKENIZER_SHA256, "train": {"tokens": tokens, "documents": 0},
            "val": {"tokens": 4096, "documents": 0},
            "shards": {"train": shards, "val": [{"file": "val_000000.bin", "tokens": 4096, "sha256": ""}]}}  # fmt: skip
    (folder / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    return folder


def loader_child(kind: str, folder: str, steps: int) -> dict:
    """Runs in a fresh process: RSS before the first batch, then every steps/20 steps."""
    import torch

    from gpt.data import WindowSampler, load_prepared

    data = load_prepared(folder)
    if kind == "ours":
        sampler = WindowSampler(data.train, batch_size=B, seq_len=T, seed=0)
        draw = lambda: sampler.next_step()[0]  # noqa: E731
    else:  # nanoGPT's get_batch on long-lived memmaps: random offsets, rows copied out of the map
        maps = [np.memmap(p, dtype=np.uint16, mode="r") for p in data.train.paths]
        g = torch.Generator().manual_seed(0)

        def draw():
            m = maps[int(torch.randint(len(maps), (1,), generator=g))]
            ix = torch.randint(len(m) - T, (B,), generator=g)
            x = torch.stack([torch.from_numpy(m[i : i + T].astype(np.int64)) for i in ix.tolist()])
            y = torch.stack([torch.from_numpy(m[i + 1 : i + 1 + T].astype(np.int64)) for i in ix.tolist()])
            return x, y

    draw()
    start, trace, t0 = rss_mb(), [], time.perf_counter()
    for step in range(1, steps + 1):
        draw()
        if step % max(1, steps // 20) == 0:
            trace.append(round(rss_mb(), 1))
    return {"start_mb": start, "end_mb": trace[-1], "max_mb": max(trace), "trace_mb": trace,
            "ms_per_step": 1000 * (time.perf_counter() - t0) / steps}  # fmt: skip


def bench_loader(tokens: int, steps: int, tmp: Path) -> dict:
    folder = make_token_set(tmp / "tokens", tokens)
    rows = {"token_set_mb": 2 * tokens / 1e6, "steps": steps, "batch": f"{B} x {T}"}
    for kind in ("ours", "memmap"):
        out = subprocess.run([sys.executable, __file__, "--loader-child", kind, str(folder), str(steps)],
                             capture_output=True, text=True, check=True)  # fmt: skip
        rows[kind] = json.loads(out.stdout.strip().splitlines()[-1])
        rows[kind]["growth_mb"] = rows[kind]["end_mb"] - rows[kind]["start_mb"]
    return rows


def report(results: dict) -> str:
    lines = []
    if "prep" in results:
        r = results["prep"]
        lines += [f"## Preparation: {r['megabytes']:.0f} MB of text, {r['tokens']:,} tokens, {r['cores']} cores", "",
                  "| pipeline | MB/s | × tiktoken on 1 core |", "|---|---:|---:|"]  # fmt: skip
        for key, label in (("tiktoken_1core", "tiktoken encode_ordinary, 1 process"),
                           ("ours_1process", "prepare_shards, 1 process"),
                           ("ours_all_cores", f"prepare_shards, {r['cores']} processes")):  # fmt: skip
            lines.append(f"| {label} | {r[key + '_mb_s']:.2f} | {r[key + '_mb_s'] / r['tiktoken_1core_mb_s']:.2f} |")
        ratio = f"all cores vs cores × one-core tiktoken: {r['all_cores_vs_ideal']:.2f} (goal ≥ 0.80)"
        lines += ["", f"{ratio}; load average {r['load_before']:.1f} before, {r['load_after']:.1f} after (on "
                  f"{r['cores']} cores: other work competing for them lowers the ratio)", ""]  # fmt: skip
    if "loader" in results:
        r = results["loader"]
        lines += [f"## Loader memory: {r['steps']:,} steps of {r['batch']} tokens over {r['token_set_mb']:.0f} MB", ""]
        lines += ["| loader | RSS start MB | RSS end MB | max MB | growth MB | ms/step |", "|---|" + "---:|" * 5]
        for kind, label in (("ours", "TokenShards + WindowSampler"), ("memmap", "long-lived np.memmap (nanoGPT)")):
            k = r[kind]
            lines.append(f"| {label} | {k['start_mb']:.0f} | {k['end_mb']:.0f} | {k['max_mb']:.0f} | "
                         f"{k['growth_mb']:+.0f} | {k['ms_per_step']:.2f} |")  # fmt: skip
        lines += ["", f"ours: {r['ours']['growth_mb']:+.1f} MB over the run (goal: within 64 MB)", ""]
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small sizes: ≈ 1-2 minutes on 2 cores")
    p.add_argument("--only", choices=("prep", "loader"), help="one benchmark")
    p.add_argument("--json", help="also write the results to this file")
    p.add_argument("--tmp", help="scratch folder (default: a temporary one); the loader's token set is 420 MB")
    p.add_argument("--loader-child", nargs=3, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.loader_child:
        kind, folder, steps = args.loader_child
        print(json.dumps(loader_child(kind, folder, int(steps))))
        return 0
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    results = {"command": " ".join(["python", "bench/data.py", *sys.argv[1:]])}
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        if args.only in (None, "prep"):
            results["prep"] = bench_prep(24 if args.quick else 256, Path(tmp))
        if args.only in (None, "loader"):
            tokens, steps = (50_000_000, 2_000) if args.quick else (210_000_000, 20_000)
            results["loader"] = bench_loader(tokens, steps, Path(tmp))
    if args.json:  # before the report on stdout, whose reader may be gone (a killed `| tee`)
        from gpt.utils import atomic_write_text

        atomic_write_text(Path(args.json), json.dumps(results, indent=2) + "\n")
    print(report(results))
    return 0


if __name__ == "__main__":
    from gpt.utils import run_script

    run_script(main)  # UTF-8 output whatever the console's encoding; Ctrl-C → one line, exit 130
