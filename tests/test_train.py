"""gpt/train/: the config (config.py) and its command line (cli.py), optimizer groups, LR schedule and accumulation
(optim.py), MFU (mfu.py), the CUDA guard (device.py), the signal handlers (signals.py)."""

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpt import GPT, GPTConfig
from gpt.train import (
    TrainConfig,
    batch_size_for,
    build_arg_parser,
    configure_optimizer,
    cuda_guard_message,
    data_parallel_split,
    estimate_mfu,
    flops_per_token,
    grad_accum_steps,
    lr_at,
    param_groups,
    parse_train_args,
)
from gpt.train.signals import stop_on_signal

ROOT = Path(__file__).resolve().parents[1]


# ---- config ----------------------------------------------------------------------------------------------------------
def test_default_yaml_is_exactly_the_dataclass_defaults():
    assert TrainConfig.from_file(ROOT / "configs" / "default.yaml") == TrainConfig()
    cfg = TrainConfig()
    assert cfg.model.n_layer == 12 and cfg.model.n_embd == 768 and cfg.model.padded_vocab_size == 50304
    assert cfg.seq_len is None and cfg.model.context_length == 1024  # the window defaults to the whole context


def test_tiny_yaml_is_cpu_sized_and_valid():
    cfg = TrainConfig.from_file(ROOT / "configs" / "tiny.yaml")
    assert GPT(cfg.model).num_params() < 10_000_000
    assert cfg.force_cpu and not cfg.compile
    grad_accum_steps(cfg.total_batch_tokens, cfg.batch_size, cfg.seq_len or cfg.model.context_length)  # divides evenly


def test_yaml_round_trip_and_unknown_fields():
    cfg = TrainConfig(name="x", max_steps=7, seq_len=64, model=GPTConfig.from_preset("tiny"))
    assert TrainConfig.from_yaml(cfg.to_yaml()) == cfg
    with pytest.raises(ValueError, match="unknown TrainConfig field"):
        TrainConfig.from_yaml("max_step: 10\n")
    with pytest.raises(ValueError, match="unknown GPTConfig field"):
        TrainConfig.from_yaml("model: {n_layers: 2}\n")


def test_model_entry_accepts_preset_and_preset_with_overrides():
    assert TrainConfig.from_yaml("model: tiny\n").model == GPTConfig.from_preset("tiny")
    cfg = TrainConfig.from_yaml("model: {preset: tiny, context_length: 64}\n")
    assert cfg.model == GPTConfig.from_preset("tiny", context_length=64)


@pytest.mark.parametrize(
    "bad, match",
    [(dict(batch_size=0), "batch_size"), (dict(min_lr=1.0), "min_lr"), (dict(dtype="float16"), "gradient scaler"),
     (dict(wandb_mode="maybe"), "wandb_mode"), (dict(seq_len=4096), "seq_len"), (dict(keep_checkpoints=0), "keep")],
)  # fmt: skip
def test_config_validation_names_the_problem(bad, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**bad)


def test_cli_overrides_every_kind_of_field(tmp_path):
    (tmp_path / "c.yaml").write_text("name: base\nmax_steps: 10\ncompile: true\nmodel: tiny\n")
    args = parse_train_args(
        ["--config", str(tmp_path / "c.yaml"), "--max-steps", "50", "--learning_rate", "1e-3", "--no-compile",
         "--tensorboard", "false", "--force-cpu", "--seq-len", "none", "--model.n-layer", "2", "--init-from", "w.st"]
    )  # fmt: skip
    cfg = args.config
    assert (cfg.name, cfg.max_steps, cfg.learning_rate) == ("base", 50, 1e-3)
    assert cfg.compile is False and cfg.tensorboard is False and cfg.force_cpu is True
    assert cfg.seq_len is None and cfg.init_from == "w.st"
    assert cfg.model == GPTConfig.from_preset("tiny", n_layer=2)
    assert args.overrides["max_steps"] == 50 and "name" not in args.overrides  # only what the command line set
    assert parse_train_args(["--compile"]).config.compile is True
    assert parse_train_args(["--model", "124M", "--model.n_layer", "3"]).config.model.n_layer == 3


def test_help_shows_each_fields_comment():
    text = " ".join(build_arg_parser().format_help().split())
    assert "--max-steps MAX_STEPS optimizer steps" in text
    assert "--model.n-layer MODEL.N_LAYER number of transformer blocks (default: 12)" in text
    assert "--max_steps" not in text  # the underscore spelling works but is not listed twice
    # a comment continued on the next line reaches --help whole
    assert "faster matmuls); the extra rows never reach the logits, so loss and sampling are unchanged" in text


def test_cli_rejects_bad_values(capsys):
    for argv in (["--max-steps", "ten"], ["--compile", "perhaps"], ["--no-such-flag", "1"], ["--batch-size", "0"]):
        with pytest.raises(SystemExit) as e:
            parse_train_args(argv)
        assert e.value.code == 2
    assert "batch_size must be at least 1" in capsys.readouterr().err


