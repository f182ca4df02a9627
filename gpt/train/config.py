"""Small pure helpers that scripts/pretrain.py's flat training loop calls: the run config, the optimizer, the
learning-rate schedule, gradient accumulation, MFU, device choice and DDP setup.

    cfg = parse_train_args(["--config", "configs/tiny.yaml", "--max-steps", "50"]).config
    opt = configure_optimizer(model, lr=cfg.learning_rate, weight_decay=cfg.weight_decay, device_type="cpu")
    lr = lr_at(step, max_lr=6e-4, min_lr=6e-5, warmup_steps=100, decay_steps=5000)
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gpt.config import GPTConfig, build_dataclass

WANDB_MODES = ("auto", "online", "offline", "disabled")
TRAIN_DTYPES = ("auto", "float32", "bfloat16")


def _default_model() -> GPTConfig:
    # GPT-2 124M; vocabulary padded to 50304 = 64 · 786 (faster matmuls, same loss); dropout 0.1 as GPT-2 trained
    return GPTConfig.from_preset("124M", vocab_multiple=64, dropout=0.1)


@dataclass
class TrainConfig:
    """Everything a pretraining run needs. Defaults are the GPT-2 124M run (configs/default.yaml) on the embedded
    Shakespeare corpus; every field can be set in a YAML file and overridden on the command line (--field value)."""

    # ---- run ----
    name: str = "gpt2-124M"  # the run's name; the run directory defaults to runs/<name>
    out_dir: str | None = None  # run directory (checkpoints, config.yaml, logs); None → runs/<name>
    seed: int = 1337  # seeds model init, data sampling and dropout (rank r of a DDP run uses seed + r for dropout)
    resume: bool = False  # continue bit-exactly from <out_dir>/latest, with the config saved there
    init_from: str | None = None  # start from these weights (e.g. weights/gpt2-124M.safetensors) instead of random
    # ---- data ----
    data_source: str = "data/shakespeare"  # text file or folder of .txt files, tokenized when data_dir is missing
    data_dir: str = "data/shakespeare/prepared"  # train.bin / val.bin / meta.json (scripts/prepare_data.py)
    val_fraction: float = 0.1  # share of documents held out for validation when preparing
    # ---- model (a GPTConfig; with init_from, the weights' own config is used, with this dropout) ----
    model: GPTConfig = field(default_factory=_default_model)
    # ---- batch ----
    batch_size: int = 8  # sequences per micro-step on each process (lower it if memory runs out)
    seq_len: int | None = None  # tokens per sequence; None → model.context_length
    total_batch_tokens: int = 65_536  # tokens per optimizer step over all processes; sets gradient accumulation
    # ---- optimizer and schedule (AdamW; decay on 2-D weights only) ----
    max_steps: int = 120  # optimizer steps (≈ 5.5 passes over Shakespeare's 1.42M training tokens)
    learning_rate: float = 6e-4  # peak learning rate, after warmup
    min_lr: float = 6e-5  # floor the cosine decays to
    warmup_steps: int = 12  # linear warmup from learning_rate / warmup_steps
    lr_decay_steps: int | None = None  # cosine ends here; None → max_steps
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    grad_clip: float = 1.0  # clip the global gradient norm (0 → no clipping; the norm is logged either way)
    # ---- evaluation, checkpoints, logging ----
    eval_interval: int = 20  # validate every this many steps (and at step 0 and at the end)
    eval_iters: int = 20  # random validation batches per evaluation
    sample_prompt: str = "ROMEO:"  # a text sample from this prompt is logged at each evaluation
    sample_tokens: int = 48  # length of that sample (0 → no sample)
    ckpt_interval: int = 40  # checkpoint every this many steps (and at the end, and on SIGINT/SIGTERM)
    keep_checkpoints: int = 3  # keep the newest N step_XXXXXX directories
    tensorboard: bool = True  # write TensorBoard event files into the run directory
    wandb_mode: str = "auto"  # auto (online if a W&B API key is set, else offline) | online | offline | disabled
    wandb_project: str = "gpt2-from-scratch"
    progress: bool = True  # tqdm progress bar (loss, tok/s, ETA)
    # ---- system ----
    device: str = "auto"  # auto (CUDA, else refuse: see the CUDA guard) | cuda | cpu | mps
    force_cpu: bool = False  # train on the CPU when there is no CUDA (use a small config: configs/tiny.yaml)
    dtype: str = "auto"  # autocast dtype: auto (bfloat16 on CUDA, float32 elsewhere) | float32 | bfloat16
    compile: bool = True  # torch.compile the model (minutes of compile time; pays off on long GPU runs)
    peak_tflops: float | None = None  # per-device peak for MFU; None → looked up for known GPUs

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = model_config_from(self.model)
        elif isinstance(self.model, str):
            self.model = GPTConfig.from_preset(self.model)
        for name in ("batch_size", "total_batch_tokens", "max_steps", "eval_interval", "eval_iters"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "sample_tokens", "ckpt_interval", "keep_checkpoints"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}")
        if self.ckpt_interval == 0:
            raise ValueError("ckpt_interval must be at least 1 (a checkpoint is also written at the end)")
        if self.keep_checkpoints == 0:
            raise ValueError("keep_checkpoints must be at least 1, or resuming would have nothing to start from")
        if self.seq_len is not None and not 1 <= self.seq_len <= self.model.context_length:
            raise ValueError(f"seq_len must be in [1, model.context_length={self.model.context_length}]")
        if not 0 <= self.min_lr <= self.learning_rate:
            raise ValueError(f"need 0 <= min_lr ({self.min_lr}) <= learning_rate ({self.learning_rate})")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.wandb_mode not in WANDB_MODES:
            raise ValueError(f"wandb_mode must be one of {WANDB_MODES}, got {self.wandb_mode!r}")
        if self.dtype not in TRAIN_DTYPES:
            hint = " (float16 would need a gradient scaler; use bfloat16)" if self.dtype == "float16" else ""
            raise ValueError(f"dtype must be one of {TRAIN_DTYPES}, got {self.dtype!r}{hint}")

    @property
    def block_size(self) -> int:
        """Tokens per training sequence (seq_len, or the model's context length)."""
        return self.seq_len or self.model.context_length

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) if self.out_dir else Path("runs") / self.name

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["model"] = self.model.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        return build_dataclass(cls, d)

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    @classmethod
    def from_yaml(cls, text: str) -> TrainConfig:
        import yaml

        return cls.from_dict(yaml.safe_load(text) or {})

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} not found; the shipped ones are in configs/")
        return cls.from_yaml(path.read_text())


