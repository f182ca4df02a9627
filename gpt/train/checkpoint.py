"""Training checkpoints that survive crashes and resume bit-exactly.

A run directory holds checkpoint directories and a pointer to the newest:

    runs/<name>/step_000500/model.safetensors   weights (gpt/weights/'s format: unwrapped, uncompiled, tied once)
    runs/<name>/step_000500/state.pt            optimizer, step, RNG states, data-sampler state, config (plain dict)
    runs/<name>/latest                          the text "step_000500"

A checkpoint is built in step_000500.tmp/, fsynced, then renamed into place; only then does `latest` move
(atomically, by rename) and old checkpoints get rotated out. A crash at any point leaves `latest` naming a
complete checkpoint. state.pt loads with torch.load(weights_only=True): tensors and plain Python values only.
"""

from __future__ import annotations

import os
import pickle
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gpt.model import GPT
from gpt.train.config import TrainConfig
from gpt.utils import fsync_path
from gpt.weights import load_model, save_model, unwrap_model
from gpt.weights.format import latest_checkpoint_dir

LATEST = "latest"
CKPT_RE = re.compile(r"^step_(\d{6,})$")


def checkpoint_name(step: int) -> str:
    return f"step_{step:06d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoint directories in run_dir, oldest first (temp directories are not listed)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.iterdir() if p.is_dir() and CKPT_RE.match(p.name)]
    return sorted(found, key=lambda p: int(CKPT_RE.match(p.name).group(1)))


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The checkpoint `latest` points to (or, when a crash or a hand edit left `latest` empty, garbled or naming
    a checkpoint that is gone, the newest complete one), or None when the run has none yet."""
    return latest_checkpoint_dir(run_dir, needs=("model.safetensors", "state.pt"))


# ---- RNG states, as tensors and plain values (so weights_only loading accepts them) ----------------------------------
def capture_rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }  # fmt: skip
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state(
        (n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---- what state.pt holds -------------------------------------------------------------------------------------------
def training_state(optimizer, sampler, rng_states: list[dict], config: dict[str, Any], world_size: int) -> dict:
    """Everything but the weights that an exact resume needs: the optimizer's moments, the data sampler's position,
    each rank's RNG states (capture_rng_state()), the run's config (TrainConfig.to_dict()) and the process count."""
    return {
        "optimizer": optimizer.state_dict(),
        "sampler": sampler.state_dict(),
        "rng": rng_states,
        "config": config,
        "world_size": world_size,
    }


def restore_training_state(state: dict[str, Any], optimizer, sampler, rank: int, world_size: int) -> None:
    """Put training_state()'s optimizer, sampler and this rank's RNG states back. A run resumed with another
    process count gives every rank rank 0's RNG states."""
    optimizer.load_state_dict(state["optimizer"])
    sampler.load_state_dict(state["sampler"])
    rng = state["rng"]
    restore_rng_state(rng[rank] if len(rng) == world_size else rng[0])


# ---- save ------------------------------------------------------------------------------------------------------------
def save_checkpoint(
    run_dir: str | Path, step: int, model: torch.nn.Module, state: dict[str, Any], keep: int = 3
) -> Path:
    """Write run_dir/step_{step:06d}/ (model.safetensors + state.pt), atomically; point `latest` at it; delete
    all but the newest `keep` checkpoints. `state` holds everything else needed to resume (plain values/tensors)."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in run_dir.glob("step_*.tmp"):  # left behind by a process killed mid-write
        shutil.rmtree(stale, ignore_errors=True)
    name = checkpoint_name(step)
    final, tmp = run_dir / name, run_dir / f"{name}.tmp"
    tmp.mkdir()
    save_model(unwrap_model(model), tmp / "model.safetensors", extra_metadata={"step": str(step)})
    torch.save({**state, "step": step}, tmp / "state.pt")
    fsync_path(tmp / "state.pt")  # (model.safetensors was fsynced by save_model)
    fsync_path(tmp)
    if final.exists():  # the same step saved again (e.g. a rerun): move the old one aside, never delete it first
        aside = run_dir / f"{name}.old.tmp"
        os.replace(final, aside)
        os.replace(tmp, final)
        shutil.rmtree(aside, ignore_errors=True)
    else:
        os.replace(tmp, final)
    pointer_tmp = run_dir / f".{LATEST}.tmp{os.getpid()}"
    pointer_tmp.write_text(name + "\n", encoding="utf-8")
    fsync_path(pointer_tmp)
    os.replace(pointer_tmp, run_dir / LATEST)
    fsync_path(run_dir)
    for old in list_checkpoints(run_dir)[:-keep]:
        if old.name != name:
            shutil.rmtree(old, ignore_errors=True)
    return final


# ---- load ------------------------------------------------------------------------------------------------------------
def load_checkpoint_state(ckpt_dir: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """state.pt of a checkpoint directory (or of a run directory's `latest`), loaded with weights_only=True."""
    ckpt_dir = Path(ckpt_dir)
    if not (ckpt_dir / "state.pt").is_file():
        latest = latest_checkpoint(ckpt_dir)
        if latest is None:
            raise FileNotFoundError(
                f"{ckpt_dir} is neither a checkpoint directory nor a run with a `latest` checkpoint"
            )
        ckpt_dir = latest
    try:
        return torch.load(ckpt_dir / "state.pt", map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError) as e:  # truncated or overwritten after it was written
        raise ValueError(
            f"{ckpt_dir / 'state.pt'} is damaged ({type(e).__name__}: {str(e)[:200]}); delete {ckpt_dir} "
            "to resume from the newest checkpoint before it"
        ) from None


def check_resumable(saved: TrainConfig, resumed: TrainConfig, run_dir: str | Path) -> None:
    """Raise ValueError when the command line of a --resume changes what the checkpoint's weights are: the model's
    shape (every GPTConfig field but dropout). Found before any weights are read, with the fix in the message."""
    before, after = saved.model.to_dict(), resumed.model.to_dict()
    changed = [k for k in before if k != "dropout" and before[k] != after[k]]
    if changed:
        diff = ", ".join(f"model.{k} {before[k]} → {after[k]}" for k in changed)
        raise ValueError(
            f"--resume continues the model saved in {run_dir}, but the command line changes its shape ({diff}); "
            f"drop those flags, or start a new run from these weights with --init-from {run_dir} --out-dir NEW_DIR"
        )


def load_checkpoint_weights(ckpt_dir: str | Path, model: GPT) -> None:
    """Copy a checkpoint's weights into an existing model (keeps its Parameters, so an optimizer built on them and
    the tied head stay valid). Exact: the values are copied bit for bit."""
    saved = load_model(ckpt_dir, device="cpu")
    target = unwrap_model(model)
    arch = lambda c: {k: v for k, v in c.to_dict().items() if k != "dropout"}  # dropout does not shape weights
    if arch(saved.config) != arch(target.config):
        raise ValueError(f"checkpoint {ckpt_dir} has model config {saved.config}, the run has {target.config}")
    with torch.no_grad():
        target.load_state_dict(saved.state_dict())
