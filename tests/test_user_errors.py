"""A user's mistake ends in one `error:` line and a non-zero exit, never a traceback (issue 14, class 7): every
script × the inputs users get wrong — paths that do not exist, files where directories go and back, damaged
files, bad numbers, text that is not UTF-8. Run in-process through each script's main(argv) (an exception that
escapes main is the traceback a user would see), and in a subprocess where the bytes of argv or stdin matter."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from script_fixtures import load_main

from gpt import GPT, GPTConfig, save_model
from gpt.utils import run_script

ROOT = Path(__file__).resolve().parents[1]
NOT_UTF8 = os.fsdecode(b"caf\xe9")  # what Python makes of the argv bytes "caf\xe9" (a lone surrogate, PEP 383)
PRETRAIN = ["--force-cpu", "--no-compile", "--no-progress", "--wandb-mode", "disabled", "--no-tensorboard",
            "--model", "tiny", "--model.n-layer", "1", "--model.n-embd", "32", "--model.n-head", "2",
            "--model.context-length", "32", "--batch-size", "4", "--total-batch-tokens", "128",
            "--max-steps", "1"]  # fmt: skip


@pytest.fixture(scope="module")
def files(tmp_path_factory, shakespeare_prepared):
    """Paths the cases refer to by name: {tiny} weights, a {bad} weights file, an {empty} directory, a {file},
    {prepared} data, a {latin1} text folder, an OpenAI folder with a {truncated} hparams.json, a {missing} path."""
    d = tmp_path_factory.mktemp("inputs")
    torch.manual_seed(0)
    paths = {"tiny": save_model(GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, context_length=32)), d / "t.safetensors")}
    (d / "bad.safetensors").write_bytes(b"garbage")
    (d / "empty").mkdir()
    (d / "file.txt").write_text("a file\n", encoding="utf-8")
    (d / "latin1").mkdir()
    (d / "latin1" / "a.txt").write_bytes(b"caf\xe9 au lait\n")
    (d / "openai").mkdir()
    (d / "openai" / "hparams.json").write_text('{"n_vocab": 50257, "n_ctx"', encoding="utf-8")
    paths |= {"bad": d / "bad.safetensors", "empty": d / "empty", "file": d / "file.txt", "latin1": d / "latin1",
              "truncated": d / "openai", "missing": d / "no" / "such", "tmp": d}  # fmt: skip
    paths["prepared"] = shakespeare_prepared
    for name, text in (("yaml_syntax", "model: {preset: tiny\n"), ("yaml_type", "max_steps: ten\n"),
                       ("yaml_list", "- max_steps\n- 3\n")):  # fmt: skip
        paths[name] = d / f"{name}.yaml"
        paths[name].write_text(text, encoding="utf-8")
    return {k: str(v) for k, v in paths.items()}


CASES = [
    # generate.py
    ("generate", ["--weights", "{missing}", "--prompt", "Hi"], "no such file or directory"),
    ("generate", ["--weights", "{bad}", "--prompt", "Hi"], "not a readable .safetensors"),
    ("generate", ["--weights", "{empty}", "--prompt", "Hi"], "neither model.safetensors"),
    ("generate", ["--weights", "{tiny}", "--prompt", NOT_UTF8], "--prompt is not UTF-8 text (byte 0xe9"),
    ("generate", ["--weights", "{tiny}", "--prompt", "Hi", "--max-new-tokens", "ten"], "invalid int value"),
    ("generate", ["--weights", "{tiny}", "--prompt", "Hi", "--top-p", "nan"], "--top-p must be in (0, 1]"),
    # pretrain.py
    ("pretrain", [*PRETRAIN, "--init-from", "{missing}", "--out-dir", "{tmp}/r1"], "no weights at"),
    ("pretrain", [*PRETRAIN, "--init-from", "{bad}", "--out-dir", "{tmp}/r2"], "not a readable .safetensors"),
    ("pretrain", [*PRETRAIN, "--data-dir", "{file}", "--out-dir", "{tmp}/r3"], "is a file; pass a directory"),
    ("pretrain", [*PRETRAIN, "--data-dir", "{prepared}", "--out-dir", "{file}"], "run directory"),
    (
        "pretrain",
        [*PRETRAIN, "--data-source", "{missing}", "--data-dir", "{tmp}/p", "--out-dir", "{tmp}/r4"],
        "does not exist",
    ),
    (
        "pretrain",
        [*PRETRAIN, "--data-source", "{latin1}", "--data-dir", "{tmp}/p2", "--out-dir", "{tmp}/r5"],
        "is not UTF-8 text",
    ),
    ("pretrain", ["--config", "{empty}"], "not found"),
    ("pretrain", ["--config", "{bad}"], "error:"),
    ("pretrain", [*PRETRAIN, "--max-steps", "-3"], "max_steps must be at least 1"),
    ("pretrain", [*PRETRAIN, "--learning-rate", "fast"], "invalid float value"),
    ("pretrain", [*PRETRAIN, "--sample-prompt", NOT_UTF8], "sample_prompt is not UTF-8 text"),
    ("pretrain", ["--resume", "--out-dir", "{empty}"], "holds no checkpoint"),
    ("pretrain", [*PRETRAIN, "--device", "tpu", "--out-dir", "{tmp}/r6"], "unknown device 'tpu'"),
    ("pretrain", ["--config", "{yaml_syntax}"], "is not valid YAML"),
    ("pretrain", ["--config", "{yaml_type}"], "max_steps must be int, got 'ten'"),
    ("pretrain", ["--config", "{yaml_list}"], "a config is a mapping of TrainConfig fields"),
    # evaluate.py
    ("evaluate", ["--weights", "{missing}"], "no weights at"),
    ("evaluate", ["--weights", "{bad}", "--tasks", "lambada", "--data-dir", "tests/fixtures/eval"], "could not load"),
    ("evaluate", ["--weights", "{tiny}", "--tasks", "squad"], "unknown task"),
    (
        "evaluate",
        ["--weights", "{tiny}", "--tasks", "lambada", "--no-download", "--data-dir", "{empty}"],
        "no lambada data",
    ),
    ("evaluate", ["--weights", "{tiny}", "--out", "{empty}"], "--out: "),
    ("evaluate", ["--weights", "{tiny}", "--limit", "-1"], "--limit must be >= 1"),
    # explain.py
    ("explain", ["--weights", "{missing}"], "no such file or directory"),
    ("explain", ["--weights", "{bad}"], "does not load"),
    ("explain", ["--weights", "{tiny}", "--port", "99999"], "--port must be in"),
    # prepare_data.py
    ("prepare_data", ["{missing}", "--out-dir", "{tmp}/d1"], "does not exist"),
    ("prepare_data", ["{empty}", "--out-dir", "{tmp}/d2"], "holds no .txt"),
    ("prepare_data", ["{latin1}", "--out-dir", "{tmp}/d3"], "is not UTF-8 text"),
    ("prepare_data", ["data/shakespeare", "--out-dir", "{file}"], "is a file; pass a directory"),
    ("prepare_data", ["data/shakespeare", "--out-dir", "{tmp}/d4", "--max-tokens", "lots"], "is not a count"),
    # load_openai_weights.py
    ("load_openai_weights", ["--from-dir", "{missing}"], "is not a directory"),
    ("load_openai_weights", ["--from-dir", "{file}"], "is not a directory"),
    ("load_openai_weights", ["--from-dir", "{empty}"], "neither hparams.json"),
    ("load_openai_weights", ["--from-dir", "{truncated}", "--out", "{tmp}/x.safetensors"], "hparams.json is not valid"),
    ("load_openai_weights", ["--model-size", "7B"], "unknown model preset"),
    ("load_openai_weights", ["--from-dir", "{truncated}", "--out", "{empty}"], "--out: "),
    # export_hf.py
    ("export_hf", ["{missing}", "{tmp}/hf1"], "no weights at"),
    ("export_hf", ["{bad}", "{tmp}/hf2"], "not a readable .safetensors"),
    ("export_hf", ["{tiny}", "{file}"], "is not a directory"),
]


@pytest.mark.parametrize("script, argv, message", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_a_mistake_is_one_error_line_and_a_nonzero_exit(script, argv, message, files, capsys, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.chdir(ROOT)
    argv = [a.format(**files) for a in argv]
    try:
        code = load_main(script)(argv)  # any other exception is the traceback the user would have seen
    except SystemExit as e:  # argparse's error()
        code = e.code
    out, err = capsys.readouterr()
    assert code not in (0, None)
    errors = [line for line in (out + err).splitlines() if "error:" in line]
    assert len(errors) == 1, out + err
    assert message in errors[0], errors[0]


def test_non_utf8_bytes_in_argv_and_on_stdin_are_one_error_line(files):
    base = [sys.executable, str(ROOT / "scripts" / "generate.py"), "--weights", files["tiny"]]
    for args, stdin, message in (
        ([b"--prompt", b"caf\xe9"], None, "--prompt is not UTF-8 text (byte 0xe9 at offset 3)"),
        ([b"--prompt", b"-"], b"caf\xe9", "the prompt on stdin is not UTF-8 text (byte 0xe9 at offset 3)"),
    ):
        r = subprocess.run([*base, *args], input=stdin or b"", capture_output=True, timeout=300)
        err = r.stderr.decode("utf-8")
        assert r.returncode == 2 and "Traceback" not in err and r.stdout == b""
        assert [line for line in err.splitlines() if "error:" in line] == [f"generate.py: error: {message}; "
                                                                           "convert it to UTF-8 first, e.g. with "
                                                                           "iconv -f latin1 -t utf-8"]  # fmt: skip


def test_ctrl_c_while_a_script_starts_is_one_line_and_exit_130(capsys):
    def main():
        raise KeyboardInterrupt  # Ctrl-C while loading weights, say

    with pytest.raises(SystemExit) as exit_info:
        run_script(main)
    assert exit_info.value.code == 130
    assert capsys.readouterr().err == "error: interrupted (Ctrl-C)\n"


# ---- a reader that goes away: `| head`, a killed `| tee`, a closed terminal ------------------------------------------
SCRIPTS = ROOT / "scripts"


def closed_pipe_run(cmd, *, stderr_too=False, read=0, timeout=300):
    """Run cmd with stdout (and stderr, if stderr_too: `2>&1 | …`) into a pipe whose reader reads `read` bytes, then
    exits. Returns (exit code, stderr text or None). No PYTHONUNBUFFERED: as a user's shell runs it, buffers and all."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT if stderr_too else subprocess.PIPE,
                         env=env)  # fmt: skip
    if read:
        assert len(p.stdout.read(read)) == read
    p.stdout.close()
    _, err = p.communicate(timeout=timeout)
    return p.returncode, None if stderr_too else err.decode("utf-8")


