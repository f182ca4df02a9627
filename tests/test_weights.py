import pytest
import torch
from safetensors import safe_open

from gpt import GPT, GPTConfig
from gpt.weights import load_model, read_config, resolve_weights_path, save_model

CFG = GPTConfig(vocab_size=97, context_length=24, n_layer=2, n_head=3, n_embd=48)


def test_save_load_round_trip_keeps_weights_config_and_tying(tmp_path):
    m = GPT(CFG)
    path = save_model(m, tmp_path / "w.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert "lm_head.weight" not in f.keys()  # the tied head is stored once
    loaded = load_model(path)
    assert loaded.config == CFG and not loaded.training
    assert loaded.lm_head.weight is loaded.transformer.wte.weight
    for (k, a), b in zip(m.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    x = torch.randint(0, 97, (1, 24))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), m.eval()(x), rtol=0, atol=0)


def test_load_in_bfloat16(tmp_path):
    path = save_model(GPT(CFG), tmp_path / "w.safetensors")
    m = load_model(path, dtype="bfloat16")
    assert all(p.dtype == torch.bfloat16 for p in m.parameters())


def test_run_and_checkpoint_directories_resolve(tmp_path):
    ckpt = tmp_path / "run" / "step_000010"
    save_model(GPT(CFG), ckpt / "model.safetensors")
    (tmp_path / "run" / "latest").write_text("step_000010\n")
    assert resolve_weights_path(tmp_path / "run") == ckpt / "model.safetensors"
    assert resolve_weights_path(ckpt) == ckpt / "model.safetensors"
    assert read_config(tmp_path / "run") == CFG


def test_missing_weights_say_how_to_get_them(tmp_path):
    with pytest.raises(FileNotFoundError, match="load_openai_weights.py"):
        load_model(tmp_path / "nope.safetensors")
