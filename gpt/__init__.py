"""gpt2-from-scratch: a hand-written GPT-2 you can read, load OpenAI's weights into, train and sample.

Reading order (the README's reading path): config.py → model.py → tokenizer.py → weights/ (our file format,
OpenAI/HF conversion, the TF checkpoint reader, hub downloads through download.py) → sampling.py → generate.py
(padding.py for unequal prompts, fast_decode.py for the speed tricks) → data/ (text → token files → training
windows) → scripts/pretrain.py (the loop) → train/ (its helpers) → loss.py.
"""

from gpt.config import GPTConfig
from gpt.generate import decode_one_token, generate, generate_stream, prefill
from gpt.model import GPT, KVCache
from gpt.sampling import SamplingParams, filter_logits, sample_next_token
from gpt.tokenizer import get_tokenizer
from gpt.utils import get_device, set_seed
from gpt.weights import export_hf, load_model, save_model

__all__ = [
    "GPT",
    "GPTConfig",
    "KVCache",
    "SamplingParams",
    "decode_one_token",
    "export_hf",
    "filter_logits",
    "generate",
    "generate_stream",
    "get_device",
    "get_tokenizer",
    "load_model",
    "prefill",
    "sample_next_token",
    "save_model",
    "set_seed",
]
