"""Weights: our self-describing .safetensors format, OpenAI/Hugging Face import, Hugging Face export.

    format.py         save_model / load_model / resolve_weights_path (file, checkpoint dir or run dir)
    tf_checkpoint.py  OpenAI's TensorFlow checkpoint read with NumPy alone
    convert.py        OpenAI / HF layouts → our state dict (renames, four transposes, strict checks)
    export.py         our model → a Hugging Face GPT-2 directory
    hub.py            download_model: OpenAI's / Hugging Face's GPT-2 files, with their known sizes (via gpt/download.py)
"""

from gpt.weights.convert import (
    TRANSPOSED,
    ConvertedWeights,
    config_from_hf,
    config_from_openai_hparams,
    convert_hf,
    convert_openai,
    convert_state_dict,
    hf_key,
    openai_key,
)
from gpt.weights.export import export_hf, hf_config_dict
from gpt.weights.format import (
    CONFIG_KEY,
    TIED_KEY,
    atomic_save_safetensors,
    load_model,
    read_config,
    read_each_tensor,
    resolve_weights_path,
    save_model,
    save_state_dict,
    unwrap_model,
)
from gpt.weights.hub import (
    BASE_URL_ENV,
    BPE_SIZES,
    HF_FILES,
    KNOWN_SIZES,
    OPENAI_DATA,
    OPENAI_FILES,
    checkpoint_bytes,
    download_model,
)

__all__ = [
    "BASE_URL_ENV",
    "BPE_SIZES",
    "HF_FILES",
    "KNOWN_SIZES",
    "OPENAI_DATA",
    "OPENAI_FILES",
    "checkpoint_bytes",
    "download_model",
    "CONFIG_KEY",
    "TIED_KEY",
    "TRANSPOSED",
    "ConvertedWeights",
    "atomic_save_safetensors",
    "config_from_hf",
    "config_from_openai_hparams",
    "convert_hf",
    "convert_openai",
    "convert_state_dict",
    "export_hf",
    "hf_config_dict",
    "hf_key",
    "load_model",
    "openai_key",
    "read_config",
    "read_each_tensor",
    "resolve_weights_path",
    "save_model",
    "save_state_dict",
    "unwrap_model",
]
