"""The three test sets: where they come from, fetching them robustly, reading and checking them.

    examples = load_task("hellaswag", "data/eval")                  # downloads on first use
    examples = load_task("lambada", "/mnt/datasets", download=False)   # a directory that already holds the file

Files are fetched with gpt/download.py's download_file (resume, retries, Content-Length check, refusal of HTML error
pages) from the canonical URL, or from a mirror: with `mirror` or $GPT2_EVAL_MIRROR set, each file is fetched from
{mirror}/{its file name} (hellaswag_val.jsonl, lambada_test.jsonl, wikitext-2-raw-v1.zip). A downloaded file is
kept only if it parses and holds the whole split (row counts below); otherwise it is deleted and an EvalDataError
says what to do. A local directory may hold a subset (for a quick look); such results are flagged
`complete_split: false`.

Checksums. None of the canonical files could be fetched on the machine this was written on, so no sha256 is enforced:
  - HellaSwag val (rowanz/hellaswag): the reference copy used here (10,042 rows) was converted from another
    distribution, so its sha256 (a884311d…) is of different bytes — not the canonical file's; not used.
  - LAMBADA (OpenAI's lambada_test.jsonl): the reference copy (5,153 passages, sha256 245c0315…) was rebuilt from
    another distribution; OpenAI's byte layout is not verified; not used.
  - WikiText-2 raw (wikitext-2-raw-v1.zip): a third-party project records sha256
    ef7edb566e3e2b2d31b29c1fdb0c89a4cc683597484c3dc2517919c615435a11 for this zip; not verified here, not enforced.
Instead, the content is checked: every row parses with the fields a task needs, and the split has its known size.
"""

from __future__ import annotations

import json
import os
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

from gpt.download import DownloadError, download_file
from gpt.eval.perplexity import split_wikitext_articles

MIRROR_ENV = "GPT2_EVAL_MIRROR"
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "eval"
WIKITEXT_MEMBER = "wikitext-2-raw/wiki.test.raw"
HINT = f"Try again, pass --mirror URL (or ${MIRROR_ENV}), or put the file in a directory and pass --data-dir DIR"


class EvalDataError(RuntimeError):
    """A test set is missing, unreadable or incomplete; the message says how to fix it."""


@dataclass(frozen=True)
class Source:
    url: str  # canonical location
    filename: str  # name in the data directory (also the name looked up on a mirror)
    local_names: tuple[str, ...]  # other names accepted in a local directory, first found wins
    size: int  # examples in the full split (articles for wikitext)
    what: str


SOURCES = {
    "hellaswag": Source(
        "https://raw.githubusercontent.com/rowanz/hellaswag/master/data/hellaswag_val.jsonl",
        "hellaswag_val.jsonl", (), 10_042, "HellaSwag validation split (Zellers et al. 2019, MIT)",
    ),
    "lambada": Source(
        "https://openaipublic.blob.core.windows.net/gpt-2/data/lambada_test.jsonl",
        "lambada_test.jsonl", ("lambada_openai_test.jsonl",), 5_153,
        "LAMBADA test, OpenAI's detokenized version (Paperno et al. 2016, CC BY 4.0)",
    ),
    # lm-evaluation-harness reads EleutherAI/wikitext_document_level, built from this zip's wiki.test.raw (the
    # original host, s3.amazonaws.com/research.metamind.io/wikitext/, now refuses downloads; this is its author's
    # mirror, which Hugging Face's `wikitext` dataset also points to).
    "wikitext": Source(
        "https://wikitext.smerity.com/wikitext-2-raw-v1.zip",
        "wikitext-2-raw-v1.zip", ("wiki.test.raw", "wiki.test.tokens", "wikitext2_test.tokens"), 62,
        "WikiText-2 raw test (Merity et al. 2016, CC BY-SA)",
    ),
}  # fmt: skip
TASKS = tuple(SOURCES)


def source_url(task: str, mirror: str | None = None) -> str:
    mirror = mirror or os.environ.get(MIRROR_ENV)
    return f"{mirror.rstrip('/')}/{SOURCES[task].filename}" if mirror else SOURCES[task].url


def find_local(task: str, data_dir: str | Path) -> Path | None:
    """The task's file in data_dir under its canonical or an accepted name, or None."""
    src = SOURCES[task]
    for name in (src.filename, *src.local_names):
        if (Path(data_dir) / name).is_file():
            return Path(data_dir) / name
    return None