def model_config_from(value: str | dict[str, Any]) -> GPTConfig:
    """The YAML `model:` entry → GPTConfig: a preset name ('124M', 'tiny'), or a mapping of GPTConfig fields that
    may start from a preset, e.g. {preset: tiny, context_length: 64}."""
    if isinstance(value, GPTConfig):
        return value
    if isinstance(value, str):
        return GPTConfig.from_preset(value)
    value = dict(value)
    preset = value.pop("preset", None)
    return GPTConfig.from_preset(preset, **value) if preset else GPTConfig.from_dict(value)


# ---- command line ----------------------------------------------------------------------------------------------------
def parse_bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    t = text.strip().lower()
    if t in ("1", "true", "yes", "on"):
        return True
    if t in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _parse_optional(inner):
    def parse(text: str):
        return None if text.strip().lower() in ("none", "null") else inner(text)

    parse.__name__ = inner.__name__  # argparse names the type in its errors
    return parse


def _field_parser(tp) -> tuple[Any, bool]:
    """A field's type annotation → (parse function, is_bool)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        inner, is_bool = _field_parser(args[0])
        return _parse_optional(inner), is_bool
    if tp is bool:
        return parse_bool, True
    return tp, False


def field_comments(cls) -> dict[str, str]:
    """Each field's trailing `# comment` in the dataclass source, so --help says what the code says."""
    import inspect
    import re

    found = {}
    for line in inspect.getsource(cls).splitlines():
        m = re.match(r"\s+(\w+): [^=]+= .*?  # (.+)$", line)
        if m:
            found[m.group(1)] = m.group(2).strip()
    return found


