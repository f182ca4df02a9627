"""OpenAI's TensorFlow checkpoint and Hugging Face's GPT-2 → our state dict: renames, four transposes, strict checks.

    converted = convert_openai("weights/openai/124M")     # ConvertedWeights(config, state_dict)
    converted = convert_hf("weights/hf/124M")
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch

from gpt.config import GPTConfig
from gpt.model import GPT
from gpt.utils import read_json
from gpt.weights import tf_checkpoint
from gpt.weights.format import TIED_KEY, read_each_tensor


# Both store these four projections as Conv1D weights (in, out); our nn.Linear holds (out, in), so they are transposed.
# c_proj is square: a missing transpose passes every shape check, and only the logit parity tests catch it.
TRANSPOSED = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")
HF_IGNORED = re.compile(r"h\.\d+\.attn\.(bias|masked_bias)")  # causal-mask buffers, not weights (≠ attn.c_attn.bias)


class ConvertedWeights(NamedTuple):
    config: GPTConfig
    state_dict: dict[str, torch.Tensor]  # our names; tied lm_head.weight omitted (it is transformer.wte.weight)


def openai_key(name: str) -> str | None:
    """'model/h3/attn/c_attn/w' → 'transformer.h.3.attn.c_attn.weight'; 'model/ln_f/g' → 'transformer.ln_f.weight'.
    A name outside OpenAI's layout comes back unchanged, so the strict check reports it."""
    m = re.fullmatch(r"model/(?:h(\d+)/)?((?:\w+/)*)(\w+)", name)
    if m is None:
        return name
    layer, path, leaf = m.groups()
    if not path and leaf in ("wte", "wpe"):  # embeddings are bare tensors, not modules with w/b
        return f"transformer.{leaf}.weight"
    if leaf not in ("g", "w", "b"):
        return name
    leaf = "bias" if leaf == "b" else "weight"
    return "transformer." + (f"h.{layer}." if layer is not None else "") + path.replace("/", ".") + leaf


def hf_key(name: str) -> str | None:
    """'h.3.attn.c_attn.weight' or 'transformer.h.3.attn.c_attn.weight' → 'transformer.h.3.attn.c_attn.weight';
    None for the mask buffers we ignore."""
    name = name.removeprefix("transformer.")
    return None if HF_IGNORED.fullmatch(name) else f"transformer.{name}"


def convert_state_dict(
    config: GPTConfig,
    source: dict,
    rename: Callable[[str], str | None],
    conv_shape: Callable[[tuple], tuple],
    origin: str,
) -> dict[str, torch.Tensor]:
    """Rename, check and transpose every tensor of `source` ({name: array or tensor}, emptied as it goes so the
    originals can be freed) into our state dict. rename gives our key, or None for a known non-weight to drop;
    conv_shape maps our (out, in) shape to the source's Conv1D shape.
    Strict: any tensor missing, of the wrong shape, or unexplained raises a ValueError naming it."""
    with torch.device("meta"):
        expected = {k: tuple(v.shape) for k, v in GPT(config).state_dict().items() if k != TIED_KEY}
    state, unexplained = {}, []
    for name in list(source):
        key = rename(name)
        if key is None:
            del source[name]
            continue
        if key not in expected:
            unexplained.append(name)
            continue
        t = torch.as_tensor(source.pop(name))
        want = conv_shape(expected[key]) if key.endswith(TRANSPOSED) else expected[key]
        if tuple(t.shape) != want:
            raise ValueError(
                f"{origin}: tensor {name} has shape {tuple(t.shape)}, but the config "
                f"(n_layer={config.n_layer}, n_embd={config.n_embd}, vocab {config.vocab_size}, "
                f"context {config.context_length}) needs {want} (our {key} is {expected[key]}); "
                "the config file and the weights do not belong together"
            )
        state[key] = t.reshape(expected[key][::-1]).T.contiguous() if key.endswith(TRANSPOSED) else t.contiguous()
    missing = [k for k in expected if k not in state]
    if missing or unexplained:
        raise ValueError(
            f"{origin} does not hold a GPT-2 matching its config: missing {_first(missing)}, "
            f"unexplained {_first(unexplained)}"
        )
    return state


