"""Our GPT → a Hugging Face GPT-2 directory that transformers loads as it is.

    export_hf(load_model("runs/tiny"), "hf_out/")
    # → config.json, model.safetensors, generation_config.json, and for a GPT-2-vocabulary model the tokenizer:
    #   vocab.json, merges.txt, tokenizer_config.json, special_tokens_map.json
    # then: AutoTokenizer.from_pretrained("hf_out"), pipeline("text-generation", model="hf_out") work as they are.

From the command line: python scripts/export_hf.py runs/tiny hf_out/
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from gpt.config import GPTConfig
from gpt.model import GPT
from gpt.tokenizer import EOT_ID, EOT_TOKEN, VOCAB_SIZE, _package_bpe_dir
from gpt.weights.convert import TIED_KEY, TRANSPOSED
from gpt.weights.format import atomic_save_safetensors, unwrap_model


def hf_config_dict(config: GPTConfig) -> dict:
    """GPTConfig → the config.json transformers' GPT2LMHeadModel reads."""
    d = dict(
        architectures=["GPT2LMHeadModel"],
        model_type="gpt2",
        vocab_size=config.vocab_size,
        n_positions=config.context_length,
        n_ctx=config.context_length,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        n_inner=None,
        activation_function="gelu_new",
        layer_norm_epsilon=1e-5,
        initializer_range=0.02,
        resid_pdrop=config.dropout,
        embd_pdrop=config.dropout,
        attn_pdrop=config.dropout,
        scale_attn_weights=True,
        tie_word_embeddings=True,
        use_cache=True,
    )
    if config.vocab_size > EOT_ID:
        d.update(bos_token_id=EOT_ID, eos_token_id=EOT_ID)
    return d


def export_hf(model: GPT, directory: str | Path) -> Path:
    """Write `model` as a Hugging Face GPT-2 directory: config.json + model.safetensors (GPT2LMHeadModel layout) +
    generation_config.json, plus the GPT-2 tokenizer (vocab.json, merges.txt, tokenizer_config.json,
    special_tokens_map.json) when every tokenizer id is a row of the model (vocab_size ≥ 50,257).
    transformers.GPT2LMHeadModel.from_pretrained(directory) then computes the same logits, AutoTokenizer loads, and
    pipeline("text-generation", model=directory) stays within the context length. Each file is written atomically."""
    model = unwrap_model(model)
    config = model.config
    directory = Path(directory)
    tensors = {}
    for key, t in model.state_dict().items():
        if key == TIED_KEY:
            continue
        if key == "transformer.wte.weight":
            t = t[: config.vocab_size]  # padding rows (vocab_multiple) never reach the logits
        tensors[key] = (t.T if key.endswith(TRANSPOSED) else t).detach().contiguous()
    if not config.qkv_bias:  # HF's GPT-2 always has this bias; zeros compute exactly what no bias does
        for i in range(config.n_layer):
            w = tensors[f"transformer.h.{i}.attn.c_attn.weight"]
            tensors[f"transformer.h.{i}.attn.c_attn.bias"] = torch.zeros(w.shape[1], dtype=w.dtype, device=w.device)
    atomic_save_safetensors(tensors, directory / "model.safetensors", {"format": "pt"})
    _write_json(directory / "config.json", hf_config_dict(config))
    _write_json(directory / "generation_config.json", generation_config_dict(config))
    if config.vocab_size >= VOCAB_SIZE:  # every tokenizer id is a row of the model: ship GPT-2's tokenizer
        for ours, theirs in (("encoder.json", "vocab.json"), ("vocab.bpe", "merges.txt")):  # HF's names for them
            _atomic_write_text(directory / theirs, (_package_bpe_dir() / ours).read_text(encoding="utf-8"))
        _write_json(directory / "tokenizer_config.json", tokenizer_config_dict(config))
        _write_json(
            directory / "special_tokens_map.json", {k: EOT_TOKEN for k in ("bos_token", "eos_token", "unk_token")}
        )
    return directory


def generation_config_dict(config: GPTConfig) -> dict:
    """generation_config.json: transformers' generate() and pipeline() stop at the context length (a default
    pipeline call would otherwise ask for 256 new tokens and index past the position table), and never sample an
    id the GPT-2 tokenizer cannot decode (rows past 50,257 of a model with a larger vocab_size)."""
    d: dict = {"max_length": config.context_length}
    if config.vocab_size > EOT_ID:
        d.update(bos_token_id=EOT_ID, eos_token_id=EOT_ID, pad_token_id=EOT_ID)
    if config.vocab_size > VOCAB_SIZE:
        d["suppress_tokens"] = list(range(VOCAB_SIZE, config.vocab_size))
    return d


def tokenizer_config_dict(config: GPTConfig) -> dict:
    """tokenizer_config.json: GPT-2's BPE with model_max_length = the context length, so truncation=True truncates
    to what the model can read (without it transformers assumes 1e30 tokens)."""
    return {
        "tokenizer_class": "GPT2Tokenizer",
        "model_max_length": config.context_length,
        "bos_token": EOT_TOKEN,
        "eos_token": EOT_TOKEN,
        "unk_token": EOT_TOKEN,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
    }


def _write_json(path: Path, d: dict) -> None:
    _atomic_write_text(path, json.dumps(d, indent=2, ensure_ascii=False) + "\n")


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
