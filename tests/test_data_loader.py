"""The sharded loader: TokenShards reads like one array, the sampler covers each token once per epoch, resumes
exactly across shard boundaries, splits DDP ranks into disjoint windows; the single-file layout still loads (issue 13).

Token value == its position in the stream (shards hold consecutive ranges), so every window reveals where it came
from and whether it crossed a shard boundary.
"""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

from gpt.data import DataError, WindowSampler, eval_batches, is_prepared, load_prepared
from gpt.tokenizer import TOKENIZER_SHA256

SHARD_SIZES = [1000, 1000, 1000, 437]  # fixed-size shards, a shorter last one


def write_shards(folder, sizes=SHARD_SIZES, split="train", start=0) -> list[dict]:
    folder.mkdir(parents=True, exist_ok=True)
    shards = []
    for i, n in enumerate(sizes):
        name = f"{split}_{i:06d}.bin"
        np.arange(start, start + n, dtype=np.uint16).tofile(folder / name)
        shards.append({"file": name, "tokens": n, "sha256": "unchecked-here"})
        start += n
    return shards


def write_prepared(folder) -> None:
    shards = {"train": write_shards(folder), "val": write_shards(folder, [300, 200], "val", start=5000)}
    meta = {"tokenizer_sha256": TOKENIZER_SHA256, "shards": shards}
    meta.update({s: {"tokens": sum(x["tokens"] for x in shards[s]), "documents": 1} for s in shards})
    (folder / "meta.json").write_text(json.dumps(meta))


@pytest.fixture
def prepared(tmp_path):
    write_prepared(tmp_path / "data")
    return tmp_path / "data"


def test_token_shards_read_like_the_concatenated_array(prepared):
    data = load_prepared(prepared)
    whole = np.arange(sum(SHARD_SIZES), dtype=np.uint16)
    assert data.train.size == len(data.train) == whole.size and data.train.dtype == np.uint16
    rng = np.random.default_rng(0)
    for a in [0, 990, 1995, 2999, *rng.integers(0, whole.size, 20)]:  # slices inside shards and across boundaries
        b = min(whole.size, a + int(rng.integers(1, 1500)))
        assert np.array_equal(data.train[a:b], whole[a:b])
    assert data.train[-1] == whole[-1] and data.train[1000] == 1000
    assert np.array_equal(np.asarray(data.train), whole) and data.train.tolist() == whole.tolist()
    assert int((data.train == 7).sum()) == 1  # NumPy operators read the whole split
    assert np.array_equal(pickle.loads(pickle.dumps(data.train))[995:1005], whole[995:1005])
    assert np.array_equal(np.asarray(data.val), np.arange(5000, 5500))


