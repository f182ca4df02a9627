"""Prepared token shards → training windows, drawn by a sampler whose state resumes exactly and splits DDP ranks.

    data = load_prepared("data/fineweb-edu/sample-10BT")     # TokenShards: nothing is read yet
    sampler = WindowSampler(data.train, batch_size=64, seq_len=1024, grad_accum=8, seed=1337)
    for x, y in sampler.next_step(): ...                      # 8 micro-batches of (64, 1024) int64 ids

Memory stays flat: TokenShards reads each window with a seek and a read into a fresh array, so resident memory holds
only the batch. A long-lived np.memmap instead keeps every page it has touched mapped, and its resident size climbs
toward the dataset's (nanoGPT issue #287; measured: 236 → 613 MiB over 20,000 batches of a 381 MiB file).
bench/data.py measures both.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.lib.mixins import NDArrayOperatorsMixin

from gpt.data.shards import META_NAME, SPLITS, STATE_NAME, TOKEN_DTYPE
from gpt.data.sources import DataError
from gpt.tokenizer import TOKENIZER_SHA256


class TokenShards(NDArrayOperatorsMixin):
    """The shard files of one split as one (N,) uint16 array that is read on demand, never mapped.

    tokens[a:b] reads exactly those tokens (a slice may span shards: they are one stream); len(tokens), tokens.size,
    tokens.dtype as for an array; np.asarray(tokens), tokens.tolist() and NumPy operators (tokens == 50256) read
    everything, which is fine for Shakespeare (1.4M tokens) and 20 GB for FineWeb-Edu's 10B tokens.
    """

    dtype = np.dtype(TOKEN_DTYPE)
    ndim = 1

    def __init__(self, paths: list[Path], sizes: list[int]):
        self.paths = [Path(p) for p in paths]
        self.starts = np.cumsum([0, *sizes])  # (n_shards + 1,) first token of each shard in the stream, then N
        self.size = int(self.starts[-1])
        self._files: dict[int, object] = {}  # shard index → open file, opened on first use

    @property
    def shape(self) -> tuple[int]:
        return (self.size,)

    def __len__(self) -> int:
        return self.size

    def __repr__(self) -> str:
        return f"TokenShards({self.size:,} tokens in {len(self.paths)} file(s), first {self.paths[0]})"

    def read(self, start: int, stop: int) -> np.ndarray:
        """Tokens [start, stop) as a new (stop - start,) uint16 array."""
        if not 0 <= start <= stop <= self.size:
            raise IndexError(f"tokens [{start}, {stop}) are outside [0, {self.size})")
        out = np.empty(stop - start, dtype=self.dtype)
        i = int(np.searchsorted(self.starts, start, side="right")) - 1
        pos = start
        while pos < stop:
            n = min(stop, int(self.starts[i + 1])) - pos
            f = self._files.get(i) or self._files.setdefault(i, open(self.paths[i], "rb", buffering=0))
            f.seek(2 * (pos - int(self.starts[i])))
            view = memoryview(out[pos - start : pos - start + n]).cast("B")
            if f.readinto(view) != 2 * n:
                raise DataError(f"{self.paths[i]} is shorter than meta.json says; delete the folder and prepare again")
            pos, i = pos + n, i + 1
        return out

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, step = key.indices(self.size)
            return self.read(start, max(start, stop))[::step] if step > 0 else np.asarray(self)[key]
        if isinstance(key, (int, np.integer)):
            index = int(key) + self.size if key < 0 else int(key)
            return self.read(index, index + 1)[0]
        return np.asarray(self)[key]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self.read(0, self.size)
        return whole if dtype is None else whole.astype(dtype)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        inputs = tuple(np.asarray(x) if isinstance(x, TokenShards) else x for x in inputs)
        return getattr(ufunc, method)(*inputs, **kwargs)

    def tolist(self) -> list[int]:
        return self.read(0, self.size).tolist()

    def __getstate__(self) -> dict:  # picklable (file handles are reopened on first read)
        return {**self.__dict__, "_files": {}}

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files = {}


@dataclass
class PreparedData:
    train: TokenShards  # (N_train,) uint16
    val: TokenShards  # (N_val,) uint16
    meta: dict


def _shard_lists(meta: dict) -> dict[str, list[tuple[str, int]]]:
    """{split: [(file, tokens), ...]}; a meta.json from before shards describes one train.bin and one val.bin."""
    if "shards" in meta:
        return {s: [(x["file"], x["tokens"]) for x in meta["shards"][s]] for s in SPLITS}
    return {s: [(f"{s}.bin", meta[s]["tokens"])] for s in SPLITS}


def is_prepared(data_dir: str | Path) -> bool:
    """meta.json and every token file it lists are there (an unreadable meta.json counts: load_prepared says why)."""
    d = Path(data_dir)
    try:
        meta = json.loads((d / META_NAME).read_text(encoding="utf-8"))
        return all((d / f).is_file() for files in _shard_lists(meta).values() for f, _ in files)
    except FileNotFoundError:
        return False
    except (ValueError, KeyError, TypeError):
        return True


def load_prepared(data_dir: str | Path) -> PreparedData:
    """The train and val splits of a prepared directory as TokenShards, after checking meta.json (tokenizer, sizes)."""
    d = Path(data_dir)
    if not (d / META_NAME).is_file():
        if (d / STATE_NAME).is_file():
            raise DataError(f"the preparation of {d} is unfinished; run the same prepare command again to finish it")
        raise DataError(
            f"no prepared data in {d} (needs {META_NAME} and token files); "
            f"run: python scripts/prepare_data.py YOUR_TEXT --out-dir {d}"
        )
    try:
        meta = json.loads((d / META_NAME).read_text(encoding="utf-8"))
        shards = _shard_lists(meta)
    except (ValueError, KeyError, TypeError) as e:
        raise DataError(f"{d / META_NAME} is unreadable ({e}); delete {d} and prepare it again") from None
    if meta.get("tokenizer_sha256") != TOKENIZER_SHA256:
        raise DataError(
            f"{d} was tokenized with a different tokenizer (sha256 {meta.get('tokenizer_sha256')}, expected "
            f"{TOKENIZER_SHA256}); delete it and prepare again with scripts/prepare_data.py"
        )
    splits = {}
    for s in SPLITS:
        for file, tokens in shards[s]:
            size = (d / file).stat().st_size if (d / file).is_file() else None
            if size != 2 * tokens:
                raise DataError(
                    f"{d / file} holds {'no file' if size is None else f'{size // 2} tokens'} but {META_NAME} says "
                    f"{tokens}: the files are from different preparations; delete the folder and prepare again"
                )
        splits[s] = TokenShards([d / f for f, _ in shards[s]], [n for _, n in shards[s]])
    return PreparedData(splits["train"], splits["val"], meta)


# ---- batches ---------------------------------------------------------------------------------------------------------
def _read_windows(tokens, offsets: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Windows of seq_len + 1 tokens at `offsets` → x (B, T) and y (B, T) = x shifted left by one, int64."""
    rows = np.stack([tokens[o : o + seq_len + 1] for o in offsets.tolist()]).astype(np.int64)  # (B, T + 1)
    w = torch.from_numpy(rows)
    return w[:, :-1], w[:, 1:]