def _first(names: list[str], n: int = 8) -> str:
    return str(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def config_from_openai_hparams(hparams: dict) -> GPTConfig:
    """OpenAI's hparams.json → GPTConfig (their model always has the Q/K/V bias)."""
    try:
        return GPTConfig(
            vocab_size=hparams["n_vocab"],
            context_length=hparams["n_ctx"],
            n_layer=hparams["n_layer"],
            n_head=hparams["n_head"],
            n_embd=hparams["n_embd"],
            qkv_bias=True,
        )
    except KeyError as e:
        raise ValueError(
            f"hparams.json has no {e.args[0]!r}; OpenAI's holds n_vocab, n_ctx, n_embd, n_head, n_layer"
        ) from None


def config_from_hf(hf: dict) -> GPTConfig:
    """Hugging Face GPT-2 config.json → GPTConfig. Refuses variants our GPT computes differently."""
    if hf.get("model_type") != "gpt2":
        raise ValueError(f"config.json has model_type {hf.get('model_type')!r}; only 'gpt2' converts")
    n_embd = hf.get("n_embd", 768)
    differences = {
        "activation_function": (hf.get("activation_function", "gelu_new"), ("gelu_new", "gelu_pytorch_tanh")),
        "layer_norm_epsilon": (hf.get("layer_norm_epsilon", 1e-5), (1e-5,)),
        "n_inner": (hf.get("n_inner"), (None, 4 * n_embd)),
        "scale_attn_weights": (hf.get("scale_attn_weights", True), (True,)),
        "scale_attn_by_inverse_layer_idx": (hf.get("scale_attn_by_inverse_layer_idx", False), (False,)),
        "tie_word_embeddings": (hf.get("tie_word_embeddings", True), (True,)),
    }
    for field, (value, allowed) in differences.items():
        if value not in allowed:
            raise ValueError(f"config.json sets {field}={value!r}; our GPT-2 computes only {allowed}")
    return GPTConfig(
        vocab_size=hf.get("vocab_size", 50257),
        context_length=hf.get("n_positions", hf.get("n_ctx", 1024)),
        n_layer=hf.get("n_layer", 12),
        n_head=hf.get("n_head", 12),
        n_embd=n_embd,
        qkv_bias=True,
    )


def convert_openai(directory: str | Path, reader: str = "numpy") -> ConvertedWeights:
    """An OpenAI GPT-2 download (hparams.json + model.ckpt.*) → ConvertedWeights. reader "numpy" (default) reads the
    TensorFlow checkpoint with gpt/weights/tf_checkpoint.py; "tensorflow" uses TensorFlow itself, if installed."""
    directory = Path(directory)
    hparams = directory / "hparams.json"
    if not hparams.is_file():
        raise FileNotFoundError(f"no hparams.json in {directory}; an OpenAI GPT-2 directory holds it with model.ckpt.*")
    config = config_from_openai_hparams(read_json(hparams))
    if reader == "numpy":
        tensors = tf_checkpoint.load_checkpoint(directory)
    elif reader == "tensorflow":
        tensors = _load_checkpoint_with_tensorflow(directory)
    else:
        raise ValueError(f"unknown reader {reader!r}; use 'numpy' (no TensorFlow needed) or 'tensorflow'")
    state = convert_state_dict(config, tensors, openai_key, lambda s: (1, *s[::-1]), f"OpenAI checkpoint {directory}")
    return ConvertedWeights(config, state)


def _load_checkpoint_with_tensorflow(directory: Path) -> dict:
    try:
        import tensorflow as tf  # optional: only for --reader tensorflow
    except ImportError as e:
        raise ImportError(
            "--reader tensorflow needs TensorFlow (pip install tensorflow-cpu); the default reader doesn't"
        ) from e
    prefix = str(tf_checkpoint.checkpoint_prefix(directory))
    return {name: tf.train.load_variable(prefix, name) for name, _ in tf.train.list_variables(prefix)}


def convert_hf(directory: str | Path) -> ConvertedWeights:
    """A Hugging Face GPT-2 directory (config.json + model.safetensors, keys with or without `transformer.`) →
    ConvertedWeights. Reads with safetensors alone; `transformers` is not needed."""
    directory = Path(directory)
    config_path, weights_path = directory / "config.json", directory / "model.safetensors"
    for p in (config_path, weights_path):
        if not p.is_file():
            raise FileNotFoundError(
                f"no {p.name} in {directory}; a Hugging Face GPT-2 directory holds config.json and model.safetensors"
            )
    config = config_from_hf(read_json(config_path))
    try:
        tensors = read_each_tensor(weights_path, torch.clone)  # own memory, so conversion peaks near one copy
    except Exception as e:  # safetensors raises its own error types for truncated or garbled files
        raise ValueError(f"{weights_path} is not a readable safetensors file ({e}); download it again") from e
    head = tensors.pop("lm_head.weight", None)  # present in some repos saved from GPT2LMHeadModel: must be tied
    wte = tensors.get("transformer.wte.weight", tensors.get("wte.weight"))
    if head is not None and (wte is None or head.shape != wte.shape or not torch.equal(head, wte)):
        raise ValueError(f"{weights_path} has an lm_head.weight that differs from wte; GPT-2 ties the two")
    state = convert_state_dict(config, tensors, hf_key, lambda s: s[::-1], f"Hugging Face weights {weights_path}")
    return ConvertedWeights(config, state)
