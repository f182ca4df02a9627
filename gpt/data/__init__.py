"""Data: documents → uint16 token shards (prepare.py, pipeline.py, shards.py, sources.py, datasets.py), and training
windows drawn from them (loader.py).

    meta = prepare_data(["data/shakespeare"], "data/shakespeare/prepared", val_fraction=0.1)
    meta = prepare_shards(hub_sources("fineweb-edu", "sample-10BT"), "data/fineweb-edu/sample-10BT",
                          shard_tokens=100_000_000, val_tokens=10_000_000)
    data = load_prepared("data/shakespeare/prepared")
    sampler = WindowSampler(data.train, batch_size=8, seq_len=256, grad_accum=4, seed=1337)
"""

from gpt.data.datasets import DATASETS, hub_sources
from gpt.data.loader import PreparedData, TokenShards, WindowSampler, eval_batches, is_prepared, load_prepared
from gpt.data.prepare import is_val_document, prepare_data, prepare_shards
from gpt.data.shards import META_NAME, SPLITS, TOKEN_DTYPE
from gpt.data.sources import DataError, Source, iter_pieces, iter_text_chunks, list_source_files, list_text_files

__all__ = [
    "DATASETS",
    "META_NAME",
    "SPLITS",
    "TOKEN_DTYPE",
    "DataError",
    "PreparedData",
    "Source",
    "TokenShards",
    "WindowSampler",
    "eval_batches",
    "hub_sources",
    "is_prepared",
    "is_val_document",
    "iter_pieces",
    "iter_text_chunks",
    "list_source_files",
    "list_text_files",
    "load_prepared",
    "prepare_data",
    "prepare_shards",
]
