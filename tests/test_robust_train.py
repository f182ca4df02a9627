"""What users really feed the training side (issue 14): a run's config stays coherent with the weights it starts
from (class 1), ids never cross between a model and a tokenizer of different vocabularies (class 2), what a crash
leaves never blocks the restart (class 6), and a log file gets plain lines, not a progress bar (non-TTY output)."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from script_fixtures import load_main

from gpt import GPT, GPTConfig, generate, save_model
from gpt.tokenizer import get_tokenizer
from gpt.train import TrainConfig
from gpt.train.checkpoint import latest_checkpoint, load_checkpoint_state
from gpt.train.tracking import TensorBoardWriter, Tracker, read_metrics, read_tensorboard_scalars, read_wandb_run_id
from gpt.weights import resolve_weights_path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "pretrain.py"
GPT2_VOCAB = 50257
QUIET = ["--force-cpu", "--no-compile", "--no-progress", "--eval-iters", "1", "--wandb-mode", "disabled",
         "--no-tensorboard", "--dtype", "float32"]  # fmt: skip
# A 1-layer, 32-wide model on 32-token windows, one micro-step of 4 windows per optimizer step
TINY = [*QUIET, "--model", "tiny", "--model.n-layer", "1", "--model.n-head", "2", "--model.n-embd", "32",
        "--model.context-length", "32", "--batch-size", "4", "--total-batch-tokens", "128",
        "--sample-tokens", "4"]  # fmt: skip


@pytest.fixture(scope="module")
def pretrain():
    return load_main("pretrain")


@pytest.fixture
def data_dir(shakespeare_prepared):
    return shakespeare_prepared


def tiny_weights(path: Path, **config) -> Path:
    torch.manual_seed(0)
    return save_model(GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, **config)), path)


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


# ---- class 1: the config follows the weights it starts from ----------------------------------------------------------
def test_init_from_a_shorter_context_refuses_up_front_with_the_fix(pretrain, data_dir, tmp_path, capsys):
    # configs/tiny.yaml trains 8 windows of 128 tokens = 1024 tokens a step; weights of context 96 cannot
    weights = tiny_weights(tmp_path / "ctx96.safetensors", context_length=96)
    args = ["--config", "configs/tiny.yaml", *QUIET, "--data-dir", str(data_dir), "--init-from", str(weights)]
    assert pretrain([*args, "--out-dir", str(tmp_path / "run"), "--max-steps", "2"]) == 1
    err = capsys.readouterr().err
    assert error_lines(err) == [error_lines(err)[0]] and "windows are 96 tokens" in err
    assert "--total-batch-tokens 768" in err and not (tmp_path / "run").exists()  # refused before anything ran
    # with a batch that splits into 96-token windows it trains, and says so in the config it saves
    assert pretrain([*args, "--out-dir", str(tmp_path / "ok"), "--max-steps", "1", "--total-batch-tokens", "768"]) == 0
    saved = yaml.safe_load((tmp_path / "ok" / "config.yaml").read_text(encoding="utf-8"))
    assert (saved["model"]["context_length"], saved["seq_len"]) == (96, 96)


def test_init_from_a_longer_context_saves_a_config_that_resumes(pretrain, data_dir, tmp_path):
    weights = tiny_weights(tmp_path / "ctx256.safetensors", context_length=256)
    run = tmp_path / "run"
    args = ["--config", "configs/tiny.yaml", *QUIET, "--data-dir", str(data_dir), "--out-dir", str(run)]
    assert pretrain([*args, "--init-from", str(weights), "--max-steps", "2", "--sample-tokens", "0"]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8"))
    assert (saved["model"]["context_length"], saved["seq_len"]) == (256, 128)  # the 128-token windows it trained on
    assert load_checkpoint_state(run)["config"]["seq_len"] == 128
    assert pretrain(["--resume", "--out-dir", str(run), "--max-steps", "4"]) == 0  # refused before the fix
    assert load_checkpoint_state(run)["step"] == 4


def test_init_from_checks_an_explicit_seq_len_against_the_weights_not_the_config(pretrain, data_dir, tmp_path, capsys):
    weights = tiny_weights(tmp_path / "ctx96.safetensors", context_length=96)
    args = [*TINY, "--data-dir", str(data_dir), "--init-from", str(weights), "--max-steps", "1"]
    # 64 > the config's context of 32, but the weights' 96 is what counts
    assert pretrain([*args, "--out-dir", str(tmp_path / "a"), "--seq-len", "64", "--total-batch-tokens", "256"]) == 0
    assert pretrain([*args, "--out-dir", str(tmp_path / "b"), "--seq-len", "100"]) == 1
    assert "seq_len 100 is longer than the context length 96" in capsys.readouterr().err


def test_resume_that_changes_the_models_shape_is_one_error_line(pretrain, data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert pretrain([*TINY, "--data-dir", str(data_dir), "--out-dir", str(run), "--max-steps", "1"]) == 0
    capsys.readouterr()
    assert pretrain(["--resume", "--out-dir", str(run), "--max-steps", "2", "--model.n-layer", "3"]) == 1
    err = capsys.readouterr().err
    assert error_lines(err) == [err.strip()] and "model.n_layer 1 → 3" in err and "--init-from" in err
    # dropout does not shape the weights: changing it on resume is fine
    assert pretrain(["--resume", "--out-dir", str(run), "--max-steps", "2", "--model.dropout", "0.1"]) == 0


# ---- class 2: the model's vocabulary and the tokenizer's -------------------------------------------------------------
def padding_favoured_model(vocab_size: int = 50304) -> GPT:
    """A model whose every logit for ids >= 50257 (rows no tokenizer knows) is 10 and every other 0: ln_f outputs
    a vector of ones, and only the extra rows of the tied head sum to 10."""
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=32, context_length=32, vocab_size=vocab_size))
    with torch.no_grad():
        model.transformer.ln_f.weight.zero_()
        model.transformer.ln_f.bias.fill_(1.0)
        model.lm_head.weight.zero_()
        model.lm_head.weight[GPT2_VOCAB:] = 10.0 / 32
    return model


def test_generation_never_samples_ids_past_the_tokenizer(tmp_path):
    model, prompt = padding_favoured_model(), torch.tensor([[15496]])
    g = torch.Generator().manual_seed(0)
    unmasked = generate(model, prompt, 8, temperature=1.0, top_k=50, generator=g)[0, 1:]
    assert (unmasked >= GPT2_VOCAB).all()  # the trap is real: without n_vocab, only undecodable ids come out
    for kw in (dict(temperature=1.0, top_k=50), dict(temperature=1.0, top_k=50000), dict(temperature=0)):
        out = generate(model, prompt, 8, n_vocab=GPT2_VOCAB, generator=g, **kw)[0, 1:]
        assert (out < GPT2_VOCAB).all(), kw
    get_tokenizer().decode(out.tolist())  # decodes (a KeyError before the fix)
    with pytest.raises(ValueError, match="n_vocab"):
        generate(model, prompt, 1, n_vocab=0)


def test_generate_cli_with_top_k_past_the_tokenizer_prints_text(tmp_path):
    weights = save_model(padding_favoured_model(), tmp_path / "v50304.safetensors")
    cmd = [sys.executable, str(ROOT / "scripts" / "generate.py"), "--weights", str(weights), "--prompt", "Hello",
           "--top-k", "50000", "--temperature", "1", "--max-new-tokens", "8", "--seed", "0"]  # fmt: skip
    r = subprocess.run(cmd, capture_output=True, timeout=300)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    assert r.stdout.decode("utf-8").startswith("Hello") and len(r.stdout) > len("Hello")


def test_the_step0_text_sample_of_a_50304_row_model_is_text(pretrain, data_dir, tmp_path):
    weights = save_model(padding_favoured_model(), tmp_path / "v50304.safetensors")
    run = tmp_path / "run"
    args = [*TINY, "--data-dir", str(data_dir), "--out-dir", str(run), "--init-from", str(weights), "--max-steps", "1",
            "--sample-tokens", "16", "--model.vocab-multiple", "1"]  # fmt: skip
    assert pretrain(args) == 0  # the run died in decode before the fix
    samples = [r["samples/text"] for r in read_metrics(run / "metrics.jsonl") if "samples/text" in r]
    assert len(samples) == 2 and samples[0].startswith("ROMEO:") and len(samples[0]) > len("ROMEO:")


def test_data_with_ids_past_the_models_vocabulary_is_refused_before_training(pretrain, data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert pretrain([*TINY, "--data-dir", str(data_dir), "--out-dir", str(run), "--model.vocab-size", "1000"]) == 1
    err = capsys.readouterr().err
    assert error_lines(err) == [err.strip()] and "ids up to 50256" in err and "--model.vocab-size 50257" in err
    assert not run.exists()


# ---- class 6: what a crash leaves behind -----------------------------------------------------------------------------
def test_resume_after_a_partial_metrics_line(pretrain, data_dir, tmp_path):
    run = tmp_path / "run"
    args = [*TINY, "--data-dir", str(data_dir), "--out-dir", str(run), "--ckpt-interval", "2"]
    assert pretrain([*args, "--max-steps", "2"]) == 0
    with open(run / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 3, "train/lo')  # killed mid-append
    assert pretrain(["--resume", "--out-dir", str(run), "--max-steps", "4"]) == 0  # a JSONDecodeError before
    lines = (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]  # every line is whole again
    assert sorted(r["step"] for r in records if "train/loss" in r) == [1, 2, 3, 4]


def test_a_damaged_checkpoint_is_one_error_line_and_deleting_it_resumes_from_the_one_before(
    pretrain, data_dir, tmp_path, capsys
):
    run = tmp_path / "run"
    args = [*TINY, "--data-dir", str(data_dir), "--out-dir", str(run), "--max-steps", "2", "--ckpt-interval", "1"]
    assert pretrain(args) == 0
    state = run / "step_000002" / "state.pt"
    state.write_bytes(state.read_bytes()[:100])  # a disk that lost the end of the file
    capsys.readouterr()
    assert pretrain(["--resume", "--out-dir", str(run), "--max-steps", "3"]) == 1
    err = capsys.readouterr().err
    assert error_lines(err) == [err.strip()] and "state.pt is damaged" in err and "delete" in err
    shutil.rmtree(run / "step_000002")  # as the message says; `latest` now names a checkpoint that is gone
    assert pretrain(["--resume", "--out-dir", str(run), "--max-steps", "3"]) == 0
    assert "resuming at step 1/3" in capsys.readouterr().out
    assert load_checkpoint_state(run)["step"] == 3


def test_read_metrics_skips_what_a_crash_leaves(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1, "train/loss": 5.0}\n\x00\x00\x00\n[1, 2]\n{"step": "x"}\n{"step": 2, "val/loss": 4.')
    assert read_metrics(path) == [{"step": 1, "train/loss": 5.0}]


def test_a_new_tracker_starts_its_records_on_a_line_of_their_own(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "train/loss": 5.0}\n{"step": 2, "tr', encoding="utf-8")
    tracker = Tracker(tmp_path, {}, run_name="t", tensorboard=False, wandb_mode="disabled")
    tracker.log(1, {"train/loss": 4.0})
    tracker.close()
    assert [(r["step"], r["train/loss"]) for r in read_metrics(tmp_path / "metrics.jsonl")] == [(1, 5.0), (1, 4.0)]


@pytest.mark.parametrize("pointer", [b"", b"step_0000", b"\x00\x00\x00\x00", b"step_000009\n", b"../x\n"])
def test_a_damaged_latest_pointer_falls_back_to_the_newest_complete_checkpoint(tmp_path, pointer):
    for step, files in ((2, ("model.safetensors", "state.pt")), (4, ("model.safetensors", "state.pt")), (6, ())):
        (tmp_path / f"step_{step:06d}").mkdir()  # step 6: a directory with nothing in it
        for name in files:
            (tmp_path / f"step_{step:06d}" / name).write_bytes(b"x")
    (tmp_path / "latest").write_bytes(pointer)
    assert latest_checkpoint(tmp_path) == tmp_path / "step_000004"
    assert resolve_weights_path(tmp_path) == tmp_path / "step_000004" / "model.safetensors"  # was a RecursionError


def test_a_damaged_latest_with_no_checkpoint_means_no_checkpoint(tmp_path):
    (tmp_path / "latest").write_text("", encoding="utf-8")
    assert latest_checkpoint(tmp_path) is None
    with pytest.raises(FileNotFoundError, match="neither model.safetensors"):
        resolve_weights_path(tmp_path)


@pytest.mark.parametrize(
    "content, expected", [(b"3f9a0c2b1d\n", "3f9a0c2b1d"), (b"", None), (b"3f9a\x00\x00", None), (b"\xff\xfe", None)]
)
def test_a_damaged_wandb_run_id_means_a_new_wandb_run(tmp_path, content, expected):
    (tmp_path / "wandb_run_id").write_bytes(content)
    assert read_wandb_run_id(tmp_path / "wandb_run_id") == expected
    assert read_wandb_run_id(tmp_path / "missing") is None


def test_a_truncated_tensorboard_event_file_reads_up_to_its_last_whole_record(tmp_path):
    writer = TensorBoardWriter(tmp_path)
    for step in range(1, 6):
        writer.add_scalars(step, {"train/loss": float(step)})
    writer.close()
    (path,) = tmp_path.glob("events.out.tfevents.*")
    data = path.read_bytes()
    path.write_bytes(data[:-7])  # killed inside the last record
    assert read_tensorboard_scalars(tmp_path)["train/loss"] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]


# ---- output where no terminal is watching ----------------------------------------------------------------------------
def test_a_log_file_gets_one_plain_line_per_logged_step(data_dir, tmp_path):
    args = [*TINY, "--progress", "--log-interval", "2", "--data-dir", str(data_dir), "--out-dir", str(tmp_path / "r"),
            "--max-steps", "5", "--eval-interval", "100"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    output = r.stdout + r.stderr
    assert "\r" not in output  # no progress bar redrawn into the file
    lines = [line for line in output.splitlines() if line.startswith("step ") and "tok/s" in line]
    assert [line.split(" · ")[0] for line in lines] == ["step 2/5", "step 4/5", "step 5/5"]
    for line in lines:
        assert all(key in line for key in ("loss ", "lr ", "tok/s", "ETA ")), line


# ---- config files as users write them --------------------------------------------------------------------------------
def test_yaml_numbers_without_a_dot_are_floats_and_wrong_types_are_named():
    cfg = TrainConfig.from_yaml("learning_rate: 6e-4\nmin_lr: 6e-5\n")  # YAML 1.1 reads both as strings
    assert (cfg.learning_rate, cfg.min_lr) == (6e-4, 6e-5)
    cases = [("max_steps: ten", "max_steps must be int, got 'ten'"), ("compile: 3", "compile must be bool"),
             ("seq_len: 1.5", "seq_len must be int or null"), ("learning_rate: fast", "must be float")]  # fmt: skip
    for text, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            TrainConfig.from_yaml(text)
