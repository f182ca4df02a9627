"""Our GPT → a Hugging Face GPT-2 directory that transformers loads as it is.

    export_hf(load_model("runs/tiny"), "hf_out/")   # config.json, model.safetensors (+ vocab.json, merges.txt)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from gpt.config import GPTConfig
from gpt.model import GPT
from gpt.tokenizer import EOT_ID, VOCAB_SIZE, _package_bpe_dir
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
    """Write `model` as a Hugging Face GPT-2 directory: config.json + model.safetensors (GPT2LMHeadModel layout),
    plus vocab.json/merges.txt for a GPT-2-vocabulary model. transformers.GPT2LMHeadModel.from_pretrained(directory)
    then computes the same logits. Each file is written atomically."""
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
    _atomic_write_text(directory / "config.json", json.dumps(hf_config_dict(config), indent=2) + "\n")
    if config.vocab_size == VOCAB_SIZE:  # HF names OpenAI's encoder.json/vocab.bpe vocab.json/merges.txt
        for ours, theirs in (("encoder.json", "vocab.json"), ("vocab.bpe", "merges.txt")):
            _atomic_write_text(directory / theirs, (_package_bpe_dir() / ours).read_text(encoding="utf-8"))
    return directory


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
