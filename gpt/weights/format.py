"""Our weights file: one self-describing .safetensors (the GPTConfig rides in its metadata).

    save_model(model, "weights/gpt2-124M.safetensors")
    model = load_model("weights/gpt2-124M.safetensors", device="cpu", dtype=torch.bfloat16)

load_model also accepts a training checkpoint directory (step_000500/ holding model.safetensors) or a run directory
(runs/<name>/ with a `latest` pointer), so everything that produces weights can be sampled from the same way.
"""

from __future__ import annotations

import json
import re
import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from gpt.config import GPTConfig
from gpt.model import GPT
from gpt.utils import get_dtype

CONFIG_KEY = "gpt_config"  # metadata key holding GPTConfig.to_json()
TIED_KEY = "lm_head.weight"  # stored once, as transformer.wte.weight


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str]) -> Path:
    """Write to a temp file in the same directory, fsync, then rename: a crash leaves the old file or none."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_model(model: GPT, path: str | Path, extra_metadata: dict[str, str] | None = None) -> Path:
    """Save weights (tied head stored once) + config. Unwraps torch.compile / DDP wrappers first."""
    model = unwrap_model(model)
    return save_state_dict(model.config, model.state_dict(), path, extra_metadata)


def save_state_dict(
    config: GPTConfig,
    state_dict: dict[str, torch.Tensor],
    path: str | Path,
    extra_metadata: dict[str, str] | None = None,
) -> Path:
    """Our file from a GPT state dict without building the model (what conversion writes; no extra copy)."""
    tensors = {k: v.detach().contiguous() for k, v in state_dict.items() if k != TIED_KEY}
    metadata = {"format": "pt", CONFIG_KEY: config.to_json(), **(extra_metadata or {})}
    return atomic_save_safetensors(tensors, path, metadata)


def unwrap_model(model: torch.nn.Module) -> GPT:
    """The plain GPT inside DDP(...) and/or torch.compile(...), so saved keys never carry `module.`/`_orig_mod.`."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def latest_checkpoint_dir(run_dir: str | Path, needs: tuple[str, ...] = ("model.safetensors",)) -> Path | None:
    """The checkpoint directory a run directory's `latest` file names (gpt/train/checkpoint.py writes both).
    Checkpoints are renamed into place whole, so when `latest` is empty, garbled or names a checkpoint that is
    gone (what a crash, a full disk or a hand edit can leave), the newest step_NNNNNN directory holding the files
    in `needs` is the answer. None when the run has no such checkpoint."""
    run_dir = Path(run_dir)
    pointer = run_dir / "latest"
    name = pointer.read_text(encoding="utf-8", errors="replace").strip() if pointer.is_file() else ""
    complete = lambda d: all((d / f).is_file() for f in needs)
    if re.fullmatch(r"step_\d{6,}", name) and complete(run_dir / name):
        return run_dir / name
    found = [d for d in run_dir.glob("step_*") if re.fullmatch(r"step_\d{6,}", d.name) and complete(d)]
    return max(found, key=lambda d: int(d.name[5:]), default=None)


def resolve_weights_path(path: str | Path) -> Path:
    """A .safetensors file as given; a checkpoint dir → its model.safetensors; a run dir → its `latest` checkpoint."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        if (path / "model.safetensors").is_file():
            return path / "model.safetensors"
        ckpt = latest_checkpoint_dir(path)
        if ckpt is not None:
            return ckpt / "model.safetensors"
        raise FileNotFoundError(
            f"{path} is a directory with neither model.safetensors nor a `latest` checkpoint pointer; "
            "pass a .safetensors file, a checkpoint directory or a run directory"
        )
    raise FileNotFoundError(
        f"no weights at {path}; convert OpenAI's with `python scripts/load_openai_weights.py --model-size 124M` "
        "or train some with `python scripts/pretrain.py`"
    )


def read_config(path: str | Path) -> GPTConfig:
    """The GPTConfig stored in a weights file's metadata (reads only the header)."""
    path = resolve_weights_path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error type for a garbled or truncated header
        raise ValueError(
            f"{path} is not a readable .safetensors file ({e}); it may be truncated or not a weights file at all: "
            "write it again (save_model, scripts/load_openai_weights.py or scripts/pretrain.py)"
        ) from e
    if CONFIG_KEY not in meta:
        raise ValueError(
            f"{path} has no '{CONFIG_KEY}' metadata, so it was not written by gpt2-from-scratch; "
            "convert Hugging Face / OpenAI files with scripts/load_openai_weights.py --from-dir"
        )
    return GPTConfig.from_dict(json.loads(meta[CONFIG_KEY]))


