"""Download a file robustly: resume, retry, and never keep a truncated file or an HTML error page.

    download_file(url, "weights/x.bin", expected_size=1_042_301)   # → Path; raises DownloadError

The file streams into `<file>.part`; an interrupted download resumes with an HTTP Range request, connection errors,
429 and 5xx answers are retried with exponential backoff, and only a file that passes every check is renamed into
place (so a complete file is never fetched again and a bad one never looks complete). Checks: the size against the
server's Content-Length and against the caller's expected_size; no HTML/XML error page saved as the file (a failure
users of OpenAI's original GPT-2 downloader met); by name, JSON files parse and a safetensors file is as long as its
header says. What to fetch for a GPT-2 model is gpt/weights/hub.py.
"""

from __future__ import annotations

import itertools
import json
import os
import struct
import sys
import time
from pathlib import Path

import requests
from tqdm import tqdm

ERROR_PAGE_TYPES = ("text/html", "application/xhtml+xml", "application/xml", "text/xml")
ERROR_PAGE_STARTS = (b"<!doctype", b"<html", b"<?xml", b"<head", b"<body", b"<error")


class DownloadError(RuntimeError):
    """A file could not be fetched, or what was fetched is not the file; the message says what to do. `status` is
    the HTTP status when the server's answer was final (404), else None."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


def looks_like_error_page(first_bytes: bytes, content_type: str) -> bool:
    """True for an HTML/XML body (an error page, a proxy's login page, a storage service's XML error)."""
    if content_type.split(";")[0].strip().lower() in ERROR_PAGE_TYPES:
        return True
    return first_bytes.lstrip()[:16].lower().startswith(ERROR_PAGE_STARTS)


def _total_size(r: requests.Response, offset: int) -> int | None:
    """Size of the whole file from a 200 (Content-Length) or 206 (Content-Range: bytes a-b/total) answer."""
    if r.status_code == 206:
        total = r.headers.get("Content-Range", "").rpartition("/")[2]
        return int(total) if total.isdigit() else None
    length = r.headers.get("Content-Length")
    return int(length) if length is not None and length.isdigit() else None


def download_file(
    url: str,
    dest: str | Path,
    expected_size: int | None = None,
    *,
    retries: int = 5,
    backoff: float = 1.0,
    timeout: float = 30.0,
    chunk_size: int = 1 << 20,
    progress: bool = True,
    session: requests.Session | None = None,
) -> Path:
    """Fetch url to dest via dest.part, resuming and retrying (see the module docstring). A dest that exists (and
    has expected_size, when given) is taken as complete and not fetched. Raises DownloadError."""
    dest = Path(dest)
    if dest.is_file() and (expected_size is None or dest.stat().st_size == expected_size):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    session = session or requests.Session()
    last_error = "no attempt made"
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        offset = part.stat().st_size if part.exists() else 0
        if expected_size is not None and offset > expected_size:  # not the file we want: start over
            part.unlink()
            offset = 0
        if expected_size is not None and offset == expected_size:
            return _finish(part, dest, expected_size)
        try:
            headers = {"Accept-Encoding": "identity"}  # sizes and byte ranges then refer to the file itself
            if offset:
                headers["Range"] = f"bytes={offset}-"
            with session.get(url, headers=headers, stream=True, timeout=timeout) as r:
                # We compare the length ourselves; urllib3's own check would raise on a cut connection and discard
                # the last bytes it had read, which we want to keep so the resumed request asks only for the rest.
                r.raw.enforce_content_length = False
                if r.status_code == 416 and offset:  # nothing left past our offset: done, or the .part is too long
                    whole = r.headers.get("Content-Range", "").rpartition("/")[2]
                    if whole.isdigit() and int(whole) == offset:
                        return _finish(part, dest, expected_size)
                    part.unlink()
                    last_error = "the partial file was longer than the server's file"
                    continue
                if r.status_code == 404:
                    raise DownloadError(f"{url} does not exist (HTTP 404)", status=404)
                if r.status_code >= 500 or r.status_code == 429:  # server trouble or rate limit: worth retrying
                    last_error = f"HTTP {r.status_code}"
                    continue
                if r.status_code not in (200, 206):
                    raise DownloadError(f"{url} answered HTTP {r.status_code} {r.reason}; check the URL")
                if r.status_code == 200 and offset:  # the server ignored our Range: take the whole file again
                    offset = 0
                if r.status_code == 206 and not r.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
                    part.unlink()  # not the range we asked for: appending it would corrupt the file
                    last_error = f"asked for bytes from {offset:,}, got {r.headers.get('Content-Range')!r}"
                    continue
                total = _total_size(r, offset)
                if expected_size is not None and total is not None and total != expected_size:
                    raise DownloadError(
                        f"{url} is {total:,} bytes, but {dest.name} should be {expected_size:,}: the server holds a "
                        "different or damaged file. Check the model size, and the mirror if you use one"
                    )
                _stream(r, part, offset, total, chunk_size, progress, url)
        except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as e:
            last_error = f"{type(e).__name__}: {e}"
            continue
        size = part.stat().st_size
        if total is not None and size < total:  # the server closed early without an error: resume
            last_error = f"connection closed after {size:,} of {total:,} bytes"
            continue
        if total is not None and size > total:
            part.unlink()
            raise DownloadError(f"{url} sent more bytes ({size:,}) than it announced ({total:,}); try again later")
        return _finish(part, dest, expected_size)
    raise DownloadError(
        f"could not download {url} after {retries + 1} attempts (last: {last_error}). Check your connection and run "
        f"the same command again: it resumes from the {part.stat().st_size if part.exists() else 0:,} bytes kept in "
        f"{part}"
    )


def _stream(r, part: Path, offset: int, total: int | None, chunk_size: int, progress: bool, url: str) -> None:
    """Append the body of r to part (from offset), refusing an HTML/XML error page before writing a byte."""
    chunks = r.iter_content(chunk_size=chunk_size)
    first = next(chunks, b"")
    if looks_like_error_page(first, r.headers.get("Content-Type", "")):
        raise DownloadError(
            f"{url} answered with an HTML/XML page instead of the file (starts {first[:60]!r}); the URL is wrong or a "
            "proxy/portal is in the way. Nothing was saved"
        )
    bar = tqdm(
        total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024, desc=part.name[: -len(".part")],
        file=sys.stderr, disable=not progress, leave=False,
    )  # fmt: skip
    with bar, open(part, "r+b" if offset else "wb") as f:
        f.seek(offset)
        f.truncate()  # whatever lies past offset is not trusted
        for chunk in itertools.chain([first], chunks):
            f.write(chunk)
            bar.update(len(chunk))


def _finish(part: Path, dest: Path, expected_size: int | None) -> Path:
    """Final checks on a complete .part, then the atomic rename that makes it dest."""
    size = part.stat().st_size
    if expected_size is not None and size != expected_size:
        part.unlink()
        raise DownloadError(f"{dest.name}: got {size:,} bytes, expected {expected_size:,}; run again to re-download")
    problem = check_content(part, dest.name)
    if problem:
        part.unlink()
        raise DownloadError(f"{dest.name} was downloaded but is not valid ({problem}); run again to re-download")
    os.replace(part, dest)
    return dest


def check_content(path: Path, name: str) -> str | None:
    """What is wrong with a downloaded file, judged by its name, or None."""
    if name.endswith(".json") and name != "encoder.json":
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            return f"not JSON: {e}"
    if name.endswith(".parquet"):  # starts and ends with the magic bytes PAR1 (the footer's length sits before them)
        with open(path, "rb") as f:
            head = f.read(4)
            f.seek(max(0, path.stat().st_size - 4))
            if head != b"PAR1" or f.read(4) != b"PAR1" or path.stat().st_size < 12:
                return "not a Parquet file (no PAR1 magic bytes at both ends)"
    if name.endswith(".safetensors"):  # 8-byte header length, JSON header, then exactly the data it describes
        with open(path, "rb") as f:
            try:
                (n,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(n))
                end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
            except (struct.error, ValueError, KeyError, TypeError) as e:
                return f"unreadable safetensors header: {e}"
        if path.stat().st_size != 8 + n + end:
            return f"safetensors header describes {8 + n + end:,} bytes, the file has {path.stat().st_size:,}"
    return None