@pytest.mark.parametrize("stderr_too", [False, True], ids=["stdout", "stdout and stderr"])
def test_a_reader_that_stops_reading_ends_the_script_quietly_with_141(files, stderr_too):
    """`generate.py … | head -c 5`: once the reader is gone, the next write fails (BrokenPipeError). That ends the
    script as SIGPIPE ends `yes | head`'s yes: exit 128 + 13, and no traceback (it printed one, exit 1; with stderr in
    the same pipe, Python's exit-time flush failed again: exit 120)."""
    cmd = [sys.executable, str(SCRIPTS / "generate.py"), "--weights", files["tiny"], "--prompt", "Hi",
           "--max-new-tokens", "30", "--num-samples", "200", "--seed", "0"]  # fmt: skip
    code, err = closed_pipe_run(cmd, stderr_too=stderr_too, read=0 if stderr_too else 5)  # 0: its first log line fails
    assert code == 141 and (stderr_too or "Traceback" not in err and "Error" not in err), err


@pytest.mark.parametrize("script", ["generate.py", "evaluate.py", "export_hf.py", "explain.py"])
def test_help_into_a_closed_pipe_is_141_not_120(script):
    code, err = closed_pipe_run([sys.executable, str(SCRIPTS / script), "--help"])
    assert code == 141 and err == "", err  # not "Exception ignored … BrokenPipeError", exit 120


def test_export_with_a_closed_stdout_is_no_write_error_and_converting_still_exports(files, tmp_path):
    """export_hf.py printed its output folder inside `except OSError` (a closed stdout → "error: could not write");
    load_openai_weights.py printed the converted file before --export-hf ran, so a closed stdout skipped the export."""
    code, err = closed_pipe_run([sys.executable, str(SCRIPTS / "export_hf.py"), files["tiny"], str(tmp_path / "hf")])
    assert code == 141 and "error" not in err, err
    assert (tmp_path / "hf" / "model.safetensors").is_file() and (tmp_path / "hf" / "config.json").is_file()
    code, err = closed_pipe_run([sys.executable, str(SCRIPTS / "load_openai_weights.py"), "--from-dir",
                                 str(tmp_path / "hf"), "--out", str(tmp_path / "back.safetensors"), "--export-hf",
                                 str(tmp_path / "hf2")])  # fmt: skip
    assert code == 141 and "error" not in err, err
    assert (tmp_path / "back.safetensors").is_file() and (tmp_path / "hf2" / "model.safetensors").is_file()
