"""Explain a checkpoint: a local page that shows what a GPT-2 does with a prompt.

    python scripts/explain.py --weights runs/tiny                          # then open http://127.0.0.1:8000/
    python scripts/explain.py --weights runs/tiny/step_000200 --compare runs/tiny/step_001600
    python scripts/explain.py --weights weights/gpt2-124M.safetensors --port 8001

The page: the prompt's tokens (text piece, id, bytes); the next-token top 20 under temperature / top-k / top-p
sliders; "sample one" / "greedy one" to append a token; attention heatmaps per layer and head (or their average);
the logit lens (what each layer would predict); per-token loss of a pasted text. --compare shows a second
checkpoint side by side. Every number comes from gpt/introspect.py, the same functions notebook 08 uses.

Safety: binds 127.0.0.1 unless --host says otherwise (then anyone who can reach the port can use the page: a
warning says so); serves only its own page (scripts/explain_page/) and JSON; reads no file but the weights named
on the command line; offline (no CDN). Loaded on --device cpu by default.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import json
import signal
import socket
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the package imports from the repository root, without installing

PAGE_DIR = ROOT / "scripts" / "explain_page"
sys.path.insert(0, str(PAGE_DIR))
ASSETS = {  # URL path → (file, content type): everything the server will ever send besides JSON
    "/": ("index.html", "text/html; charset=utf-8"),
    "/explain.css": ("explain.css", "text/css; charset=utf-8"),
    "/draw.js": ("draw.js", "text/javascript; charset=utf-8"),
    "/explain.js": ("explain.js", "text/javascript; charset=utf-8"),
}
MAX_BODY = 4 << 20  # bytes of JSON a request may carry

from explain_api import App, BadRequest, Explainer  # the page's JSON API (scripts/explain_page/, on sys.path above)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
        pass

    p = argparse.ArgumentParser(
        description="Serve a local page that explains what a GPT-2 checkpoint does with a prompt.",
        epilog="examples:\n" + __doc__.split("\n\n")[1],
        formatter_class=Formatter,
    )
    p.add_argument("--weights", type=Path, required=True, help="a .safetensors file, a checkpoint dir or a run dir")
    p.add_argument("--compare", type=Path, help="a second checkpoint, shown side by side with the first")
    p.add_argument("--port", type=int, default=8000, help="TCP port (0 = any free port; the URL is printed)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind; anything but loopback exposes the page")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N, mps or auto")
    args = p.parse_args(argv)
    if not 0 <= args.port <= 65535:
        p.error(f"--port must be in [0, 65535], got {args.port}")
    for flag, path in (("--weights", args.weights), ("--compare", args.compare)):
        if path is not None and not path.exists():
            p.error(f"{flag} {path}: no such file or directory")
    return args


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Handler(BaseHTTPRequestHandler):
    """Serves ASSETS and the App's JSON; nothing else (no paths from the URL ever reach the file system)."""

    server_version = "explain/1"

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", "default-src 'self'; img-src 'self' data:")  # no outside loads
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: dict) -> None:
        self._send(status, json.dumps(obj, ensure_ascii=False).encode("utf-8"), "application/json; charset=utf-8")

    def _host_ok(self) -> bool:
        # On loopback, only requests addressed to loopback: a web page elsewhere cannot rebind its own DNS name to
        # 127.0.0.1 and read this API from the user's browser.
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]")
        if self.server.loopback_only and not is_loopback(host):
            self._json(HTTPStatus.FORBIDDEN, dict(error=f"requests must be addressed to 127.0.0.1, not {host!r}"))
            return False
        return True

    def _api(self, method: str, body: dict | None) -> None:
        path = self.path.split("?", 1)[0]
        with self.server.computing:  # one answer at a time (each uses every core); see main() for the other reason
            try:  # the answer first, then the send: a client that hung up meanwhile is not a bug of ours
                status, answer = HTTPStatus.OK, self.server.app.route(method, path, body)
            except BadRequest as e:
                status, answer = HTTPStatus.BAD_REQUEST, dict(error=str(e))
            except LookupError:
                status, answer = HTTPStatus.NOT_FOUND, dict(error=f"no such page: {method} {path}")
            except Exception as e:  # a bug must not kill the server: one line in its log, the message on the page
                print(f"error: {method} {path}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                status, answer = HTTPStatus.INTERNAL_SERVER_ERROR, dict(error=f"{type(e).__name__}: {e}")
        self._json(status, answer)

    def do_GET(self) -> None:  # noqa: N802 (the http.server API)
        if not self._host_ok():
            return
        path = self.path.split("?", 1)[0]
        if path in ASSETS:
            name, ctype = ASSETS[path]
            self._send(HTTPStatus.OK, (PAGE_DIR / name).read_bytes(), ctype)
        else:
            self._api("GET", None)

    def do_POST(self) -> None:  # noqa: N802
        if not self._host_ok():
            return
        length = self.headers.get("Content-Length", "0").strip()
        if not (length.isascii() and length.isdigit()):
            self._json(HTTPStatus.BAD_REQUEST, dict(error=f"Content-Length must be a byte count, not {length!r}"))
            return
        if int(length) > MAX_BODY:
            self._json(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE, dict(error=f"a request body holds at most {MAX_BODY} bytes")
            )
            return
        try:
            body = json.loads(self.rfile.read(int(length)).decode("utf-8"))
            if not isinstance(body, dict):
                raise ValueError("not a JSON object")
        except RecursionError:
            self._json(HTTPStatus.BAD_REQUEST, dict(error="the request body nests too deeply to be a request"))
            return
        except (UnicodeDecodeError, ValueError) as e:
            self._json(HTTPStatus.BAD_REQUEST, dict(error=f"the request body must be a UTF-8 JSON object: {e}"))
            return
        self._api("POST", body)

    def log_message(self, format, *args) -> None:  # quiet: errors are printed by _api
        pass


# ---- the command --------------------------------------------------------------------------------------------------
def fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr, flush=True)
    return 2


