"""Documents → uint16 token shards on disk: tokenized on every core, split by document, resumable at any moment.

    meta = prepare_data(["data/shakespeare"], "data/shakespeare/prepared", val_fraction=0.1)   # train.bin + val.bin
    meta = prepare_shards(hub_sources("fineweb-edu", "sample-10BT"), "data/fineweb-edu/sample-10BT",
                          shard_tokens=100_000_000, val_tokens=10_000_000)                       # train_000000.bin ...

Reading, batching and the worker processes: gpt/data/pipeline.py (the output never depends on the number of
processes). Each document gets <|endoftext|> (id 50256) before it. Shards, checkpoints, crash recovery:
gpt/data/shards.py.

The split is by document, so no text appears in both halves, and it is deterministic: document i (in reading order)
goes to val exactly when floor((i + 1)·f) > floor(i·f), i.e. every (1/f)-th document, until the val split holds
val_tokens tokens (when given); then every document goes to train. With local inputs, a document with the same text
as an earlier one (a copy in another file: a hash of its text) goes to the same split as that one and takes no place
in the count, so a duplicated document cannot be in both halves. (Hub corpora come deduplicated; remembering each of
their millions of documents would make the saved state huge.) max_tokens stops before the first document that
starts once that many tokens are written.
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

from gpt.data.pipeline import (
    Batch,
    Fetcher,
    Progress,
    Workers,
    default_processes,
    encoded,
    read_batches,
)
from gpt.data.shards import (
    DISK_FULL_ERRNOS,
    META_NAME,
    SPLITS,
    STATE_NAME,
    ShardWriter,
    check_free_space,
    disk_full_error,
    new_split_state,
    read_json,
    remove_parts,
    write_json_atomic,
)
from gpt.data.sources import DataError, Source, list_source_files
from gpt.tokenizer import EOT_ID, EOT_TOKEN, TOKENIZER_SHA256, VOCAB_SIZE
from gpt.utils import fsync_path

CHECKPOINT_SECONDS = 10.0  # also at every finished shard
SMALL_INPUT_BYTES = 16 << 20  # below this, one process: under a second of work (workers start in 1-2 s off Linux)
BYTES_PER_TOKEN = 3  # rough input bytes per token, for estimates (FineWeb-Edu: 30.1 GB of Parquet → 10B tokens)


def is_val_document(index: int, val_fraction: float) -> bool:
    """Every (1/f)-th document goes to val: exactly floor(n·f) of the first n documents, spread evenly. f is taken
    as the decimal it is written as, in exact integer arithmetic: in floats 100 × 0.29 = 28.999999999999996, which
    would put 28 of the first 100 documents in val instead of 29."""
    num, den = _exact_fraction(val_fraction)
    return (index + 1) * num // den > index * num // den


@functools.lru_cache(maxsize=8)
def _exact_fraction(value: float) -> tuple[int, int]:
    f = Fraction(repr(float(value)))  # the shortest decimal that reads back as this float: 0.29 → 29/100
    return f.numerator, f.denominator


# ---- the preparation -------------------------------------------------------------------------------------------------
def _start_state(out_dir: Path, settings: dict, n_sources: int) -> dict:
    """The saved state of an unfinished preparation with these settings, or a fresh one."""
    path = out_dir / STATE_NAME
    if not path.is_file():
        return {
            "settings": settings, "position": [0, 0], "documents": 0, "doc_split": None, "tokens": 0,
            "counts": {s: {"tokens": 0, "documents": 0} for s in SPLITS}, "val_documents": [],
            "splits": {s: new_split_state() for s in SPLITS}, "source_bytes": [None] * n_sources, "done": False,
            "document_splits": {},
        }  # fmt: skip
    state = read_json(path)
    if state.get("settings") != settings:
        raise DataError(
            f"{out_dir} holds an unfinished preparation of other inputs or settings; run the command that started it "
            f"again to finish it, or delete {out_dir}"
        )
    return state


def _assign_splits(batch: Batch, lengths: list[int], state: dict, cfg: dict) -> tuple[np.ndarray, bool]:
    """Each piece's split (True = val) in reading order, updating the counts; stops (True) before the first document
    that starts once max_tokens tokens are written. Returns the flags of the pieces to keep."""
    counts, is_val = state["counts"], []
    seen = state.setdefault("document_splits", {})  # document key → its split (a state from before has none)
    for start, n, name, key in zip(batch.starts, lengths, batch.names, batch.keys):
        if start:
            if cfg["max_tokens"] is not None and state["tokens"] >= cfg["max_tokens"]:
                return np.array(is_val, dtype=bool), True
            if key in seen:  # a copy of an earlier document: the same split, and no place in the count
                val = seen[key] == "val"
            else:
                val = is_val_document(state["documents"], cfg["val_fraction"])
                val = val and (cfg["val_tokens"] is None or counts["val"]["tokens"] < cfg["val_tokens"])
                state["documents"] += 1
                if key is not None:
                    seen[key] = "val" if val else "train"
            state["doc_split"] = "val" if val else "train"
            counts[state["doc_split"]]["documents"] += 1
            if val:
                state["val_documents"].append(name)
        is_val.append(state["doc_split"] == "val")
        counts[state["doc_split"]]["tokens"] += n
        state["tokens"] += n
    return np.array(is_val, dtype=bool), False


def _check_splits(counts: dict, n_files: int, val_fraction: float) -> None:
    n_docs = counts["train"]["documents"] + counts["val"]["documents"]
    if n_docs == 0:
        raise DataError(f"the input ({n_files} file(s)) holds no text; pass files that hold text")
    if counts["train"]["documents"] == 0 or counts["val"]["documents"] == 0:
        empty = "train" if counts["train"]["documents"] == 0 else "val"
        raise DataError(
            f"the {empty} split is empty: {n_docs} document(s) with val_fraction {val_fraction} put "
            f"{counts['val']['documents']} in val. Use a val_fraction of at least 1/{n_docs} (and below 1), "
            f"or give more documents (more files, or separate documents inside a file with lines `{EOT_TOKEN}`)"
        )


def _check_disk(out_dir: Path, sources: Sequence[Source], expected: int, done: int, cfg: dict) -> None:
    """Free space for the tokens still to write (2 bytes each) and the downloads still to make, estimated."""
    approx, max_tokens = cfg["approx_tokens"], cfg["max_tokens"]
    missing = [s for s in sources if s.fetch and not s.path.is_file()]
    downloads = sum(s.size or (approx or 0) * BYTES_PER_TOKEN // len(sources) for s in missing)
    if max_tokens and approx:  # a slice reads only the first files
        downloads = min(downloads, int(downloads * max_tokens / approx) + downloads // 8)
    check_free_space(
        out_dir, 2 * max(0, expected - done) + downloads,
        f"≈{2 * expected / 1e9:.1f} GB of tokens + ≈{downloads / 1e9:.1f} GB of downloads",
    )  # fmt: skip


def prepare_shards(
    sources: Sequence[Source],
    out_dir: str | Path,
    *,
    val_fraction: float = 0.1,
    val_tokens: int | None = None,
    shard_tokens: int | None = None,
    max_tokens: int | None = None,
    processes: int | None = None,
    approx_tokens: int | None = None,
    text_column: str = "text",
    chunk_chars: int = 1 << 20,
    batch_chars: int = 1 << 20,
    delete_downloads: bool = False,
    inputs: Sequence[str] | None = None,
    progress: bool = True,
) -> dict:
    """Tokenize `sources` into out_dir (layout: gpt/data/shards.py); return the meta dict (also in meta.json).

    val_fraction: every (1/f)-th document goes to val; val_tokens: ...until val holds this many tokens (None: no cap);
    shard_tokens: tokens per shard (None: one train.bin and one val.bin); max_tokens: stop before the first document
    that starts after this many tokens; processes: tokenizer processes (None: all cores; 1 for local inputs under
    16 MB); approx_tokens: the expected total, for the ETA and the disk-space check; delete_downloads: remove each
    downloaded file once it is read and checkpointed. Calling it again on an unfinished out_dir continues the work
    (same settings only); on a finished one with the same settings it returns the saved meta.
    Raises DataError (bad input, other settings in out_dir, disk full, an empty split).
    """
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    for name, value in (("shard_tokens", shard_tokens), ("max_tokens", max_tokens), ("val_tokens", val_tokens)):
        if value is not None and value < 1:
            raise DataError(f"{name} must be a positive number of tokens, got {value}")
    out_dir = Path(out_dir)
    settings = {
        "sources": [s.name for s in sources], "sizes": [None if s.fetch else s.size for s in sources],
        "val_fraction": val_fraction, "val_tokens": val_tokens, "shard_tokens": shard_tokens,
        "max_tokens": max_tokens, "text_column": text_column, "chunk_chars": chunk_chars,
        "tokenizer_sha256": TOKENIZER_SHA256,
    }  # fmt: skip
    if (out_dir / META_NAME).is_file():
        meta = read_json(out_dir / META_NAME)
        if meta.get("settings") == settings:
            (out_dir / STATE_NAME).unlink(missing_ok=True)  # left if killed between writing meta.json and this
            return meta  # already prepared by the same command
        raise DataError(
            f"{out_dir} already holds data prepared from other inputs or settings; prepare into another directory "
            f"(--out-dir), or delete {out_dir} to prepare it again"
        )
    state = _start_state(out_dir, settings, len(sources))
    cfg = {"max_tokens": max_tokens, "val_fraction": val_fraction, "val_tokens": val_tokens}
    cfg["approx_tokens"] = approx_tokens
    local_bytes = sum(s.size or 0 for s in sources if not s.fetch)
    expected = max_tokens or approx_tokens or local_bytes // BYTES_PER_TOKEN
    _check_disk(out_dir, sources, expected, state["tokens"], cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob(".*.json.tmp*"):  # an atomic write a kill interrupted
        stale.unlink()
    if processes is None:
        processes = 1 if not any(s.fetch for s in sources) and local_bytes < SMALL_INPUT_BYTES else default_processes()

    state_path = out_dir / STATE_NAME
    writers: dict[str, ShardWriter] = {}
    workers, bar = None, None

    def checkpoint(position) -> None:
        for w in writers.values():
            w.sync()
        state.update(position=list(position), splits={s: w.state() for s, w in writers.items()})
        write_json_atomic(state_path, state)
        if any([w.publish() for w in writers.values()]):
            fsync_path(out_dir)
        for s in sources[: position[0]]:  # read to its end and checkpointed: a download is no longer needed
            if delete_downloads and s.fetch and s.path.is_file():
                s.path.unlink()

    try:
        if processes > 1 and not state["done"]:
            workers = Workers(processes)  # first: on Linux they fork from this process before it opens files or threads
        writers = {s: ShardWriter(out_dir, s, shard_tokens, state["splits"][s]) for s in SPLITS}
        bar = Progress(expected or None, state["tokens"], progress)
        if not state["done"]:
            if progress:
                again = f", continuing after {state['tokens']:,} tokens" if state["tokens"] else ""
                print(f"tokenizing {len(sources)} file(s) into {out_dir} with {processes} process(es){again}",
                      file=sys.stderr, flush=True)  # fmt: skip
            fetcher = Fetcher(sources, prefetch=max_tokens is None)  # a slice may need only the first file
            local = not any(s.fetch for s in sources)  # remember documents' keys (see the module docstring)
            batches = read_batches(
                sources, fetcher, state["position"], batch_chars, text_column, chunk_chars, state["source_bytes"], local
            )
            last_checkpoint = time.perf_counter()
            for batch, tokens, lengths in encoded(batches, workers, 2 * processes):
                is_val, stopped = _assign_splits(batch, lengths, state, cfg)
                mask = np.repeat(is_val, lengths[: is_val.size])
                tokens = tokens[: mask.size]
                writers["val"].append(tokens[mask])
                writers["train"].append(tokens[~mask])
                bar.update(int(mask.size), sum(len(w.shards) for w in writers.values()))
                if stopped:
                    break
                due = time.perf_counter() - last_checkpoint > CHECKPOINT_SECONDS
                if due or any(w.pending for w in writers.values()):
                    checkpoint(batch.end)
                    last_checkpoint = time.perf_counter()
            _check_splits(state["counts"], len(sources), val_fraction)
            for w in writers.values():
                w.finish()
            state["done"] = True
            checkpoint((len(sources), 0))
        else:  # killed after its last checkpoint: the writers recovered the files; drop the empty parts they opened
            for w in writers.values():
                w.finish()
        bar.close()
        sizes = state["source_bytes"]
        meta = {
            "format": "uint16 GPT-2 token ids; <|endoftext|> before every document",
            "tokenizer": "gpt2",
            "tokenizer_sha256": TOKENIZER_SHA256,
            "vocab_size": VOCAB_SIZE,
            "eot_id": EOT_ID,
            "dtype": "uint16",
            "val_fraction": val_fraction,
            "train": state["counts"]["train"],
            "val": state["counts"]["val"],
            "inputs": list(inputs) if inputs is not None else [s.name for s in sources],
            "files": len(sources),
            "bytes": sum(b or 0 for b in state["source_bytes"]),
            "val_documents": state["val_documents"],
            "shards": {s: w.shards for s, w in writers.items()},
            "sources": [{"name": s.name, "bytes": b, "sha256": s.sha256} for s, b in zip(sources, sizes)],
            "settings": settings,
        }
        write_json_atomic(out_dir / META_NAME, meta)
        state_path.unlink()
        fsync_path(out_dir)
        return meta
    except OSError as e:
        if e.errno in DISK_FULL_ERRNOS:
            raise disk_full_error(e, out_dir, sum(len(w.shards) for w in writers.values())) from None
        raise
    finally:
        if bar is not None:
            bar.close()
        if workers is not None:
            workers.close()
        for w in writers.values():
            w.close()
        if not state_path.is_file() and not (out_dir / META_NAME).is_file():
            remove_parts(out_dir)  # stopped before its first checkpoint: nothing worth keeping


def prepare_data(
    inputs: Sequence[str | Path] | str | Path,
    out_dir: str | Path,
    val_fraction: float = 0.1,
    *,
    chunk_chars: int = 1 << 20,
    processes: int | None = None,
    progress: bool = True,
) -> dict:
    """Tokenize text files/directories of .txt files into out_dir/{train,val}.bin + meta.json; return the meta dict.

    Documents are whole files, or the parts of a file separated by lines that read exactly `<|endoftext|>`. This is
    the one-shard case of prepare_shards: streamed (memory stays at about one chunk), resumable, deterministic.
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    files = list_source_files(inputs, (".txt",))
    return prepare_shards(
        [Source.local(p) for p in files], out_dir, val_fraction=val_fraction, chunk_chars=chunk_chars,
        processes=processes, inputs=[str(Path(p).resolve()) for p in inputs], progress=progress,
    )  # fmt: skip