def _add_field_args(parser: argparse.ArgumentParser, prefix: str, cls, dest_prefix: str) -> None:
    """--field-name VALUE for every dataclass field (--field_name works too), with the field's comment as help;
    bools also take --no-field-name, and an explicit true/false."""
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    for f in dataclasses.fields(cls):
        if f.name == "model":
            continue
        parse, is_bool = _field_parser(hints[f.name])
        dest, flag = dest_prefix + f.name, prefix + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else "see gpt/train/config.py"
        about = (comments.get(f.name, "") + " ").replace("%", "%%")
        hidden = dict(dest=dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        if is_bool:
            kw = dict(dest=dest, nargs="?", const=True, type=parse_bool, default=argparse.SUPPRESS)
            parser.add_argument(f"--{flag}", **kw, metavar="true|false", help=f"{about}(default: {default})")
            parser.add_argument(f"--no-{flag}", action="store_false", **hidden)
            if "_" in f.name:
                parser.add_argument(f"--{prefix}{f.name}", **{**kw, "help": argparse.SUPPRESS})
                parser.add_argument(f"--no-{prefix}{f.name}", action="store_false", **hidden)
        else:
            kw = dict(dest=dest, type=parse, default=argparse.SUPPRESS)
            parser.add_argument(f"--{flag}", **kw, help=f"{about}(default: {default})")
            if "_" in f.name:
                parser.add_argument(f"--{prefix}{f.name}", **{**kw, "help": argparse.SUPPRESS})


@dataclass
class TrainArgs:
    config: TrainConfig  # the config file's values with the command line's overrides applied
    overrides: dict[str, Any]  # only what the command line set, e.g. {"max_steps": 50, "model.n_layer": 2}
    config_path: str | None


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pretrain.py",
        description="Pretrain a GPT-2. Values come from the defaults (the GPT-2 124M run), then --config FILE, "
        "then the flags below. --model PRESET replaces the model; --model.FIELD VALUE sets one GPTConfig field.",
    )
    p.add_argument("--config", default=None, help="YAML file of TrainConfig fields (e.g. configs/tiny.yaml)")
    p.add_argument("--model", dest="model", default=argparse.SUPPRESS, help="model preset: 124M, 355M, mini, tiny…")
    _add_field_args(p, "", TrainConfig, "")
    _add_field_args(p, "model.", GPTConfig, "model.")
    return p


def apply_overrides(cfg: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """A new TrainConfig with CLI overrides applied ('model' preset first, then 'model.FIELD' values, then the rest);
    validation runs again on the result."""
    d = cfg.to_dict()
    if "model" in overrides:
        d["model"] = GPTConfig.from_preset(overrides["model"]).to_dict()
    for key, value in overrides.items():
        if key.startswith("model."):
            d["model"][key.removeprefix("model.")] = value
        elif key != "model":
            d[key] = value
    return TrainConfig.from_dict(d)


def parse_train_args(argv: list[str] | None = None) -> TrainArgs:
    parser = build_arg_parser()
    ns = vars(parser.parse_args(argv))
    config_path = ns.pop("config")
    base = TrainConfig.from_file(config_path) if config_path else TrainConfig()
    try:
        cfg = apply_overrides(base, ns)
    except ValueError as e:
        parser.error(str(e))
    return TrainArgs(cfg, ns, config_path)


# ---- optimisation ----------------------------------------------------------------------------------------------------
def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices (Linear weights, embeddings) only; biases and LayerNorm gains stay undecayed.
    The tied wte/lm_head weight appears once (named_parameters deduplicates shared Parameters)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def configure_optimizer(
    model: torch.nn.Module,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-8,
    device_type: str = "cuda",
) -> torch.optim.AdamW:
    """AdamW over param_groups(); the fused kernel (one launch for all parameters) on CUDA and CPU, where it is
    the fastest implementation; the default (foreach) elsewhere."""
    fused = device_type in ("cuda", "cpu")
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps, fused=fused)


