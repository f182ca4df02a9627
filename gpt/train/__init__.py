"""Training: the helpers scripts/pretrain.py's flat loop calls.

    config.py      TrainConfig: every setting of a run, one typed dataclass that round-trips through YAML
    cli.py         the command line built from it: --max-steps 50, --model.n-layer 2, --config FILE, --help
    optim.py       AdamW parameter groups, the warmup + cosine schedule, gradient accumulation
    device.py      the CUDA guard, the training device, the autocast dtype, torchrun's DDP ranks
    mfu.py         training FLOPs per token and GPU peak FLOP/s → model FLOPs utilisation
    evaluate.py    the validation loss and the text sample at each evaluation
    pretrained.py  a model initialised from pretrained weights (--init-from)
    signals.py     SIGINT/SIGTERM → finish the step, checkpoint, exit; handlers restored after
    checkpoint.py  crash-safe step_XXXXXX checkpoints with a `latest` pointer; the training state for exact resume
    tracking.py    TensorBoard + W&B + metrics.jsonl + loss.png

Import from here (`from gpt.train import TrainConfig, lr_at`); the files may still be split.
"""

from gpt.train.cli import TrainArgs, apply_overrides, build_arg_parser, parse_train_args
from gpt.train.config import TrainConfig
from gpt.train.device import (
    CudaGuardError,
    DistInfo,
    autocast_dtype,
    bf16_warning,
    compile_pays,
    cuda_guard_message,
    dist_info_from_env,
    emulated_matmul_note,
    native_bf16_matmul,
    resolve_device,
)
from gpt.train.mfu import device_peak_flops, estimate_mfu, flops_per_token
from gpt.train.optim import (
    batch_size_for,
    configure_optimizer,
    data_parallel_split,
    grad_accum_steps,
    lr_at,
    param_groups,
)

__all__ = [
    "CudaGuardError",
    "DistInfo",
    "TrainArgs",
    "TrainConfig",
    "apply_overrides",
    "autocast_dtype",
    "bf16_warning",
    "emulated_matmul_note",
    "native_bf16_matmul",
    "batch_size_for",
    "build_arg_parser",
    "compile_pays",
    "configure_optimizer",
    "cuda_guard_message",
    "data_parallel_split",
    "device_peak_flops",
    "dist_info_from_env",
    "estimate_mfu",
    "flops_per_token",
    "grad_accum_steps",
    "lr_at",
    "param_groups",
    "parse_train_args",
    "resolve_device",
]
