"""Small corpora for the data tests: Parquet files in FineWeb-Edu's real schema, and what their tokens must be.

The expected tokens are computed here, from the documents, with tiktoken and the rule "every 10th document goes to
val" written out independently of gpt/data: <|endoftext|> + encode_ordinary(text) per document, in file order.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gpt.tokenizer import EOT_ID, get_tokenizer

# FineWeb-Edu's columns and types (HuggingFaceFW/fineweb-edu, sample/10BT/*.parquet)
FINEWEB_EDU_SCHEMA = pa.schema(
    [
        ("text", pa.string()),
        ("id", pa.string()),
        ("dump", pa.string()),
        ("url", pa.string()),
        ("file_path", pa.string()),
        ("language", pa.string()),
        ("language_score", pa.float64()),
        ("token_count", pa.int64()),
        ("score", pa.float64()),
        ("int_score", pa.int64()),
    ]
)
WORDS = (
    "the of and to in a is that for it as was with be by on not he I this are or his from at which but have an they "
    "you were her she there been one all we their has would when if so no will more can about my out them said "
    "energy cell photosynthesis theorem Jupiter café naïve 日本語 😀 1984 3.14 don't it's (see below) — e.g."
).split()


def make_documents(n: int, seed: int) -> list[str]:
    """n documents of 20-200 words in 1-3 paragraphs, some with unicode; deterministic."""
    rng = random.Random(seed)
    docs = []
    for _ in range(n):
        sizes = [rng.randint(10, 100) for _ in range(rng.randint(1, 3))]
        paragraphs = [" ".join(rng.choice(WORDS) for _ in range(n)) for n in sizes]
        docs.append("\n\n".join(p[0].upper() + p[1:] + "." for p in paragraphs))
    return docs


def write_fineweb_edu_parquet(path: Path, docs: list[str], row_group_size: int = 40) -> Path:
    """A Parquet file in FineWeb-Edu's schema, several row groups (so resuming mid-file skips some)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    n = len(docs)
    table = pa.table(
        {
            "text": docs,
            "id": [f"<urn:uuid:{path.stem}-{i:06d}>" for i in range(n)],
            "dump": ["CC-MAIN-2024-10"] * n,
            "url": [f"https://example.org/{path.stem}/{i}" for i in range(n)],
            "file_path": [f"s3://commoncrawl/crawl-data/CC-MAIN-2024-10/{path.stem}.warc.gz"] * n,
            "language": ["en"] * n,
            "language_score": [0.95] * n,
            "token_count": [len(d.split()) for d in docs],
            "score": [3.2] * n,
            "int_score": [3] * n,
        },
        schema=FINEWEB_EDU_SCHEMA,
    )
    pq.write_table(table, path, row_group_size=row_group_size)
    return path


def make_corpus(folder: Path, files: int = 3, docs_per_file: int = 90, seed: int = 0) -> list[list[str]]:
    """files Parquet files named like FineWeb-Edu's sample/10BT (000_00000.parquet, ...); returns their documents."""
    corpus = [make_documents(docs_per_file, seed + i) for i in range(files)]
    for i, docs in enumerate(corpus):
        write_fineweb_edu_parquet(folder / f"{i:03d}_00000.parquet", docs)
    return corpus


def expected_tokens(docs: list[str], val_every: int = 10) -> dict[str, np.ndarray]:
    """{split: tokens}: EOT + tokens of each document; document i is val when (i + 1) % val_every == 0."""
    enc = get_tokenizer()
    out = {"train": [], "val": []}
    for i, doc in enumerate(docs):
        out["val" if (i + 1) % val_every == 0 else "train"] += [EOT_ID, *enc.encode_ordinary(doc)]
    return {s: np.array(t, dtype=np.uint16) for s, t in out.items()}


def read_split(out_dir: Path, split: str) -> np.ndarray:
    """All shards of a split, concatenated in name order."""
    files = sorted(out_dir.glob(f"{split}_*.bin")) or [out_dir / f"{split}.bin"]
    return np.concatenate([np.fromfile(f, dtype=np.uint16) for f in files])


def shard_bytes(out_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out_dir.glob("*.bin"))}
