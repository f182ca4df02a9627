"""Benchmark: convert 124M-shaped checkpoints (OpenAI TF and Hugging Face layouts) and load the result.

    python bench/load_memory.py                    # prints a Markdown table; needs transformers, and TensorFlow
    python bench/load_memory.py --sources hf       #   for the OpenAI-layout checkpoint (made in a subprocess)

Weights are random (the real files cannot be downloaded here) but the layouts, names, shapes and byte counts are
the real 124M ones. Every measurement runs in a fresh Python process. Peak resident memory is the process's high-water
mark (VmHWM) after the work, minus its resident memory just before it (after imports and a warm-up), so it counts
what the work itself holds, file pages mapped by safetensors included. The target (issue 3): loading, until every
weight is resident, peaks at ≤ 1.2× the file size.

bench/run.py can import run(), measure_load() and measure_conversion().
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
TARGET_RATIO = 1.2


# ---- memory probes (Linux /proc; ru_maxrss elsewhere) ------------------------------------------------------------
def _status_kb(field: str) -> int | None:
    try:
        for line in open("/proc/self/status", encoding="utf-8"):
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def current_rss() -> int:
    kb = _status_kb("VmRSS")
    return kb * 1024 if kb is not None else peak_rss()


def peak_rss() -> int:
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb * 1024
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux


def reset_peak() -> None:
    """Linux: restart the high-water mark at the current RSS (writing 5 to clear_refs), so the peak measured next
    belongs to the work that follows, not to imports."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as f:
            f.write("5")
    except OSError:
        pass


# ---- the child processes -------------------------------------------------------------------------------------------
def _child_convert(source: str, directory: str, out: str) -> dict:
    from gpt.weights import convert_hf, convert_openai, save_state_dict

    base = current_rss()
    reset_peak()
    t0 = time.perf_counter()
    config, state = convert_openai(directory) if source == "openai" else convert_hf(directory)
    save_state_dict(config, state, out)
    return {"seconds": time.perf_counter() - t0, "peak_bytes": peak_rss() - base}


def _child_load(path: str, dtype: str | None) -> dict:
    import torch

    from gpt import GPT, GPTConfig
    from gpt.weights import load_model

    with torch.device("meta"):  # warm-up: first-use costs of building modules are not the loader's
        GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, vocab_size=8, context_length=8))
    base = current_rss()
    reset_peak()
    t0 = time.perf_counter()
    model = load_model(path, dtype=dtype)
    load_s = time.perf_counter() - t0
    after_load = peak_rss() - base
    with torch.inference_mode():  # touch every weight: with a mapped file, pages become resident only when used
        model(torch.zeros(1, 8, dtype=torch.long))
    return {"seconds": load_s, "peak_after_load": after_load, "peak_bytes": peak_rss() - base}


def _in_child(*args: str) -> dict:
    r = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"benchmark child {args} failed:\n{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def measure_conversion(source: str, directory: str | Path, out: str | Path) -> dict:
    """Convert in a fresh process: {"seconds", "peak_bytes"}."""
    return _in_child("convert", source, str(directory), str(out))


def measure_load(path: str | Path, dtype: str | None = None) -> dict:
    """gpt.load_model + one forward pass in a fresh process: {"seconds", "peak_after_load", "peak_bytes"}."""
    return _in_child("load", str(path), dtype or "")


# ---- 124M-shaped checkpoints in the real layouts -------------------------------------------------------------------
def make_hf_checkpoint(directory: Path) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config()).save_pretrained(directory)  # transformers' own random init, 124M
    return directory


