"""Token shards on disk, written so that a preparation killed at any moment continues where it stopped.

Layout of a prepared directory:

    meta.json                     counts, the shard list (file, tokens, sha256), tokenizer hash, sources, settings
    train_000000.bin ...          uint16 GPT-2 token ids, shard_tokens each (the last one shorter)
    val_000000.bin                the validation documents
or, unsharded (shard_tokens None, e.g. the Shakespeare corpus): train.bin + val.bin, the one-shard case.

While a preparation runs, each split appends to a hidden part file `.train_000003.bin.part`; prep_state.json records,
at each checkpoint, where reading stopped and how many tokens each part held then. The protocol:

  1. a part that reaches shard_tokens is fsync'd, hashed and closed (not renamed yet: "pending");
  2. checkpoint: fsync the open parts, then write prep_state.json atomically (tmp + fsync + os.replace); it lists the
     pending shards as finished;
  3. rename the pending parts to their final names.

A restart reads prep_state.json, completes the renames of step 3 (a crash between 2 and 3), truncates each open part
to the length the state records (bytes written after the last checkpoint are dropped) and reads on from the recorded
position. A finished shard is never opened for writing again, and no half-written shard ever has a final name.
meta.json is written last; its presence means "complete".
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import numpy as np

from gpt.data.sources import DataError
from gpt.tokenizer import sha256_file
from gpt.utils import fsync_path

TOKEN_DTYPE = np.uint16  # every GPT-2 id < 50257 < 2**16
META_NAME = "meta.json"
STATE_NAME = "prep_state.json"
SPLITS = ("train", "val")
DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def shard_name(split: str, index: int, shard_tokens: int | None) -> str:
    return f"{split}.bin" if shard_tokens is None else f"{split}_{index:06d}.bin"


def write_json_atomic(path: Path, obj: dict) -> None:
    """tmp file + fsync + os.replace: the file holds the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


class ShardWriter:
    """Appends one split's tokens to numbered shards of shard_tokens tokens each (one file when shard_tokens is None).

    `state` (a dict kept inside prep_state.json) holds the finished shards [{file, tokens, sha256}] and the tokens in
    the open part; creating a writer from a saved state recovers the files to exactly that state.
    """

    def __init__(self, out_dir: Path, split: str, shard_tokens: int | None, state: dict):
        self.out_dir, self.split, self.shard_tokens = out_dir, split, shard_tokens
        self.shards: list[dict] = state["shards"]
        self.part_tokens: int = state["part_tokens"]
        self.pending: list[int] = []  # shards finished since the last checkpoint: renamed after it
        self._recover()
        self.file = open(self._part(len(self.shards)), "r+b")
        self.file.truncate(self.part_tokens * 2)  # drop what was written after the last checkpoint
        self.file.seek(self.part_tokens * 2)

    def _part(self, index: int) -> Path:
        return self.out_dir / f".{self.split}_{index:06d}.bin.part"  # numbered even when the final name is not

    def _recover(self) -> None:
        for i, shard in enumerate(self.shards):
            final, part = self.out_dir / shard["file"], self._part(i)
            if final.is_file() and final.stat().st_size == 2 * shard["tokens"]:
                part.unlink(missing_ok=True)
            elif part.is_file() and sha256_file(part) == shard["sha256"]:  # killed between checkpoint and rename
                os.replace(part, final)
            else:
                raise DataError(
                    f"{final} is missing or damaged, though a checkpoint of this preparation lists it as finished; "
                    f"delete {self.out_dir} and prepare again"
                )
        part = self._part(len(self.shards))
        size = part.stat().st_size if part.is_file() else 0
        if size < 2 * self.part_tokens:
            raise DataError(f"{part} is shorter than its last checkpoint; delete {self.out_dir} and prepare again")
        if not part.is_file():
            part.touch()
        for stale in self.out_dir.glob(f".{self.split}*.part"):  # parts begun after the last checkpoint
            if stale != part:
                stale.unlink()

    def append(self, tokens: np.ndarray) -> None:
        """Write (N,) uint16 tokens; a shard that fills up becomes pending and a new part opens."""
        while tokens.size:
            room = tokens.size if self.shard_tokens is None else self.shard_tokens - self.part_tokens
            head, tokens = tokens[:room], tokens[room:]
            self.file.write(head.tobytes())
            self.part_tokens += head.size
            if self.part_tokens == self.shard_tokens:
                self._close_part()

    def _close_part(self) -> None:
        index = len(self.shards)
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        shard = {
            "file": shard_name(self.split, index, self.shard_tokens),
            "tokens": self.part_tokens,
            "sha256": sha256_file(self._part(index)),
        }
        self.shards.append(shard)
        self.pending.append(index)
        self.part_tokens = 0
        self.file = open(self._part(index + 1), "w+b")

    def finish(self) -> None:
        """The last part becomes a (shorter) shard; an empty one only if the split has no shard at all."""
        if self.part_tokens or not self.shards:
            self._close_part()
        self.file.close()
        self._part(len(self.shards)).unlink(missing_ok=True)

    def sync(self) -> None:
        if not self.file.closed:
            self.file.flush()
            os.fsync(self.file.fileno())

    def state(self) -> dict:
        return {"shards": self.shards, "part_tokens": self.part_tokens}

    def publish(self) -> bool:
        """Rename the pending parts to their final names (after a checkpoint that lists them); True if any."""
        for index in self.pending:
            os.replace(self._part(index), self.out_dir / self.shards[index]["file"])
        renamed, self.pending = bool(self.pending), []
        return renamed

    def close(self) -> None:
        self.file.close()


def new_split_state() -> dict:
    return {"shards": [], "part_tokens": 0}


def remove_parts(out_dir: Path) -> None:
    """Delete the hidden part files and the state (a preparation that never reached a checkpoint)."""
    for p in out_dir.glob(".*.part"):
        p.unlink()
    (out_dir / STATE_NAME).unlink(missing_ok=True)
    fsync_path(out_dir)


def check_free_space(out_dir: Path, needed_bytes: int, what: str) -> None:
    """Refuse to start when the disk holding out_dir has less free space than needed_bytes (an estimate)."""
    existing = next(p for p in (out_dir.absolute(), *out_dir.absolute().parents) if p.exists())
    free = shutil.disk_usage(existing).free
    if free < needed_bytes:
        raise DataError(
            f"{out_dir} is on a disk with {free / 1e9:.1f} GB free, but this preparation needs about "
            f"{needed_bytes / 1e9:.1f} GB ({what}); free some space, choose another --out-dir (and --cache-dir), "
            "or prepare a slice with --max-tokens"
        )


def disk_full_error(e: OSError, out_dir: Path, finished: int) -> DataError:
    return DataError(
        f"the disk is full ({e.strerror}); {finished} finished shard(s) in {out_dir} are kept. Free some space and run "
        "the same command again: it continues from its last checkpoint"
    )