# ---- optimizer -------------------------------------------------------------------------------------------------------
def test_weight_decay_only_on_matrices_and_every_parameter_once():
    model = GPT(GPTConfig.from_preset("tiny", n_layer=2))
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    ids = [id(p) for g in (decay, no_decay) for p in g["params"]]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))  # the tied head appears once
    assert sum(p.numel() for g in (decay, no_decay) for p in g["params"]) == model.num_params()
    decayed = {id(p) for p in decay["params"]}
    assert id(model.transformer.wte.weight) in decayed and id(model.transformer.h[0].attn.c_attn.bias) not in decayed
    opt = configure_optimizer(model, lr=1e-3, weight_decay=0.1, device_type="cpu")
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults["fused"] is True


def test_lr_schedule_warmup_then_cosine_to_floor():
    kw = dict(max_lr=1.0, min_lr=0.1, warmup_steps=10, decay_steps=110)
    lrs = [lr_at(s, **kw) for s in range(130)]
    assert lrs[0] == pytest.approx(0.1) and lrs[0] > 0  # never zero at the first step
    assert lrs[9] == pytest.approx(1.0)  # peak reached at the end of warmup
    assert all(a < b for a, b in zip(lrs[:10], lrs[1:10]))  # linear rise
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))  # then never rises
    assert lrs[60] == pytest.approx(0.1 + 0.5 * 0.9)  # halfway down the cosine
    assert lrs[110:] == [0.1] * 20
    assert lr_at(5, max_lr=1.0, min_lr=0.0, warmup_steps=0, decay_steps=10) == pytest.approx(0.5)


def test_grad_accum_steps_and_its_error():
    assert grad_accum_steps(524_288, 16, 1024, world_size=8) == 4
    assert grad_accum_steps(65_536, 8, 1024, world_size=1) == 8
    # no batch size reaches 65,536 on 3 processes (21⅓ sequences each): 2 or 3 micro-steps of 8 × 1,024 on each, or
    # the neighbouring total that splits into the larger batch: 21 sequences each (7 × 3), not 22 (2 × 11)
    with pytest.raises(ValueError, match="multiple of batch_size") as e:
        grad_accum_steps(65_536, 8, 1024, world_size=3)
    assert str(e.value).endswith(
        "e.g. --total-batch-tokens 49152 or 73728, or --total-batch-tokens 64512 --batch-size 7 (nearer)"
    )
    # configs/tiny.yaml under `torchrun --nproc-per-node 2`: 4 sequences per process keep its 1,024 tokens per step
    with pytest.raises(ValueError) as e:
        grad_accum_steps(1024, 8, 128, world_size=2)
    assert str(e.value).endswith("e.g. --batch-size 4 (the same tokens per step)")
    assert grad_accum_steps(1024, 4, 128, world_size=2) == 1
    with pytest.raises(ValueError) as e:  # 3 processes: 768 (2 each) or 1,152 (3 each, the larger batch)
        grad_accum_steps(1024, 8, 128, world_size=3)
    assert str(e.value).endswith(
        "e.g. --total-batch-tokens 3072 or 6144, or --total-batch-tokens 1152 --batch-size 3 (nearer)"
    )
    with pytest.raises(ValueError) as e:  # not a multiple of 128: 1,024 keeps the batch size and is nearest
        grad_accum_steps(1000, 8, 128)
    assert str(e.value).endswith("e.g. --total-batch-tokens 1024 or 2048")
    assert grad_accum_steps(1152, 3, 128, world_size=3) == 1 and grad_accum_steps(64512, 7, 1024, world_size=3) == 3


def test_data_parallel_split_is_the_most_processes_that_keep_the_tokens_per_step():
    assert data_parallel_split(1024, 8, 128, max_processes=2) == (2, 4)  # tiny.yaml on 2 CPUs
    assert data_parallel_split(1024, 4, 128, max_processes=2) == (2, None)  # its batch size splits as it is
    assert data_parallel_split(1024, 8, 128, max_processes=3) == (2, 4)  # 3 cannot split 8 sequences
    assert data_parallel_split(524_288, 16, 1024, max_processes=8) == (8, None)
    assert data_parallel_split(1152, 9, 128, max_processes=2) is None  # 9 sequences: no 2 processes
    assert data_parallel_split(1024, 8, 128, max_processes=1) is None


def test_batch_size_for_keeps_the_tokens_per_step():
    assert batch_size_for(1024, 8, 128, world_size=2) == 4
    assert batch_size_for(1024, 8, 128, world_size=1) == 8
    assert batch_size_for(1024, 3, 128) == 2  # 8 sequences: 2 divides them, 3 does not
    assert batch_size_for(524_288, 64, 1024, world_size=8) == 64
    assert batch_size_for(1024, 8, 128, world_size=3) is None
    assert batch_size_for(1000, 8, 128) is None


