"""Data: text → uint16 token files (prepare.py), and random training windows from them (loader.py).

meta = prepare_data(["data/shakespeare"], "data/shakespeare/prepared", val_fraction=0.1)
data = load_prepared("data/shakespeare/prepared")
sampler = WindowSampler(data.train, batch_size=8, seq_len=256, grad_accum=4, seed=1337)
"""

from gpt.data.loader import PreparedData, WindowSampler, eval_batches, is_prepared, load_prepared
from gpt.data.prepare import (
    META_NAME,
    SPLITS,
    TOKEN_DTYPE,
    DataError,
    is_val_document,
    iter_text_chunks,
    list_text_files,
    prepare_data,
)

__all__ = [
    "META_NAME",
    "SPLITS",
    "TOKEN_DTYPE",
    "DataError",
    "PreparedData",
    "WindowSampler",
    "eval_batches",
    "is_prepared",
    "is_val_document",
    "iter_text_chunks",
    "list_text_files",
    "load_prepared",
    "prepare_data",
]
