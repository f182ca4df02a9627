"""The pretraining corpora of GPT-2 reproductions, fetched from the Hugging Face hub as Parquet files.

    sources = hub_sources("fineweb-edu", "sample-10BT", cache_dir="data/hub")   # 14 Sources, downloaded when reached
    prepare_shards(sources, "data/fineweb-edu/sample-10BT", shard_tokens=100_000_000, ...)

Files come from `{HF_ENDPOINT or https://huggingface.co}/datasets/<repo>/resolve/main/<path>` through
gpt/download.py's download_file (resume with Range requests, retries, size checks, HTML error pages refused, Parquet
magic bytes checked), into `<cache_dir>/<repo>/<path>`. Which files a subset has:

- listing "api": the hub's tree API, `GET {endpoint}/api/datasets/<repo>/tree/main/<dir>` (JSON pages, the next one in
  the Link header). Gives every file's size and sha256 too, which are then checked. Works for every subset.
- listing "known": the file names below, as the repositories lay them out (checked against the hub's commit pages:
  FineWeb-Edu's sample/10BT holds 000_00000.parquet … 013_00000.parquet, ≈ 2.15 GB each; FineWeb's holds 15, the
  last ≈ 0.57 GB; Skylion007/openwebtext's Parquet conversion data/train-000NN-of-00093.parquet). No network call
  before the downloads, but only these subsets, and a renamed file is a 404.
- "auto" (default): the API, and the known names when the API cannot be reached.

FineWeb subsets: sample-10BT, sample-100BT, sample-350BT (sample/<N>BT/) or a crawl such as CC-MAIN-2024-10
(data/<crawl>/). The Parquet files have a `text` column (FineWeb-Edu also: id, dump, url, file_path, language,
language_score, token_count, score, int_score).
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import requests

from gpt.data.sources import DataError, Source
from gpt.download import DownloadError, download_file
from gpt.tokenizer import sha256_file

DEFAULT_ENDPOINT = "https://huggingface.co"
LISTINGS = ("auto", "api", "known")


@dataclass(frozen=True)
class HubDataset:
    repo: str  # owner/name on the hub
    default_subset: str
    approx_tokens: dict[str, int]  # subset → GPT-2 tokens, for the ETA and the disk-space check
    known_files: dict[str, list[str]] = field(default_factory=dict)  # subset → file paths in the repository


DATASETS = {
    "fineweb-edu": HubDataset(
        "HuggingFaceFW/fineweb-edu",
        "sample-10BT",
        {"sample-10BT": 10_000_000_000, "sample-100BT": 100_000_000_000, "sample-350BT": 350_000_000_000},
        {"sample-10BT": [f"sample/10BT/{i:03d}_00000.parquet" for i in range(14)]},
    ),
    "fineweb": HubDataset(
        "HuggingFaceFW/fineweb",
        "sample-10BT",
        {"sample-10BT": 10_000_000_000, "sample-100BT": 100_000_000_000, "sample-350BT": 350_000_000_000},
        {"sample-10BT": [f"sample/10BT/{i:03d}_00000.parquet" for i in range(15)]},
    ),
    # 8,013,769 documents, 9,040,017,095 GPT-2 tokens with <|endoftext|> separators (nanoGPT's data/openwebtext)
    "openwebtext": HubDataset(
        "Skylion007/openwebtext",
        "default",
        {"default": 9_040_017_095},
        {"default": [f"data/train-{i:05d}-of-00093.parquet" for i in range(93)]},
    ),
}


@dataclass
class RemoteFile:
    path: str  # inside the repository
    size: int | None = None
    sha256: str | None = None


def endpoint(override: str | None = None) -> str:
    return (override or os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def subset_dir(dataset: str, subset: str) -> str:
    """The folder of the repository that holds a subset's Parquet files."""
    if dataset == "openwebtext":
        if subset not in ("default", "plain_text"):
            raise DataError(f"openwebtext has one subset, 'default'; got {subset!r}")
        return "data"
    if m := re.fullmatch(r"sample-(\d+)BT", subset):
        return f"sample/{m[1]}BT"
    if re.fullmatch(r"CC-MAIN-\d{4}-\d{2}", subset):
        return f"data/{subset}"
    raise DataError(
        f"unknown {dataset} subset {subset!r}; use sample-10BT, sample-100BT, sample-350BT or a crawl such as "
        "CC-MAIN-2024-10"
    )