def make_openai_checkpoint(directory: Path) -> Path:
    """OpenAI's seven files for a random 124M, the checkpoint written by TensorFlow in a subprocess."""
    import numpy as np

    from gpt.tokenizer import _package_bpe_dir

    rng = np.random.default_rng(0)
    C, L, V, T = 768, 12, 50257, 1024
    shapes = {"model/wte": (V, C), "model/wpe": (T, C), "model/ln_f/g": (C,), "model/ln_f/b": (C,)}
    for i in range(L):
        shapes |= {f"model/h{i}/ln_1/g": (C,), f"model/h{i}/ln_1/b": (C,), f"model/h{i}/ln_2/g": (C,)}
        shapes |= {f"model/h{i}/ln_2/b": (C,), f"model/h{i}/attn/c_attn/w": (1, C, 3 * C)}
        shapes |= {f"model/h{i}/attn/c_attn/b": (3 * C,), f"model/h{i}/attn/c_proj/w": (1, C, C)}
        shapes |= {f"model/h{i}/attn/c_proj/b": (C,), f"model/h{i}/mlp/c_fc/w": (1, C, 4 * C)}
        shapes |= {f"model/h{i}/mlp/c_fc/b": (4 * C,), f"model/h{i}/mlp/c_proj/w": (1, 4 * C, C)}
        shapes |= {f"model/h{i}/mlp/c_proj/b": (C,)}
    directory.mkdir(parents=True, exist_ok=True)
    arrays = directory.parent / "arrays.npz"
    np.savez(arrays, **{k: rng.normal(0, 0.02, s).astype(np.float32) for k, s in shapes.items()})
    subprocess.run([sys.executable, str(ROOT / "tests" / "make_tf_checkpoint.py"), str(arrays), str(directory)],
                   check=True, capture_output=True)  # fmt: skip
    arrays.unlink()
    hparams = {"n_vocab": V, "n_ctx": T, "n_embd": C, "n_head": 12, "n_layer": L}
    (directory / "hparams.json").write_text(json.dumps(hparams, indent=2) + "\n", encoding="utf-8")
    for name in ("encoder.json", "vocab.bpe"):
        (directory / name).write_bytes((_package_bpe_dir() / name).read_bytes())
    return directory


def run(sources: tuple[str, ...] = ("openai", "hf"), workdir: str | Path | None = None) -> list[dict]:
    """Make, convert and load each source's 124M checkpoint; one row per (source, load dtype)."""
    rows = []
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = Path(tmp)
        for source in sources:
            make = make_openai_checkpoint if source == "openai" else make_hf_checkpoint
            directory = make(tmp / source / "124M")
            source_file = directory / ("model.ckpt.data-00000-of-00001" if source == "openai" else "model.safetensors")
            out = tmp / f"gpt2-124M-{source}.safetensors"
            conv = measure_conversion(source, directory, out)
            size = out.stat().st_size
            for dtype in (None, "bfloat16"):
                load = measure_load(out, dtype)
                rows.append(
                    dict(
                        source=source,
                        source_bytes=source_file.stat().st_size,
                        convert_s=conv["seconds"],
                        convert_peak=conv["peak_bytes"],
                        file_bytes=size,
                        dtype=dtype or "float32",
                        load_s=load["seconds"],
                        load_peak=load["peak_bytes"],
                        ratio=load["peak_bytes"] / size,
                    )
                )
    return rows


def markdown_table(rows: list[dict]) -> str:
    mb = lambda b: f"{b / 2**20:,.0f} MiB"
    lines = [
        "| source | source file | convert | convert peak RSS | our file | load dtype | load | load peak RSS | × file |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['source']} | {mb(r['source_bytes'])} | {r['convert_s']:.1f} s | {mb(r['convert_peak'])} "
            f"| {mb(r['file_bytes'])} | {r['dtype']} | {r['load_s']:.2f} s | {mb(r['load_peak'])} | {r['ratio']:.2f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":  # (prints ASCII JSON; imports nothing before measuring)
        kind, *args = sys.argv[2:]
        result = _child_convert(*args) if kind == "convert" else _child_load(args[0], args[1] or None)
        print(json.dumps(result))
        sys.exit(0)
    from gpt.utils import utf8_stdio

    utf8_stdio()  # UTF-8 output whatever the console's encoding
    p = argparse.ArgumentParser(description="conversion time and peak memory of loading 124M-shaped weights")
    p.add_argument("--sources", nargs="+", choices=("openai", "hf"), default=["openai", "hf"])
    p.add_argument("--workdir", help="where the ~1.5 GB of temporary files go (default: the system temp dir)")
    rows = run(tuple(p.parse_args().sources), p.parse_args().workdir)
    print(markdown_table(rows))
    worst = max(r["ratio"] for r in rows if r["dtype"] == "float32")
    print(f"\nfloat32 load peak: {worst:.2f}× the file size (target ≤ {TARGET_RATIO}×)")
