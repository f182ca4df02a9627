"""Our weights file: one self-describing .safetensors (the GPTConfig rides in its metadata).

    save_model(model, "weights/gpt2-124M.safetensors")
    model = load_model("weights/gpt2-124M.safetensors", device="cpu", dtype=torch.bfloat16)

load_model also accepts a training checkpoint directory (step_000500/ holding model.safetensors) or a run directory
(runs/<name>/ with a `latest` pointer), so everything that produces weights can be sampled from the same way.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from gpt import tf_checkpoint
from gpt.config import GPTConfig
from gpt.model import GPT
from gpt.tokenizer import EOT_ID, VOCAB_SIZE, _package_bpe_dir
from gpt.utils import get_dtype

CONFIG_KEY = "gpt_config"  # metadata key holding GPTConfig.to_json()
TIED_KEY = "lm_head.weight"  # stored once, as transformer.wte.weight


def atomic_save_safetensors(tensors: dict[str, torch.Tensor], path: str | Path, metadata: dict[str, str]) -> Path:
    """Write to a temp file in the same directory, fsync, then rename: a crash leaves the old file or none."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def save_model(model: GPT, path: str | Path, extra_metadata: dict[str, str] | None = None) -> Path:
    """Save weights (tied head stored once) + config. Unwraps torch.compile / DDP wrappers first."""
    model = unwrap_model(model)
    return save_state_dict(model.config, model.state_dict(), path, extra_metadata)


def save_state_dict(
    config: GPTConfig,
    state_dict: dict[str, torch.Tensor],
    path: str | Path,
    extra_metadata: dict[str, str] | None = None,
) -> Path:
    """Our file from a GPT state dict without building the model (what conversion writes; no extra copy)."""
    tensors = {k: v.detach().contiguous() for k, v in state_dict.items() if k != TIED_KEY}
    metadata = {"format": "pt", CONFIG_KEY: config.to_json(), **(extra_metadata or {})}
    return atomic_save_safetensors(tensors, path, metadata)


def unwrap_model(model: torch.nn.Module) -> GPT:
    """The plain GPT inside DDP(...) and/or torch.compile(...), so saved keys never carry `module.`/`_orig_mod.`."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def resolve_weights_path(path: str | Path) -> Path:
    """A .safetensors file as given; a checkpoint dir → its model.safetensors; a run dir → its `latest` checkpoint."""
    path = Path(path)
    if path.is_file():
        return path
    if path.is_dir():
        if (path / "model.safetensors").is_file():
            return path / "model.safetensors"
        if (path / "latest").is_file():
            name = (path / "latest").read_text().strip()
            return resolve_weights_path(path / name)
        raise FileNotFoundError(
            f"{path} is a directory with neither model.safetensors nor a `latest` checkpoint pointer; "
            "pass a .safetensors file, a checkpoint directory or a run directory"
        )
    raise FileNotFoundError(
        f"no weights at {path}; convert OpenAI's with `python scripts/load_openai_weights.py --model-size 124M` "
        "or train some with `python scripts/pretrain.py`"
    )


def read_config(path: str | Path) -> GPTConfig:
    """The GPTConfig stored in a weights file's metadata (reads only the header)."""
    path = resolve_weights_path(path)
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if CONFIG_KEY not in meta:
        raise ValueError(
            f"{path} has no '{CONFIG_KEY}' metadata, so it was not written by gpt2-from-scratch; "
            "convert Hugging Face / OpenAI files with scripts/load_openai_weights.py --from-dir"
        )
    return GPTConfig.from_dict(json.loads(meta[CONFIG_KEY]))


def read_each_tensor(path: str | Path, transform: Callable, device: str | torch.device = "cpu") -> dict:
    """{key: transform(tensor)} for a safetensors file, opened once per tensor: each tensor's mapped file pages are
    released as soon as its transformed copy exists, instead of the whole mapped file staying resident beside the
    copies (which would double peak memory)."""
    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
    out = {}
    for key in keys:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            out[key] = transform(f.get_tensor(key))
    return out


def load_model(path: str | Path, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None) -> GPT:
    """Load a saved GPT in eval mode, holding one copy of the weights: the model is built on the meta device
    (no memory), and each tensor read from the file is assigned in place of its placeholder, not copied into it."""
    path = resolve_weights_path(path)
    config = read_config(path)
    dtype = get_dtype(dtype) if dtype is not None else None
    with torch.device("meta"):
        model = GPT(config)
    if dtype is None and torch.device(device).type == "cpu":
        # Zero-copy: safetensors maps the file and each tensor is a copy-on-write view of its bytes, so resident
        # memory grows only as weights are used, to one copy (pages shared with the OS file cache); writes stay private.
        with safe_open(str(path), framework="pt") as f:
            state = {key: f.get_tensor(key) for key in f.keys()}
    else:
        state = read_each_tensor(
            path, lambda t: t.to(dtype) if dtype is not None and t.is_floating_point() else t, device
        )
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if k != TIED_KEY]
    if missing or unexpected:
        raise ValueError(f"{path} does not match its own config: missing {missing}, unexpected {unexpected}")
    model.lm_head.weight = model.transformer.wte.weight  # re-tie: assign replaced wte's Parameter
    return model.eval()


# ---- OpenAI's and Hugging Face's checkpoints → our state dict, and back --------------------------------------------
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
    TensorFlow checkpoint with gpt/tf_checkpoint.py; "tensorflow" uses TensorFlow itself, if installed."""
    directory = Path(directory)
    hparams = directory / "hparams.json"
    if not hparams.is_file():
        raise FileNotFoundError(f"no hparams.json in {directory}; an OpenAI GPT-2 directory holds it with model.ckpt.*")
    config = config_from_openai_hparams(json.loads(hparams.read_text()))
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
    config = config_from_hf(json.loads(config_path.read_text()))
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
