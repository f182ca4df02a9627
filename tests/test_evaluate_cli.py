"""scripts/evaluate.py: downloads through a real HTTP server on 127.0.0.1 (a mirror serving full-size files made
from the fixtures), the JSON it writes, and every user mistake ending in one `error:` line, exit 2, nothing written."""

from __future__ import annotations

import hashlib
import io
import json
import os
import runpy
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest
from eval_helpers import HELLASWAG, LAMBADA, WIKITEXT, peaky_gpt, wikitext_articles
from test_download import FileServer

from gpt import save_model
from gpt.eval.data import MIRROR_ENV, SOURCES, WIKITEXT_MEMBER

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "evaluate.py"


MAIN = runpy.run_path(str(SCRIPT))["main"]  # the script's main(), run in this process by run_cli


@pytest.fixture
def run_cli(capsys):
    """main(args) here, not in a subprocess (saves a Python + torch start-up per call; one test runs the real
    script); argparse's own errors arrive as SystemExit."""

    def run(*args):
        try:
            code = MAIN([str(a) for a in args])
        except SystemExit as e:
            code = e.code
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, captured.out, captured.err)

    return run


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    return save_model(peaky_gpt(), tmp_path_factory.mktemp("w") / "tiny.safetensors")


def full_size_files(root: Path) -> None:
    """The three canonical files at their real row counts, made by repeating the fixtures' real rows."""
    root.mkdir(parents=True)
    for task, fixture in (("hellaswag", HELLASWAG), ("lambada", LAMBADA)):
        rows = fixture.read_text(encoding="utf-8").splitlines()
        lines = [rows[i % len(rows)] for i in range(SOURCES[task].size)]
        (root / SOURCES[task].filename).write_text("\n".join(lines) + "\n", encoding="utf-8")
    articles = wikitext_articles()
    raw = "\n".join(articles[i % len(articles)] for i in range(SOURCES["wikitext"].size))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr(WIKITEXT_MEMBER, raw)
    (root / SOURCES["wikitext"].filename).write_bytes(buf.getvalue())


@pytest.fixture(scope="module")
def mirror(tmp_path_factory):
    root = tmp_path_factory.mktemp("www") / "eval"
    full_size_files(root)
    with FileServer(root.parent) as srv:  # closes the socket on exit
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        yield srv
        srv.shutdown()


def one_error_line(r) -> str:
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2, r.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def test_downloads_from_a_mirror_evaluates_and_writes_json(mirror, weights, tmp_path, run_cli, monkeypatch):
    monkeypatch.setenv(MIRROR_ENV, f"{mirror.url}/eval")
    data, out = tmp_path / "data", tmp_path / "res" / "results.json"
    args = ("--weights", weights, "--data-dir", data, "--limit", "3", "--out", out, "--quiet", "--batch-size", "4")
    start = len(mirror.log)
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in data.iterdir()) == sorted(s.filename for s in SOURCES.values())
    assert [e[0] for e in mirror.log[start:]] == [f"eval/{s.filename}" for s in SOURCES.values()]
    res = json.loads(out.read_text(encoding="utf-8"))
    assert res["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert res["dtype"] == "float32" and res["settings"]["window"] == res["settings"]["stride"] == 96
    got = {(m["task"], m["metric"]): m for m in res["results"]}
    assert set(got) >= {("hellaswag", "acc"), ("hellaswag", "acc_norm"), ("hellaswag", "completion_acc"),
                        ("lambada", "acc"), ("lambada", "perplexity"), ("wikitext", "word_perplexity"),
                        ("wikitext", "bits_per_byte")}  # fmt: skip
    assert all(m["n"] == 3 for m in res["results"]) and got[("lambada", "perplexity")]["value"] > 1
    assert {d["examples"] for d in res["data"].values()} == {s.size for s in SOURCES.values()}
    assert "wikitext   word_perplexity" in r.stdout and "window=96, stride=96" in r.stdout  # the printed table
    n_requests = len(mirror.log)
    assert run_cli(*args).returncode == 0 and len(mirror.log) == n_requests  # checked files are not fetched again


def test_a_truncated_download_is_deleted_and_nothing_is_written(mirror, weights, tmp_path, run_cli):
    (mirror.root / "short").mkdir(exist_ok=True)
    (mirror.root / "short" / "lambada_test.jsonl").write_text(LAMBADA.read_text(encoding="utf-8"), encoding="utf-8")
    data, out = tmp_path / "data", tmp_path / "results.json"
    r = run_cli("--weights", weights, "--tasks", "lambada", "--data-dir", data, "--mirror", f"{mirror.url}/short",
                "--out", out, "--quiet")  # fmt: skip
    line = one_error_line(_without_download_notes(r))
    assert "gave 200 lambada examples, the full split has 5,153" in line and "--mirror" in line
    assert not out.exists() and list(data.iterdir()) == []


def test_an_html_page_is_refused(mirror, weights, tmp_path, run_cli):
    mirror.html.add("eval/hellaswag_val.jsonl")
    try:
        r = run_cli("--weights", weights, "--tasks", "hellaswag", "--data-dir", tmp_path / "d",
                    "--mirror", f"{mirror.url}/eval", "--out", tmp_path / "r.json", "--quiet")  # fmt: skip
    finally:
        mirror.html.discard("eval/hellaswag_val.jsonl")
    assert "HTML" in one_error_line(_without_download_notes(r))
    assert not (tmp_path / "r.json").exists() and not (tmp_path / "d" / "hellaswag_val.jsonl").exists()


def _without_download_notes(r):
    err = "\n".join(line for line in r.stderr.splitlines() if not line.startswith("downloading "))
    return subprocess.CompletedProcess(r.args, r.returncode, r.stdout, err)


@pytest.mark.parametrize(
    "extra,expected",
    [
        (("--tasks", "hellaswag,mmlu"), "unknown task(s) ['mmlu']"),
        (("--limit", "0"), "--limit must be >= 1"),
        (("--stride", "100", "--window", "50"), "must not exceed --window"),
        (("--window", "500"), "longer than the model's context (96)"),
        (("--tasks", "lambada", "--no-download"), "no lambada data in"),
    ],
)
def test_user_mistakes_are_one_error_line(weights, tmp_path, run_cli, extra, expected):
    r = run_cli("--weights", weights, "--data-dir", tmp_path, "--out", tmp_path / "r.json", *extra)
    assert expected in one_error_line(r)
    assert not (tmp_path / "r.json").exists()


def test_corrupt_data_and_bad_weights_are_one_error_line(weights, tmp_path, run_cli):
    (tmp_path / "hellaswag_val.jsonl").write_text(HELLASWAG.read_text(encoding="utf-8")[:5000], encoding="utf-8")
    r = run_cli("--weights", weights, "--tasks", "hellaswag", "--data-dir", tmp_path, "--no-download")
    assert "is not a valid hellaswag file (JSONDecodeError" in one_error_line(r)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 100)
    assert "could not load the weights" in one_error_line(run_cli("--weights", bad, "--data-dir", tmp_path))
    assert "no such file or directory" in one_error_line(run_cli("--weights", tmp_path / "nope.safetensors"))


