"""scripts/pretrain.py end to end, on tiny models: the CUDA guard, a real run on the default corpus with every log
format read back by its own reader, bit-exact resume, 2-process DDP under real torchrun == 1 process, and the loop's
first step recomputed by hand. Crash safety and clean stops are test_pretrain_crashes.py's."""

import importlib.util
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gpt import GPT, GPTConfig, load_model, save_model
from gpt.data import WindowSampler, load_prepared, prepare_data
from gpt.train import native_bf16_matmul, param_groups
from gpt.train.checkpoint import latest_checkpoint, load_checkpoint_state

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "pretrain.py"

# A 2-layer, 32-wide model on 32-token windows: ≈ 1.6M parameters, almost all of them the embedding table.
TINY = ["--force-cpu", "--no-compile", "--no-progress", "--model", "tiny", "--model.n-layer", "2",
        "--model.n-head", "2", "--model.n-embd", "32", "--model.context-length", "32", "--model.vocab-multiple", "64",
        "--batch-size", "4", "--learning-rate", "1e-2", "--min-lr", "1e-3", "--warmup-steps", "2", "--eval-iters", "2",
        "--sample-tokens", "6", "--wandb-mode", "disabled", "--no-tensorboard"]  # fmt: skip


@pytest.fixture(scope="module")
def pretrain():
    """scripts/pretrain.py's main(), imported once, for runs that need no separate process."""
    spec = importlib.util.spec_from_file_location("pretrain_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    prepare_data([ROOT / "data" / "shakespeare"], out, val_fraction=0.1, progress=False)
    return out


def records(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics.jsonl") as f:
        return [json.loads(line) for line in f]


def series(run_dir: Path, key: str) -> dict[int, float]:
    return {r["step"]: r[key] for r in records(run_dir) if key in r}


def run_cli(args, env=None, **kw):
    env = {**os.environ, "WANDB_SILENT": "true", **(env or {})}
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, **kw)


# ---- the CUDA guard --------------------------------------------------------------------------------------------------
def test_no_cuda_and_no_force_cpu_exits_1_with_guidance(tmp_path):
    env = {"CUDA_VISIBLE_DEVICES": ""}  # no GPU even on a machine that has one
    result = run_cli([], env=env, cwd=tmp_path, timeout=120)
    assert result.returncode == 1
    for needle in ("CUDA is not available", "--device mps", "--force-cpu", "configs/tiny.yaml"):
        assert needle in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()  # nothing started
    assert run_cli(["--device", "cuda"], env=env, cwd=tmp_path, timeout=120).returncode == 1


# ---- W&B's offline run file, read without W&B's help ----------------------------------------------------------------
def read_wandb_history(run_file: Path) -> list[dict]:
    """History rows of a W&B offline run (.wandb): a 7-byte header (':W&B', magic 0xBEE1, version), then a
    LevelDB-style log in 32 KiB blocks of records (crc32 of type+data, uint16 length, uint8 type 1=full, 2=first,
    3=middle, 4=last) holding serialized wandb Record protobufs."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = run_file.read_bytes()
    assert data[:4] == b":W&B"
    rows, pos, pending = [], 7, b""
    while pos + 7 <= len(data):
        if 32768 - pos % 32768 < 7:  # too little room left in this block for a header: zero padding
            pos += 32768 - pos % 32768
            continue
        crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        payload = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0:
            break
        assert crc == zlib.crc32(bytes([kind]) + payload), "corrupt W&B record"
        pending = payload if kind in (1, 2) else pending + payload
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            if record.WhichOneof("record_type") == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})  # fmt: skip
    return rows


# ---- a real run on the default corpus --------------------------------------------------------------------------------
# bf16 autocast where this CPU has native bf16 matmuls; elsewhere (AVX2 only) bf16 is emulated, 400 steps would take
# most of the suite's time, and pretrain.py warns about it (gpt/train/device.py: native_bf16_matmul)
FAST_DTYPE = "bfloat16" if native_bf16_matmul(torch.device("cpu")) else "float32"


@pytest.mark.slow
def test_tiny_run_learns_and_logs_to_tensorboard_wandb_jsonl_and_png(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, data_dir = tmp_path / "run", tmp_path / "prepared"
    # 400 steps of 512 tokens (≈ 0.15 epochs) on a 64-wide model: enough to learn more than token frequencies
    args = [*TINY, "--out-dir", str(run_dir), "--data-dir", str(data_dir),
            "--data-source", str(ROOT / "data" / "shakespeare"), "--tensorboard", "true", "--wandb-mode", "offline",
            "--dtype", FAST_DTYPE, "--model.n-embd", "64", "--model.context-length", "64", "--batch-size", "8",
            "--total-batch-tokens", "512", "--max-steps", "400", "--learning-rate", "0.015", "--min-lr", "0.0015",
            "--weight-decay", "0", "--warmup-steps", "10", "--eval-interval", "200", "--eval-iters", "16",
            "--ckpt-interval", "400"]  # fmt: skip
    result = run_cli(args, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    assert (data_dir / "meta.json").is_file()  # pretrain.py prepared the corpus itself

    # it learned: far below the starting loss, and below what token frequencies alone give (the unigram entropy)
    val = series(run_dir, "val/loss")
    assert sorted(val) == [0, 200, 400]
    counts = np.bincount(load_prepared(data_dir).train, minlength=50257).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    unigram_entropy = float(-(p * np.log(p)).sum())  # ≈ 6.4 nats for Shakespeare in GPT-2 tokens
    assert val[0] == pytest.approx(math.log(50257), abs=0.5)
    assert val[400] < val[0] - 3.0
    assert val[400] < unigram_entropy, (val, unigram_entropy)

    # metrics.jsonl and the PNG
    train = series(run_dir, "train/loss")
    assert sorted(train) == list(range(1, 401))
    assert all(math.isfinite(v) for v in train.values())
    assert (run_dir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    samples = series(run_dir, "samples/text")
    assert sorted(samples) == [0, 200, 400] and all(s.startswith("ROMEO:") for s in samples.values())
    assert (run_dir / "config.yaml").is_file() and latest_checkpoint(run_dir).name == "step_000400"

    # TensorBoard, read by TensorBoard's own loader
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    expected_tags = {"train/loss", "train/lr", "train/grad_norm", "train/tokens_per_sec", "val/loss"}
    assert expected_tags <= set(acc.Tags()["scalars"])
    assert "samples/text" in acc.Tags()["tensors"]
    tb_train = {e.step: e.value for e in acc.Scalars("train/loss")}
    assert tb_train.keys() == train.keys()
    assert all(tb_train[s] == pytest.approx(train[s], rel=1e-6) for s in train)
    assert {e.step: e.value for e in acc.Scalars("val/loss")} == pytest.approx(val, rel=1e-6)

    # W&B: an offline run with the same numbers
    (run_file,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    history = read_wandb_history(run_file)
    wb_train = {r["_step"]: r["train/loss"] for r in history if "train/loss" in r}
    wb_val = {r["_step"]: r["val/loss"] for r in history if "val/loss" in r}
    assert wb_train == pytest.approx(train, rel=1e-6) and wb_train.keys() == train.keys()
    assert wb_val == pytest.approx(val, rel=1e-6)
    assert expected_tags <= {k for r in history for k in r}


# ---- exact resume ----------------------------------------------------------------------------------------------------
def test_resume_is_bit_exact(pretrain, data_dir, tmp_path):
    # dropout on, so the restored RNG state matters too; 2 micro-steps per step; the schedule pinned to 6 steps
    common = [*TINY, "--data-dir", str(data_dir), "--model.dropout", "0.1", "--total-batch-tokens", "256",
              "--lr-decay-steps", "6", "--eval-interval", "3", "--ckpt-interval", "3"]  # fmt: skip
    full, split = tmp_path / "full", tmp_path / "split"
    assert pretrain([*common, "--out-dir", str(full), "--max-steps", "6"]) == 0
    assert pretrain([*common, "--out-dir", str(split), "--max-steps", "3"]) == 0
    assert pretrain(["--resume", "--out-dir", str(split), "--max-steps", "6"]) == 0  # the saved config, extended

    assert series(split, "train/loss") == series(full, "train/loss")  # identical floats, steps 1..6
    assert sorted(series(full, "train/loss")) == [1, 2, 3, 4, 5, 6]
    assert series(split, "val/loss") == series(full, "val/loss")  # steps 0, 3, 6; no duplicate eval at 3
    a, b = load_model(full), load_model(split)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(x, y), name
    sa, sb = load_checkpoint_state(full), load_checkpoint_state(split)
    for group in ("exp_avg", "exp_avg_sq"):
        for k in sa["optimizer"]["state"]:
            assert torch.equal(sa["optimizer"]["state"][k][group], sb["optimizer"]["state"][k][group])

    # a finished run refuses a fresh start in the same place, and --resume needs a checkpoint
    assert pretrain([*common, "--out-dir", str(full), "--max-steps", "6"]) == 1
    assert pretrain([*common, "--out-dir", str(tmp_path / "empty"), "--resume"]) == 1


# ---- compile: true never makes a run slower: skipped on a CPU ------------------------------------------------------
def test_compile_is_skipped_on_a_cpu_the_same_way_every_time(monkeypatch):
    from gpt.train import compile_pays
    from gpt.train.device import COMPILE_ENV

    monkeypatch.delenv(COMPILE_ENV, raising=False)
    cpu = torch.device("cpu")
    assert [compile_pays(cpu) for _ in range(2)] == [False, False]  # slower there (bench/results): eager
    assert compile_pays(torch.device("cuda", 0)) and compile_pays(torch.device("mps"))
    monkeypatch.setenv(COMPILE_ENV, "1")
    assert compile_pays(cpu)  # forced on
    monkeypatch.setenv(COMPILE_ENV, "0")
    assert not compile_pays(torch.device("cuda", 0))  # forced off


def test_a_cpu_run_with_compile_true_trains_eagerly_and_says_so(pretrain, data_dir, tmp_path, monkeypatch, capsys):
    from gpt.train.device import COMPILE_ENV

    monkeypatch.delenv(COMPILE_ENV, raising=False)
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda model, *a, **k: compiled.append(model) or model)
    args = [a for a in TINY if a != "--no-compile"] + ["--compile", "true", "--max-steps", "1", "--eval-interval", "1"]
    assert pretrain([*args, "--data-dir", str(data_dir), "--out-dir", str(tmp_path / "run")]) == 0
    assert not compiled  # the model was never handed to torch.compile
    out = capsys.readouterr().out
    assert "compile: skipped (on a CPU" in out and f"{COMPILE_ENV}=1" in out
    monkeypatch.setenv(COMPILE_ENV, "1")  # forced: handed to torch.compile (recorded here, not compiled: 30 s)
    assert pretrain([*args, "--data-dir", str(data_dir), "--out-dir", str(tmp_path / "forced")]) == 0
    assert len(compiled) == 1 and "compile: skipped" not in capsys.readouterr().out


def test_beside_a_busy_program_a_run_takes_the_free_cores_and_names_torchrun(
    pretrain, data_dir, tmp_path, monkeypatch, capsys
):
    from gpt.utils import usable_cpus

    cpus = usable_cpus()
    if cpus < 2:
        pytest.skip("needs 2 CPUs: with one, a run has no core to give up")
    monkeypatch.delenv("GPT_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    # a busy program that has just started (the 1-minute load average has not seen it yet): one spinning thread
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    before = torch.get_num_threads()
    try:
        time.sleep(1.0)
        args = [*TINY, "--max-steps", "1", "--data-dir", str(data_dir), "--out-dir", str(tmp_path / "run")]
        assert pretrain(args) == 0
        threads = torch.get_num_threads()
    finally:
        spinner.kill()
        spinner.wait()
        torch.set_num_threads(before)
    assert threads < cpus  # cpus - 1 on a quiet machine; fewer where CI runs other work too
    out = capsys.readouterr().out
    assert out.count(f"cpu threads: {threads} of {cpus}, as other programs keep the rest busy") == 1
    assert f"torchrun --standalone --nproc-per-node {cpus} scripts/pretrain.py <these arguments>" in out


# ---- DDP: 2 processes under real torchrun == 1 process with the same global batch ------------------------------------
def test_torchrun_two_processes_match_one_process(pretrain, data_dir, tmp_path):
    # 512 tokens per step = 4 micro-steps of 4×32 in one process, 2 per rank in two (so no_sync is exercised);
    # HellaSwag on 15 examples (8 + 7 per rank; every ending fits the 32-token window), counts all-reduced.
    # float32: `dtype: auto` trains in bf16 on a CPU with AVX-512 BF16, and there the gradients' other summation
    # order (4 micro-steps in one process; 2 a rank, then the all-reduce) can flip a weight's bf16 rounding: step
    # 4's losses were 7.6e-5 apart on an AMD EPYC Zen 5
    hs_dir = tmp_path / "eval"
    hs_dir.mkdir()
    shutil.copy(ROOT / "tests/fixtures/eval/hellaswag_val_200.jsonl", hs_dir / "hellaswag_val.jsonl")
    common = [*TINY, "--data-dir", str(data_dir), "--total-batch-tokens", "512", "--max-steps", "4",
              "--eval-interval", "2", "--eval-iters", "3", "--ckpt-interval", "4", "--hellaswag-interval", "2",
              "--hellaswag-examples", "15", "--hellaswag-data-dir", str(hs_dir), "--dtype", "float32"]  # fmt: skip
    one, two = tmp_path / "one", tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(SCRIPT)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true"}
    result = subprocess.run(
        [*cmd, *common, "--out-dir", str(two)], capture_output=True, text=True, env=env, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 process(es)" in result.stdout and "2 micro-steps" in result.stdout
    assert pretrain([*common, "--out-dir", str(one)]) == 0

    l1, l2 = series(one, "train/loss"), series(two, "train/loss")
    assert sorted(l1) == sorted(l2) == [1, 2, 3, 4]
    for s in l1:
        assert abs(l1[s] - l2[s]) <= 1e-5, (s, l1[s], l2[s])
    v1, v2 = series(one, "val/loss"), series(two, "val/loss")  # eval batches split across ranks, all-reduced
    assert sorted(v1) == sorted(v2) == [0, 2, 4] and all(abs(v1[s] - v2[s]) <= 1e-5 for s in v1)
    for key in ("eval/hellaswag_acc_norm", "eval/hellaswag_acc"):  # counts of the same 15 examples
        assert series(one, key) == series(two, key) and sorted(series(one, key)) == [0, 2, 4]
    assert l1[4] < l1[1]  # it trained
    for (n, a), (_, b) in zip(load_model(one).state_dict().items(), load_model(two).state_dict().items()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=n)


@pytest.mark.parametrize("mistake", ["run dir is a file", "no data"])
def test_a_mistake_under_torchrun_is_one_error_line(data_dir, tmp_path, mistake):
    # every process meets it; rank 0 says it, the other is stopped by torchrun before it repeats it, and a rank
    # waiting at a barrier for rank 0 leaves without a traceback of its own
    if mistake == "run dir is a file":
        (tmp_path / "afile").write_text("x", encoding="utf-8")
        args = ["--data-dir", str(data_dir), "--out-dir", str(tmp_path / "afile")]
        want = "is a file; pass another --out-dir"
    else:
        args = ["--data-dir", str(tmp_path / "nodata"), "--data-source", "", "--out-dir", str(tmp_path / "run")]
        want = "no prepared data in"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(SCRIPT)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_SILENT": "true"}
    r = subprocess.run([*cmd, *TINY, "--max-steps", "1", *args], capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode != 0
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and want in errors[0], r.stderr[-3000:]
    assert "barrier" not in r.stderr and "Connection closed" not in r.stderr, r.stderr[-3000:]


# ---- the loop's arithmetic, redone by hand (and --init-from) ---------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_first_steps_match_hand_written_steps(pretrain, data_dir, tmp_path, dtype):
    # saved unpadded (like converted OpenAI weights); the run pads the vocabulary to 50304 rows (--model.vocab-multiple)
    cfg = GPTConfig(vocab_size=50257, context_length=32, n_layer=2, n_head=2, n_embd=32, vocab_multiple=1)
    torch.manual_seed(5)
    start = GPT(cfg)
    save_model(start, tmp_path / "start.safetensors")
    run_dir = tmp_path / "run"
    lr, clip, seed = 3e-3, 0.05, 11  # clip low enough that clipping really happens
    args = [*TINY, "--data-dir", str(data_dir), "--out-dir", str(run_dir),
            "--init-from", str(tmp_path / "start.safetensors"),
            "--max-steps", "2", "--warmup-steps", "0", "--learning-rate", str(lr), "--min-lr", str(lr),
            "--grad-clip", str(clip), "--seed", str(seed), "--total-batch-tokens", "256", "--dtype", dtype,
            "--sample-tokens", "0"]  # fmt: skip
    assert pretrain(args) == 0

    # the same steps by hand: the plain forward (logits + F.cross_entropy), loss / accum, clip, PyTorch's AdamW
    model = load_model(tmp_path / "start.safetensors").train()
    ref_opt = torch.optim.AdamW(param_groups(model, 0.1), lr=lr, betas=(0.9, 0.95), eps=1e-8, foreach=False)
    sampler = WindowSampler(load_prepared(data_dir).train, batch_size=4, seq_len=32, grad_accum=2, seed=seed)
    expected = []
    for _ in range(2):
        total = 0.0
        for x, y in sampler.next_step():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bfloat16"):
                logits = model(x)
            loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), y.reshape(-1))
            (loss / 2).backward()
            total += loss.item() / 2
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip).item()
        assert norm > clip  # clipping happens, and differently in the two steps, which AdamW's 2nd step sees
        ref_opt.step()
        ref_opt.zero_grad()
        expected.append((total, norm))

    logged = [r for r in records(run_dir) if "train/loss" in r]
    assert [r["step"] for r in logged] == [1, 2]
    for r, (loss, norm) in zip(logged, expected):
        assert r["train/loss"] == pytest.approx(loss, rel=1e-5 if dtype == "float32" else 5e-3)
        assert r["train/grad_norm"] == pytest.approx(norm, rel=1e-4 if dtype == "float32" else 0.05)
        assert r["train/lr"] == pytest.approx(lr)
    trained = load_model(run_dir)
    assert trained.config.n_layer == 2  # --init-from's config won over the default 124M ...
    assert trained.config.padded_vocab_size == 50304  # ... except for the padding
    moved = 0
    for (name, a), (_, b) in zip(trained.state_dict().items(), model.state_dict().items()):
        a = a[: b.size(0)]  # the real vocabulary rows
        if dtype == "float32":
            # (atol: AdamW moves an element whose gradient is near eps by an amount sensitive to rounding; a real
            # mistake moves elements by ~lr = 3e-3)
            torch.testing.assert_close(a, b, rtol=1e-4, atol=2e-5, msg=lambda m, n=name: f"{n}: {m}")
        moved += int(not torch.equal(a, start.state_dict()[name]))
    assert moved == len(start.state_dict())  # every tensor took the steps
