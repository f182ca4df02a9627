"""What users really feed the data pipeline (issue 14): byte-order marks, exact boundaries, data folders as editors and
operating systems leave them. Every expected value is written by hand or comes from tiktoken on the clean text."""

import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from data_fixtures import read_split

from gpt.data import (
    DataError,
    TokenShards,
    WindowSampler,
    eval_batches,
    is_val_document,
    iter_pieces,
    list_source_files,
    prepare_data,
    prepare_shards,
)
from gpt.data.sources import Source
from gpt.eval.data import read_file
from gpt.tokenizer import EOT_ID, get_tokenizer

BOM = b"\xef\xbb\xbf"
ROOT = Path(__file__).resolve().parents[1]


def pieces(path: Path) -> list[tuple[str, bool]]:
    return [(p.text, p.doc_start) for p in iter_pieces(path)]


def tokens_of(path: Path) -> list[int]:
    """What the pipeline writes for one file: EOT + ids of each document, pieces in order."""
    enc = get_tokenizer()
    return [i for text, start in pieces(path) for i in ([EOT_ID] if start else []) + enc.encode_ordinary(text)]


# ---- 4. a byte-order mark is not text --------------------------------------------------------------------------------
def test_a_bom_before_the_text_is_not_tokenized(tmp_path):
    (tmp_path / "a.txt").write_bytes(BOM + b"Hello there.")
    assert tokens_of(tmp_path / "a.txt") == [EOT_ID, 15496, 612, 13]  # not [50256, 171, 119, 123, 15496, ...]


def test_a_bom_before_the_separator_still_separates_documents(tmp_path):
    (tmp_path / "a.txt").write_bytes(BOM + b"<|endoftext|>\nfirst\n<|endoftext|>\nsecond\n")
    assert pieces(tmp_path / "a.txt") == [("first\n", True), ("second\n", True)]
    ids = tokens_of(tmp_path / "a.txt")
    assert ids.count(EOT_ID) == 2 and 27 not in ids  # 27 = "<": the separator never becomes 7 ordinary tokens


def test_files_concatenated_with_their_boms_lose_every_bom_but_keep_other_feff(tmp_path):
    text = "\ufeffone\n\ufeff<|endoftext|>\n\ufefftwo a\ufeffb\n"  # `cat a.txt b.txt` of files saved by Notepad
    (tmp_path / "a.txt").write_text(text, encoding="utf-8")
    assert pieces(tmp_path / "a.txt") == [("one\n", True), ("two a\ufeffb\n", True)]  # inside a line it is text


def test_a_bom_at_a_forced_cut_inside_a_long_line_is_kept(tmp_path):
    (tmp_path / "a.txt").write_text("x" * 10 + "\ufeffy\n", encoding="utf-8")
    chunks = [p.text for p in iter_pieces(tmp_path / "a.txt", chunk_chars=10)]
    assert "".join(chunks) == "x" * 10 + "\ufeffy\n"  # readline cut the line there: not a line start


def test_jsonl_and_parquet_drop_a_bom_of_the_file_and_of_each_text(tmp_path):
    lines = [json.dumps({"text": "\ufeffHello there."}), json.dumps({"text": "Hi"})]
    (tmp_path / "a.jsonl").write_bytes(BOM + "\n".join(lines).encode())
    pq.write_table(pa.table({"text": ["\ufeffHello there.", "Hi"]}), tmp_path / "a.parquet")
    for name in ("a.jsonl", "a.parquet"):
        assert tokens_of(tmp_path / name) == [EOT_ID, 15496, 612, 13, EOT_ID, 17250], name


def test_a_utf16_file_is_refused_with_the_conversion_to_make(tmp_path):
    (tmp_path / "a.txt").write_bytes("Hello there.".encode("utf-16"))  # FF FE + UTF-16-LE
    with pytest.raises(DataError, match="UTF-16.*iconv -f utf-16 -t utf-8"):
        pieces(tmp_path / "a.txt")


def test_a_jsonl_file_that_is_not_utf8_is_a_data_error(tmp_path):
    (tmp_path / "a.jsonl").write_bytes(json.dumps({"text": "café"}).replace("é", "\\u00e9").encode() + b"\n\xe9\n")
    with pytest.raises(DataError, match="a.jsonl is not UTF-8"):
        pieces(tmp_path / "a.jsonl")


def test_prepared_data_from_bom_files_holds_no_bom_tokens(tmp_path):
    for i in range(4):
        (tmp_path / "in" / f"{i}.txt").parent.mkdir(exist_ok=True)
        (tmp_path / "in" / f"{i}.txt").write_bytes(BOM + f"Hello there {i}.".encode())
    prepare_data([tmp_path / "in"], tmp_path / "out", val_fraction=0.25, progress=False)
    enc = get_tokenizer()
    expected = [[EOT_ID, *enc.encode_ordinary(f"Hello there {i}.")] for i in range(4)]
    assert read_split(tmp_path / "out", "train").tolist() == sum(expected[:3], [])
    assert read_split(tmp_path / "out", "val").tolist() == expected[3]