def _check_length(tokens, seq_len: int, what: str) -> None:
    if tokens.size < seq_len + 1:  # seq_len + 1 tokens hold exactly one window (inputs and their targets)
        raise DataError(
            f"{what} has {tokens.size} tokens, too few for windows of seq_len + 1 = {seq_len + 1}; "
            "use a shorter seq_len, or more text (or a larger val_fraction for the val split)"
        )


def _epoch_seed(seed: int, epoch: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{epoch}".encode()).digest()[:8], "little") >> 1


class WindowSampler:
    """Training windows for one optimizer step at a time: every token once per epoch, resumable exactly, DDP-split.

    An epoch cuts the token stream (all shards back to back) into non-overlapping windows of seq_len + 1 tokens
    from a random phase in [0, seq_len): window i holds tokens [phase + i·T, phase + i·T + T] (its last token, the
    last target, is the next window's first input), and shuffles their order (torch.randperm seeded by seed and
    epoch). Each step takes the next world_size · grad_accum · batch_size windows of that order, running on into the
    next epoch; rank r's micro-step k reads rows [(r·grad_accum + k)·B, +B) of them. So within an epoch no two
    windows share an input token: the ranks read disjoint data, and a pass covers every token once (offsets drawn
    with replacement, as nanoGPT does, leave ≈ 1/e ≈ 37% of the tokens unseen in a pass's worth of steps and repeat
    others). 1 process with grad_accum 2A reads exactly the rows 2 processes with A read together. The state is
    (seed, epoch, position): the order is recomputed on resume. Memory: 4 bytes per window (39 MB for 10B tokens).
    `tokens` is a TokenShards or any 1-D array. A state saved by the earlier sampler (a generator state: offsets drawn
    with replacement) is continued the old way, so runs checkpointed before this sampler still resume bit-exactly.
    """

    def __init__(
        self,
        tokens,
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
        self.seed, self.epoch, self.position = seed, 0, 0  # windows of this epoch's order used so far
        self.steps = 0  # optimizer steps drawn so far
        self._order: tuple[int, int, torch.Tensor] | None = None  # (epoch, phase, window order)
        self._legacy: torch.Generator | None = None  # set by an old state: offsets drawn with replacement

    def _epoch_order(self) -> tuple[int, torch.Tensor]:
        """This epoch's phase and window order (cached)."""
        if self._order is None or self._order[0] != self.epoch:
            self._order = None  # free the old order before building the new one
            g = torch.Generator().manual_seed(_epoch_seed(self.seed, self.epoch))
            T, N = self.seq_len, self.tokens.size
            phase = int(torch.randint(0, min(T, N - T), (1,), generator=g))  # (N - 1 - phase) // T ≥ 1 windows
            n_windows = (N - 1 - phase) // T
            order = torch.randperm(n_windows, generator=g, dtype=torch.int32 if n_windows < 2**31 else torch.int64)
            self._order = (self.epoch, phase, order)
        return self._order[1], self._order[2]

    def _next_offsets(self, n: int) -> torch.Tensor:
        """The first tokens of the next n windows, (n,) int64."""
        if self._legacy is not None:  # the earlier sampler's way: offsets drawn with replacement
            return torch.randint(0, self.tokens.size - self.seq_len, (n,), generator=self._legacy)
        starts = []
        while n:
            phase, order = self._epoch_order()
            take = order[self.position : self.position + n].to(torch.int64)
            starts.append(phase + take * self.seq_len)
            self.position += take.numel()
            n -= take.numel()
            if self.position == order.numel():
                self.epoch, self.position = self.epoch + 1, 0
        return torch.cat(starts)

    def next_step(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """This rank's grad_accum micro-batches (x, y), each (batch_size, seq_len) int64, for the next step."""
        offsets = self._next_offsets(self.world_size * self.grad_accum * self.batch_size)  # this step's, all ranks
        self.steps += 1
        B, first = self.batch_size, self.rank * self.grad_accum
        return [
            _read_windows(self.tokens, offsets[(first + k) * B : (first + k + 1) * B], self.seq_len)
            for k in range(self.grad_accum)
        ]

    def state_dict(self) -> dict:
        if self._legacy is not None:
            return {"generator": self._legacy.get_state(), "steps": self.steps}
        return {"seed": self.seed, "epoch": self.epoch, "position": self.position, "steps": self.steps}

    def load_state_dict(self, state: dict) -> None:
        self.steps = int(state["steps"])
        if "generator" in state:  # saved by the earlier sampler
            self._legacy = torch.Generator()
            self._legacy.set_state(state["generator"])
            return
        self._legacy = None
        self.seed, self.epoch, self.position = int(state["seed"]), int(state["epoch"]), int(state["position"])


def eval_batches(
    tokens, n_batches: int, batch_size: int, seq_len: int, seed: int, rank: int = 0, world_size: int = 1
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The same n_batches random batches at every call (fixed seed), so successive validation losses compare like
    for like; rank r takes batches r, r + world_size, ... (all ranks together cover each batch once)."""
    _check_length(tokens, seq_len, "the validation split")
    g = torch.Generator().manual_seed(seed)
    offsets = torch.randint(0, tokens.size - seq_len, (n_batches, batch_size), generator=g)
    return [_read_windows(tokens, offsets[i], seq_len) for i in range(rank, n_batches, world_size)]