def test_sampler_gives_the_same_batches_from_shards_as_from_one_array(prepared):
    data = load_prepared(prepared)
    whole = np.arange(sum(SHARD_SIZES), dtype=np.uint16)
    a = WindowSampler(data.train, batch_size=4, seq_len=32, grad_accum=2, seed=5)
    b = WindowSampler(whole, batch_size=4, seq_len=32, grad_accum=2, seed=5)
    crossed = 0
    for _ in range(30):  # 30 steps · 8 windows > one epoch of 107 windows: also runs into the next epoch
        for (xa, ya), (xb, yb) in zip(a.next_step(), b.next_step()):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
            assert torch.equal(xa[:, 1:] - xa[:, :-1], torch.ones_like(xa[:, 1:]))  # contiguous windows
            crossed += int(((xa[:, 0] // 1000) != (ya[:, -1] // 1000)).sum())
    assert crossed > 0  # some windows spanned two shard files
    assert a.epoch >= 2


def test_an_epoch_visits_every_token_once(prepared):
    tokens = load_prepared(prepared).train
    s = WindowSampler(tokens, batch_size=1, seq_len=16, seed=1)  # one window per step: epochs do not mix in a step
    inputs = []
    while s.epoch == 0:
        inputs += s.next_step()[0][0].flatten().tolist()
    assert len(set(inputs)) == len(inputs)  # no input token twice
    phase = min(inputs)
    assert phase < 16 and set(inputs) == set(range(phase, phase + len(inputs)))  # ...and none skipped
    assert phase + len(inputs) + 16 > tokens.size - 1  # up to the end: what is left is shorter than a window


def test_two_ranks_read_disjoint_windows_that_together_equal_one_process(prepared):
    tokens = load_prepared(prepared).train
    ranks = [WindowSampler(tokens, 3, 16, grad_accum=2, seed=1, rank=r, world_size=2) for r in (0, 1)]
    one = WindowSampler(tokens, 3, 16, grad_accum=4, seed=1)
    seen = {0: [], 1: []}
    for _ in range(17):  # 17 steps of 12 windows: within the first epoch (≥ 213 windows)
        for r, s in enumerate(ranks):
            seen[r].append(torch.cat([x for x, _ in s.next_step()]))
        assert torch.equal(torch.cat([seen[0][-1], seen[1][-1]]), torch.cat([x for x, _ in one.next_step()]))
    inputs = {r: torch.cat(xs).flatten().tolist() for r, xs in seen.items()}
    assert not set(inputs[0]) & set(inputs[1])  # no token is an input on both ranks


def test_resume_after_n_steps_equals_uninterrupted_across_a_shard_boundary(prepared):
    a = WindowSampler(load_prepared(prepared).train, batch_size=4, seq_len=64, grad_accum=2, seed=3)
    for _ in range(5):
        a.next_step()
    state = a.state_dict()
    expected = [a.next_step() for _ in range(6)]  # 48 windows of 64: well past several shard boundaries
    b = WindowSampler(load_prepared(prepared).train, batch_size=4, seq_len=64, grad_accum=2, seed=99)
    b.load_state_dict(pickle.loads(pickle.dumps(state)))
    got = [b.next_step() for _ in range(6)]
    for e_step, g_step in zip(expected, got):
        for (ex, ey), (gx, gy) in zip(e_step, g_step):
            assert torch.equal(ex, gx) and torch.equal(ey, gy)
    assert b.steps == a.steps == 11 and (b.epoch, b.position) == (a.epoch, a.position)


def test_a_state_from_the_earlier_sampler_continues_its_offsets_exactly(prepared):
    """Runs checkpointed before this sampler stored a generator and drew offsets with replacement: they go on so."""
    tokens = load_prepared(prepared).train
    g = torch.Generator().manual_seed(7)
    old_state = {"generator": g.get_state(), "steps": 4}
    offsets = torch.randint(0, tokens.size - 32, (6,), generator=g)  # what the earlier sampler drew next
    s = WindowSampler(tokens, batch_size=3, seq_len=32, grad_accum=2, seed=1)
    s.load_state_dict(old_state)
    (x0, _), (x1, _) = s.next_step()
    assert torch.equal(torch.cat([x0, x1])[:, 0], offsets) and s.steps == 5
    assert set(s.state_dict()) == {"generator", "steps"}


def test_the_single_file_layout_still_loads(tmp_path):
    """A folder prepared before shards existed: train.bin + val.bin and a meta.json without a shard list."""
    d = tmp_path / "old"
    d.mkdir()
    np.arange(3000, dtype=np.uint16).tofile(d / "train.bin")
    np.arange(400, dtype=np.uint16).tofile(d / "val.bin")
    meta = {"format": "uint16 GPT-2 token ids; <|endoftext|> before every document", "tokenizer": "gpt2",
            "tokenizer_sha256": TOKENIZER_SHA256, "vocab_size": 50257, "eot_id": 50256, "dtype": "uint16",
            "val_fraction": 0.1, "train": {"tokens": 3000, "documents": 9}, "val": {"tokens": 400, "documents": 1},
            "inputs": ["/somewhere"], "files": 10, "bytes": 12000, "val_documents": ["/somewhere/x.txt"]}  # fmt: skip
    (d / "meta.json").write_text(json.dumps(meta))
    assert is_prepared(d)
    data = load_prepared(d)
    assert data.train.paths == [d / "train.bin"] and np.array_equal(np.asarray(data.train), np.arange(3000))
    (x, y), *_ = WindowSampler(data.train, batch_size=2, seq_len=8).next_step()
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert len(eval_batches(data.val, 3, 2, 8, seed=1)) == 3
    (d / "val.bin").write_bytes(b"\x00" * 10)  # from another preparation
    with pytest.raises(DataError, match="5 tokens but meta.json says 400"):
        load_prepared(d)
    (d / "val.bin").unlink()
    assert not is_prepared(d)


def test_an_unfinished_preparation_is_named_as_such(tmp_path):
    (tmp_path / "prep_state.json").write_text("{}")
    assert not is_prepared(tmp_path)
    with pytest.raises(DataError, match="unfinished; run the same prepare command again"):
        load_prepared(tmp_path)
