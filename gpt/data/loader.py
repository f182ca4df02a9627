"""Prepared token files → training windows, drawn by a sampler whose state resumes exactly and splits DDP ranks.

data = load_prepared("data/shakespeare/prepared")        # np.memmap views: nothing is read yet
sampler = WindowSampler(data.train, batch_size=8, seq_len=256, grad_accum=4, seed=1337)
for x, y in sampler.next_step(): ...                      # 4 micro-batches of (8, 256) int64 ids
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from gpt.data.prepare import META_NAME, SPLITS, TOKEN_DTYPE, DataError
from gpt.tokenizer import TOKENIZER_SHA256


def is_prepared(data_dir: str | Path) -> bool:
    d = Path(data_dir)
    return all((d / n).is_file() for n in (META_NAME, "train.bin", "val.bin"))


@dataclass
class PreparedData:
    train: np.memmap  # (N_train,) uint16
    val: np.memmap  # (N_val,) uint16
    meta: dict


def load_prepared(data_dir: str | Path) -> PreparedData:
    """Open train.bin / val.bin as read-only memmaps after checking meta.json (tokenizer, sizes)."""
    d = Path(data_dir)
    if not is_prepared(d):
        raise DataError(
            f"no prepared data in {d} (needs {META_NAME}, train.bin, val.bin); "
            f"run: python scripts/prepare_data.py YOUR_TEXT --out-dir {d}"
        )
    meta = json.loads((d / META_NAME).read_text())
    if meta.get("tokenizer_sha256") != TOKENIZER_SHA256:
        raise DataError(
            f"{d} was tokenized with a different tokenizer (sha256 {meta.get('tokenizer_sha256')}, expected "
            f"{TOKENIZER_SHA256}); delete it and prepare again with scripts/prepare_data.py"
        )
    arrays = {}
    for s in SPLITS:
        arrays[s] = np.memmap(d / f"{s}.bin", dtype=TOKEN_DTYPE, mode="r")
        if arrays[s].size != meta[s]["tokens"]:
            raise DataError(
                f"{d / (s + '.bin')} holds {arrays[s].size} tokens but {META_NAME} says {meta[s]['tokens']}: "
                "the files are from different preparations; delete the folder and prepare again"
            )
    return PreparedData(arrays["train"], arrays["val"], meta)


# ---- batches ---------------------------------------------------------------------------------------------------------
def _read_windows(tokens: np.ndarray, offsets: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows of seq_len + 1 tokens at `offsets` → x (B, T) and y (B, T) = x shifted left by one, int64."""
    rows = np.stack([tokens[o : o + seq_len + 1] for o in offsets.tolist()]).astype(np.int64)  # (B, T + 1)
    w = torch.from_numpy(rows)
    return w[:, :-1], w[:, 1:]


def _check_length(tokens: np.ndarray, seq_len: int, what: str) -> None:
    if tokens.size < seq_len + 2:
        raise DataError(
            f"{what} has {tokens.size} tokens, too few for windows of seq_len + 1 = {seq_len + 1}; "
            "use a shorter seq_len, or more text (or a larger val_fraction for the val split)"
        )


class WindowSampler:
    """Random windows from a token array, for one optimizer step at a time, with a state that resumes exactly.

    All ranks draw the same global batch of world_size · grad_accum · batch_size offsets from one generator seeded
    identically everywhere, and each rank reads only its own rows: rank r's micro-step k gets rows
    [(r·grad_accum + k)·B, +B). So the ranks read disjoint data, the sampler's whole state is one generator state
    (equal on every rank), and 1 process with grad_accum 2A sees exactly the rows 2 processes with A see together.
    Windows are sampled with replacement (as nanoGPT does); over many steps every token is visited equally often.
    """

    def __init__(
        self,
        tokens: np.ndarray,
        batch_size: int,
        seq_len: int,
        grad_accum: int = 1,
        seed: int = 1337,
        rank: int = 0,
        world_size: int = 1,
    ):
        _check_length(tokens, seq_len, "the training split")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}")
        self.tokens, self.batch_size, self.seq_len = tokens, batch_size, seq_len
        self.grad_accum, self.rank, self.world_size = grad_accum, rank, world_size
        self.generator = torch.Generator().manual_seed(seed)
        self.steps = 0  # optimizer steps drawn so far

    def next_step(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's grad_accum micro-batches (x, y), each (batch_size, seq_len) int64, for the next step."""
        n_rows = self.world_size * self.grad_accum * self.batch_size
        offsets = torch.randint(0, self.tokens.size - self.seq_len, (n_rows,), generator=self.generator)
        self.steps += 1
        B, first = self.batch_size, self.rank * self.grad_accum
        return [
            _read_windows(self.tokens, offsets[(first + k) * B : (first + k + 1) * B], self.seq_len)
            for k in range(self.grad_accum)
        ]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.steps = int(state["steps"])


def eval_batches(
    tokens: np.ndarray, n_batches: int, batch_size: int, seq_len: int, seed: int, rank: int = 0, world_size: int = 1
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The same n_batches random batches at every call (fixed seed), so successive validation losses compare like
    for like; rank r takes batches r, r + world_size, ... (all ranks together cover each batch once)."""
    _check_length(tokens, seq_len, "the validation split")
    g = torch.Generator().manual_seed(seed)
    offsets = torch.randint(0, tokens.size - seq_len, (n_batches, batch_size), generator=g)
    return [_read_windows(tokens, offsets[i], seq_len) for i in range(rank, n_batches, world_size)]
