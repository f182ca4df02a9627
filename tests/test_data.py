"""Data preparation (text → token files) and the batch sampler (disjoint per rank, exactly resumable)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gpt.data import (
    DataError,
    WindowSampler,
    eval_batches,
    is_val_document,
    iter_text_chunks,
    load_prepared,
    prepare_data,
)
from gpt.tokenizer import EOT_ID, TOKENIZER_SHA256, get_tokenizer

ROOT = Path(__file__).resolve().parents[1]
SHAKESPEARE = ROOT / "data" / "shakespeare"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def stream_encode(path: Path, chunk_chars: int, max_chunk_chars: int | None = None) -> list[int]:
    enc = get_tokenizer()
    chunks = iter_text_chunks(path, chunk_chars, max_chunk_chars)
    return [i for chunk in chunks if chunk for i in enc.encode_ordinary(chunk)]


# ---- streaming tokenization equals tokenizing the whole text ---------------------------------------------------------
def test_streaming_equals_whole_file_on_a_real_play(tmp_path):
    text = (SHAKESPEARE / "hamlet.txt").read_text()
    path = write(tmp_path / "hamlet.txt", text)
    whole = get_tokenizer().encode_ordinary(text)
    chunks = [c for c in iter_text_chunks(path, chunk_chars=2000) if c]
    assert len(chunks) > 50  # really chunked
    assert "".join(chunks) == text
    assert stream_encode(path, 2000) == whole


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.sampled_from(["a", "b", " ", "  ", "\n", "\n\n", "\t", "é", "日本", "'s", "7", "!", " x", "😀"]), max_size=80
    )
)
def test_streaming_equals_whole_text_for_awkward_whitespace(tmp_path_factory, pieces):
    text = "".join(pieces)
    path = write(tmp_path_factory.mktemp("s") / "t.txt", text)
    # cuts at line breaks only (no forced cuts): each must be one where GPT-2's pre-tokenizer splits anyway
    assert stream_encode(path, chunk_chars=3, max_chunk_chars=10**6) == get_tokenizer().encode_ordinary(text)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.sampled_from(["a", "bb", "é", "日本", "'s", "7", "!", "😀", "x'", "-", "“"]), min_size=1, max_size=80)
)
def test_forced_cuts_inside_a_long_line_keep_the_tokens(tmp_path_factory, words):
    # no line breaks at all: every cut is a forced one, made before a " word"
    text = " ".join(words)
    path = write(tmp_path_factory.mktemp("s") / "t.txt", text)
    chunks = [c for c in iter_text_chunks(path, chunk_chars=3, max_chunk_chars=12) if c]
    assert "".join(chunks) == text
    assert len(chunks) >= len(text) // 15  # really cut, about every 12 characters
    assert stream_encode(path, 3, 12) == get_tokenizer().encode_ordinary(text)


def test_one_giant_line_is_read_in_bounded_pieces(tmp_path):
    path = write(tmp_path / "line.txt", "word " * 5000)  # 25,000 characters, no newline
    chunks = [c for c in iter_text_chunks(path, chunk_chars=1000) if c]
    assert max(len(c) for c in chunks) <= 8 * 1000 + 1000
    assert "".join(chunks) == "word " * 5000


# ---- prepare_data ----------------------------------------------------------------------------------------------------
def make_corpus(root: Path, n_docs: int = 10) -> list[str]:
    texts = [f"Document number {i}.\nIt has a line or two of text, {'and more ' * i}\n" for i in range(n_docs)]
    for i, t in enumerate(texts):
        write(root / f"doc{i:02d}.txt", t)
    return texts


def test_prepare_splits_by_document_with_eot_before_each(tmp_path):
    texts = make_corpus(tmp_path / "in", 10)
    meta = prepare_data([tmp_path / "in"], tmp_path / "out", val_fraction=0.2, progress=False)
    enc = get_tokenizer()
    val_idx = [i for i in range(10) if is_val_document(i, 0.2)]
    assert val_idx == [4, 9]  # every 5th document, deterministically
    expected = {"train": [], "val": []}
    for i, t in enumerate(texts):
        expected["val" if i in val_idx else "train"] += [EOT_ID, *enc.encode_ordinary(t)]
    data = load_prepared(tmp_path / "out")
    assert data.train.tolist() == expected["train"]
    assert data.val.tolist() == expected["val"]
    assert data.train.dtype == np.uint16
    saved = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert saved == meta
    assert meta["tokenizer_sha256"] == TOKENIZER_SHA256
    assert meta["train"] == {"tokens": len(expected["train"]), "documents": 8}
    assert meta["val"] == {"tokens": len(expected["val"]), "documents": 2}
    assert [Path(p).name for p in meta["val_documents"]] == ["doc04.txt", "doc09.txt"]
    # deterministic: preparing again gives the same bytes
    prepare_data([tmp_path / "in"], tmp_path / "out2", val_fraction=0.2, progress=False)
    assert (tmp_path / "out" / "train.bin").read_bytes() == (tmp_path / "out2" / "train.bin").read_bytes()


def test_eot_lines_separate_documents_inside_one_file(tmp_path):
    parts = [f"part {i} text\n" for i in range(4)]
    write(tmp_path / "one.txt", "<|endoftext|>\n".join(parts))
    meta = prepare_data([tmp_path / "one.txt"], tmp_path / "out", val_fraction=0.25, progress=False)
    assert meta["train"]["documents"] + meta["val"]["documents"] == 4
    assert meta["val_documents"] == [f"{tmp_path / 'one.txt'}#3"]
    data = load_prepared(tmp_path / "out")
    assert get_tokenizer().decode(data.val.tolist()) == "<|endoftext|>part 3 text\n"


@pytest.mark.parametrize(
    "setup, match",
    [
        (lambda d: d.mkdir(), "holds no .txt files"),
        (lambda d: (d.mkdir(), write(d / "a.txt", "  \n\n"), write(d / "b.txt", "")), "holds no text"),
        (lambda d: (d.mkdir(), (d / "x.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00IHDR")), "binary"),
        (lambda d: (d.mkdir(), (d / "x.txt").write_bytes("café".encode("latin-1") * 10)), "not UTF-8"),
        (lambda d: (d.mkdir(), write(d / "only.txt", "just one document\n")), "split is empty"),
    ],
    ids=["no-files", "empty", "binary", "latin1", "one-document"],
)
def test_prepare_refuses_bad_input_with_a_clear_error(tmp_path, setup, match):
    setup(tmp_path / "in")
    with pytest.raises(DataError, match=match):
        prepare_data([tmp_path / "in"], tmp_path / "out", val_fraction=0.1, progress=False)
    assert not (tmp_path / "out" / "meta.json").exists()
    leftovers = list((tmp_path / "out").iterdir()) if (tmp_path / "out").exists() else []
    assert leftovers == []  # no half-written token files


def test_prepare_cli_exit_codes(tmp_path):
    make_corpus(tmp_path / "in", 4)
    script = str(ROOT / "scripts" / "prepare_data.py")
    ok = subprocess.run(
        [sys.executable, script, str(tmp_path / "in"), "--out-dir", str(tmp_path / "out"), "--val-fraction", "0.25"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert "val" in ok.stdout and (tmp_path / "out" / "val.bin").is_file()
    bad = subprocess.run([sys.executable, script, str(tmp_path / "missing"), "--out-dir", str(tmp_path / "o")],
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 1
    assert "does not exist" in bad.stderr and "Traceback" not in bad.stderr


def test_load_prepared_rejects_another_tokenizer(tmp_path):
    make_corpus(tmp_path / "in", 4)
    prepare_data([tmp_path / "in"], tmp_path / "out", val_fraction=0.25, progress=False)
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    meta["tokenizer_sha256"] = "0" * 64
    (tmp_path / "out" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="different tokenizer"):
        load_prepared(tmp_path / "out")


# ---- the sampler -----------------------------------------------------------------------------------------------------
TOKENS = np.arange(10_000, dtype=np.uint16)  # token value == its position: a row reveals its offset


def test_sampler_windows_are_shifted_by_one():
    (x, y), *_ = WindowSampler(TOKENS, batch_size=4, seq_len=16, grad_accum=1, seed=0).next_step()
    assert x.shape == y.shape == (4, 16) and x.dtype == torch.int64
    assert torch.equal(y[:, :-1], x[:, 1:])
    assert torch.equal(x[:, 1:] - x[:, :-1], torch.ones(4, 15, dtype=torch.int64))  # contiguous windows


def test_ranks_read_disjoint_rows_that_together_equal_one_process():
    one = WindowSampler(TOKENS, batch_size=3, seq_len=8, grad_accum=4, seed=7)
    ranks = [WindowSampler(TOKENS, batch_size=3, seq_len=8, grad_accum=2, seed=7, rank=r, world_size=2) for r in (0, 1)]
    for _ in range(3):
        single = torch.cat([x for x, _ in one.next_step()])  # (12, 8)
        per_rank = [torch.cat([x for x, _ in s.next_step()]) for s in ranks]  # 2 × (6, 8)
        assert torch.equal(torch.cat(per_rank), single)
        assert not torch.equal(per_rank[0], per_rank[1])  # each rank reads its own half of the global batch


def test_sampler_state_resumes_exactly():
    a = WindowSampler(TOKENS, batch_size=2, seq_len=8, grad_accum=2, seed=3)
    for _ in range(5):
        a.next_step()
    state = a.state_dict()
    expected = [a.next_step() for _ in range(3)]
    b = WindowSampler(TOKENS, batch_size=2, seq_len=8, grad_accum=2, seed=999)  # another seed: the state overrides it
    b.load_state_dict(state)
    got = [b.next_step() for _ in range(3)]
    for e_step, g_step in zip(expected, got):
        for (ex, ey), (gx, gy) in zip(e_step, g_step):
            assert torch.equal(ex, gx) and torch.equal(ey, gy)
    assert b.steps == a.steps == 8


def test_eval_batches_are_fixed_and_split_round_robin():
    full = eval_batches(TOKENS, 5, 2, 8, seed=1)
    assert len(full) == 5
    assert all(torch.equal(a[0], b[0]) for a, b in zip(full, eval_batches(TOKENS, 5, 2, 8, seed=1)))
    r0 = eval_batches(TOKENS, 5, 2, 8, seed=1, rank=0, world_size=2)
    r1 = eval_batches(TOKENS, 5, 2, 8, seed=1, rank=1, world_size=2)
    assert [b[0].tolist() for b in r0] == [full[i][0].tolist() for i in (0, 2, 4)]
    assert [b[0].tolist() for b in r1] == [full[i][0].tolist() for i in (1, 3)]


def test_too_short_split_is_a_clear_error():
    with pytest.raises(DataError, match="too few"):
        WindowSampler(np.arange(10, dtype=np.uint16), batch_size=1, seq_len=16)
