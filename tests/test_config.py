import pytest

from gpt import GPTConfig
from gpt.config import ALIASES, PRESETS


@pytest.mark.parametrize("alias,name", list(ALIASES.items()))
def test_aliases_resolve_to_the_same_config(alias, name):
    assert GPTConfig.from_preset(alias) == GPTConfig.from_preset(name)


def test_openai_preset_shapes():
    assert (GPTConfig.from_preset("124M").n_layer, GPTConfig.from_preset("124M").n_embd) == (12, 768)
    xl = GPTConfig.from_preset("gpt2-xl")
    assert (xl.n_layer, xl.n_head, xl.n_embd, xl.context_length) == (48, 25, 1600, 1024)


def test_overrides_apply_on_any_preset():
    for name in PRESETS:
        cfg = GPTConfig.from_preset(name, context_length=77, qkv_bias=False)
        assert cfg.context_length == 77 and cfg.qkv_bias is False


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ValueError) as e:
        GPTConfig.from_preset("gpt5")
    for valid in ("124M", "355M", "774M", "1558M", "gpt2-medium", "tiny"):
        assert valid in str(e.value)


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_round_trip(fmt):
    cfg = GPTConfig.from_preset("355M", context_length=300, qkv_bias=False, dropout=0.1, vocab_multiple=64)
    text = getattr(cfg, f"to_{fmt}")()
    assert getattr(GPTConfig, f"from_{fmt}")(text) == cfg


def test_bad_values_are_clear_errors():
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=100, n_head=3)
    with pytest.raises(ValueError, match="positive integer"):
        GPTConfig(n_layer=0)
    with pytest.raises(ValueError, match="unknown GPTConfig field"):
        GPTConfig.from_dict({"n_layers": 3})


def test_padded_vocab_size():
    assert GPTConfig(vocab_multiple=64).padded_vocab_size == 50304
    assert GPTConfig().padded_vocab_size == 50257