def test_flops_per_token_counts_the_model_weights():
    cfg = GPTConfig.from_preset("124M")
    model = GPT(cfg)
    n = model.num_params() - model.transformer.wpe.weight.numel()
    assert flops_per_token(cfg, 1024) == 6 * n + 12 * 12 * 768 * 1024
    assert flops_per_token(cfg, 1024) == pytest.approx(855e6, rel=0.002)  # the figure nanoGPT's MFU uses
    small = GPTConfig.from_preset("tiny", qkv_bias=False, vocab_multiple=64)
    m = GPT(small)
    assert flops_per_token(small, 7) == 6 * (m.num_params() - m.transformer.wpe.weight.numel()) + 12 * 4 * 128 * 7
    assert estimate_mfu(1000.0, 855e6, 989e12) == pytest.approx(855e9 / 989e12)


def test_guard_message_lists_the_options():
    msg = cuda_guard_message()
    for needle in ("CUDA is not available", "--device mps", "--force-cpu", "configs/tiny.yaml"):
        assert needle in msg


def test_lr_schedule_equals_a_hand_computed_table():
    # warmup 2, cosine over steps 2..6 from 1 to 0: progress (s - 2) / 4, lr = 0.5 · (1 + cos(π · progress))
    got = [lr_at(s, max_lr=1.0, min_lr=0.0, warmup_steps=2, decay_steps=6) for s in range(8)]
    want = [0.5, 1.0, 1.0, 0.8535533905932737, 0.5, 0.14644660940672627, 0.0, 0.0]
    assert got == pytest.approx(want, abs=1e-12)
    kw = dict(max_lr=6e-4, min_lr=6e-5, warmup_steps=10, decay_steps=100)
    assert max(lr_at(s, **kw) for s in range(200)) == 6e-4  # never above the peak, at the end of warmup or after


# ---- signals ---------------------------------------------------------------------------------------------------------
def test_stop_on_signal_records_the_signal_and_restores_the_handlers():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RuntimeError):  # however the block is left
        with stop_on_signal() as stop:
            assert signal.getsignal(signal.SIGTERM) is not before
            signal.raise_signal(signal.SIGTERM)  # recorded, not fatal
            assert stop.signal == signal.SIGTERM
            assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # a second one would stop at once
            raise RuntimeError
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_second_signal_of_another_kind_also_stops_at_once():
    before = signal.getsignal(signal.SIGINT)
    with stop_on_signal() as stop:
        signal.raise_signal(signal.SIGTERM)  # a cluster's notice, then the user's Ctrl-C: that one must not wait
        assert stop.signal == signal.SIGTERM and signal.getsignal(signal.SIGINT) is signal.SIG_DFL
    assert signal.getsignal(signal.SIGINT) is before


GRACE_CHILD = """
import os, signal, sys, time
from gpt.train.signals import stop_on_signal
with stop_on_signal(repeat_grace=float(sys.argv[1])) as stop:
    os.killpg(0, signal.SIGINT)  # the terminal's Ctrl-C, to the whole process group (this process is its leader)
    os.kill(os.getpid(), signal.SIGINT)  # torchrun forwarding the same Ctrl-C a moment later
    time.sleep(0.2)  # let the handlers run
    print("alive", stop.signal, flush=True)
    time.sleep(float(sys.argv[2]))
    os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C after the grace: stops at once
    time.sleep(5)
    print("still alive", flush=True)
"""


@pytest.mark.parametrize("grace, wait, survives_forward", [(5.0, 5.5, True), (0.0, 0.0, False)])
def test_under_torchrun_a_forwarded_signal_is_the_same_stop_request(grace, wait, survives_forward):
    # Run in a process group of its own, as torchrun's worker is, so the group-wide signal reaches only it
    r = subprocess.run([sys.executable, "-c", GRACE_CHILD, str(grace), str(wait)], cwd=ROOT, capture_output=True,
                       text=True, timeout=120, start_new_session=True)  # fmt: skip
    assert r.returncode == -signal.SIGINT  # killed by the second request, as the default handler does
    if survives_forward:  # the grace: Ctrl-C + torchrun's forward are one request; the loop goes on to checkpoint
        assert r.stdout == f"alive {int(signal.SIGINT)}\n"
    else:  # without it (a plain python run) the forward would have been the second Ctrl-C
        assert r.stdout == ""


