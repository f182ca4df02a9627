#!/usr/bin/env python
"""Run the course notebooks and write copies with their outputs into docs/notebooks/, for reading on GitHub.

    python scripts/render_notebooks.py              # every chapter and the appendix → docs/notebooks/<name>.md
    python scripts/render_notebooks.py 03 06        # only the notebooks whose names start with these
    python scripts/render_notebooks.py --check      # run nothing: exit 1 if a copy is missing or out of step

The committed notebooks/*.ipynb stay output-free, so their diffs stay readable. Each is executed here in a fresh
Jupyter kernel of this interpreter, from notebooks/ (as tests/test_notebooks.py runs them), then written as Markdown
by nbconvert: text, code, printed output, and every figure as a PNG file in docs/notebooks/<name>_files/ (drawn at
a modest resolution, to keep the repository small). OpenAI's weights are used where a notebook finds them
(weights/gpt2-124M.safetensors), so render on a machine that has them for the copies to show GPT-2's own text.
tests/test_notebooks.py checks that every copy holds its notebook's cells, in order.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import argparse
import os
import re
import shutil
import tempfile
import time

NOTEBOOK_DIR = ROOT / "notebooks"
OUT_DIR = ROOT / "docs" / "notebooks"
DPI = 72  # figures: about 40-100 KB each

# Run before a notebook's first cell, then removed from the copy: smaller figures, same pictures.
SETUP = f"""\
import matplotlib

matplotlib.rcParams["figure.dpi"] = {DPI}
"""


def course_notebooks() -> list[Path]:
    """The chapters (NN_*.ipynb) in order, then the appendices."""
    return sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb")) + sorted(NOTEBOOK_DIR.glob("appendix_*.ipynb"))


def execute(path: Path, timeout: int):
    """Run a copy of the notebook top to bottom in a fresh kernel, in notebooks/; return the executed copy."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    setup = nbformat.v4.new_code_cell(SETUP)
    setup["id"] = "render-setup"
    nb.cells.insert(0, setup)
    env = {
        **os.environ,
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",
    }
    NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=False).execute(
        cwd=str(path.parent), env=env
    )
    nb.cells.pop(0)
    return nb


def write_markdown(nb, stem: str) -> Path:
    """nbconvert's Markdown of the executed notebook → OUT_DIR/<stem>.md, its figures in OUT_DIR/<stem>_files/."""
    from nbconvert import MarkdownExporter

    files = f"{stem}_files"
    body, resources = MarkdownExporter().from_notebook_node(nb, resources={"output_files_dir": files})
    body = body.replace(str(ROOT) + os.sep, "").replace(str(ROOT), ".")  # no paths of the machine that rendered it
    body = re.sub(re.escape(tempfile.gettempdir()) + r"[/\\]gpt2-[a-z0-9]+-[a-z0-9_]{8}", "$WORK", body)  # scratch dirs
    shutil.rmtree(OUT_DIR / files, ignore_errors=True)
    for name, data in resources.get("outputs", {}).items():
        target = OUT_DIR / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    out = OUT_DIR / f"{stem}.md"
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text(body, encoding="utf-8")
    os.replace(tmp, out)
    return out


def rendered_out_of_step(nb, markdown: str) -> list[int]:
    """Indices of the cells of `nb` whose source is not found, in order, in its rendered Markdown (code cells as
    ```python blocks), plus -1 if the Markdown holds a different number of code blocks. [] = in step."""
    bad, pos = [], 0
    for i, cell in enumerate(nb.cells):
        text = f"```python\n{cell.source}\n```" if cell.cell_type == "code" else cell.source
        found = markdown.find(text, pos)
        if found < 0:
            bad.append(i)
        else:
            pos = found + len(text)
    if markdown.count("```python\n") != sum(c.cell_type == "code" for c in nb.cells):
        bad.append(-1)
    return bad


def out_of_step(path: Path) -> str | None:
    """Why the rendered copy of `path` does not match it, or None when it does."""
    import nbformat

    md = OUT_DIR / f"{path.stem}.md"
    if not md.is_file():
        return "not rendered"
    bad = rendered_out_of_step(nbformat.read(path, as_version=4), md.read_text(encoding="utf-8"))
    return f"cells {bad} differ" if bad else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("names", nargs="*", help="render only notebooks whose file name starts with one of these")
    parser.add_argument("--check", action="store_true", help="run nothing; exit 1 if a copy is missing or stale")
    parser.add_argument("--timeout", type=int, default=900, help="seconds one cell may run (default 900)")
    args = parser.parse_args(argv)

    paths = [p for p in course_notebooks() if not args.names or any(p.name.startswith(n) for n in args.names)]
    if not paths:
        names = ", ".join(p.stem for p in course_notebooks())
        print(f"error: no notebook in notebooks/ starts with {' or '.join(args.names)}; there are: {names}",
              file=sys.stderr)  # fmt: skip
        return 1
    if args.check:
        stale = {p.name: why for p in paths if (why := out_of_step(p))}
        for name, why in stale.items():
            print(f"{name}: {why}")
        if stale:
            print("error: rendered copies are out of step; run python scripts/render_notebooks.py", file=sys.stderr)
        return 1 if stale else 0
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for path in paths:
        start = time.perf_counter()
        print(f"{path.name} ...", end=" ", flush=True)
        try:
            nb = execute(path, args.timeout)
        except Exception as e:  # nbclient's CellExecutionError holds the failing cell and its traceback
            print(f"\nerror: {path.name} failed while running, so its copy was not written:\n{e}", file=sys.stderr)
            return 1
        out = write_markdown(nb, path.stem)
        print(f"{out.relative_to(ROOT)} ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    from gpt.utils import run_script

    run_script(main)  # UTF-8 output whatever the console's encoding; Ctrl-C → one line, exit 130