def test_eval_files_with_a_bom_read_as_without(tmp_path):
    (tmp_path / "lambada.jsonl").write_bytes(BOM + json.dumps({"text": "a b c"}).encode() + b"\n")
    assert read_file("lambada", tmp_path / "lambada.jsonl") == ["a b c"]
    (tmp_path / "wiki.raw").write_bytes(BOM + b" = Title = \n text \n")
    assert read_file("wikitext", tmp_path / "wiki.raw") == [" = Title = \n text \n"]


def test_a_yaml_config_saved_with_a_bom_loads(tmp_path):
    from gpt.train.config import TrainConfig

    (tmp_path / "c.yaml").write_bytes(BOM + b"max_steps: 7\n")
    assert TrainConfig.from_file(tmp_path / "c.yaml").max_steps == 7


def test_a_prompt_piped_with_a_bom_is_read_without_it(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT / "scripts"))
    import generate as generate_script

    (tmp_path / "w.safetensors").write_bytes(b"")  # parse_args only checks that it exists
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(BOM + b"Hello there.")))
    args = generate_script.parse_args(["--prompt", "-", "--weights", str(tmp_path / "w.safetensors")])
    assert args.prompt == "Hello there."


# ---- 5. boundaries are exact -----------------------------------------------------------------------------------------
def test_seq_len_plus_one_tokens_hold_exactly_one_window():
    (x, y), *_ = WindowSampler(np.arange(33), 2, 32).next_step()
    assert x.tolist() == [list(range(32))] * 2 and y.tolist() == [list(range(1, 33))] * 2
    [(x, y)] = eval_batches(np.arange(33), 1, 2, 32, 0)
    assert x.tolist() == [list(range(32))] * 2 and y.tolist() == [list(range(1, 33))] * 2
    with pytest.raises(DataError, match="32 tokens, too few"):
        WindowSampler(np.arange(32), 1, 32)
    with pytest.raises(DataError, match="32 tokens, too few"):
        eval_batches(np.arange(32), 1, 1, 32, 0)


# 10 tokens, windows of seq_len + 1 = 4 that share their last token with the next one, by phase:
HAND_WINDOWS = {
    0: {(0, 1, 2, 3), (3, 4, 5, 6), (6, 7, 8, 9)},  # reaches the very last token
    1: {(1, 2, 3, 4), (4, 5, 6, 7)},  # (8, 9) left over: too short for a window
    2: {(2, 3, 4, 5), (5, 6, 7, 8)},
}


@pytest.mark.parametrize("layout", ["array", "shards"])
def test_every_window_of_an_epoch_on_a_tiny_array_is_the_hand_list(layout, tmp_path):
    tokens = np.arange(10)
    if layout == "shards":  # the same ten tokens in shards of 3, 4 and 3: windows cross the boundaries
        paths = [tmp_path / f"{i}.bin" for i in range(3)]
        for p, part in zip(paths, np.split(np.arange(10, dtype=np.uint16), [3, 7])):
            part.tofile(p)
        tokens = TokenShards(paths, [3, 4, 3])
    sampler = WindowSampler(tokens, batch_size=1, seq_len=3, seed=0)
    phases = set()
    for epoch in range(12):
        windows = []
        while sampler.epoch == epoch:
            [(x, y)] = sampler.next_step()
            windows.append((*x[0].tolist(), y[0, -1].item()))
        phase = min(w[0] for w in windows)
        assert sorted(windows) == sorted(HAND_WINDOWS[phase])  # each window once, none short, none missing
        phases.add(phase)
    assert phases == {0, 1, 2}  # over epochs every phase comes, so every token is some window's target


def test_eval_windows_start_anywhere_up_to_the_last_full_window():
    starts = {row[0] for x, _ in eval_batches(np.arange(6), 50, 4, 3, seed=0) for row in x.tolist()}
    assert starts == {0, 1, 2}  # 6 tokens hold windows of 4 at 0, 1 and 2: the last one ends on token 5


def test_val_fraction_counts_are_exact_for_decimals_that_floats_miss():
    assert sum(is_val_document(i, 0.29) for i in range(100)) == 29  # 100 × 0.29 is 28.999999999999996 in floats
    assert sum(is_val_document(i, 0.7) for i in range(10)) == 7
    assert [i for i in range(30) if is_val_document(i, 0.1)] == [9, 19, 29]
    assert [i for i in range(8) if is_val_document(i, 0.25)] == [3, 7]


