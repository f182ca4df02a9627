"""Text I/O is UTF-8 whatever the locale or console encoding (issue 14, class 3).

Two checks: every text-mode open()/read_text()/write_text() in gpt/, scripts/ and bench/ names its encoding (an
AST scan, so a new call without one fails here), and the scripts run to the end under a cp1252 console and the C
locale, where Python's defaults would be cp1252/ASCII.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from gpt import GPT, GPTConfig, save_model

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("gpt", "scripts", "bench")


def _mode(call: ast.Call, position: int) -> str | None:
    """The call's mode argument when it is a literal string ('r' when absent), None when it is computed."""
    for kw in call.keywords:
        if kw.arg == "mode":
            return kw.value.value if isinstance(kw.value, ast.Constant) else None
    if len(call.args) > position:
        return _literal_mode(call.args[position])
    return "r"


def _literal_mode(node: ast.expr) -> str | None:
    """'rb' for a literal, and for `"r+b" if x else "wb"` when both branches are binary; None when computed."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.IfExp):
        a, b = _literal_mode(node.body), _literal_mode(node.orelse)
        return a if a and b and "b" in a and "b" in b else None
    return None


def text_io_without_encoding(source: str) -> list[int]:
    """Line numbers of open(...) / X.open(...) / X.read_text() / X.write_text() calls in text mode without an
    encoding= argument (a binary mode 'b' needs none)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or any(kw.arg == "encoding" for kw in node.keywords):
            continue
        f = node.func
        if isinstance(f, ast.Name) and f.id == "open":
            mode = _mode(node, 1)
        elif isinstance(f, ast.Attribute) and f.attr == "open" and not _is_module_call(f):
            mode = _mode(node, 0)
        elif isinstance(f, ast.Attribute) and f.attr in ("read_text", "write_text"):
            encoding_by_position = len(node.args) >= (1 if f.attr == "read_text" else 2)
            mode = None if not encoding_by_position else "b"  # "b": needs no encoding= keyword
        else:
            continue
        if mode is None or "b" not in mode:
            lines.append(node.lineno)
    return lines


def _is_module_call(f: ast.Attribute) -> bool:
    """os.open (a file descriptor, no text) and tarfile/zipfile/gzip .open calls are not text-mode opens."""
    return isinstance(f.value, ast.Name) and f.value.id in ("os", "tarfile", "zipfile", "gzip", "bz2", "lzma", "io")


def test_the_scan_finds_each_form_of_text_io_without_encoding():
    src = (
        "open(p)\nopen(p, 'w')\nopen(p, 'rb')\nopen(p, encoding='utf-8')\npath.open('a')\npath.open('wb')\n"
        "path.read_text()\npath.write_text(s)\npath.read_text(encoding='utf-8')\nos.open(p, 0)\npath.read_bytes()\n"
        "path.write_text(s, 'utf-8')\nopen(p, 'r+b' if x else 'wb')\nopen(p, 'r+b' if x else 'w')\n"
    )
    assert text_io_without_encoding(src) == [1, 2, 5, 7, 8, 14]


def test_every_text_file_opened_in_the_package_scripts_and_bench_names_utf8():
    offenders = [
        f"{path.relative_to(ROOT)}:{line}"
        for folder in SCANNED
        for path in sorted((ROOT / folder).rglob("*.py"))
        for line in text_io_without_encoding(path.read_text(encoding="utf-8"))
    ]
    assert offenders == [], "text I/O without encoding='utf-8' (issue 14, class 3): " + ", ".join(offenders)


# A Windows console (cp1252 has no "→"), and a C locale with Python's UTF-8 mode and locale coercion off, so that
# open() without encoding= would use ASCII: every message printed and every file written must survive both.
NARROW = {"PYTHONIOENCODING": "cp1252", "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
TEXT = "naïve café → 日本語 😀"


def run_narrow(script: str, *args, stdin: bytes = b"") -> subprocess.CompletedProcess:
    env = {**os.environ, **NARROW, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    cmd = [sys.executable, str(ROOT / "scripts" / f"{script}.py"), *map(str, args)]
    r = subprocess.run(cmd, input=stdin, capture_output=True, env=env, cwd=ROOT, timeout=600)
    assert r.returncode == 0, r.stderr.decode("utf-8", errors="replace")[-3000:]
    return r


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, context_length=32))
    return save_model(model, tmp_path_factory.mktemp("w") / "tiny.safetensors")


def test_pretrain_prepares_trains_and_logs_under_a_narrow_console_and_locale(tmp_path):
    run_dir, data_dir = tmp_path / "run", tmp_path / "prepared"
    r = run_narrow(
        "pretrain", "--data-source", "data/shakespeare", "--data-dir", data_dir, "--out-dir", run_dir,
        "--force-cpu", "--no-compile", "--model", "tiny", "--model.n-layer", "1", "--model.n-embd", "32",
        "--model.n-head", "2", "--model.context-length", "32", "--batch-size", "4", "--total-batch-tokens", "128",
        "--max-steps", "2", "--eval-iters", "1", "--sample-prompt", TEXT, "--sample-tokens", "4",
    )  # fmt: skip
    assert "→" in r.stdout.decode("utf-8")  # "preparing data/shakespeare → ... (once)", in UTF-8
    assert (data_dir / "meta.json").is_file()
    config = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    assert config["sample_prompt"] == TEXT
    samples = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [s["samples/text"][: len(TEXT)] for s in samples if "samples/text" in s] == [TEXT, TEXT]


def test_generate_echoes_and_continues_any_text_under_a_narrow_console(tiny_weights):
    r = run_narrow("generate", "--weights", tiny_weights, "--prompt", "-", "--max-new-tokens", "5", "--seed", "0",
                   stdin=TEXT.encode("utf-8"))  # fmt: skip
    assert r.stdout.decode("utf-8").startswith(TEXT)


def test_prepare_data_and_evaluate_under_a_narrow_console(tmp_path, tiny_weights):
    (tmp_path / "in").mkdir()
    for i in range(10):  # documents: one a file
        text = f"Note {i}. " + (TEXT + "\n") * 20  # distinct: identical files are deduplicated by prepare_data
        (tmp_path / "in" / f"notes {i} →.txt").write_text(text, encoding="utf-8")
    r = run_narrow("prepare_data", tmp_path / "in", "--out-dir", tmp_path / "out →", "--no-progress")
    assert "wrote" in r.stdout.decode("utf-8") and "→" in r.stdout.decode("utf-8")
    assert json.loads((tmp_path / "out →" / "meta.json").read_text(encoding="utf-8"))["train"]["tokens"] > 0
    out, eval_dir = tmp_path / "résultats →.json", tmp_path / "eval"
    eval_dir.mkdir()
    (eval_dir / "lambada_openai_test.jsonl").write_bytes(
        (ROOT / "tests" / "fixtures" / "eval" / "lambada_openai_test_200.jsonl").read_bytes()
    )
    run_narrow("evaluate", "--weights", tiny_weights, "--tasks", "lambada", "--limit", "2", "--no-download",
               "--data-dir", eval_dir, "--out", out, "--quiet")  # fmt: skip
    assert json.loads(out.read_text(encoding="utf-8"))["results"]
