"""The downloader and the load_openai_weights CLI against a real HTTP server on 127.0.0.1 (no mocks).

The server serves the fixture files in OpenAI's and Hugging Face's URL layouts, honours Range requests, logs every
request (path, Range start, body bytes sent) and can be told to misbehave: cut a connection mid-file, answer with an
HTML page, fail with 503.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
import torch

from gpt.download import DownloadError, check_content, download_file, looks_like_error_page
from gpt.weights import download_model, load_model

ROOT = Path(__file__).resolve().parents[1]
DATA = "model.ckpt.data-00000-of-00001"
OPENAI_PATH = "models/124M"  # the fixture is served where OpenAI's 124M lives (--base-url URL/models)
HF_PATH = "openai-community/gpt2/resolve/main"
HTML_PAGE = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>Please log in</body></html>\n"


class RangeHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers: a cut must really close the connection

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        srv: FileServer = self.server
        path = unquote(urlparse(self.path).path).lstrip("/")
        m = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        start = int(m[1]) if m else None
        with srv.lock:
            fail = srv.fail.get(path, 0)
            srv.fail[path] = max(0, fail - 1)
            cut = srv.cut_once.pop(path, None)
        if fail:
            return self._send(503, b"busy", "text/plain", path, start)
        if path in srv.html:
            return self._send(200, HTML_PAGE, "text/html; charset=utf-8", path, start)
        file = srv.root / path
        if not file.is_file():
            return self._send(404, b"not found", "text/plain", path, start)
        data = file.read_bytes()
        if start is not None and start >= len(data):
            return self._send(416, b"", "text/plain", path, start, {"Content-Range": f"bytes */{len(data)}"})
        body = data[start or 0 :]
        headers = {"Accept-Ranges": "bytes"}
        if start is not None:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        self._send(206 if start is not None else 200, body, "application/octet-stream", path, start, headers, cut)

    def _send(self, status, body, ctype, path, start, headers=None, cut=None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))  # the full length, even when we then cut
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        sent = body if cut is None else body[: cut - (start or 0)]
        self.server.log.append((path, start, len(sent), status))  # before the body: the client may finish (and the
        self.wfile.write(sent)  # test read the log) as soon as the last byte arrives, before this thread runs again
        self.wfile.flush()
        if cut is not None:
            self.close_connection = True  # the client sees the connection drop mid-body


class FileServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path):
        super().__init__(("127.0.0.1", 0), RangeHandler)
        self.root = root
        self.lock = threading.Lock()
        self.log: list[tuple[str, int | None, int, int]] = []  # (path, Range start, body bytes sent, status)
        self.cut_once: dict[str, int] = {}  # path → close the connection once this file offset is reached
        self.html: set[str] = set()  # paths answered with an HTML page
        self.fail: dict[str, int] = {}  # path → answer 503 this many times

    def handle_error(self, request, client_address):
        """A client that closed or reset its keep-alive connection (after a 404, say) is not an error: socketserver's
        traceback would land in the test's captured stderr. Anything else still prints it."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}"

    def requests_for(self, path: str):
        return [entry for entry in self.log if entry[0] == path]