def _session() -> requests.Session:
    session = requests.Session()
    if token := os.environ.get("HF_TOKEN"):  # gated or private repositories
        session.headers["Authorization"] = f"Bearer {token}"
    return session


def list_api(repo: str, folder: str, base: str, session: requests.Session, timeout: float = 20.0) -> list[RemoteFile]:
    """Every .parquet file under `folder`, sorted by path, from the hub's tree API (raises OSError/ValueError)."""
    url: str | None = f"{base}/api/datasets/{repo}/tree/main/{folder}"
    files = []
    while url:
        r = session.get(url, timeout=timeout)
        r.raise_for_status()
        for entry in r.json():
            if entry.get("type") == "file" and entry["path"].endswith(".parquet"):
                lfs = entry.get("lfs") or {}
                files.append(RemoteFile(entry["path"], lfs.get("size", entry.get("size")), lfs.get("oid")))
        url = r.links.get("next", {}).get("url")
    return sorted(files, key=lambda f: f.path)


def list_files(dataset: str, subset: str, base: str, listing: str = "auto", log=print) -> list[RemoteFile]:
    """The subset's files, by `listing` (see the module docstring)."""
    info, folder = DATASETS[dataset], subset_dir(dataset, subset)
    known = info.known_files.get(subset if dataset != "openwebtext" else "default")
    if listing == "known":
        if not known:
            raise DataError(f"no known file list for {dataset} {subset}; use --list-files api (needs the hub's API)")
        return [RemoteFile(p) for p in known]
    try:
        files = list_api(info.repo, folder, base, _session())
        if not files:
            raise ValueError(f"no .parquet files under {folder}")
        return files
    except (OSError, ValueError, KeyError, TypeError) as e:  # requests' errors are OSErrors, bad JSON ValueErrors
        if listing == "api" or not known:
            raise DataError(
                f"could not list {info.repo}/{folder} with the hub's API at {base} ({e}); check the subset name and "
                "your connection (or HF_ENDPOINT), or download the .parquet files yourself and pass them as inputs"
            ) from None
        log(f"the hub's file listing is not available ({type(e).__name__}); using the known file names")
        return [RemoteFile(p) for p in known]


def _fetcher(url: str, dest: Path, remote: RemoteFile, session: requests.Session, progress: bool):
    def fetch() -> Path:
        if not dest.is_file():
            print(f"downloading {url}", file=sys.stderr, flush=True)
        try:
            path = download_file(url, dest, remote.size, progress=progress and sys.stderr.isatty(), session=session)
        except DownloadError as e:
            if "(HTTP 404)" not in str(e):  # download_file's 404 advice is about model files
                raise
            raise DownloadError(
                f"{url} does not exist (HTTP 404): the file names of this subset may have changed; run again with "
                "--list-files api (the hub's own listing), check HF_ENDPOINT, or pass downloaded files as inputs"
            ) from None
        if remote.sha256 and (digest := sha256_file(path)) != remote.sha256:
            path.unlink()
            raise DownloadError(
                f"{url} downloaded with sha256 {digest}, but the hub lists {remote.sha256}; the file was deleted: "
                "run the same command again to download it again"
            )
        return path

    return fetch


def hub_sources(
    dataset: str,
    subset: str | None = None,
    cache_dir: str | Path = "data/hub",
    *,
    base_url: str | None = None,
    listing: str = "auto",
    progress: bool = True,
    log=print,
) -> list[Source]:
    """One Source per Parquet file of the subset, downloaded into cache_dir/<repo>/ when the preparation reaches it."""
    if dataset not in DATASETS:
        raise DataError(
            f"unknown dataset {dataset!r}; choose {', '.join(DATASETS)}, or pass your own .parquet/.jsonl/.txt files"
        )
    if listing not in LISTINGS:
        raise DataError(f"unknown listing {listing!r}; use {', '.join(LISTINGS)}")
    info = DATASETS[dataset]
    subset = subset or info.default_subset
    base = endpoint(base_url)
    session = _session()
    sources = []
    for remote in list_files(dataset, subset, base, listing, log):
        url = f"{base}/datasets/{info.repo}/resolve/main/{remote.path}"
        dest = Path(cache_dir) / info.repo / remote.path
        fetch = _fetcher(url, dest, remote, session, progress)
        sources.append(Source(remote.path, dest, fetch, remote.size, remote.sha256))
    return sources


def approx_tokens(dataset: str, subset: str | None = None) -> int | None:
    info = DATASETS[dataset]
    return info.approx_tokens.get(subset or info.default_subset)