@pytest.mark.parametrize("minus", [0, 1])
def test_a_split_of_exactly_shard_tokens_is_one_shard_and_one_more_token_makes_two(tmp_path, minus):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(4):
        (folder / f"{i}.txt").write_text(f"document number {i} here.", encoding="utf-8")
    enc = get_tokenizer()
    n_train = sum(1 + len(enc.encode_ordinary(f"document number {i} here.")) for i in range(3))
    srcs = [Source.local(p) for p in list_source_files([folder])]
    meta = prepare_shards(srcs, tmp_path / "out", val_fraction=0.25, shard_tokens=n_train - minus, progress=False)
    assert [s["tokens"] for s in meta["shards"]["train"]] == ([n_train] if minus == 0 else [n_train - 1, 1])
    assert len(read_split(tmp_path / "out", "train")) == n_train


# ---- 8. no text in both halves, whatever the folder holds ------------------------------------------------------------
def test_a_directory_walk_leaves_out_what_editors_and_systems_leave_there(tmp_path, capsys):
    d = tmp_path / "data"
    files = {
        "a.txt": "alpha", "b.txt": "beta", "sub/c.txt": "gamma",
        ".ipynb_checkpoints/a-checkpoint.txt": "alpha", ".git/notes.txt": "x", "__MACOSX/._b.txt": "\x00\x05",
        "._a.txt": "\x00\x05\x16\x07", ".a.txt.swp": "x", ".#b.txt": "x", "#a.txt#": "x", "a.txt~": "alpha",
        "~$b.txt": "x", ".DS_Store": "\x00", "Thumbs.db": "\x00", "a (copy).txt": "alpha", "sub/a.txt": "alpha",
    }  # fmt: skip
    for name, text in files.items():
        (d / name).parent.mkdir(parents=True, exist_ok=True)
        (d / name).write_text(text, encoding="utf-8")
    got = list_source_files([d, d / "b.txt"])  # b.txt given twice: once by the walk, once by name
    assert [p.relative_to(d).as_posix() for p in got] == ["a (copy).txt", "b.txt", "sub/c.txt"]  # the first copy
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "skipped 8 " in err  # 3 folders, ._a.txt, .#b.txt, ~$b.txt, 2 copies
    for name in (".ipynb_checkpoints", ".git", "__MACOSX", "._a.txt", "a.txt (same content as", "sub/a.txt (same"):
        assert name in err, name
    assert list_source_files([d / "._a.txt"]) == [d / "._a.txt"]  # a file given by name is always taken


def test_a_folder_of_only_hidden_files_says_what_it_left_out(tmp_path):
    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / ".ipynb_checkpoints" / "a-checkpoint.txt").write_text("alpha", encoding="utf-8")
    with pytest.raises(DataError, match="holds no .txt files .left out: .*ipynb_checkpoints"):
        list_source_files([tmp_path], (".txt",))


def test_a_copied_document_cannot_land_in_both_splits(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    texts = [f"document {i} says something." for i in range(4)]
    for i, t in enumerate(texts):
        (folder / f"{i}.txt").write_text(t, encoding="utf-8")
    (folder / "3 (copy).txt").write_text(texts[3], encoding="utf-8")  # documents 3 (val) and 4 (train) without dedupe
    os.makedirs(folder / ".ipynb_checkpoints")
    (folder / ".ipynb_checkpoints" / "3-checkpoint.txt").write_text(texts[3], encoding="utf-8")
    meta = prepare_data([folder], tmp_path / "out", val_fraction=0.25, progress=False)
    enc = get_tokenizer()
    train = enc.decode(read_split(tmp_path / "out", "train").tolist())
    val = enc.decode(read_split(tmp_path / "out", "val").tolist())
    assert meta["train"]["documents"] + meta["val"]["documents"] == 4
    assert val == "<|endoftext|>" + texts[3] and texts[3] not in train


def test_copies_of_a_document_inside_multi_document_files_share_its_split(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for name, docs in (
        ("a.txt", ["doc A0.", "shared doc."]),
        ("b.txt", ["shared doc.", "doc B1.", "doc B2.", "doc B3."]),
    ):
        (folder / name).write_text("<|endoftext|>\n".join(d + "\n" for d in docs), encoding="utf-8")
    rows = [json.dumps({"text": t}) for t in ("doc B2.\n", "doc C.\n")]  # a copy in another format, and a new one
    (folder / "c.jsonl").write_text("\n".join(rows), encoding="utf-8")
    srcs = [Source.local(p) for p in list_source_files([folder])]
    meta = prepare_shards(srcs, tmp_path / "out", val_fraction=0.5, progress=False)
    # by hand, every 2nd new document to val: A0 train, shared val, (its copy val), B1 train, B2 val, B3 train,
    # (B2's copy val), C val. Without the rule the copy of "shared" would be document 2: train.
    enc = get_tokenizer()

    def docs(split):
        return [d for d in enc.decode(read_split(tmp_path / "out", split).tolist()).split("<|endoftext|>") if d]

    assert docs("train") == ["doc A0.\n", "doc B1.\n", "doc B3.\n"]
    assert docs("val") == ["shared doc.\n", "shared doc.\n", "doc B2.\n", "doc B2.\n", "doc C.\n"]
    assert meta["train"]["documents"] == 3 and meta["val"]["documents"] == 5
