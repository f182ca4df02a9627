"""Sharded data preparation: exact tokens, process-count independence, crash recovery, bad input (issue 13).

Corpora are Parquet files in FineWeb-Edu's schema written by the test (tests/data_fixtures.py); the expected tokens
come from tiktoken directly. Crashes are real: a CLI subprocess SIGKILLs itself at a chosen point (the test-side
wrapper tests/prepare_data_killed_at.py) and the same command runs again; a full disk is a shard file whose writes
fail with ENOSPC past a byte budget, as the kernel's do.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from data_fixtures import expected_tokens, make_corpus, read_split, shard_bytes, write_fineweb_edu_parquet

import gpt.data.shards as shards
from gpt.data import DataError, Source, list_source_files, load_prepared, prepare_shards
from gpt.data.shards import STATE_NAME
from gpt.tokenizer import EOT_ID, get_tokenizer

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "prepare_data.py"
KILLED_AT = Path(__file__).with_name("prepare_data_killed_at.py")  # prepare_data.py that signals itself at a point
SHARD = 3000  # tokens per shard: a corpus of ≈ 40k tokens gives ≈ 12 shards
FLAGS = ["--shard-tokens", str(SHARD), "--batch-chars", "2000", "--val-tokens", "0", "--processes", "1"]


def sources(folder: Path) -> list[Source]:
    return [Source.local(p) for p in list_source_files([folder])]


def prep(folder: Path, out: Path, **kw) -> dict:
    kw = {"shard_tokens": SHARD, "batch_chars": 2000, "processes": 1, "progress": False, **kw}
    return prepare_shards(sources(folder), out, **kw)


def load_script():
    spec = importlib.util.spec_from_file_location("prepare_data_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    code = load_script().main([str(a) for a in args] + ["--no-progress"])
    return code, capsys.readouterr().err


def assert_one_error_line(err: str, *fragments: str) -> None:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    docs = [d for file_docs in make_corpus(folder, files=3, docs_per_file=90) for d in file_docs]
    return folder, docs


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    """An uninterrupted single-process preparation to compare everything else with."""
    out = tmp_path_factory.mktemp("reference")
    meta = prep(corpus[0], out, val_fraction=0.1)
    return out, meta


def test_shards_hold_exactly_the_documents_tokens(corpus, reference):
    (_, docs), (out, meta) = corpus, reference
    expected = expected_tokens(docs, val_every=10)
    for split in ("train", "val"):
        assert np.array_equal(read_split(out, split), expected[split])
        assert meta[split]["tokens"] == expected[split].size
        assert meta[split]["documents"] == int((expected[split] == EOT_ID).sum())
    train = meta["shards"]["train"]
    assert [s["file"] for s in train] == [f"train_{i:06d}.bin" for i in range(len(train))] and len(train) > 5
    assert all(s["tokens"] == SHARD for s in train[:-1]) and 0 < train[-1]["tokens"] <= SHARD  # fixed-size shards
    for s in train + meta["shards"]["val"]:
        assert hashlib.sha256((out / s["file"]).read_bytes()).hexdigest() == s["sha256"]
    assert meta["val_documents"][:3] == ["000_00000.parquet#9", "000_00000.parquet#19", "000_00000.parquet#29"]
    assert not list(out.glob(".*")) and not (out / STATE_NAME).exists()  # no part files, no state left
    data = load_prepared(out)
    assert data.train.size == expected["train"].size and np.array_equal(np.asarray(data.val), expected["val"])


def test_two_processes_write_the_same_bytes_as_one(corpus, reference, tmp_path):
    prep(corpus[0], tmp_path / "p2", val_fraction=0.1, processes=2)
    assert shard_bytes(tmp_path / "p2") == shard_bytes(reference[0])


def test_workers_started_in_the_background_write_the_same_bytes(corpus, reference, tmp_path, monkeypatch):
    """The macOS/Windows way (a fork server here): the main process tokenizes while the workers start."""
    import gpt.data.pipeline as pipeline
    import gpt.data.prepare as prepare_module

    monkeypatch.setattr(pipeline, "FORK_WORKERS", False)
    prep(corpus[0], tmp_path / "bg", val_fraction=0.1, processes=2)  # (this corpus is done before they are up)
    assert shard_bytes(tmp_path / "bg") == shard_bytes(reference[0])

    class WorkersUpFirst(pipeline.Workers):  # the same, once the pool is up: every batch goes to a worker
        def __init__(self, processes):
            super().__init__(processes)
            deadline = time.monotonic() + 120  # a hang guard
            while self.pool is None and self.error is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert self.pool is not None, self.error

    monkeypatch.setattr(pipeline, "Workers", WorkersUpFirst)
    monkeypatch.setattr(prepare_module, "Workers", WorkersUpFirst)
    prep(corpus[0], tmp_path / "up", val_fraction=0.1, processes=2)
    assert shard_bytes(tmp_path / "up") == shard_bytes(reference[0])


def test_a_batch_tokenizes_as_encode_ordinary_piece_by_piece():
    """The worker joins runs of whole documents into one tiktoken call; the result must equal tiktoken's own
    encode_ordinary text by text, with <|endoftext|> before each document start, whatever the texts hold."""
    from gpt.data.pipeline import encode_pieces

    texts = [
        "First document.\n\nTwo paragraphs.",
        " leading space and trailing space ",
        "a document quoting <|endoftext|> as text",  # must stay text: 27, 91, 437, 1659, 5239, 91, 29
        "continued piece of that document",  # not a document start: no EOT, no join
        "café 日本語 😀\r\n",
        "a lone surrogate \ud800 from a JSON escape",  # tiktoken's encode_ordinary replaces it
        "",  # an empty document between two others
        "last.",
    ]
    starts = [True, True, True, False, True, True, True, True]
    enc = get_tokenizer()
    want, want_lengths = [], []
    for text, start in zip(texts, starts):
        ids = enc.encode_ordinary(text)
        want += [EOT_ID] * start + ids
        want_lengths.append(len(ids) + start)
    tokens, lengths = encode_pieces(texts, starts)
    assert tokens.dtype == np.uint16 and tokens.tolist() == want and lengths == want_lengths
    assert enc.encode_ordinary("<|endoftext|>") == [27, 91, 437, 1659, 5239, 91, 29]  # the hand value behind it


def test_sigkilled_main_process_takes_its_tokenizer_processes_with_it(corpus, reference, tmp_path):
    out = tmp_path / "out2"
    args = [str(corpus[0]), "--out-dir", str(out), *FLAGS[:-1], "2", "--no-progress"]  # --processes 2
    with open(tmp_path / "stderr.txt", "wb") as err:  # a file, not a pipe: a surviving worker would hold a pipe open
        first = subprocess.run([sys.executable, str(KILLED_AT), "batch:9", *args], stderr=err, timeout=300)
    assert first.returncode == -signal.SIGKILL, (tmp_path / "stderr.txt").read_text(encoding="utf-8")

    def survivors() -> list[int]:  # processes whose command line names this preparation's folder
        found = []
        for proc in Path("/proc").iterdir():
            try:
                if proc.name.isdigit() and str(out).encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                pass  # ended meanwhile
        return found

    deadline = time.monotonic() + 60  # a hang guard, not a timing: they go as soon as they see the pipe close
    while survivors() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert survivors() == []
    again = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    assert shard_bytes(out) == shard_bytes(reference[0])


def test_jsonl_and_parquet_of_the_same_documents_give_the_same_shards(corpus, reference, tmp_path):
    folder, docs = corpus
    lines = [json.dumps({"text": d, "id": str(i)}) for i, d in enumerate(docs)]
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "all.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    prep(tmp_path / "in", tmp_path / "out", val_fraction=0.1)
    assert shard_bytes(tmp_path / "out") == shard_bytes(reference[0])


def test_val_tokens_caps_the_validation_split_and_max_tokens_cuts_at_a_document(corpus, tmp_path):
    folder, docs = corpus
    meta = prep(folder, tmp_path / "a", val_fraction=0.1, val_tokens=400, max_tokens=12_000)
    lengths = [1 + len(get_tokenizer().encode_ordinary(d)) for d in docs]
    val, total, kept, n_val = 0, 0, 0, 0
    for i, n in enumerate(lengths):  # the rule, written out: stop before a document that starts at >= max_tokens
        if total >= 12_000:
            break
        if (i + 1) % 10 == 0 and val < 400:
            val, n_val = val + n, n_val + 1
        total, kept = total + n, kept + 1
    assert meta["val"] == {"tokens": val, "documents": n_val} and val >= 400
    assert meta["train"]["tokens"] + val == total and meta["train"]["documents"] + n_val == kept


def test_sigkill_mid_shard_then_the_same_command_gives_identical_shards(corpus, reference, tmp_path, capsys):
    out = tmp_path / "out"
    args = [str(corpus[0]), "--out-dir", str(out), *FLAGS, "--no-progress"]

    def run(kill_at: str | None):
        cmd = [sys.executable, str(KILLED_AT), kill_at, *args] if kill_at else [sys.executable, str(SCRIPT), *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=300)

    first = run("batch:9")  # killed after its 9th batch: shard 0 finished, shard 1 half written, not checkpointed
    assert first.returncode == -signal.SIGKILL, first.stderr
    finished = {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in out.glob("train_*.bin")}
    assert finished and list(out.glob(".train_*.part")) and (out / STATE_NAME).is_file()
    # another command on the unfinished folder is refused, and changes nothing
    code, err = run_cli([corpus[0], "--out-dir", out, *FLAGS[:1], "5000", *FLAGS[2:]], capsys)
    assert code == 1
    assert_one_error_line(err, "unfinished preparation of other inputs or settings")
    second = run("publish:2")  # killed between writing a checkpoint and renaming the shard it lists
    assert second.returncode == -signal.SIGKILL, second.stderr
    assert len(json.loads((out / STATE_NAME).read_text())["splits"]["train"]["shards"]) > len(list(out.glob("train_*")))
    third = run(None)
    assert third.returncode == 0, third.stderr
    assert shard_bytes(out) == shard_bytes(reference[0])  # byte-identical to the uninterrupted preparation
    for name, stamp in finished.items():  # finished shards were never rewritten
        assert ((out / name).stat().st_mtime_ns, (out / name).stat().st_ino) == stamp
    assert not list(out.glob(".*")) and not (out / STATE_NAME).exists()
    again = run(None)  # the same command on a finished folder: nothing to do
    assert again.returncode == 0 and "already prepared" in again.stdout


def test_ctrl_c_then_the_same_command_gives_identical_shards(corpus, reference, tmp_path, capsys):
    out = tmp_path / "out"
    cmd = [sys.executable, str(KILLED_AT), "batch:16:SIGINT", str(corpus[0]), "--out-dir", str(out), *FLAGS]
    first = subprocess.run([*cmd, "--no-progress"], capture_output=True, text=True, timeout=300)
    assert first.returncode == 130, first.stderr
    assert "interrupted: run the same command again" in first.stderr and "Traceback" not in first.stderr
    assert list(out.glob("train_*.bin")) and (out / STATE_NAME).is_file()
    code, err = run_cli([corpus[0], "--out-dir", out, *FLAGS], capsys)
    assert code == 0, err
    assert shard_bytes(out) == shard_bytes(reference[0])


class FullDiskFile:
    """A binary file whose writes stop at a shared byte budget: the bytes that fit go to disk, then ENOSPC."""

    def __init__(self, f, budget: list[int]):
        self._f, self._budget = f, budget

    def write(self, data) -> int:
        room = max(0, self._budget[0])
        self._budget[0] -= len(data)
        if len(data) > room:
            self._f.write(bytes(data)[:room])
            raise OSError(errno.ENOSPC, "No space left on device")
        return self._f.write(data)

    def __getattr__(self, name):
        return getattr(self._f, name)


def disk_full_after(n_bytes: int):
    """An `open` for gpt/data/shards.py: shard files (binary) share a budget of n_bytes; other files open as usual."""
    budget = [n_bytes]

    def fake_open(path, mode="r", *args, **kwargs):
        f = open(path, mode, *args, **kwargs)
        return FullDiskFile(f, budget) if "b" in mode else f

    return fake_open


def test_full_disk_keeps_finished_shards_and_the_same_command_resumes(corpus, reference, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(shards, "open", disk_full_after(2 * int(2.5 * SHARD)), raising=False)  # mid third shard
    code, err = run_cli([corpus[0], "--out-dir", out, *FLAGS], capsys)
    assert code == 1
    assert_one_error_line(err, "disk is full", "run the same command again")
    kept = {p.name: p.read_bytes() for p in out.glob("train_*.bin")}
    assert len(kept) == 2 and (out / STATE_NAME).is_file()
    monkeypatch.undo()  # space freed
    code, err = run_cli([corpus[0], "--out-dir", out, *FLAGS], capsys)
    assert code == 0, err
    assert shard_bytes(out) == shard_bytes(reference[0])
    assert all((out / name).read_bytes() == data for name, data in kept.items())


def test_a_file_without_text_column_stops_with_one_error_and_keeps_finished_shards(corpus, tmp_path, capsys):
    folder = tmp_path / "in"
    write_fineweb_edu_parquet(folder / "000_00000.parquet", corpus[1][:90])
    pq.write_table(pa.table({"content": ["no text column here"] * 5}), folder / "001_00000.parquet")
    code, err = run_cli([folder, "--out-dir", tmp_path / "out", *FLAGS], capsys)
    assert code == 1
    assert_one_error_line(err, "001_00000.parquet has no 'text' column", "--text-column")
    assert list((tmp_path / "out").glob("train_*.bin")) and (tmp_path / "out" / STATE_NAME).is_file()


@pytest.mark.parametrize(
    "args, fragments",
    [
        (lambda d: ["--dataset", "fineweb-edu-typo"], ["unknown dataset 'fineweb-edu-typo'", "fineweb-edu, fineweb"]),
        (lambda d: [write_fineweb_edu_parquet(d / "empty.parquet", [])], ["holds no text"]),
        (lambda d: [write_fineweb_edu_parquet(d / "blank.parquet", ["", "  \n"])], ["holds no text"]),
        (lambda d: ["--dataset", "fineweb-edu", "--max-tokens", "10T"], ["not a count"]),
        (lambda d: ["--dataset", "fineweb-edu", "--max-tokens", "1e13", "--list-files", "known"], ["GB free"]),
    ],
    ids=["unknown-dataset", "empty-parquet", "blank-documents", "bad-count", "disk-too-small"],
)
def test_bad_input_is_one_error_line(tmp_path, capsys, args, fragments):
    (tmp_path / "in").mkdir()
    argv = [*args(tmp_path / "in"), "--out-dir", tmp_path / "out", "--cache-dir", tmp_path / "hub"]
    try:
        code, err = run_cli(argv, capsys)
    except SystemExit as e:  # argparse's errors (a malformed number) exit 2
        code, err = e.code, capsys.readouterr().err
    assert code != 0
    assert_one_error_line(err, *fragments)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())  # nothing half-written


def test_settings_are_checked_before_anything_is_written(tmp_path):
    with pytest.raises(DataError, match="val_fraction"):
        prepare_shards([], tmp_path / "x", val_fraction=1.5)
    with pytest.raises(DataError, match="shard_tokens must be a positive"):
        prepare_shards([], tmp_path / "x", shard_tokens=0)
    assert not (tmp_path / "x").exists()
