"""Conversion of OpenAI's and Hugging Face's weights (gpt/weights/), proven against transformers' GPT-2."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from weights_fixtures import hub_layout_tensors, openai_arrays

from gpt import GPT, GPTConfig, export_hf, generate, get_tokenizer, load_model
from gpt.weights import (
    config_from_hf,
    convert_hf,
    convert_openai,
    convert_state_dict,
    hf_key,
    openai_key,
    read_config,
    save_state_dict,
)

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_CONFIG = GPTConfig(vocab_size=50257, context_length=96, n_layer=2, n_head=3, n_embd=48, qkv_bias=True)


def ids(n=40, seed=0):
    return torch.randint(0, 50257, (2, n), generator=torch.Generator().manual_seed(seed))


def assert_matches_transformers(ours: GPT, hf_model, atol: float):
    x = ids()
    with torch.no_grad():
        expected = hf_model(x).logits
        torch.testing.assert_close(ours(x), expected, rtol=0, atol=atol)
        prompt = x[:1, :12]
        hf_greedy = hf_model.generate(prompt, max_new_tokens=24, do_sample=False, pad_token_id=0)
    assert torch.equal(generate(ours, prompt, 24, temperature=0), hf_greedy)


def from_state(config, state) -> GPT:
    model = GPT(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert missing == ["lm_head.weight"] and not unexpected  # only the tied head, which is wte
    return model.eval()


def test_openai_names_map_to_ours():
    assert openai_key("model/h1/attn/c_attn/w") == "transformer.h.1.attn.c_attn.weight"
    assert openai_key("model/h10/mlp/c_proj/b") == "transformer.h.10.mlp.c_proj.bias"
    assert openai_key("model/h0/ln_2/g") == "transformer.h.0.ln_2.weight"
    assert openai_key("model/ln_f/b") == "transformer.ln_f.bias"
    assert openai_key("model/wte") == "transformer.wte.weight"
    assert openai_key("global_step") == "global_step"  # unknown: passed through, so the strict check reports it


def test_hf_names_with_and_without_prefix_and_masks_ignored():
    assert hf_key("h.3.attn.c_attn.bias") == hf_key("transformer.h.3.attn.c_attn.bias")
    assert hf_key("h.3.attn.c_attn.bias") == "transformer.h.3.attn.c_attn.bias"  # a weight, not the mask
    assert hf_key("h.3.attn.bias") is None and hf_key("transformer.h.0.attn.masked_bias") is None


def test_openai_checkpoint_matches_transformers(openai_dir, hf_reference):
    config, state = convert_openai(openai_dir)
    assert config == FIXTURE_CONFIG
    assert_matches_transformers(from_state(config, state), hf_reference, atol=1e-4)


@pytest.mark.parametrize("layout", ["hf_dir", "hf_hub_dir"])
def test_hf_directory_matches_transformers(layout, request, hf_reference):
    config, state = convert_hf(request.getfixturevalue(layout))
    assert config == FIXTURE_CONFIG
    assert_matches_transformers(from_state(config, state), hf_reference, atol=1e-4)


def test_converted_file_loads_as_our_format(openai_dir, hf_reference, tmp_path):
    config, state = convert_openai(openai_dir)
    path = save_state_dict(config, state, tmp_path / "gpt2.safetensors")
    with safe_open(str(path), framework="pt") as f:
        assert "lm_head.weight" not in f.keys() and "transformer.h.0.attn.c_attn.bias" in f.keys()
    assert read_config(path) == config
    model = load_model(path)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert_matches_transformers(model, hf_reference, atol=1e-4)


def test_loaded_weights_are_private_copy_on_write_views(tmp_path):
    # load_model maps the file instead of copying it; training the loaded model must never write into the file.
    model = GPT(GPTConfig(vocab_size=97, context_length=24, n_layer=1, n_head=3, n_embd=48))
    path = save_state_dict(model.config, model.state_dict(), tmp_path / "w.safetensors")
    before = path.read_bytes()
    loaded = load_model(path)
    with torch.no_grad():
        for p in loaded.parameters():
            p.add_(1.0)
    assert path.read_bytes() == before
    assert torch.equal(load_model(path).transformer.wte.weight, model.transformer.wte.weight)


def test_export_round_trips_through_transformers(openai_dir, tmp_path):
    from transformers import AutoTokenizer, GPT2LMHeadModel

    model = from_state(*convert_openai(openai_dir))
    out = export_hf(model, tmp_path / "export")
    hf_files = ["config.json", "generation_config.json", "merges.txt", "model.safetensors"]
    tokenizer_files = ["special_tokens_map.json", "tokenizer_config.json", "vocab.json"]
    assert sorted(p.name for p in out.iterdir()) == hf_files + tokenizer_files
    hf = GPT2LMHeadModel.from_pretrained(out).eval()
    x = ids()
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, model(x), rtol=0, atol=1e-5)
    text = "Hello, world! naïve café"
    assert AutoTokenizer.from_pretrained(out).encode(text) == get_tokenizer().encode(text)


def test_export_of_a_model_without_qkv_bias_and_with_padded_vocab(tmp_path):
    from transformers import GPT2LMHeadModel

    config = GPTConfig(
        vocab_size=97, context_length=32, n_layer=2, n_head=3, n_embd=48, qkv_bias=False, vocab_multiple=64
    )
    model = GPT(config).eval()
    hf = GPT2LMHeadModel.from_pretrained(export_hf(model, tmp_path)).eval()
    assert hf.config.vocab_size == 97 and not (tmp_path / "vocab.json").exists()  # not GPT-2's tokenizer
    x = torch.randint(0, 97, (2, 32))
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, model(x), rtol=0, atol=1e-5)


# ---- strictness: every tensor present, right shape, nothing unexplained --------------------------------------------
def convert_arrays(arrays):
    return convert_state_dict(FIXTURE_CONFIG, arrays, openai_key, lambda s: (1, *s[::-1]), "test checkpoint")


def test_missing_tensor_is_named(hf_reference):
    arrays = openai_arrays(hf_reference)
    del arrays["model/h1/mlp/c_fc/b"]
    with pytest.raises(ValueError, match=r"missing \['transformer.h.1.mlp.c_fc.bias'\]"):
        convert_arrays(arrays)


def test_wrong_shape_names_the_tensor_and_both_shapes(hf_reference):
    arrays = openai_arrays(hf_reference)
    arrays["model/h0/mlp/c_fc/w"] = arrays["model/h0/mlp/c_fc/w"][:, :, :100]
    with pytest.raises(ValueError, match=r"model/h0/mlp/c_fc/w has shape \(1, 48, 100\).*needs \(1, 48, 192\)"):
        convert_arrays(arrays)


def test_transposed_square_weight_is_only_caught_numerically(hf_reference):
    # c_proj is (48, 48): a checkpoint with it transposed passes every shape check, so only a logit comparison
    # catches a converter that forgets the transpose. This test pins that the parity tests above are needed.
    arrays = openai_arrays(hf_reference)
    arrays["model/h0/attn/c_proj/w"] = arrays["model/h0/attn/c_proj/w"].transpose(0, 2, 1).copy()
    model = from_state(FIXTURE_CONFIG, convert_arrays(arrays))
    with torch.no_grad():
        assert (model(ids()) - hf_reference(ids()).logits).abs().max() > 1e-2


def test_unexplained_tensor_is_named(hf_reference):
    arrays = openai_arrays(hf_reference)
    arrays["model/h2/ln_1/g"] = arrays["model/h1/ln_1/g"]  # a third block the config does not have
    arrays["global_step"] = arrays["model/ln_f/b"][:1]
    with pytest.raises(ValueError, match=r"unexplained \['model/h2/ln_1/g', 'global_step'\]"):
        convert_arrays(arrays)


def test_untied_hf_head_is_refused(hf_reference, tmp_path, hf_dir):
    from safetensors.torch import save_file

    tensors = hub_layout_tensors(hf_reference)
    tensors["lm_head.weight"] = tensors["wte.weight"] + 1
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    (tmp_path / "config.json").write_text((hf_dir / "config.json").read_text())
    with pytest.raises(ValueError, match="lm_head.weight that differs from wte"):
        convert_hf(tmp_path)


@pytest.mark.parametrize(
    "field, value", [("activation_function", "relu"), ("n_inner", 100), ("scale_attn_by_inverse_layer_idx", True)]
)
def test_hf_variants_we_cannot_compute_are_refused(field, value):
    with pytest.raises(ValueError, match=field):
        config_from_hf({"model_type": "gpt2", field: value})


def test_truncated_safetensors_says_download_again(hf_dir, tmp_path):
    (tmp_path / "config.json").write_text((hf_dir / "config.json").read_text())
    (tmp_path / "model.safetensors").write_bytes((hf_dir / "model.safetensors").read_bytes()[:-100])
    with pytest.raises(ValueError, match="download it again"):
        convert_hf(tmp_path)


def test_cli_tensorflow_reader_gives_the_same_file(openai_dir, tmp_path):
    # --reader tensorflow runs TensorFlow inside the CLI's own process; the default reader must agree bit for bit.
    outs = {}
    for reader in ("numpy", "tensorflow"):
        outs[reader] = tmp_path / f"{reader}.safetensors"
        cmd = [sys.executable, "scripts/load_openai_weights.py", "--from-dir", str(openai_dir), "--reader", reader]
        r = subprocess.run(cmd + ["--out", str(outs[reader])], cwd=ROOT, capture_output=True, text=True,
                           env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})  # fmt: skip
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == str(outs[reader])
    with safe_open(str(outs["numpy"]), "pt") as a, safe_open(str(outs["tensorflow"]), "pt") as b:
        assert sorted(a.keys()) == sorted(b.keys())
        assert all(torch.equal(a.get_tensor(k), b.get_tensor(k)) for k in a.keys())
        assert json.loads(a.metadata()["gpt_config"]) == FIXTURE_CONFIG.to_dict()


@pytest.mark.network
def test_real_124m_greedy_text_matches_the_published_one():
    # rasbt/LLMs-from-scratch publishes this continuation for OpenAI's 124M weights (greedy, 30 tokens).
    from gpt.weights import download_model

    directory = download_model("124M", "openai", ROOT / "weights")
    model = from_state(*convert_openai(directory))
    enc = get_tokenizer(directory)
    prompt = torch.tensor([enc.encode("Every effort moves")])
    text = enc.decode(generate(model, prompt, 30, temperature=0)[0].tolist())
    expected = (
        "Every effort moves forward, but it's not enough.\n\n"
        "\"I'm not going to sit here and say, 'I'm not going to do this,'"
    )
    assert text == expected


def test_every_conv1d_weight_is_transposed_into_our_linear(hf_reference):
    # An independent expected value for each of the four Conv1D weights of every block: OpenAI's (1, in, out) array,
    # transposed by hand. A converter that skips any transpose — the square attn.c_proj included, which no shape
    # check can catch — fails here without needing a logit comparison.
    arrays = openai_arrays(hf_reference)
    source = {k: torch.from_numpy(v.copy()) for k, v in arrays.items()}
    state = convert_arrays(arrays)
    for i in range(FIXTURE_CONFIG.n_layer):
        for mod in ("attn/c_attn", "attn/c_proj", "mlp/c_fc", "mlp/c_proj"):
            ours = state[f"transformer.h.{i}.{mod.replace('/', '.')}.weight"]
            assert torch.equal(ours, source[f"model/h{i}/{mod}/w"][0].T), mod  # (in, out) → nn.Linear's (out, in)
            assert torch.equal(state[f"transformer.h.{i}.{mod.replace('/', '.')}.bias"], source[f"model/h{i}/{mod}/b"])
    assert torch.equal(state["transformer.wte.weight"], source["model/wte"])  # embeddings: never transposed
    assert torch.equal(state["transformer.wpe.weight"], source["model/wpe"])
