"""TrainConfig: everything a pretraining run needs, as one typed dataclass that round-trips through YAML.

    cfg = TrainConfig.from_file("configs/tiny.yaml")
    cfg = TrainConfig(max_steps=50, model=GPTConfig.from_preset("tiny"))
    (run_dir / "config.yaml").write_text(cfg.to_yaml())

The command line that builds one (flags, --config FILE, --help from the field comments) is gpt/train/cli.py.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpt.config import GPTConfig, build_dataclass
from gpt.utils import utf8_text

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
    hellaswag_interval: int = 0  # HellaSwag (completion style, gpt/eval) every this many steps and at the end; 0 → off
    hellaswag_examples: int = 0  # score the first N validation examples each time; 0 → all 10,042
    hellaswag_data_dir: str = "data/eval"  # holds hellaswag_val.jsonl; downloaded there once if missing
    tensorboard: bool = True  # write TensorBoard event files into the run directory
    wandb_mode: str = "auto"  # auto (online if a W&B API key is set, else offline) | online | offline | disabled
    wandb_project: str = "gpt2-from-scratch"
    progress: bool = True  # tqdm progress bar (loss, tok/s, ETA); not on a terminal: a log line every log_interval
    log_interval: int = 10  # steps between plain log lines when the output is not a terminal (nohup, CI, log files)
    # ---- system ----
    device: str = "auto"  # auto (CUDA, else refuse: see the CUDA guard) | cuda | cpu | mps
    force_cpu: bool = False  # train on the CPU when there is no CUDA (use a small config: configs/tiny.yaml)
    dtype: str = "auto"  # autocast dtype: auto (bfloat16 where its matmuls are native: CUDA, AVX-512 BF16/AMX CPUs;
    # float32 elsewhere) | float32 | bfloat16
    compile: bool = True  # torch.compile the model (minutes to compile; pays off on GPUs; a CPU skips it: slower)
    peak_tflops: float | None = None  # per-device peak for MFU; None → looked up for known GPUs

    def __post_init__(self) -> None:
        if isinstance(self.model, dict):
            self.model = model_config_from(self.model)
        elif isinstance(self.model, str):
            self.model = GPTConfig.from_preset(self.model)
        for name in ("batch_size", "total_batch_tokens", "max_steps", "eval_interval", "eval_iters", "log_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "sample_tokens", "ckpt_interval", "keep_checkpoints", "hellaswag_interval",
                     "hellaswag_examples"):  # fmt: skip
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative, got {getattr(self, name)}")
        if self.ckpt_interval == 0:
            raise ValueError("ckpt_interval must be at least 1 (a checkpoint is also written at the end)")
        if self.keep_checkpoints == 0:
            raise ValueError("keep_checkpoints must be at least 1, or resuming would have nothing to start from")
        # with init_from, the weights' context length is what seq_len must fit (gpt/train/pretrained.py checks it)
        ctx = self.model.context_length if not self.init_from else self.seq_len
        if self.seq_len is not None and not 1 <= self.seq_len <= ctx:
            raise ValueError(f"seq_len must be in [1, model.context_length={self.model.context_length}]")
        if not 0 <= self.min_lr <= self.learning_rate:
            raise ValueError(f"need 0 <= min_lr ({self.min_lr}) <= learning_rate ({self.learning_rate})")
        if not 0.0 < self.val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        self.sample_prompt = utf8_text(self.sample_prompt, "sample_prompt")  # argv's bytes as UTF-8, or an error
        if self.wandb_mode not in WANDB_MODES:
            raise ValueError(f"wandb_mode must be one of {WANDB_MODES}, got {self.wandb_mode!r}")
        if self.dtype not in TRAIN_DTYPES:
            hint = " (float16 would need a gradient scaler; use bfloat16)" if self.dtype == "float16" else ""
            raise ValueError(f"dtype must be one of {TRAIN_DTYPES}, got {self.dtype!r}{hint}")

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) if self.out_dir else Path("runs") / self.name

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["model"] = self.model.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Raises ValueError on an unknown field or a value of the wrong type (max_steps: "ten" in a YAML file)."""
        if not isinstance(d, dict):
            raise ValueError(f"a config is a mapping of TrainConfig fields (max_steps: 50, ...), got {d!r:.80}")
        hints, d = typing.get_type_hints(cls), dict(d)
        for name, value in d.items():
            types = tuple(t for t in typing.get_args(hints.get(name)) or (hints.get(name),) if isinstance(t, type))
            if name == "model" or not types:
                continue
            if float in types and isinstance(value, str):  # YAML 1.1 reads 6e-4 (no dot) as a string
                try:
                    d[name] = value = float(value)
                except ValueError:
                    pass
            ok = isinstance(value, types + ((int,) if float in types else ())) and not (
                isinstance(value, bool) and bool not in types
            )
            if not ok:
                names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
                raise ValueError(f"{name} must be {names}, got {value!r}")
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
        import yaml

        try:
            return cls.from_yaml(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ValueError(f"config file {path} is not valid YAML: {' '.join(str(e).split())}") from None


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