def test_dtype_auto_takes_bf16_only_where_its_matmuls_are_native():
    # configs/tiny.yaml says `dtype: auto`: bf16 autocast on AVX-512 BF16 / AMX CPUs (≈ 2× fp32 there), fp32 on an
    # AVX2-only CPU, where torch emulates bf16 matmuls (≈ 9× slower: the notebook's tiny run timed out in CI, issue 15)
    from gpt.train import autocast_dtype

    cpu, auto = torch.device("cpu"), TrainConfig(dtype="auto")
    zen3 = frozenset({"avx", "avx2", "fma"})  # AMD EPYC Zen 3
    zen4 = zen3 | {"avx512f", "avx512bw", "avx512_bf16"}  # AMD EPYC Zen 4
    spr = zen4 | {"amx_bf16", "amx_tile"}  # Intel Sapphire Rapids
    assert autocast_dtype(auto, cpu, zen3) == torch.float32
    assert autocast_dtype(auto, cpu, zen4) == torch.bfloat16
    assert autocast_dtype(auto, cpu, spr) == torch.bfloat16
    assert autocast_dtype(auto, cpu, frozenset()) == torch.float32  # no /proc/cpuinfo (macOS): the safe choice
    assert autocast_dtype(auto, torch.device("mps"), spr) == torch.float32
    for flags in (zen3, spr):  # an explicit dtype is taken as asked
        assert autocast_dtype(TrainConfig(dtype="bfloat16"), cpu, flags) == torch.bfloat16
        assert autocast_dtype(TrainConfig(dtype="float32"), cpu, flags) == torch.float32
    assert TrainConfig.from_file(ROOT / "configs" / "tiny.yaml").dtype == "auto"


def test_the_dtypes_a_cpu_emulates_are_named_with_the_instructions_it_lacks():
    from gpt.train import emulated_matmul_note

    cpu = torch.device("cpu")
    zen3, zen5 = frozenset({"avx2"}), frozenset({"avx2", "avx512f", "avx512_bf16"})  # CPUs' flags
    spr = frozenset({"avx512_fp16", "amx_bf16"})
    assert "no AVX-512 BF16 or AMX" in emulated_matmul_note(torch.bfloat16, cpu, zen3)
    assert emulated_matmul_note(torch.bfloat16, cpu, zen5) is None
    assert "no AVX-512 FP16 or AMX-FP16, so torch emulates float16" in emulated_matmul_note(torch.float16, cpu, zen5)
    assert emulated_matmul_note(torch.float16, cpu, spr) is None
    assert emulated_matmul_note(torch.bfloat16, cpu, spr) is None
    assert emulated_matmul_note(torch.float32, cpu, frozenset()) is None  # float32 is every CPU's own
    assert emulated_matmul_note(torch.float16, torch.device("cuda"), frozenset()) is None


def test_bf16_autocast_on_a_cpu_without_native_bf16_is_warned_about_with_the_fix():
    from gpt.fast_decode import cpu_flags
    from gpt.train import bf16_warning, native_bf16_matmul

    cpu = torch.device("cpu")
    native = bool({"avx512_bf16", "amx_bf16"} & cpu_flags())  # AVX2-only CPUs (AMD Zen 3) emulate bf16 matmuls
    assert native_bf16_matmul(cpu) == native
    assert bf16_warning(torch.float32, cpu) is None
    warning = bf16_warning(torch.bfloat16, cpu)
    if native:
        assert warning is None
    else:
        assert warning.startswith("warning: ") and "--dtype float32" in warning


FAULTS_SCRIPT = """
import resource, sys, torch
from gpt.utils import keep_freed_memory
kept = keep_freed_memory() if sys.argv[1] == "keep" else None
def faults_of_a_fresh_tensor():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.empty(64 * 2**20, dtype=torch.float32).fill_(1.0)  # 256 MB: glibc mmaps anything over 32 MB
    del x
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(kept, *[faults_of_a_fresh_tensor() for _ in range(12)])  # as a training loop's steps do
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_keep_freed_memory_spares_a_training_step_its_page_faults():
    # a CPU step makes (B·T, 50304) logits and gradients afresh each step: 206 MB at 1,024 tokens, whose 50,000
    # page faults cost ≈ 60 ms a step when glibc gives the memory back on free (gpt/utils.py: keep_freed_memory)
    pages = 256 * 2**20 // 4096

    def faults_per_tensor(mode):
        r = subprocess.run([sys.executable, "-c", FAULTS_SCRIPT, mode], capture_output=True, text=True, cwd=ROOT,
                           timeout=300, check=True)  # fmt: skip
        kept, *faults = r.stdout.split()
        return kept, [int(f) for f in faults]

    kept, faults = faults_per_tensor("plain")
    assert kept == "None" and min(faults) > pages // 2  # glibc's default: unmapped on free, faulted in again
    kept, faults = faults_per_tensor("keep")
    # the heap takes a few tensors to settle (a freed block can be a few bytes short of the next aligned request),
    # then every tensor reuses freed memory as it is
    assert kept == "True" and faults[0] > pages // 2 and max(faults[-4:]) < pages // 20, faults
