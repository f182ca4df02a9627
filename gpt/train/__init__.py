"""Training: the helpers scripts/pretrain.py's flat loop calls.

config.py      TrainConfig, the optimizer, the schedule, MFU, the device guard and DDP setup
checkpoint.py  crash-safe step_XXXXXX checkpoints with a `latest` pointer and exact-resume state
tracking.py    TensorBoard + W&B + metrics.jsonl + loss.png
"""

from gpt.train.config import (
    CudaGuardError,
    DistInfo,
    TrainArgs,
    TrainConfig,
    apply_overrides,
    autocast_dtype,
    build_arg_parser,
    configure_optimizer,
    cuda_guard_message,
    device_peak_flops,
    dist_info_from_env,
    estimate_mfu,
    flops_per_token,
    grad_accum_steps,
    lr_at,
    param_groups,
    parse_train_args,
    resolve_device,
)

__all__ = [
    "CudaGuardError",
    "DistInfo",
    "TrainArgs",
    "TrainConfig",
    "apply_overrides",
    "autocast_dtype",
    "build_arg_parser",
    "configure_optimizer",
    "cuda_guard_message",
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
