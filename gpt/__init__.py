"""gpt2-from-scratch: a hand-written GPT-2 you can read, load OpenAI's weights into, train and sample.

Reading order: config.py → model.py → tokenizer.py → weights.py → generate.py → data.py → train.py.
"""

from gpt.config import GPTConfig
from gpt.generate import generate
from gpt.model import GPT, KVCache
from gpt.tokenizer import get_tokenizer
from gpt.utils import get_device, set_seed
from gpt.weights import export_hf, load_model, save_model

__all__ = [
    "GPT",
    "GPTConfig",
    "KVCache",
    "export_hf",
    "generate",
    "get_device",
    "get_tokenizer",
    "load_model",
    "save_model",
    "set_seed",
]
