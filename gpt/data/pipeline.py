"""The reading and tokenizing machinery of a preparation: sources → batches of pieces → worker processes → tokens,
in order; the hub files fetched as the reading reaches them; a progress report that reads well in a log file.

The main process reads the sources in order (gpt/data/sources.py) and groups their pieces into batches of about
batch_chars characters; worker processes tokenize them; the results come back in submission order, so what is
written never depends on the number of processes.

What each part costs, measured on a 2-core AMD EPYC (`python bench/data.py --only prep`): tiktoken tokenizes
≈ 20 MB/s of text on one core. Threads would share one process (tiktoken's Rust releases the GIL) but reached only
1.5x one core on 2 (processes: 1.9x); a worker that imports the package (torch included, ≈ 1 s) before its first
batch costs a second of a core; a list of Python ints per document, converted to numpy, ≈ 10%.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
import threading
import time
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_all_start_methods, get_context
from pathlib import Path

import numpy as np

from gpt.data.shards import TOKEN_DTYPE
from gpt.data.sources import Source, iter_pieces
from gpt.tokenizer import EOT_ID, EOT_TOKEN, get_tokenizer
from gpt.utils import progress_bar

LOG_SECONDS = 30.0  # a progress line this often when stderr is not a terminal (a log file)
FORK_WORKERS = sys.platform == "linux"  # how tokenizer processes start: see Workers
_EOT = np.array([EOT_ID], dtype=np.uint32)


# ---- tokenizing batches in worker processes --------------------------------------------------------------------------
@dataclass
class Batch:
    texts: list[str] | None  # dropped once sent to a worker
    starts: list[bool]  # piece begins a document
    names: list[str | None]  # the document's name at each start
    end: tuple[int, int]  # reading position after this batch: (source index, piece index)
    keys: list[str | None]  # at each start, a hash of the piece's text (when asked for): copies share a split


def encode_ordinary(text: str) -> np.ndarray:
    """tiktoken's encode_ordinary(text) as a (n,) uint32 array, made in Rust without a list of Python ints. A str
    that UTF-8 cannot hold (a lone surrogate from a JSON escape) takes encode_ordinary's path, which replaces it."""
    enc = get_tokenizer()
    try:
        return enc.encode_to_numpy(text, disallowed_special=())
    except UnicodeEncodeError:
        return np.array(enc.encode_ordinary(text), dtype=np.uint32)


def encode_documents(texts: list[str]) -> np.ndarray:
    """<|endoftext|> + encode_ordinary(text) for each text, back to back, in one call into tiktoken: (N,) uint32.
    tiktoken splits its input at each allowed special token and encodes the parts separately, so this equals the
    text-by-text result, provided no text holds the characters "<|endoftext|>" itself (the caller checks)."""
    joined = EOT_TOKEN + EOT_TOKEN.join(texts)
    try:
        return get_tokenizer().encode_to_numpy(joined, allowed_special={EOT_TOKEN}, disallowed_special=())
    except UnicodeEncodeError:
        return np.concatenate([np.concatenate([_EOT, encode_ordinary(t)]) for t in texts])


def encode_pieces(texts: list[str], starts: list[bool]) -> tuple[np.ndarray, list[int]]:
    """Tokens of all pieces back to back, <|endoftext|> before each piece that starts a document: (N,) uint16, and
    each piece's token count (EOT included). Runs of whole documents go to tiktoken in one call (≈ 1.2x the speed of
    a call per document on 4 KB documents: one crossing into Rust, one array); a document's later pieces, and a
    text that holds "<|endoftext|>" as characters, one at a time."""
    parts, lengths, run = [], [], []

    def flush() -> None:
        if run:
            ids = encode_documents(run)
            eots = np.flatnonzero(ids == EOT_ID)  # ordinary text never gives id 50256: one per document
            lengths.extend(np.diff(eots, append=ids.size).tolist())
            parts.append(ids)
            run.clear()

    for text, start in zip(texts, starts):
        if start and EOT_TOKEN not in text:
            run.append(text)
            continue
        flush()
        ids = encode_ordinary(text)
        parts += [_EOT, ids] if start else [ids]
        lengths.append(ids.size + start)
    flush()
    return (np.concatenate(parts).astype(TOKEN_DTYPE) if parts else np.zeros(0, TOKEN_DTYPE)), lengths


