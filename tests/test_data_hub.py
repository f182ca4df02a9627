"""--dataset fineweb-edu against a real HTTP server on 127.0.0.1 laid out like the Hugging Face hub (issue 13).

The server (tests/test_download.py's FileServer, plus the hub's tree API) serves Parquet files in FineWeb-Edu's schema
at datasets/HuggingFaceFW/fineweb-edu/resolve/main/sample/10BT/NNN_00000.parquet, honours Range requests and can cut
a connection, answer with an HTML page, or serve a damaged file.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
from data_fixtures import expected_tokens, make_corpus, read_split, shard_bytes
from test_data_prep import FLAGS, run_cli
from test_download import FileServer, RangeHandler

REPO = "HuggingFaceFW/fineweb-edu"
FOLDER = "sample/10BT"
FILES = "datasets/" + REPO + "/resolve/main/" + FOLDER


class HubHandler(RangeHandler):
    def do_GET(self):
        path = unquote(urlparse(self.path).path).lstrip("/")
        if not path.startswith("api/"):
            return super().do_GET()
        srv = self.server
        if not srv.api_pages or path != f"api/datasets/{REPO}/tree/main/{FOLDER}":
            return self._send(404, b'{"error": "not found"}', "application/json", path, None)
        page = int(dict(p.split("=") for p in urlparse(self.path).query.split("&") if p).get("cursor", 0))
        headers = {}
        if page + 1 < len(srv.api_pages):
            headers["Link"] = f'<{srv.url}/{path}?cursor={page + 1}>; rel="next"'
        body = json.dumps(srv.api_pages[page]).encode()
        self._send(200, body, "application/json", path, None, headers)


class HubServer(FileServer):
    def __init__(self, root: Path):
        super().__init__(root)
        self.RequestHandlerClass = HubHandler
        self.api_pages: list[list[dict]] = []  # the tree API's answer, page by page; empty → 404 (no API)

    def handle_error(self, request, client_address):
        pass  # a client that stops reading (an error page refused) resets the connection: expected; its traceback would
        # land in the captured stderr the tests inspect

    def enable_api(self, per_page: int = 2) -> None:
        entries = []
        for f in sorted((self.root / FILES).glob("*.parquet")):
            data = f.read_bytes()
            lfs = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
            entry = {"type": "file", "oid": "0" * 40, "size": len(data), "lfs": lfs, "path": f"{FOLDER}/{f.name}"}
            entries.append(entry)
        entries.append({"type": "directory", "oid": "1" * 40, "size": 0, "path": f"{FOLDER}/extra"})
        self.api_pages = [entries[i : i + per_page] for i in range(0, len(entries), per_page)]


@pytest.fixture
def hub(tmp_path, monkeypatch):
    docs = [d for file_docs in make_corpus(tmp_path / "www" / FILES, files=3, docs_per_file=60) for d in file_docs]
    srv = HubServer(tmp_path / "www")
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("HF_ENDPOINT", srv.url)
    yield srv, docs
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def hub_args(tmp_path: Path, *extra) -> list:
    return ["--dataset", "fineweb-edu", "--subset", "sample-10BT", "--out-dir", tmp_path / "out",
            "--cache-dir", tmp_path / "cache", *FLAGS, *extra]  # fmt: skip


def assert_error_line(err: str, *fragments: str) -> None:
    """Log lines may come first ("downloading URL"); the last line is the one error line; no traceback."""
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and sum(line.startswith("error:") for line in lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]


def test_hub_download_gives_the_same_shards_as_the_same_files_given_locally(hub, tmp_path, capsys):
    srv, docs = hub
    srv.enable_api(per_page=2)  # two pages: the second is found through the Link header
    code, err = run_cli(hub_args(tmp_path), capsys)
    assert code == 0, err
    assert [p for p, *_ in srv.log if p.startswith("api/")] == [f"api/datasets/{REPO}/tree/main/{FOLDER}"] * 2
    cache = tmp_path / "cache" / REPO / FOLDER
    for f in sorted((srv.root / FILES).glob("*.parquet")):
        assert (cache / f.name).read_bytes() == f.read_bytes()
        assert len(srv.requests_for(f"{FILES}/{f.name}")) == 1  # each file fetched once
    expected = expected_tokens(docs, val_every=10)
    assert np.array_equal(read_split(tmp_path / "out", "train"), expected["train"])
    assert np.array_equal(read_split(tmp_path / "out", "val"), expected["val"])
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert meta["inputs"] == [f"hf:{REPO}/sample-10BT"]
    assert [s["sha256"] for s in meta["sources"]] == [e["lfs"]["oid"] for page in srv.api_pages for e in page[:2]
                                                      if e["type"] == "file"]  # fmt: skip
    code, err = run_cli([cache, "--out-dir", tmp_path / "local", *FLAGS], capsys)  # the same files, given locally
    assert code == 0, err
    assert shard_bytes(tmp_path / "local") == shard_bytes(tmp_path / "out")


def test_known_file_names_without_the_api_and_a_cut_connection_resumes(hub, tmp_path, capsys):
    srv, docs = hub
    first = f"{FILES}/000_00000.parquet"
    size = (srv.root / first).stat().st_size
    srv.cut_once[first] = size // 2
    code, err = run_cli(hub_args(tmp_path, "--max-tokens", "2000"), capsys)  # a slice: the first file is enough
    assert code == 0, err
    assert "using the known file names" in err
    cut = size // 2
    assert [(start, sent) for _, start, sent, _ in srv.requests_for(first)] == [(None, cut), (cut, size - cut)]
    assert srv.requests_for(f"{FILES}/001_00000.parquet") == []  # a slice downloads only what it reads
    assert (tmp_path / "cache" / REPO / first.split("main/")[1]).read_bytes() == (srv.root / first).read_bytes()
    meta = json.loads((tmp_path / "out" / "meta.json").read_text())
    assert 2000 <= meta["train"]["tokens"] + meta["val"]["tokens"] < 2000 + 1000


@pytest.mark.parametrize("damage", ["html", "corrupt", "missing"])
def test_html_damaged_or_missing_files_are_refused(hub, tmp_path, capsys, damage):
    srv, _ = hub
    first = f"{FILES}/000_00000.parquet"
    if damage == "html":
        srv.html.add(first)
    elif damage == "corrupt":
        data = (srv.root / first).read_bytes()
        (srv.root / first).write_bytes(b"PAR1" + bytes(reversed(data[4:-4])) + b"PAR0")
    else:
        (srv.root / first).unlink()
    code, err = run_cli(hub_args(tmp_path, "--max-tokens", "2000"), capsys)
    assert code == 1
    fragments = {"html": "HTML/XML page", "corrupt": "not a Parquet file", "missing": "HTTP 404): the file names"}
    assert_error_line(err, fragments[damage])
    assert not (tmp_path / "cache" / REPO / FOLDER / "000_00000.parquet").exists()  # nothing saved under its name
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.bin"))