@pytest.fixture
def server(tmp_path, openai_dir, hf_dir):
    root = tmp_path / "www"
    shutil.copytree(openai_dir, root / OPENAI_PATH)
    (root / HF_PATH).mkdir(parents=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(hf_dir / name, root / HF_PATH / name)
    srv = FileServer(root)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def load_script():
    spec = importlib.util.spec_from_file_location("load_openai_weights", ROOT / "scripts" / "load_openai_weights.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


CLI = load_script()


@pytest.fixture
def run_cli(capsys):
    """The CLI's main() in this process (saves a Python + torch start-up per call; one test runs the real script)."""

    def run(*args):
        code = CLI.main([str(a) for a in args])
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    return run


def safetensors_under(path: Path) -> list[Path]:
    return sorted(path.rglob("*.safetensors*"))


def test_cli_script_downloads_and_converts_openai_from_a_mirror(server, tmp_path, hf_reference):
    models, out = tmp_path / "weights", tmp_path / "fixture.safetensors"
    cmd = [sys.executable, "scripts/load_openai_weights.py", "--model-size", "gpt2", "--models-dir", str(models)]
    cmd += ["--out", str(out)]  # the fixture is not 124M-shaped: without --out the CLI refuses to name it gpt2-124M
    r = subprocess.run(cmd + ["--base-url", f"{server.url}/models"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [str(out)]  # the path on stdout; progress went to stderr
    assert "warning:" in r.stderr and "not 124M" in r.stderr
    served = server.root / OPENAI_PATH
    for f in served.iterdir():  # all seven files, byte for byte, and nothing left half-done
        assert (models / "openai" / "124M" / f.name).read_bytes() == f.read_bytes(), f.name
    assert not list((models / "openai" / "124M").glob("*.part"))
    x = torch.randint(0, 50257, (1, 30))
    with torch.no_grad():
        torch.testing.assert_close(load_model(out)(x), hf_reference(x).logits, rtol=0, atol=1e-4)

    server.log.clear()  # a second run finds every file complete and fetches nothing
    assert subprocess.run(cmd + ["--base-url", f"{server.url}/models"], cwd=ROOT, capture_output=True).returncode == 0
    assert server.log == []


def test_cli_downloads_hf_with_the_base_url_environment_variable(server, tmp_path, hf_reference, run_cli, monkeypatch):
    monkeypatch.setenv("GPT2_BASE_URL", server.url)
    out, export = tmp_path / "hf.safetensors", tmp_path / "export"
    r = run_cli("--source", "hf", "--models-dir", tmp_path, "--out", out, "--export-hf", export)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [str(out), str(export)]
    assert (export / "config.json").is_file() and (export / "model.safetensors").is_file()
    assert {p for p, *_ in server.log} == {f"{HF_PATH}/config.json", f"{HF_PATH}/model.safetensors"}
    x = torch.randint(0, 50257, (1, 30))
    with torch.no_grad():
        torch.testing.assert_close(load_model(out)(x), hf_reference(x).logits, rtol=0, atol=1e-4)


def test_cut_connection_is_resumed_and_fetches_only_the_rest(server, tmp_path):
    path = f"{OPENAI_PATH}/{DATA}"
    size = (server.root / path).stat().st_size
    cut = 3_000_001  # not a multiple of the client's chunk size
    server.cut_once[path] = cut
    dest = download_file(f"{server.url}/{path}", tmp_path / DATA, size, backoff=0, progress=False)
    assert dest.read_bytes() == (server.root / path).read_bytes()
    assert server.requests_for(path) == [(path, None, cut, 200), (path, cut, size - cut, 206)]
    assert sum(sent for _, _, sent, _ in server.log) == size  # not one byte fetched twice


def test_cli_failure_keeps_the_part_and_the_next_run_resumes(server, tmp_path, run_cli):
    models, path = tmp_path / "weights", f"{OPENAI_PATH}/{DATA}"
    size = (server.root / path).stat().st_size
    server.cut_once[path] = 2_500_000
    args = ("--models-dir", models, "--base-url", f"{server.url}/models", "--out", models / "fixture.safetensors")
    r = run_cli(*args, "--retries", 0)
    assert r.returncode == 1
    assert "run the same command again" in r.stderr and "Traceback" not in r.stderr
    assert safetensors_under(models) == []  # no converted file after a failure
    part = models / "openai" / "124M" / f"{DATA}.part"
    assert part.stat().st_size == 2_500_000 and not (models / "openai" / "124M" / DATA).exists()

    server.log.clear()
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert server.requests_for(path) == [(path, 2_500_000, size - 2_500_000, 206)]
    assert [p.name for p in safetensors_under(models)] == ["fixture.safetensors"]


def test_a_model_of_another_size_is_not_written_under_the_size_asked_for(openai_dir, tmp_path, run_cli):
    r = run_cli("--from-dir", openai_dir, "--model-size", "124M", "--models-dir", tmp_path)
    assert r.returncode == 1 and "not 124M" in r.stderr and "--out" in r.stderr
    assert safetensors_under(tmp_path) == []
    r = run_cli("--from-dir", openai_dir, "--models-dir", tmp_path)  # no size claimed: named after the directory
    assert r.returncode == 0 and r.stdout.splitlines() == [str(tmp_path / f"gpt2-{openai_dir.name}.safetensors")]


def test_server_errors_are_retried(server, tmp_path):
    path = f"{OPENAI_PATH}/hparams.json"
    server.fail[path] = 2
    dest = download_file(f"{server.url}/{path}", tmp_path / "hparams.json", backoff=0, progress=False)
    assert [status for *_, status in server.requests_for(path)] == [503, 503, 200]
    assert dest.read_bytes() == (server.root / path).read_bytes()


def test_truncated_file_on_the_server_is_rejected(server, tmp_path, run_cli):
    data = server.root / OPENAI_PATH / DATA
    data.write_bytes(data.read_bytes()[:-4096])  # consistently short: Content-Length agrees, the known size doesn't
    models = tmp_path / "weights"
    r = run_cli("--models-dir", models, "--base-url", f"{server.url}/models", "--retries", 0)
    assert r.returncode == 1
    assert re.search(r"should be [\d,]+: the server holds a different or damaged file", r.stderr), r.stderr
    assert safetensors_under(models) == [] and not (models / "openai" / "124M" / DATA).exists()


def test_corrupted_file_is_rejected_at_conversion(server, tmp_path, run_cli):
    data = server.root / OPENAI_PATH / DATA
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0x40  # same size, one bit wrong: only the checksum can tell
    data.write_bytes(bytes(raw))
    models = tmp_path / "weights"
    r = run_cli("--models-dir", models, "--base-url", f"{server.url}/models", "--retries", 0)
    assert r.returncode == 1
    assert "is corrupted" in r.stderr and "download it again" in r.stderr
    assert safetensors_under(models) == []


def test_html_error_body_is_rejected_and_not_saved(server, tmp_path, run_cli):
    server.html.add(f"{OPENAI_PATH}/model.ckpt.index")
    models = tmp_path / "weights"
    r = run_cli("--models-dir", models, "--base-url", f"{server.url}/models", "--retries", 0)
    assert r.returncode == 1
    assert "HTML/XML page instead of the file" in r.stderr
    assert not list((models / "openai" / "124M").glob("model.ckpt.index*"))  # neither the file nor a .part
    assert safetensors_under(models) == []


def test_404_says_what_to_check(server, tmp_path, run_cli):
    models = tmp_path / "weights"
    r = run_cli("--model-size", "355M", "--models-dir", models, "--base-url", f"{server.url}/models")
    assert r.returncode == 1
    assert "models/355M/hparams.json does not exist (HTTP 404)" in r.stderr and "--base-url" in r.stderr
    assert safetensors_under(models) == []


def test_unknown_model_size_lists_the_valid_ones(tmp_path, run_cli):
    r = run_cli("--model-size", "gpt3", "--models-dir", tmp_path)
    assert r.returncode == 1 and "124M" in r.stderr and "gpt2-medium" in r.stderr
    r = run_cli("--model-size", "tiny", "--models-dir", tmp_path)  # a preset of ours, but not an OpenAI release
    assert r.returncode == 1 and "OpenAI released" in r.stderr


def test_truncated_safetensors_is_caught_by_its_header(server, tmp_path):
    path = f"{HF_PATH}/model.safetensors"
    served = server.root / path
    served.write_bytes(served.read_bytes()[:-100])
    with pytest.raises(DownloadError, match="header describes"):
        download_file(f"{server.url}/{path}", tmp_path / "dl" / "model.safetensors", progress=False)
    assert not list((tmp_path / "dl").iterdir())  # neither the file nor a .part


def test_download_model_names_the_directory(server, tmp_path):
    directory = download_model("gpt2", "hf", tmp_path, server.url, progress=False)
    assert directory == tmp_path / "hf" / "124M"
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "model.safetensors"]


@pytest.mark.parametrize(
    "first, ctype, expected",
    [
        (b"<?xml version='1.0'?><Error><Code>BlobNotFound</Code></Error>", "application/octet-stream", True),
        (b"  <!doctype html><html>", "", True),
        (b"{}", "application/xml", True),
        (b'{"n_vocab": 50257}', "application/json", False),
        (b"#version: 0.2\n", "text/plain", False),
        (b"<\x00\x80?\x12\x01", "application/octet-stream", False),  # binary that happens to start with '<'
    ],
)
def test_error_page_detection(first, ctype, expected):
    assert looks_like_error_page(first, ctype) is expected


def test_check_content_flags_bad_json(tmp_path):
    (tmp_path / "config.json").write_text("<html>")
    assert "not JSON" in check_content(tmp_path / "config.json", "config.json")


def test_a_tokenizer_file_with_the_wrong_sha256_is_refused_and_deleted(server, tmp_path):
    # Same size as GPT-2's encoder.json, one byte different: only the published sha256 can tell.
    served = server.root / OPENAI_PATH / "encoder.json"
    data = bytearray(served.read_bytes())
    i = data.index(b'"Hello"')
    data[i + 1 : i + 6] = b"Jello"
    served.write_bytes(bytes(data))
    with pytest.raises(DownloadError, match=r"encoder\.json is corrupted or not GPT-2's encoder\.json: sha256"):
        download_model("124M", "openai", tmp_path / "w", f"{server.url}/models", retries=0, progress=False)
    directory = tmp_path / "w" / "openai" / "124M"
    assert not (directory / "encoder.json").exists() and not (directory / "vocab.bpe").exists()  # fetched again next
    assert (directory / DATA).is_file()  # the large file is kept