def start_workers(processes: int, ctx) -> ProcessPoolExecutor:
    """A pool of tokenizer processes that end with the main process, even when it is SIGKILLed (a pool's workers
    would otherwise wait forever on their task queue, whose writing end each of them holds too)."""
    main_alive, keep = ctx.Pipe(duplex=False)  # only the main process keeps `keep` open; its death closes the pipe
    pool = ProcessPoolExecutor(processes, mp_context=ctx, initializer=_worker_init, initargs=(main_alive, keep))
    pool._main_alive = keep  # lives as long as the pool
    return pool


def _worker_init(main_alive, keep) -> None:
    keep.close()  # this process's copy (inherited by a fork), so that only the main process holds the pipe open
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle

    def watch() -> None:
        try:
            main_alive.recv()  # nothing is ever sent: returns (EOFError) when the main process is gone
        except (EOFError, OSError):
            pass
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
    get_tokenizer()  # loaded (or, after a fork, already there) before the first batch arrives


def _ready() -> bool:
    return True


class Workers:
    """The tokenizer processes, `pool` once they are up (None before).

    On Linux they are forked from this process when it starts them (before it starts any thread of its own), with
    the tokenizer already loaded: ready in milliseconds, and a worker runs nothing but tiktoken and numpy, so the
    threads a fork does not copy (numpy's BLAS pool, pyarrow's allocator) are never missed. Elsewhere a fork server
    (macOS) or spawn (Windows) starts them in the background, ≈ 1-2 s of imports, while the main process tokenizes
    the first batches itself. Either way a script that calls this needs the `if __name__ == "__main__":` guard."""

    def __init__(self, processes: int):
        self.pool: ProcessPoolExecutor | None = None
        self.error: BaseException | None = None
        self._lock, self._closed = threading.Lock(), False
        if FORK_WORKERS:
            get_tokenizer()
            with warnings.catch_warnings():  # Python ≥ 3.12 warns of any fork with threads; see above
                warnings.simplefilter("ignore", DeprecationWarning)
                pool = start_workers(processes, get_context("fork"))
                pool.submit(_ready).result()  # a fork pool starts all its processes at the first task
            self.pool = pool
        else:
            threading.Thread(target=self._start, args=(processes,), daemon=True).start()

    def _start(self, processes: int) -> None:
        try:
            if "forkserver" in get_all_start_methods():
                ctx = get_context("forkserver")
                ctx.set_forkserver_preload([__name__])  # imported once by the server, not by each worker
            else:
                ctx = get_context("spawn")
            pool = start_workers(processes, ctx)
            for f in [pool.submit(_ready) for _ in range(processes)]:
                f.result()
        except BaseException as e:  # handed to the main thread
            self.error = e
            return
        with self._lock:
            if self._closed:
                pool.shutdown(wait=False, cancel_futures=True)
            else:
                self.pool = pool

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self.pool is not None:
                self.pool.shutdown(wait=False, cancel_futures=True)


def encoded(batches: Iterator[Batch], workers: Workers | None, depth: int):
    """(batch, tokens, lengths) in batch order, with at most `depth` batches in flight (Pool.imap would read the
    whole dataset ahead into its queue). Until the workers are up, this process tokenizes each batch itself: the
    same function on the same batch, so the output does not depend on who tokenized what."""
    window: deque = deque()
    for b in batches:
        if workers is not None and workers.error is not None:
            raise workers.error
        if workers is not None and workers.pool is not None:
            future = workers.pool.submit(encode_pieces, b.texts, b.starts)
        else:
            future = Future()
            future.set_result(encode_pieces(b.texts, b.starts))
        window.append((b, future))
        b.texts = None
        if len(window) >= depth:
            b0, future = window.popleft()
            yield (b0, *future.result())
    while window:
        b0, future = window.popleft()
        yield (b0, *future.result())