def fetch(task: str, data_dir: str | Path, mirror: str | None = None, progress: bool = True, hint: str = HINT) -> Path:
    """Download the task's file into data_dir (a complete one is reused) and check it; returns its path.
    hint: what a failure's message tells the user to do, in the caller's own flags (default: scripts/evaluate.py's)."""
    dest = Path(data_dir) / SOURCES[task].filename
    url = source_url(task, mirror)
    if not dest.is_file():
        print(f"downloading {url}", file=sys.stderr)
    try:
        download_file(url, dest, progress=progress)
        examples = read_file(task, dest)
    except (DownloadError, EvalDataError) as e:
        dest.unlink(missing_ok=True)  # never leave a bad file that looks complete
        raise EvalDataError(f"{e}. {hint}") from None
    if len(examples) != SOURCES[task].size:
        dest.unlink()
        raise EvalDataError(
            f"{url} gave {len(examples):,} {task} examples, the full split has {SOURCES[task].size:,}: the file is "
            f"truncated or not the right one (it was deleted). {hint}"
        )
    return dest


def read_file(task: str, path: Path) -> list:
    """The examples in one file: HellaSwag rows (dicts), LAMBADA passages (str) or WikiText articles (str)."""
    try:
        if task == "wikitext":
            return split_wikitext_articles(_read_wikitext(path))
        rows = []
        with open(path, encoding="utf-8-sig") as f:  # -sig: a byte-order mark (a file saved by Notepad) is no text
            for i, line in enumerate(f, 1):
                if line.strip():
                    rows.append(_check_row(task, json.loads(line), i))
        return [r["text"] for r in rows] if task == "lambada" else rows
    except (UnicodeDecodeError, json.JSONDecodeError, zipfile.BadZipFile, KeyError, ValueError) as e:
        raise EvalDataError(f"{path} is not a valid {task} file ({type(e).__name__}: {e}); delete it (it is "
                            "downloaded again) or replace it with a good copy") from None  # fmt: skip


def _read_wikitext(path: Path) -> str:
    if path.suffix != ".zip":
        return path.read_text(encoding="utf-8-sig")
    with zipfile.ZipFile(path) as z:
        return z.read(WIKITEXT_MEMBER).decode("utf-8-sig")  # KeyError when the member is missing


def _check_row(task: str, row: dict, line: int) -> dict:
    if task == "lambada":
        if not isinstance(row.get("text"), str) or not row["text"].strip():
            raise ValueError(f"line {line} has no 'text'")
        return row
    missing = [k for k in ("ctx", "ctx_a", "ctx_b", "activity_label", "endings", "label") if k not in row]
    if missing:
        raise ValueError(f"line {line} lacks {missing}")
    if len(row["endings"]) != 4 or str(row["label"]) not in {"0", "1", "2", "3"}:
        raise ValueError(f"line {line} needs 4 endings and a label 0-3")
    return row


def load_task(
    task: str, data_dir: str | Path = DEFAULT_DATA_DIR, *, download: bool = True, mirror: str | None = None,
    progress: bool = True, hint: str = HINT,
) -> tuple[list, dict]:  # fmt: skip
    """(examples, info) for a task. info: the file used, its example count and whether that is the whole split.
    hint: how to fix a failed download, in the caller's flags (see fetch)."""
    if task not in SOURCES:
        raise EvalDataError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    path = find_local(task, data_dir)
    if path is None:
        if not download:
            names = " or ".join((SOURCES[task].filename, *SOURCES[task].local_names))
            raise EvalDataError(f"no {task} data in {data_dir} (looked for {names}); download it from "
                                f"{SOURCES[task].url} into that directory, or leave out --data-dir")  # fmt: skip
        path = fetch(task, data_dir, mirror, progress, hint)
    examples = read_file(task, path)
    if not examples:
        raise EvalDataError(f"{path} holds no {task} examples; delete it (it is re-downloaded) or replace it")
    info = {"file": str(path), "examples": len(examples), "complete_split": len(examples) == SOURCES[task].size}
    if path.suffix == ".tokens":
        info["note"] = "tokenized WikiText (<unk> for rare words), not the raw text the harness scores"
    return examples, info