def test_the_script_runs_on_local_files_and_fails_cleanly(weights, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "wiki.test.raw").write_text(WIKITEXT.read_text(encoding="utf-8"), encoding="utf-8")
    cmd = [sys.executable, str(SCRIPT), "--weights", str(weights), "--tasks", "wikitext", "--data-dir", str(data),
           "--no-download", "--limit", "2", "--stride", "48", "--quiet"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "window=96, stride=48" in r.stdout and "note: wikitext used 2 of the split's examples" in r.stderr
    r = subprocess.run([*cmd, "--tasks", "squad"], capture_output=True, text=True, timeout=300)
    assert "unknown task(s) ['squad']" in one_error_line(r)


@pytest.mark.parametrize("stderr_too", [False, True], ids=["stdout", "stdout and stderr"])
def test_a_closed_stdout_still_writes_the_results_file(weights, tmp_path, stderr_too):
    """`evaluate.py … --out r.json | tee log` (or `2>&1 | tee log`), and tee was killed during the evaluation: the
    table cannot be printed (exit 141, as SIGPIPE ends a Unix tool), but the results are in --out, and no traceback.
    The table used to be printed first, and its BrokenPipeError lost the file; with stderr in the pipe, the progress
    bar's first write did."""
    data, out = tmp_path / "data", tmp_path / "r.json"
    data.mkdir()
    (data / "wiki.test.raw").write_text(WIKITEXT.read_text(encoding="utf-8"), encoding="utf-8")
    cmd = [sys.executable, str(SCRIPT), "--weights", str(weights), "--tasks", "wikitext", "--data-dir", str(data),
           "--no-download", "--limit", "2", "--out", str(out)]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT if stderr_too else subprocess.PIPE,
                         text=True, env=env)  # fmt: skip
    p.stdout.close()  # no reader from the start
    _, err = p.communicate(timeout=300)
    assert p.returncode == 141 and (stderr_too or "Traceback" not in err), err
    assert json.loads(out.read_text(encoding="utf-8"))["results"][0]["task"] == "wikitext"


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_a_dtype_this_cpu_emulates_runs_after_one_warning_line_naming_the_fix(weights, tmp_path, run_cli, dtype):
    import torch

    from gpt.train import emulated_matmul_note

    data = tmp_path / "data"
    data.mkdir()
    (data / "wiki.test.raw").write_text(WIKITEXT.read_text(encoding="utf-8"), encoding="utf-8")
    r = run_cli("--weights", weights, "--tasks", "wikitext", "--data-dir", data, "--no-download", "--limit", "1",
                "--device", "cpu", "--dtype", dtype, "--quiet")  # fmt: skip
    assert r.returncode == 0, r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.startswith("warning: ")]
    if emulated_matmul_note(getattr(torch, dtype), torch.device("cpu")) is None:  # this CPU has the instructions
        assert warnings == []
    else:
        assert len(warnings) == 1 and f"--dtype {dtype}: this CPU has no " in warnings[0]
        assert warnings[0].endswith("; pass --dtype float32 to evaluate faster")