class Fetcher:
    """Local paths of the sources; a hub file is downloaded when reached, and (with prefetch) the next one meanwhile
    in a daemon thread (a Ctrl-C does not wait for it; its .part file resumes next time)."""

    def __init__(self, sources: Sequence[Source], prefetch: bool):
        self.sources, self.prefetch, self.ahead = sources, prefetch, {}

    def _start(self, i: int) -> None:
        if i < len(self.sources) and self.sources[i].fetch and i not in self.ahead:
            slot: dict = {}
            t = threading.Thread(target=lambda: slot.update(self._run(i)), daemon=True)
            t.start()
            self.ahead[i] = (t, slot)

    def _run(self, i: int) -> dict:
        try:
            return {"path": self.sources[i].fetch()}
        except BaseException as e:  # handed to the main thread
            return {"error": e}

    def get(self, i: int) -> Path:
        self._start(i)
        if self.prefetch:
            self._start(i + 1)
        if i not in self.ahead:
            return self.sources[i].path
        t, slot = self.ahead.pop(i)
        t.join()
        if "error" in slot:
            raise slot["error"]
        return slot["path"]


def document_key(text: str) -> str:
    """A 64-bit content hash of a document's first piece (its whole text, unless it is a text file's document over
    chunk_chars characters): the same key means the same document, but for a chance of 2^-64 per pair."""
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).hexdigest()


def read_batches(
    sources,
    fetcher: Fetcher,
    position,
    batch_chars: int,
    text_column: str,
    chunk_chars: int,
    sizes: list,
    keys: bool = False,
) -> Iterator[Batch]:
    """Batches of about batch_chars characters of pieces, from `position` on; sizes[i] gets source i's bytes.
    keys: give each document a content key (document_key)."""
    texts, starts, names, doc_keys, size = [], [], [], [], 0
    first_file, first_piece = position
    for i in range(first_file, len(sources)):
        path = fetcher.get(i)
        sizes[i] = path.stat().st_size
        start = first_piece if i == first_file else 0
        for p in iter_pieces(path, start, text_column=text_column, chunk_chars=chunk_chars):
            texts.append(p.text)
            starts.append(p.doc_start)
            names.append(p.name)
            doc_keys.append(document_key(p.text) if keys and p.doc_start else None)
            size += len(p.text)
            if size >= batch_chars:
                yield Batch(texts, starts, names, (i, p.index + 1), doc_keys)
                texts, starts, names, doc_keys, size = [], [], [], [], 0
    if texts:
        yield Batch(texts, starts, names, (len(sources), 0), doc_keys)


# ---- progress --------------------------------------------------------------------------------------------------------
class Progress:
    """A tqdm bar (tokens, tokens/s, ETA) on a terminal; a plain line every LOG_SECONDS in a log file."""

    def __init__(self, total: int | None, done: int, enabled: bool):
        tty = sys.stderr.isatty()
        self.tty, self.enabled = tty, enabled
        self.total, self.start_done, self.done = total, done, done
        self.t0 = self.last_log = time.perf_counter()
        self.bar = progress_bar(
            total=total, initial=done, unit="tok", unit_scale=True, desc="tokenizing", disable=not (enabled and tty)
        )

    def update(self, n: int, shards: int) -> None:
        self.done += n
        self.bar.update(n)
        self.bar.set_postfix(shards=shards, refresh=False)
        now = time.perf_counter()
        if self.enabled and not self.tty and now - self.last_log >= LOG_SECONDS:
            self.last_log = now
            rate = (self.done - self.start_done) / (now - self.t0)
            line = f"tokenized {self.done:,} tokens"
            if self.total:
                eta = int(max(0, self.total - self.done) / rate) if rate else 0
                eta_text = f"{eta // 3600}:{eta // 60 % 60:02d}:{eta % 60:02d}"
                line += f" (≈{100 * self.done / self.total:.1f}% of ≈{self.total:,}, ETA {eta_text})"
            print(f"{line} · {rate / 1e6:.2f}M tokens/s · {shards} shards", file=sys.stderr, flush=True)

    def close(self) -> None:
        self.bar.close()


def default_processes() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