def lr_at(step: int, *, max_lr: float, min_lr: float, warmup_steps: int, decay_steps: int) -> float:
    """Learning rate for optimizer step `step` (0-based): linear warmup to max_lr over warmup_steps (never 0 at
    step 0), then cosine decay to min_lr at decay_steps, then min_lr."""
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= decay_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, decay_steps - warmup_steps)  # 0 → 1
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def grad_accum_steps(total_batch_tokens: int, batch_size: int, seq_len: int, world_size: int = 1) -> int:
    """Micro-steps per optimizer step so that world_size · steps · batch_size · seq_len == total_batch_tokens."""
    per_micro = batch_size * seq_len * world_size
    if total_batch_tokens % per_micro:
        lo = max(per_micro, total_batch_tokens // per_micro * per_micro)
        raise ValueError(
            f"total_batch_tokens ({total_batch_tokens}) must be a multiple of batch_size · seq_len · processes "
            f"= {batch_size} · {seq_len} · {world_size} = {per_micro}; e.g. --total-batch-tokens {lo} or "
            f"{lo + per_micro}, or change --batch-size"
        )
    return total_batch_tokens // per_micro


def flops_per_token(config: GPTConfig, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward) as in nanoGPT / the PaLM appendix: 6·N for the weights
    (N without the position table, which is a lookup; the tied wte counts once, as the output matmul) plus
    12·L·C·T for attention scores and values. GPT-2 124M at T=1024: ≈ 855 MFLOP."""
    n = sum(
        (
            config.padded_vocab_size * config.n_embd,  # wte = lm_head
            config.n_layer * (12 * config.n_embd**2 + 13 * config.n_embd),  # attn + mlp weights, biases, 2 LNs
            2 * config.n_embd,  # ln_f
            -(0 if config.qkv_bias else config.n_layer * 3 * config.n_embd),
        )
    )
    return 6.0 * n + 12.0 * config.n_layer * config.n_embd * seq_len


# Dense peak FLOP/s per device, from NVIDIA's data sheets: (bfloat16 tensor core, TF32 tensor core).
GPU_PEAK_FLOPS = {
    "H100 PCIe": (756e12, 378e12),
    "H100": (989e12, 494e12),
    "H200": (989e12, 494e12),
    "A100": (312e12, 156e12),
}


def device_peak_flops(device: torch.device, dtype: torch.dtype) -> float | None:
    """Peak FLOP/s of one device for this dtype if it is a GPU we know, else None (pass --peak-tflops)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, (bf16, tf32) in GPU_PEAK_FLOPS.items():  # "H100 PCIe" is checked before "H100"
        if key in name:
            return bf16 if dtype == torch.bfloat16 else tf32
    return None


def estimate_mfu(tokens_per_sec: float, flops_per_tok: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: the share of the hardware's peak that the model's useful FLOPs amount to."""
    return tokens_per_sec * flops_per_tok / peak_flops


# ---- devices and processes -------------------------------------------------------------------------------------------
class CudaGuardError(RuntimeError):
    """The run asked for a GPU (the default) but none is usable; the message lists the options."""


def cuda_guard_message() -> str:
    if torch.version.cuda is None:
        why = f"this PyTorch ({torch.__version__}) is a CPU-only build, without CUDA support"
    else:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        why = (
            f"this PyTorch ({torch.__version__}, built for CUDA {torch.version.cuda}) finds no usable GPU"
            + (f" (CUDA_VISIBLE_DEVICES={visible!r})" if visible is not None else "")
            + "; check the driver with `nvidia-smi`"
        )
    return (
        "CUDA is not available, and pretraining is sized for a GPU.\n"
        f"  Why: {why}.\n"
        "  Options:\n"
        "    1. Fix CUDA: install a PyTorch build that matches your driver (https://pytorch.org/get-started/locally/)"
        " and check that `python -c 'import torch; print(torch.cuda.is_available())'` prints True.\n"
        "    2. On an Apple-silicon Mac: add --device mps.\n"
        "    3. Train on the CPU with the CPU-sized config:\n"
        "         python scripts/pretrain.py --config configs/tiny.yaml --force-cpu"
    )


def resolve_device(cfg: TrainConfig, local_rank: int = 0) -> torch.device:
    """The training device. 'auto' means CUDA; without CUDA it raises CudaGuardError unless --force-cpu (or an
    explicit --device cpu / mps) says the CPU or MPS is meant."""
    name = cfg.device.strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank)
        if cfg.force_cpu:
            return torch.device("cpu")
        raise CudaGuardError(cuda_guard_message())
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise CudaGuardError(cuda_guard_message())
        return torch.device("cuda", local_rank) if name == "cuda" else torch.device(name)
    if name == "mps":
        from gpt.utils import mps_available

        if not mps_available():
            raise ValueError("--device mps asked for, but Apple's MPS backend is not available on this machine")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device {cfg.device!r}; use auto, cuda, cpu or mps")


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype:
    """bfloat16 autocast on CUDA by default (and wherever asked for); float32 (no autocast) otherwise."""
    if cfg.dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    return torch.bfloat16 if cfg.dtype == "bfloat16" else torch.float32


@dataclass
class DistInfo:
    rank: int = 0  # this process among all processes
    local_rank: int = 0  # this process on this machine (its GPU index)
    world_size: int = 1
    ddp: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info_from_env() -> DistInfo:
    """torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; a plain `python` run has none of them."""
    if "RANK" not in os.environ:
        return DistInfo()
    return DistInfo(
        rank=int(os.environ["RANK"]),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
        world_size=int(os.environ["WORLD_SIZE"]),
        ddp=True,
    )
