"""Checkpoints: the directory contract, atomic writes, rotation, weights_only loading, exact RNG capture."""

import os
import random

import numpy as np
import pytest
import torch

from gpt import GPT, GPTConfig, load_model
from gpt.data import WindowSampler
from gpt.train import configure_optimizer
from gpt.train.checkpoint import (
    capture_rng_state,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint_state,
    load_checkpoint_weights,
    restore_rng_state,
    save_checkpoint,
)

CFG = GPTConfig(vocab_size=97, context_length=16, n_layer=1, n_head=2, n_embd=16)


def trained_pieces(steps=2):
    model = GPT(CFG)
    opt = configure_optimizer(model, lr=1e-2, weight_decay=0.1, device_type="cpu")
    sampler = WindowSampler(np.arange(500, dtype=np.uint16) % 97, batch_size=2, seq_len=8, seed=0)
    for _ in range(steps):
        ((x, y),) = sampler.next_step()
        model(x, y).loss.backward()
        opt.step()
        opt.zero_grad()
    return model, opt, sampler


def state_of(opt, sampler):
    return {"optimizer": opt.state_dict(), "sampler": sampler.state_dict(), "rng": [capture_rng_state()],
            "config": {"name": "t", "model": CFG.to_dict()}}  # fmt: skip


def test_layout_latest_pointer_and_weights_only_round_trip(tmp_path):
    model, opt, sampler = trained_pieces()
    path = save_checkpoint(tmp_path, 2, model, state_of(opt, sampler))
    assert path == tmp_path / "step_000002"
    assert sorted(p.name for p in path.iterdir()) == ["model.safetensors", "state.pt"]
    assert (tmp_path / "latest").read_text().strip() == "step_000002"
    assert latest_checkpoint(tmp_path) == path
    state = torch.load(path / "state.pt", weights_only=True)  # the contract: plain data only
    assert state["step"] == 2 and state["config"]["name"] == "t"
    assert load_checkpoint_state(tmp_path)["step"] == 2  # a run dir resolves through `latest`
    # the weights load through gpt/weights/ from the run dir, the checkpoint dir or the file
    for where in (tmp_path, path, path / "model.safetensors"):
        loaded = load_model(where)
        for (n, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
            assert torch.equal(a, b), n
        assert loaded.lm_head.weight is loaded.transformer.wte.weight


def test_restored_optimizer_continues_identically(tmp_path):
    model, opt, sampler = trained_pieces()
    save_checkpoint(tmp_path, 2, model, state_of(opt, sampler))
    model2 = GPT(CFG)
    opt2 = configure_optimizer(model2, lr=1e-2, weight_decay=0.1, device_type="cpu")
    load_checkpoint_weights(tmp_path / "step_000002", model2)
    state = load_checkpoint_state(tmp_path)
    opt2.load_state_dict(state["optimizer"])
    sampler2 = WindowSampler(np.arange(500, dtype=np.uint16) % 97, batch_size=2, seq_len=8, seed=123)
    sampler2.load_state_dict(state["sampler"])
    for m, o, s in ((model, opt, sampler), (model2, opt2, sampler2)):
        ((x, y),) = s.next_step()
        m(x, y).loss.backward()
        o.step()
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)  # bit-exact


def test_rotation_keeps_newest_and_never_the_latest(tmp_path):
    model, opt, sampler = trained_pieces(1)
    for step in (10, 20, 30, 40):
        save_checkpoint(tmp_path, step, model, state_of(opt, sampler), keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000030", "step_000040"]
    assert latest_checkpoint(tmp_path).name == "step_000040"


def test_stale_temp_dir_from_a_killed_write_is_ignored_then_cleaned(tmp_path):
    model, opt, sampler = trained_pieces(1)
    save_checkpoint(tmp_path, 5, model, state_of(opt, sampler))
    (tmp_path / "step_000010.tmp").mkdir()  # what a SIGKILL mid-write leaves
    (tmp_path / "step_000010.tmp" / "model.safetensors").write_bytes(b"partial")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_000005"]
    assert latest_checkpoint(tmp_path).name == "step_000005"
    save_checkpoint(tmp_path, 10, model, state_of(opt, sampler))
    assert not (tmp_path / "step_000010.tmp").exists()
    assert latest_checkpoint(tmp_path).name == "step_000010"


def test_saving_the_same_step_again_replaces_it(tmp_path):
    model, opt, sampler = trained_pieces(1)
    save_checkpoint(tmp_path, 3, model, state_of(opt, sampler))
    with torch.no_grad():
        model.transformer.wpe.weight.add_(1.0)
    save_checkpoint(tmp_path, 3, model, state_of(opt, sampler))
    assert torch.equal(load_model(tmp_path).transformer.wpe.weight, model.transformer.wpe.weight)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest", "step_000003"]


def test_rng_state_round_trip():
    state = capture_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(3))
    random.random(), np.random.rand(), torch.rand(5)  # move everything on
    restore_rng_state(state)
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_mismatched_architecture_is_refused(tmp_path):
    model, opt, sampler = trained_pieces(1)
    save_checkpoint(tmp_path, 1, model, state_of(opt, sampler))
    other = GPT(GPTConfig(vocab_size=97, context_length=16, n_layer=2, n_head=2, n_embd=16))
    with pytest.raises(ValueError, match="model config"):
        load_checkpoint_weights(tmp_path / "step_000001", other)


def test_latest_moves_only_after_the_checkpoint_it_names_is_complete(tmp_path, monkeypatch):
    # Watch every rename save_checkpoint makes (the real renames still happen): at the moment `latest` is replaced,
    # the directory it will name must already hold both files under its final name, and be loadable.
    model, opt, sampler = trained_pieces()
    save_checkpoint(tmp_path, 1, model, state_of(opt, sampler))
    real_replace, seen = os.replace, []

    def watching_replace(src, dst, *a, **kw):
        if os.path.basename(dst) == "latest":
            name = open(src, encoding="utf-8").read().strip()
            final = tmp_path / name
            seen.append((name, (final / "model.safetensors").is_file(), (final / "state.pt").is_file()))
            assert load_checkpoint_state(final)["step"] == 2
        return real_replace(src, dst, *a, **kw)

    monkeypatch.setattr(os, "replace", watching_replace)
    save_checkpoint(tmp_path, 2, model, state_of(opt, sampler))
    assert seen == [("step_000002", True, True)]
