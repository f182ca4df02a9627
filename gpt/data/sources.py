"""Where documents come from: text, JSON-lines and Parquet files, read piece by piece in a fixed order, flat memory.

A *piece* is text that is tokenized on its own: a whole document (a Parquet row, a JSON line) or a chunk of a long text
document (`iter_text_chunks` cuts only where GPT-2's tokenizer splits anyway, so the tokens never change). Every piece
has a position in its file (row, line or chunk number), so a preparation can restart at any piece:

    for p in iter_pieces(Path("sample/10BT/000_00000.parquet"), start=1000):   # rows 1000, 1001, ...
        p.index, p.text, p.doc_start, p.name     # 1000, "The ...", True, "000_00000.parquet#1000"

Parquet is read one record batch at a time (pyarrow), JSON lines one line at a time, text in ~1 MB chunks: memory stays
at about one batch whatever the file size.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from gpt.tokenizer import EOT_TOKEN, sha256_file

SOURCE_SUFFIXES = (".txt", ".jsonl", ".parquet")
PARQUET_BATCH_ROWS = 1024  # rows decoded at a time: a few MB of FineWeb text


class DataError(ValueError):
    """Input that cannot become training data (missing, empty, binary, not UTF-8, too small); says how to fix it."""


@dataclass
class Source:
    """One input file. Hub files are fetched when the preparation reaches them (`fetch` downloads and returns the
    path); local files have fetch None."""

    name: str  # shown in logs and recorded in meta.json: a local path, or the file's path in a hub repository
    path: Path  # where the file is, or will be once fetched
    fetch: Callable[[], Path] | None = None
    size: int | None = None  # bytes, when known before reading (local files, hub listings)
    sha256: str | None = None  # when the hub listing gives it (checked after the download)

    @staticmethod
    def local(path: str | Path) -> Source:
        path = Path(path).resolve()
        return Source(str(path), path, size=path.stat().st_size)


@dataclass
class Piece:
    index: int  # position in its file: Parquet row, JSON line or text chunk number
    text: str
    doc_start: bool  # the first piece of a document (<|endoftext|> goes before it)
    name: str | None  # the document's name when doc_start ("file#row"), for the list of validation documents


# ---- finding files ---------------------------------------------------------------------------------------------------
# What editors, notebooks and operating systems leave in a data folder: copies and metadata, never the user's data.
# Hidden names cover .ipynb_checkpoints/ and .git/ (folders), ._x.txt (macOS AppleDouble), .DS_Store, .x.txt.swp (vim),
# .#x.txt (Emacs locks); the rest are backups (x.txt~, #x.txt#) and Office lock files (~$x.txt).
SKIPPED_DIRS = ("__MACOSX",)  # the copy of every file's metadata in a zip made on a Mac


def is_skipped_name(name: str) -> bool:
    """A file or folder name that a directory walk leaves out: hidden, an editor's backup or lock, OS metadata."""
    return name.startswith((".", "~$", "#")) or name.endswith(("~", "#")) or name in SKIPPED_DIRS


def _walk(folder: Path, suffixes: Sequence[str], skipped: list[str]) -> list[Path]:
    """Files with one of `suffixes` under folder, not descending into skipped folders (a .git can be huge)."""
    found = []
    for root, dirs, files in os.walk(folder):
        skipped.extend(os.path.join(root, d, "") for d in dirs if is_skipped_name(d))
        dirs[:] = [d for d in dirs if not is_skipped_name(d)]
        for name in files:
            path = Path(root, name)
            if Path(name).suffix not in suffixes or not path.is_file():
                continue
            if is_skipped_name(name):
                skipped.append(str(path))
            else:
                found.append(path)
    return sorted(found)