def stop(signum, frame):
    raise KeyboardInterrupt


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """What escaped a request's handler: one line, never socketserver's traceback. A connection the client reset
        or closed (a browser aborts a request when the user types on, a tab closes mid-answer) is no error at all."""
        e = sys.exc_info()[1]
        if not isinstance(e, ConnectionError):  # BrokenPipeError, ConnectionResetError, ConnectionAbortedError
            print(f"error: a request from {client_address[0]}: {type(e).__name__}: {e}", file=sys.stderr, flush=True)


def bind(host: str, port: int) -> Server:
    """Listen on host:port (raises OSError: port in use, host unknown, no permission)."""
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    return type("Server", (Server,), dict(address_family=family))((host, port), Handler)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        server = bind(args.host, args.port)  # before loading anything: a busy port fails in a fraction of a second
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            return fail(f"port {args.port} on {args.host} is in use; pass another --port (or 0 for any free one)")
        return fail(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}; check --host and --port")
    try:
        from gpt import get_device, get_tokenizer, load_model

        device = get_device(args.device)
        enc = get_tokenizer()
        explainers = []
        for flag, path in (("--weights", args.weights), ("--compare", args.compare)):
            if path is None:
                continue
            try:
                model = load_model(path, device=device)
            except Exception as e:  # any file that is not our weights: say which and why, no traceback
                return fail(f"{flag} {path} does not load: {e}")
            if model.config.vocab_size < enc.n_vocab:
                return fail(f"{flag} {path}: vocabulary {model.config.vocab_size} < GPT-2's {enc.n_vocab} tokens")
            explainers.append(Explainer(path, model, enc))
    except ValueError as e:
        server.server_close()
        return fail(str(e))
    server.app = App(explainers, enc)
    server.computing = threading.Lock()
    server.loopback_only = is_loopback(args.host)
    host, port = server.server_address[:2]
    for label, ex in zip("AB", explainers):
        i = ex.info()
        print(
            f"{label}: {ex.path} ({i['params'] / 1e6:.1f}M parameters, {i['n_layer']} layers × {i['n_head']} heads, "
            f"context {i['context_length']}) on {device}",
            flush=True,
        )
    if not server.loopback_only:
        print(f"warning: listening on {host}, not loopback: anyone who can reach port {port} can use this page",
              file=sys.stderr, flush=True)  # fmt: skip
    url_host = f"[{host}]" if ":" in host else host
    print(f"serving http://{url_host}:{port}/  (Ctrl+C stops)", flush=True)
    signal.signal(signal.SIGTERM, stop)  # `kill` stops it as cleanly as Ctrl+C
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", flush=True)
    finally:
        server.server_close()
        # Request threads are daemons (a browser's idle keep-alive connection must not hold up Ctrl+C), so the
        # interpreter would end under one still inside torch: C++ then aborts the process ("terminate called
        # without an active exception", exit -6; CI saw it after 40 aborted requests). Wait for the answer being
        # computed, and let no other start.
        server.computing.acquire(timeout=60)
    return 0


if __name__ == "__main__":
    from gpt.utils import run_script

    run_script(main)  # UTF-8 output whatever the console's encoding; Ctrl-C → one line, exit 130
