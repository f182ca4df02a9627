"""Benchmark: how long the explain page takes from a request to updated views, for a 64-token prompt.

    python bench/explain.py                       # tiny and 124M-shaped models (random weights), CPU, with Chromium
    python bench/explain.py --sizes tiny --repeats 3 --no-browser

For each model it starts scripts/explain.py (a real server on 127.0.0.1) and times, over real HTTP:
- new prompt: the first views of a prompt not seen before (a forward pass with attention recorded, the tokens, the
  next-token top 20, one attention map) — what the page asks after each keystroke (after its 200 ms debounce);
- logit lens: what the page asks next (ln_f and the head applied to all L + 1 residual streams, cached trace);
- slider: the next-token odds re-filtered at another temperature (the trace is cached: no forward pass);
- head: another layer/head's attention map (cached).
With Chromium (Debian's chromium + chromium-driver) and Selenium it also types a prompt into the page and reads the
page's own measures: from sending the request to the first views drawn, and to the logit lens drawn too.
The peer, measured in this process with the same thread count: one bare model(idx) forward of the same prompt;
the report gives each time as a multiple of it. Weights are random (shapes are what cost time).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SIZES = ("tiny", "124M")  # GPTConfig presets: 4 layers × 128 wide (7.2M parameters), and GPT-2 124M
COUNT = "return +(document.body.dataset.updated || 0)"  # the page counts its finished updates
WORDS = "the of and to a in is was that for it with as his on be at by had not are but from or have an they".split()


def prompt_text(seed: int, n_tokens: int = 64) -> str:
    """A prompt of exactly n_tokens GPT-2 tokens: common words (one token each with their space), new every seed."""
    from gpt import get_tokenizer

    words = [WORDS[(seed * 7 + i * 13 + i * i) % len(WORDS)] for i in range(n_tokens)]
    text = " " + " ".join(words)
    assert len(get_tokenizer().encode(text)) == n_tokens
    return text


def post(url: str, body: dict) -> float:
    """Seconds for one POST answered 200."""
    req = urllib.request.Request(url + "api/view", json.dumps(body).encode(), {"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=600) as r:
        r.read()
        assert r.status == 200
    return time.perf_counter() - t0


def start_server(weights: Path, threads: int) -> tuple[subprocess.Popen, str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, str(ROOT / "scripts" / "explain.py"), "--weights", str(weights), "--port", "0"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    for line in proc.stdout:
        if line.startswith("serving http://"):
            return proc, line.split()[1]
    raise RuntimeError(f"scripts/explain.py exited with {proc.wait()} before serving")


def bare_forward(model, repeats: int) -> float:
    """Median seconds of model(idx) for a 64-token prompt, in inference mode: the peer."""
    import torch

    idx = torch.randint(0, 50257, (1, 64))
    times = []
    with torch.inference_mode():
        for _ in range(repeats + 1):
            t0 = time.perf_counter()
            model(idx)
            times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])  # the first call warms the allocator up


def browser_ms(url: str, repeats: int) -> tuple[float, float] | None:
    """Medians of the page's own times after typing a new 64-token prompt, in ms: request → first views drawn, and
    → logit lens drawn too (None: no Chromium)."""
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        return None
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.wait import WebDriverWait

    opts = Options()
    opts.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1400"):
        opts.add_argument(arg)
    d = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)
    try:
        d.get(url)
        out = []
        for i in range(repeats + 1):
            before = d.execute_script(COUNT)
            box = d.find_element(By.ID, "prompt")
            d.execute_script("arguments[0].value = arguments[1]", box, prompt_text(1000 + i)[:-1])
            box.send_keys(prompt_text(1000 + i)[-1])  # the last keystroke: a real input event
            updated = lambda _, before=before: d.execute_script(COUNT) > before
            WebDriverWait(d, 600).until(updated)
            status = d.find_element(By.ID, "prompt-status")
            out.append((float(status.get_attribute("data-first-ms")), float(status.get_attribute("data-ms"))))
        return tuple(statistics.median(x) for x in zip(*out[1:]))
    finally:
        d.quit()


def run(sizes: list[str], repeats: int, threads: int, browser: bool) -> list[dict]:
    import torch

    from gpt import GPT, GPTConfig, save_model

    torch.set_num_threads(threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            torch.manual_seed(0)
            model = GPT(GPTConfig.from_preset(size)).eval()
            weights = save_model(model, Path(tmp) / f"{size}.safetensors")
            forward = bare_forward(model, repeats)
            del model
            proc, url = start_server(weights, threads)
            try:
                post(url, {"text": prompt_text(999)})  # warm-up
                new, lens, slider, head = [], [], [], []
                for i in range(repeats):
                    ids_body = {"text": prompt_text(i)}
                    new.append(post(url, {**ids_body, "parts": ["tokens", "next", "attention"]}))
                    lens.append(post(url, {**ids_body, "parts": ["lens"]}))
                    slider.append(post(url, {**ids_body, "parts": ["next"], "temperature": 0.5 + 0.1 * i}))
                    head.append(post(url, {**ids_body, "parts": ["attention"], "attention": [{"layer": 0, "head": 1}]}))
                ms = browser_ms(url, repeats) if browser else None
            finally:
                proc.terminate()
                proc.wait(timeout=30)
            med = statistics.median
            page = (None, None) if ms is None else (ms[0] / 1000, ms[1] / 1000)
            rows.append(dict(size=size, forward_s=forward, new_s=med(new), lens_s=med(lens), slider_s=med(slider),
                             head_s=med(head), page_first_s=page[0], page_all_s=page[1]))  # fmt: skip
    return rows


def report(rows: list[dict], threads: int) -> str:
    head = "| model | bare forward (peer) | new prompt | logit lens | slider | another head | page: first views | all |"
    lines = [f"64-token prompt, CPU, {threads} thread(s); median over repeats; × = multiple of the bare forward", "",
             head, "|---" * 8 + "|"]  # fmt: skip
    for r in rows:
        cell = lambda s, r=r: "—" if s is None else f"{s * 1000:.0f} ms ({s / r['forward_s']:.1f}×)"  # noqa: E731
        cells = [cell(r[k]) for k in ("new_s", "lens_s", "slider_s", "head_s", "page_first_s", "page_all_s")]
        lines.append(f"| {r['size']} | {r['forward_s'] * 1000:.0f} ms | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", nargs="+", choices=SIZES, default=list(SIZES))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch CPU threads, both sides")
    p.add_argument("--no-browser", action="store_true", help="skip the in-page measure (needs chromium + selenium)")
    args = p.parse_args(argv)
    rows = run(args.sizes, args.repeats, args.threads, not args.no_browser)
    print(report(rows, args.threads))
    return 0


if __name__ == "__main__":
    from gpt.utils import run_script

    run_script(main)  # UTF-8 output whatever the console's encoding; Ctrl-C → one line, exit 130
