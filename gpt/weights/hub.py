"""Download OpenAI's or Hugging Face's GPT-2 files: which files, from where, and how large they must be.

    directory = download_model("124M", source="openai")     # → weights/openai/124M/ with OpenAI's seven files
    directory = download_model("gpt2-xl", source="hf")       # → weights/hf/1558M/ with config.json, model.safetensors

Each file goes through gpt/download.py's download_file (resume, retries, size and content checks), with the sizes
known in advance: OpenAI's data file holds 4 bytes per parameter of the model its hparams.json describes, and the
tokenizer files must match GPT-2's published sha256.

Mirrors: pass base_url, or set GPT2_BASE_URL (HF_ENDPOINT also works for the hf source). Files are fetched from
    openai: {base}/{size}/{file}                       default base https://openaipublic.blob.core.windows.net/gpt-2/models
    hf:     {base}/{repo}/resolve/main/{file}          default base https://huggingface.co, repo openai-community/gpt2…
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import requests
import torch

from gpt.config import OPENAI_SIZES, GPTConfig, canonical_preset
from gpt.download import DownloadError, download_file
from gpt.model import GPT
from gpt.utils import read_json
from gpt.tokenizer import BPE_FILES, TokenizerFileError, verify_bpe_files
from gpt.weights.convert import config_from_openai_hparams

BASE_URL_ENV = "GPT2_BASE_URL"
DEFAULT_BASE_URLS = {
    "openai": "https://openaipublic.blob.core.windows.net/gpt-2/models",
    "hf": "https://huggingface.co",
}
OPENAI_DATA = "model.ckpt.data-00000-of-00001"
# hparams.json first: it tells the data file's size before that file is fetched.
OPENAI_FILES = ("hparams.json", "checkpoint", "encoder.json", "vocab.bpe", "model.ckpt.index", "model.ckpt.meta")
OPENAI_FILES += (OPENAI_DATA,)
HF_FILES = ("config.json", "model.safetensors")
HF_REPOS = {
    "124M": "openai-community/gpt2",
    "355M": "openai-community/gpt2-medium",
    "774M": "openai-community/gpt2-large",
    "1558M": "openai-community/gpt2-xl",
}
BPE_SIZES = {"encoder.json": 1_042_301, "vocab.bpe": 456_318}  # the same two files ship with every size
KNOWN_SIZES = {  # exact bytes of OpenAI's 124M release (shared/ENVIRONMENT.md); other sizes: derived, see below
    "124M": {"checkpoint": 77, "hparams.json": 90, "model.ckpt.index": 5_215, "model.ckpt.meta": 471_155}
}


def base_url(source: str, override: str | None = None) -> str:
    """The URL files are fetched under: override, else $GPT2_BASE_URL, else ($HF_ENDPOINT for hf), else the default."""
    if source not in DEFAULT_BASE_URLS:
        raise ValueError(f"unknown source {source!r}; use 'openai' or 'hf'")
    env = os.environ.get(BASE_URL_ENV) or (os.environ.get("HF_ENDPOINT") if source == "hf" else None)
    return (override or env or DEFAULT_BASE_URLS[source]).rstrip("/")


def file_url(source: str, size: str, name: str, base: str | None = None) -> str:
    base = base_url(source, base)
    if source == "openai":
        return f"{base}/{size}/{name}"
    return f"{base}/{HF_REPOS[size]}/resolve/main/{name}"


def checkpoint_bytes(config: GPTConfig) -> int:
    """Bytes of OpenAI's data file for this config: float32 parameters back to back (124M: 497,759,232)."""
    with torch.device("meta"):
        return 4 * GPT(config).num_params()


def expected_sizes(source: str, size: str, directory: Path) -> dict[str, int]:
    """Sizes known before fetching. OpenAI's data file size follows from hparams.json (fetched first); a preset's
    exact table applies when the hparams describe that preset."""
    if source != "openai":
        return {}
    sizes = dict(BPE_SIZES)
    hparams = directory / "hparams.json"
    if hparams.is_file():
        config = config_from_openai_hparams(read_json(hparams))
        sizes[OPENAI_DATA] = checkpoint_bytes(config)
        preset = GPTConfig.from_preset(size)
        if (config.n_layer, config.n_head, config.n_embd) == (preset.n_layer, preset.n_head, preset.n_embd):
            sizes.update(KNOWN_SIZES.get(size, {}))
    return sizes


def download_model(
    size: str,
    source: str = "openai",
    models_dir: str | Path = "weights",
    base: str | None = None,
    *,
    retries: int = 5,
    backoff: float = 1.0,
    progress: bool = True,
) -> Path:
    """All files of one GPT-2 size into models_dir/source/size/ (skipping complete ones); returns that directory."""
    size = canonical_preset(size)
    if size not in OPENAI_SIZES:
        raise ValueError(f"{size!r} is not one of OpenAI's sizes: {', '.join(OPENAI_SIZES)} (or gpt2, gpt2-medium, …)")
    directory = Path(models_dir) / source / size
    session = requests.Session()
    for name in OPENAI_FILES if source == "openai" else HF_FILES:
        url = file_url(source, size, name, base)
        dest = directory / name
        want = expected_sizes(source, size, directory).get(name)
        if not (dest.is_file() and (want is None or dest.stat().st_size == want)):
            print(f"downloading {url}", file=sys.stderr)
        try:
            download_file(url, dest, want, retries=retries, backoff=backoff, progress=progress, session=session)
        except DownloadError as e:
            if e.status != 404:
                raise
            raise DownloadError(
                f"{e}. Check the model size and source; with a mirror (--base-url or ${BASE_URL_ENV}) check that it "
                "holds this file at this path",
                status=404,
            ) from None
    if source == "openai":
        try:
            verify_bpe_files(directory)
        except TokenizerFileError as e:
            for name in BPE_FILES:  # drop them so the next run fetches them again
                (directory / name).unlink(missing_ok=True)
            raise DownloadError(f"{e}; they were deleted, run again to re-download") from None
    return directory