def read_each_tensor(path: str | Path, transform: Callable, device: str | torch.device = "cpu") -> dict:
    """{key: transform(tensor)} for a safetensors file, opened once per tensor: each tensor's mapped file pages are
    released as soon as its transformed copy exists, instead of the whole mapped file staying resident beside the
    copies (which would double peak memory)."""
    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
    out = {}
    for key in keys:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            out[key] = transform(f.get_tensor(key))
    return out


def load_model(
    path: str | Path, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None, layout: str = "decode"
) -> GPT:
    """Load a saved GPT in eval mode, holding one copy of the weights: the model is built on the meta device
    (no memory), and each tensor read from the file is assigned in place of its placeholder, not copied into it.

    layout "decode" (default): lay the weights out for generate() as gpt.fast_decode.prepare_for_decoding does. On a
    CPU in fp32 that is the file's own layout where gpt/matvec.c's kernel runs (zero-copy, below), else each Linear
    weight is stored column-major (same values, names and shapes; oneDNN and MKL stream it ≈1.2-1.4× faster at
    batch 1; one copy of the weights at load). The model still trains: an optimizer built afterwards keeps its state
    in the same layout (gpt.train.configure_optimizer restores the plain one first). "plain": the file's layout."""
    if layout not in ("decode", "plain"):
        raise ValueError(f"layout must be 'decode' or 'plain', got {layout!r}")
    path = resolve_weights_path(path)
    config = read_config(path)
    dtype = get_dtype(dtype) if dtype is not None else None
    with torch.device("meta"):
        model = GPT(config)
    on_cpu = torch.device(device).type == "cpu"
    cpu_fp32 = on_cpu and (dtype == torch.float32 or (dtype is None and _file_is_fp32(path)))
    from gpt.fast_decode import column_major_pays

    if layout == "decode" and cpu_fp32 and column_major_pays():
        # The decode layout (gpt/fast_decode.py): each matrix but the position table copied column-major as it is
        # read; vectors and wpe stay zero-copy views of the mapped file.
        with safe_open(str(path), framework="pt") as f:
            state = {key: f.get_tensor(key) for key in f.keys()}
        for key, t in state.items():
            if t.is_floating_point():
                state[key] = t.float()  # a no-op for an fp32 file
            if t.dim() == 2 and key != "transformer.wpe.weight":
                state[key] = read_column_major(path, key)
    elif dtype is None and on_cpu:
        # Zero-copy: safetensors maps the file and each tensor is a copy-on-write view of its bytes, so resident
        # memory grows only as weights are used, to one copy (pages shared with the OS file cache); writes stay private.
        with safe_open(str(path), framework="pt") as f:
            state = {key: f.get_tensor(key) for key in f.keys()}
    else:
        state = read_each_tensor(
            path, lambda t: t.to(dtype) if dtype is not None and t.is_floating_point() else t, device
        )
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if k != TIED_KEY]
    if missing or unexpected:
        raise ValueError(f"{path} does not match its own config: missing {missing}, unexpected {unexpected}")
    model.lm_head.weight = model.transformer.wte.weight  # re-tie: assign replaced wte's Parameter
    return model.eval()


def read_column_major(path: Path, key: str, rows_per_read: int = 4096) -> torch.Tensor:
    """A 2-D tensor of a safetensors file as float32, (rows, cols) stored column-major, read a block of rows at a
    time with the file mapped only for that block: peak memory is the copy plus one block, not the copy plus the
    whole mapped tensor (a 124M load peaks at 1.19× the file, not 1.48×)."""
    with safe_open(str(path), framework="pt") as f:
        rows, cols = f.get_slice(key).get_shape()
    out = torch.empty(cols, rows, dtype=torch.float32).t()  # (rows, cols), column-major; copies below convert
    for i in range(0, rows, rows_per_read):
        with safe_open(str(path), framework="pt") as f:
            out[i : i + rows_per_read] = f.get_slice(key)[i : i + rows_per_read]
    return out


def _file_is_fp32(path: Path) -> bool:
    """Whether the file's first tensor is float32 (our files hold one dtype)."""
    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
        return bool(keys) and f.get_slice(keys[0]).get_dtype() == "F32"


# ---- OpenAI's and Hugging Face's checkpoints → our state dict, and back --------------------------------------------
