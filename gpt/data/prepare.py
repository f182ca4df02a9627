"""Text → token ids on disk, and training batches drawn from them with a sampler that can resume exactly.

    meta = prepare_data(["data/shakespeare"], "data/shakespeare/prepared", val_fraction=0.1)
    data = load_prepared("data/shakespeare/prepared")        # np.memmap views: nothing is read yet
    sampler = WindowSampler(data.train, batch_size=8, seq_len=256, grad_accum=4, seed=1337)
    for x, y in sampler.next_step(): ...                      # 4 micro-batches of (8, 256) int64 ids

On disk: train.bin / val.bin hold uint16 GPT-2 token ids (every id < 50257 < 2**16), each document preceded by
<|endoftext|>, back to back; meta.json holds the counts and the tokenizer's fingerprint. Documents are whole files,
or the parts of a file separated by lines that read exactly `<|endoftext|>`. The split is by document, so no text
appears in both halves, and it is deterministic: document i (in sorted file order) goes to val exactly when
floor((i + 1)·f) > floor(i·f), i.e. every (1/f)-th document.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from gpt.tokenizer import EOT_ID, EOT_TOKEN, TOKENIZER_SHA256, VOCAB_SIZE, get_tokenizer
from gpt.utils import fsync_path, progress_bar

TOKEN_DTYPE = np.uint16
META_NAME = "meta.json"
SPLITS = ("train", "val")


class DataError(ValueError):
    """Input that cannot become training data (missing, empty, binary, not UTF-8, too small); says how to fix it."""


# ---- reading text ----------------------------------------------------------------------------------------------------
def list_text_files(inputs: Sequence[str | Path]) -> list[Path]:
    """Files as given, plus every *.txt under each directory (recursive), in a stable sorted order."""
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    files: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*.txt") if p.is_file())
            if not found:
                raise DataError(f"directory {path} holds no .txt files; pass text files or a folder of .txt files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"input {path} does not exist; pass text files and/or directories of .txt files")
    if not files:
        raise DataError("no input given; pass text files and/or directories of .txt files")
    return files


def _check_not_binary(path: Path) -> None:
    with open(path, "rb") as f:
        head = f.read(8192)
    if b"\x00" in head:
        raise DataError(f"{path} looks binary (it contains NUL bytes); pass UTF-8 text files only")


# A place inside a line where GPT-2's pre-tokenizer always splits: a non-space, then a space and a non-space ("a| b").
# No piece holds a space after its first character, so the piece before ends there in any case; and a space before a
# non-space always starts a new piece (" word", " 42", " !"). Cutting there changes no token.
_SAFE_INLINE_CUT = re.compile(r"(?<=\S) (?=\S)")


def iter_text_chunks(
    path: Path, chunk_chars: int = 1 << 20, max_chunk_chars: int | None = None
) -> Iterator[str | None]:
    """Stream a UTF-8 file as text chunks of about chunk_chars characters, never holding the whole file.
    Yields None at each document boundary (a line that reads exactly `<|endoftext|>`).

    Chunks end only where cutting cannot change GPT-2's tokenization: after a single '\\n' that follows a
    non-space character and precedes a line starting with a non-space character (GPT-2's pre-tokenizer always
    splits there; after '\\n\\n' it would not, because '\\n\\n' is one token). Text with no such place for
    max_chunk_chars (default 8 × chunk_chars) characters, such as one giant line, is cut inside a line before the
    last " word" (a space between two non-spaces), which is just as safe; only text with neither is cut at an arbitrary
    point (a possible one-token difference there, never data loss).
    """
    _check_not_binary(path)
    max_chunk_chars = max_chunk_chars or 8 * chunk_chars
    buf: list[str] = []
    size = 0
    ends_safely = False  # buf ends with one '\n' after a non-space character
    try:
        with open(path, encoding="utf-8", errors="strict") as f:  # universal newlines: \r\n → \n
            while line := f.readline(chunk_chars):  # at most chunk_chars characters, even for one giant line
                if "\x00" in line:
                    raise DataError(f"{path} contains NUL characters, so it is probably binary; pass text files")
                if line.rstrip("\n") == EOT_TOKEN:
                    if buf:
                        yield "".join(buf)
                    buf, size, ends_safely = [], 0, False
                    yield None
                    continue
                starts_solid = not line[0].isspace()
                if buf and size >= chunk_chars and ends_safely and starts_solid:
                    yield "".join(buf)
                    buf, size = [], 0
                elif size >= max_chunk_chars:  # no line break to cut at: cut before the last " word" instead
                    text = "".join(buf) + line
                    cut = max((m.start() for m in _SAFE_INLINE_CUT.finditer(text)), default=len(text) - len(line))
                    yield text[:cut]
                    line = text[cut:]
                    buf, size = [], 0
                buf.append(line)
                size += len(line)
                ends_safely = line.endswith("\n") and len(line) >= 2 and not line[-2].isspace()
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path} is not UTF-8 text ({e.reason} near byte {e.start} of a read block); convert it first, "
            f"e.g. `iconv -f latin1 -t utf-8 {path} > fixed.txt`, or leave it out"
        ) from None
    if buf:
        yield "".join(buf)


# ---- preparing token files -------------------------------------------------------------------------------------------
def is_val_document(index: int, val_fraction: float) -> bool:
    """Every (1/f)-th document goes to val: exactly floor(n·f) of the first n documents, spread evenly."""
    return int((index + 1) * val_fraction) > int(index * val_fraction)


def prepare_data(
    inputs: Sequence[str | Path] | str | Path,
    out_dir: str | Path,
    val_fraction: float = 0.1,
    *,
    chunk_chars: int = 1 << 20,
    progress: bool = True,
) -> dict:
    """Tokenize text files/directories into out_dir/{train,val}.bin + meta.json; return the meta dict.

    Streams: memory stays at about one chunk whatever the input size. Writes temp files and renames them at the
    end, meta.json last, so an interrupted run leaves either the previous complete output or none.
    """
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}")
    files = list_text_files(inputs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    enc = get_tokenizer()
    tmp = {s: out_dir / f".{s}.bin.tmp{os.getpid()}" for s in SPLITS}
    counts = {s: {"tokens": 0, "documents": 0} for s in SPLITS}
    val_docs: list[str] = []
    doc_index = 0
    total_bytes = sum(p.stat().st_size for p in files)
    bar = progress_bar(total=total_bytes, unit="B", unit_scale=True, desc="tokenizing", disable=not progress)
    outs = {s: open(tmp[s], "wb") for s in SPLITS}
    try:
        for path in files:
            part = 0  # documents so far in this file
            split = None  # the current document's split, chosen at its first non-blank text
            for chunk in iter_text_chunks(path, chunk_chars):
                if chunk is None:  # document boundary inside the file
                    split, part = None, part + (split is not None)
                    continue
                bar.update(len(chunk.encode("utf-8")))
                if split is None:
                    if not chunk.strip():
                        continue  # blank text between documents is not a document
                    split = "val" if is_val_document(doc_index, val_fraction) else "train"
                    if split == "val":
                        val_docs.append(str(path) if part == 0 else f"{path}#{part}")
                    counts[split]["documents"] += 1
                    doc_index += 1
                    outs[split].write(np.array([EOT_ID], dtype=TOKEN_DTYPE).tobytes())
                    counts[split]["tokens"] += 1
                ids = np.asarray(enc.encode_ordinary(chunk), dtype=np.int64)
                outs[split].write(ids.astype(TOKEN_DTYPE).tobytes())
                counts[split]["tokens"] += ids.size
        bar.close()
        for s in SPLITS:
            outs[s].flush()
            os.fsync(outs[s].fileno())
            outs[s].close()
        n_docs = doc_index
        if counts["train"]["documents"] == 0 or counts["val"]["documents"] == 0:
            empty = "train" if counts["train"]["documents"] == 0 else "val"
            if n_docs == 0:
                raise DataError(f"the input ({len(files)} file(s)) holds no text; pass non-empty text files")
            raise DataError(
                f"the {empty} split is empty: {n_docs} document(s) with val_fraction {val_fraction} put "
                f"{counts['val']['documents']} in val. Use a val_fraction of at least 1/{n_docs} (and below 1), "
                f"or give more documents (more files, or separate documents inside a file with lines "
                f"`{EOT_TOKEN}`)"
            )
        for s in SPLITS:
            os.replace(tmp[s], out_dir / f"{s}.bin")
        meta = {
            "format": "uint16 GPT-2 token ids; <|endoftext|> before every document",
            "tokenizer": "gpt2",
            "tokenizer_sha256": TOKENIZER_SHA256,
            "vocab_size": VOCAB_SIZE,
            "eot_id": EOT_ID,
            "dtype": "uint16",
            "val_fraction": val_fraction,
            "train": counts["train"],
            "val": counts["val"],
            "inputs": [str(Path(p).resolve()) for p in ([inputs] if isinstance(inputs, (str, Path)) else inputs)],
            "files": len(files),
            "bytes": total_bytes,
            "val_documents": val_docs,
        }
        meta_tmp = out_dir / f".{META_NAME}.tmp{os.getpid()}"
        meta_tmp.write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(meta_tmp, out_dir / META_NAME)
        fsync_path(out_dir)
        return meta
    finally:
        bar.close()
        for s in SPLITS:
            outs[s].close()
            tmp[s].unlink(missing_ok=True)