def _drop_duplicates(files: list[Path], skipped: list[str]) -> list[Path]:
    """Each file once: a path given twice, or a file with the same bytes as an earlier one (a copy, whose documents
    could otherwise land in both the train and the validation split) is dropped. Only files of equal size are hashed."""
    by_size: dict[int, list[Path]] = {}
    for p in files:
        by_size.setdefault(p.stat().st_size, []).append(p)
    seen_paths, seen_hashes, kept = set(), {}, []
    for p in files:
        real = p.resolve()
        if real in seen_paths:
            continue
        seen_paths.add(real)
        if len(by_size[p.stat().st_size]) > 1:
            digest = sha256_file(p)
            if digest in seen_hashes:
                skipped.append(f"{p} (same content as {seen_hashes[digest]})")
                continue
            seen_hashes[digest] = p
        kept.append(p)
    return kept


def list_source_files(
    inputs: Sequence[str | Path] | str | Path, suffixes: Sequence[str] = SOURCE_SUFFIXES, *, log: bool = True
) -> list[Path]:
    """Files as given, plus every file with one of `suffixes` under each directory (recursive), in sorted order.

    A directory walk leaves out hidden files and folders (.ipynb_checkpoints/, .git/, ._x.txt, .x.txt.swp), backups
    (x.txt~, #x.txt#), Office locks (~$x.txt) and __MACOSX/; files given by name are always taken. A file with the
    same bytes as an earlier one, or given twice, is taken once. What was left out is printed to stderr (log=True).
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    files: list[Path] = []
    skipped: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            n_skipped = len(skipped)
            found = _walk(path, suffixes, skipped)
            if not found:
                kinds = " or ".join(", ".join(suffixes).rsplit(", ", 1))  # ".txt, .jsonl or .parquet"
                left_out = f" (left out: {', '.join(skipped[n_skipped:])})" if len(skipped) > n_skipped else ""
                raise DataError(
                    f"directory {path} holds no {kinds} files{left_out}; pass such files, or folders of them"
                )
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"input {path} does not exist; pass text files and/or directories of .txt files")
    if not files:
        raise DataError("no input given; pass text files and/or directories of .txt files")
    files = _drop_duplicates(files, skipped)
    if skipped and log:
        shown = ", ".join(skipped[:10]) + (f" and {len(skipped) - 10} more" if len(skipped) > 10 else "")
        print(f"skipped {len(skipped)} hidden, backup or duplicate file(s)/folder(s): {shown}", file=sys.stderr)
    return files


def list_text_files(inputs: Sequence[str | Path] | str | Path) -> list[Path]:
    """Files as given, plus every *.txt under each directory (recursive), in a stable sorted order."""
    return list_source_files(inputs, (".txt",))


# ---- text files ------------------------------------------------------------------------------------------------------
BOM = "\ufeff"  # a byte-order mark (EF BB BF in UTF-8): Notepad and Excel start files with it; it is not text


def strip_bom(text: str) -> str:
    """text without a leading byte-order mark (one a document's text can carry over from the file it came from)."""
    return text[1:] if text.startswith(BOM) else text


def _check_not_binary(path: Path) -> None:
    with open(path, "rb") as f:
        head = f.read(8192)
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(
            f"{path} is UTF-16 text (it starts with a UTF-16 byte-order mark); convert it to UTF-8 first, "
            f"e.g. `iconv -f utf-16 -t utf-8 {path} > fixed.txt`"
        )
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
    Yields None at each document boundary (a line that reads exactly `<|endoftext|>`). A byte-order mark at the
    start of a line is dropped: at the start of the file it is no text, and inside one it is where files that began
    with one were concatenated (`cat a.txt b.txt`).

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
    line_start = True  # the next readline() starts a line (it is not the rest of a line cut at chunk_chars)
    try:
        with open(path, encoding="utf-8", errors="strict") as f:  # universal newlines: \r\n → \n
            while line := f.readline(chunk_chars):  # at most chunk_chars characters, even for one giant line
                if "\x00" in line:
                    raise DataError(f"{path} contains NUL characters, so it is probably binary; pass text files")
                line, line_start = (strip_bom(line) if line_start else line), line.endswith("\n")
                if not line:
                    continue
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


def _text_pieces(path: Path, chunk_chars: int) -> Iterator[Piece]:
    """Documents are the file, or its parts between `<|endoftext|>` lines; blank text between them is no document."""
    index, part, started = 0, 0, False  # pieces so far; documents finished in this file; current one has text
    for chunk in iter_text_chunks(path, chunk_chars):
        if chunk is None:
            part, started = part + started, False
        elif started:
            yield Piece(index, chunk, False, None)
            index += 1
        elif chunk.strip():
            started = True
            yield Piece(index, chunk, True, str(path) if part == 0 else f"{path}#{part}")
            index += 1


# ---- JSON lines and Parquet ------------------------------------------------------------------------------------------
def _jsonl_pieces(path: Path, text_column: str) -> Iterator[Piece]:
    try:
        yield from _jsonl_lines(path, text_column)
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 ({e.reason}); JSON lines must be UTF-8, convert it first") from None


def _jsonl_lines(path: Path, text_column: str) -> Iterator[Piece]:
    with open(path, encoding="utf-8-sig") as f:  # -sig: a byte-order mark before the first line is dropped
        for i, line in enumerate(f):
            if not line.strip():
                continue
            try:
                text = json.loads(line)[text_column]
            except (json.JSONDecodeError, TypeError, KeyError) as e:
                raise DataError(
                    f"{path} line {i + 1} is not a JSON object with a {text_column!r} field ({type(e).__name__}: {e}); "
                    'each line must be one object such as {"text": "..."} (or pass --text-column)'
                ) from None
            if not isinstance(text, str):
                raise DataError(f"{path} line {i + 1}: {text_column!r} is {type(text).__name__}, not a string")
            yield Piece(i, strip_bom(text), True, f"{path}#{i}")


def open_parquet(path: Path, text_column: str) -> pq.ParquetFile:
    """The file, after checking that it is Parquet and has a string column `text_column`."""
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        problem = f"{path} is not a readable Parquet file ({e})"
        raise DataError(f"{problem}; delete it (a download is fetched again)") from None
    schema = pf.schema_arrow
    if text_column not in schema.names:
        raise DataError(
            f"{path} has no {text_column!r} column (its columns: {', '.join(schema.names)}); pass --text-column with "
            "the column that holds the documents' text"
        )
    kind = schema.field(text_column).type
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
        raise DataError(f"{path}: column {text_column!r} holds {kind}, not text; pass --text-column with a text column")
    return pf


def _parquet_pieces(path: Path, text_column: str, start: int) -> Iterator[Piece]:
    pf = open_parquet(path, text_column)
    row, groups = 0, []
    for g in range(pf.num_row_groups):  # skip whole row groups before `start` without decoding them
        n = pf.metadata.row_group(g).num_rows
        if row + n <= start and not groups:
            row += n
        else:
            groups.append(g)
    try:
        for batch in pf.iter_batches(batch_size=PARQUET_BATCH_ROWS, row_groups=groups, columns=[text_column]):
            for text in batch.column(0).to_pylist():
                if row >= start and text is not None:
                    yield Piece(row, strip_bom(text), True, f"{path.name}#{row}")
                row += 1
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path} is damaged near row {row} ({e}); delete it (a download is fetched again)") from None


def iter_pieces(path: Path, start: int = 0, *, text_column: str = "text", chunk_chars: int = 1 << 20) -> Iterator:
    """The pieces of one file from position `start` on, by suffix: .parquet, .jsonl, anything else as UTF-8 text.
    Blank documents are skipped (they are no document), but keep their positions."""
    if path.suffix == ".parquet":
        pieces = _parquet_pieces(path, text_column, start)
    elif path.suffix == ".jsonl":
        pieces = _jsonl_pieces(path, text_column)
    else:
        pieces = _text_pieces(path, chunk_chars)
    for p in pieces:
        if p.index >= start and not (p.doc_start and (not p.text or p.text.isspace())):
            yield p
