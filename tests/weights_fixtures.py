"""Fixtures for the weight tests, made at test time in the exact layouts OpenAI and Hugging Face publish.

One transformers GPT2LMHeadModel with random weights of real magnitude is the reference (hf_reference). Its weights
are written three ways: an OpenAI TensorFlow checkpoint (by TensorFlow, in a subprocess, with the six other files of
OpenAI's release), a directory from save_pretrained, and the layout of the Hub's openai-community/gpt2 repo (no
`transformer.` prefix, causal-mask buffers included). Odd sizes (context 96, width 48, 3 heads) with the full
50257-token vocabulary, so a wrong transpose, head split or vocabulary mix-up cannot pass by symmetry.
Registered as a plugin in conftest.py, so the session-scoped fixtures are built once for all test files.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from gpt.tokenizer import _package_bpe_dir

TESTS = Path(__file__).resolve().parent
N_LAYER, N_HEAD, N_EMBD, N_CTX, N_VOCAB = 2, 3, 48, 96, 50257
CONV1D = ("attn/c_attn", "attn/c_proj", "mlp/c_fc", "mlp/c_proj")


def make_hf_reference(seed: int = 1234):
    """A GPT2LMHeadModel whose every parameter is random: N(0, 0.2), LayerNorm gains 1 + N(0, 0.2)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=N_VOCAB, n_positions=N_CTX, n_embd=N_EMBD, n_layer=N_LAYER, n_head=N_HEAD,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )  # fmt: skip
    model = GPT2LMHeadModel(config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.2
            p.copy_(1 + noise if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")) else noise)
    return model.eval()


def openai_arrays(hf_model) -> dict[str, np.ndarray]:
    """The model's weights under OpenAI's names and shapes. HF's Conv1D weights are already TF's (in, out);
    OpenAI's add a leading axis of 1 (they were 1x1 convolutions)."""
    sd = {k.removeprefix("transformer."): v.detach().numpy().copy() for k, v in hf_model.state_dict().items()}
    out = {"model/wte": sd["wte.weight"], "model/wpe": sd["wpe.weight"]}
    out |= {"model/ln_f/g": sd["ln_f.weight"], "model/ln_f/b": sd["ln_f.bias"]}
    for i in range(hf_model.config.n_layer):
        for ln in ("ln_1", "ln_2"):
            out[f"model/h{i}/{ln}/g"] = sd[f"h.{i}.{ln}.weight"]
            out[f"model/h{i}/{ln}/b"] = sd[f"h.{i}.{ln}.bias"]
        for mod in CONV1D:
            hf = f"h.{i}." + mod.replace("/", ".")
            out[f"model/h{i}/{mod}/w"] = sd[f"{hf}.weight"][None]  # (1, in, out)
            out[f"model/h{i}/{mod}/b"] = sd[f"{hf}.bias"]
    return out


def write_openai_dir(arrays: dict[str, np.ndarray], hparams: dict, directory: Path, reference: Path) -> Path:
    """OpenAI's seven files in `directory`; TensorFlow's own reading of every variable saved to `reference`."""
    directory.mkdir(parents=True, exist_ok=True)
    np.savez(directory.parent / "arrays.npz", **arrays)
    subprocess.run(
        [sys.executable, str(TESTS / "make_tf_checkpoint.py"), str(directory.parent / "arrays.npz"), str(directory),
         str(reference)],
        check=True, capture_output=True,
    )  # fmt: skip
    (directory.parent / "arrays.npz").unlink()
    (directory / "hparams.json").write_text(json.dumps(hparams, indent=2) + "\n")  # byte-for-byte OpenAI's format
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(_package_bpe_dir() / name, directory / name)
    return directory


def hub_layout_tensors(hf_model) -> dict[str, torch.Tensor]:
    """State dict as the Hub's openai-community/gpt2 model.safetensors holds it: GPT2Model names (no `transformer.`),
    no lm_head, plus per-layer causal masks `h.{i}.attn.bias` (1, 1, n_ctx, n_ctx) and old `attn.masked_bias`."""
    out = {k.removeprefix("transformer."): v.detach().clone() for k, v in hf_model.state_dict().items()}
    out.pop("lm_head.weight", None)
    n_ctx = hf_model.config.n_positions
    for i in range(hf_model.config.n_layer):
        out[f"h.{i}.attn.bias"] = torch.ones(n_ctx, n_ctx).tril().view(1, 1, n_ctx, n_ctx)
        out[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    return out


@pytest.fixture(scope="session")
def hf_reference():
    return make_hf_reference()


@pytest.fixture(scope="session")
def openai_dir(tmp_path_factory, hf_reference) -> Path:
    """An OpenAI-release directory (checkpoint, encoder.json, hparams.json, model.ckpt.*, vocab.bpe)."""
    root = tmp_path_factory.mktemp("openai")
    hparams = {"n_vocab": N_VOCAB, "n_ctx": N_CTX, "n_embd": N_EMBD, "n_head": N_HEAD, "n_layer": N_LAYER}
    return write_openai_dir(openai_arrays(hf_reference), hparams, root / "model", root / "tf_reference.npz")


@pytest.fixture(scope="session")
def tf_reference(openai_dir) -> dict[str, np.ndarray]:
    """{name: tf.train.load_variable(...)} for every variable TensorFlow lists in the openai_dir checkpoint."""
    with np.load(openai_dir.parent / "tf_reference.npz") as f:
        return {name: f[name] for name in f.files}


@pytest.fixture(scope="session")
def hf_dir(tmp_path_factory, hf_reference) -> Path:
    """GPT2LMHeadModel.save_pretrained: config.json + model.safetensors with `transformer.` keys."""
    directory = tmp_path_factory.mktemp("hf")
    hf_reference.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def hf_hub_dir(tmp_path_factory, hf_reference, hf_dir) -> Path:
    """The Hub repo's layout: bare GPT2Model keys and the mask buffers."""
    directory = tmp_path_factory.mktemp("hf_hub")
    shutil.copy(hf_dir / "config.json", directory / "config.json")
    save_file(hub_layout_tensors(hf_reference), str(directory / "model.safetensors"), metadata={"format": "pt"})
    return directory
