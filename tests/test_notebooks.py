"""Every notebook in notebooks/ runs top to bottom as a learner would run it, and the runner can fail.

Each notebook is executed by a fresh Jupyter kernel running this interpreter (nbclient), with notebooks/ as the
working directory (what `jupyter lab` started there gives), the network switched off inside the kernel, and a time
budget. Figures use matplotlib's inline backend, which draws with Agg into PNGs: no display needed. A cell that
raises fails the test named after its notebook. The committed .ipynb files carry no outputs, so diffs stay readable.
"""

from __future__ import annotations

import ast
import os
import re
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
BUDGET_S = 180  # issue 5: each notebook runs top to bottom in ≤ 3 minutes on a 2-core CPU

# Run inside the kernel before the notebook's first cell (in the in-memory copy only): any attempt to open a
# connection or resolve a host name fails loudly, so a notebook cannot lean on the network by accident.
# The kernel's own channels are ZeroMQ sockets, which do not go through Python's socket module.
_NO_NETWORK = """\
import socket as _socket

def _network_disabled(*args, **kwargs):
    raise OSError("network access is disabled while the test suite runs notebooks")

_socket.socket.connect = _socket.socket.connect_ex = _network_disabled
_socket.getaddrinfo = _socket.create_connection = _network_disabled
del _socket, _network_disabled
"""


def run_notebook(nb: nbformat.NotebookNode, cwd: Path = NOTEBOOK_DIR, cell_timeout: int = BUDGET_S):
    """Execute a copy of `nb` in a fresh kernel of this interpreter, in directory `cwd`; return the executed copy
    (the injected no-network cell removed, so cell indices match the file). Raises CellExecutionError at the first
    cell that fails, and nbclient's CellTimeoutError if one cell runs longer than cell_timeout seconds."""
    nb = nbformat.from_dict(nb)
    guard = nbformat.v4.new_code_cell(_NO_NETWORK)
    guard["id"] = "test-runner-no-network"
    nb.cells.insert(0, guard)
    env = {
        **os.environ,
        # The inline backend renders with Agg and sends PNGs; an inherited MPLBACKEND=Agg would show nothing.
        "MPLBACKEND": "module://matplotlib_inline.backend_inline",
        "PYDEVD_DISABLE_FILE_VALIDATION": "1",  # silences a debugger warning on frozen modules
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "WANDB_MODE": "offline",
        # conftest.py pins the test processes to one OpenMP thread each, because several run at once; a notebook
        # runs alone (this process waits for it), so it gets the machine, as it would on a learner's laptop
        "OMP_NUM_THREADS": str(os.cpu_count() or 1),
    }
    # The `python3` kernel spec that ipykernel installs runs `python`, which jupyter_client maps to sys.executable,
    # so the kernel is this virtualenv's interpreter (test_kernel_is_this_interpreter checks it).
    client = NotebookClient(nb, timeout=cell_timeout, kernel_name="python3", allow_errors=False)
    client.execute(cwd=str(cwd), env=env)
    nb.cells.pop(0)
    return nb


def outputs(cell) -> list:
    return cell.get("outputs", []) if cell.cell_type == "code" else []


def figures_missing(nb: nbformat.NotebookNode) -> list[int]:
    """Indices of code cells that call plt.show() but produced no PNG: a figure that did not render."""
    return [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        and "plt.show()" in cell.source
        and not any("image/png" in out.get("data", {}) for out in outputs(cell))
    ]


def warnings_printed(nb: nbformat.NotebookNode) -> list[str]:
    """Warnings a learner would see (stderr lines naming a Warning): a notebook should run clean."""
    return [
        line
        for cell in nb.cells
        for out in outputs(cell)
        if out.get("output_type") == "stream" and out.get("name") == "stderr"
        for line in out.get("text", "").splitlines()
        if "Warning" in line
    ]


def notebook(*sources: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(s) for s in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


# The first cell of every notebook: puts the repository root on sys.path (no install needed).
BOOTSTRAP = """\
# Make `import gpt` work whether Jupyter was started in the repository root or in notebooks/.
import sys
from pathlib import Path

ROOT = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "gpt" / "__init__.py").is_file())
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
"""


# ---- the notebooks ------------------------------------------------------------------------------------------------


def test_notebooks_are_numbered_in_reading_order():
    numbers = [int(p.name[:2]) for p in NOTEBOOKS]
    assert NOTEBOOKS, f"no notebooks found in {NOTEBOOK_DIR}"
    assert numbers == list(range(1, len(numbers) + 1)), f"numbered 01, 02, ... with no gaps: {numbers}"


@pytest.mark.slow
@pytest.mark.timeout(BUDGET_S + 60)  # a hard stop in case a kernel hangs outside nbclient's per-cell timeout
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, record_property):
    start = time.perf_counter()
    nb = run_notebook(nbformat.read(path, as_version=4))
    seconds = time.perf_counter() - start
    record_property("seconds", round(seconds, 1))
    print(f"{path.name}: {seconds:.1f} s")
    assert seconds <= BUDGET_S, f"{path.name} took {seconds:.0f} s; the budget is {BUDGET_S} s on 2 CPU cores"
    assert not figures_missing(nb), f"cells {figures_missing(nb)} of {path.name} call plt.show() but show no figure"
    assert not warnings_printed(nb), f"{path.name} prints warnings: {warnings_printed(nb)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_is_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"cell {i} has outputs: clear them"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and code[0].source.strip() == BOOTSTRAP.strip(), "the first code cell puts the repo root on sys.path"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith(f"# {path.name[:2]} ·")


def _package_definitions() -> set[str]:
    names = set()
    for path in (ROOT / "gpt").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
    return names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_does_not_redefine_the_package(path):
    """Notebooks import gpt/; a didactic version of something must have its own name (and be checked equal)."""
    package = _package_definitions()
    assert {"GPT", "manual_attention", "stream_decode"} <= package
    nb = nbformat.read(path, as_version=4)
    defined = {
        node.name
        for cell in nb.cells
        if cell.cell_type == "code"
        for node in ast.walk(ast.parse(cell.source))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
    }
    assert not defined & package, f"{path.name} redefines {sorted(defined & package)} from gpt/"


def test_readme_reading_path_lists_every_notebook_in_order():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    positions = [readme.find(f"notebooks/{p.name}") for p in NOTEBOOKS]
    assert all(pos >= 0 for pos in positions), [p.name for p, pos in zip(NOTEBOOKS, positions) if pos < 0]
    assert positions == sorted(positions)


# ---- the runner itself: it must be able to fail ----------------------------------------------------------------


@pytest.mark.parametrize(
    "bad_cell, error",
    [
        ("from gpt import does_not_exist", "ImportError"),
        ("assert 1 + 1 == 3, 'a failing check in a later cell'", "a failing check in a later cell"),
        ("import socket\nsocket.create_connection(('example.com', 80), timeout=5)", "network access is disabled"),
        ("import urllib.request\nurllib.request.urlopen('https://example.com', timeout=5)", "network access"),
    ],
    ids=["broken-import", "failing-assert", "socket", "urllib"],
)
def test_runner_fails_on_a_broken_notebook(tmp_path, bad_cell, error):
    path = tmp_path / "99_broken.ipynb"
    marker = tmp_path / "ran-past-the-error"
    nbformat.write(notebook(BOOTSTRAP, "import gpt", bad_cell, f"open({str(marker)!r}, 'w').close()"), path)
    with pytest.raises(CellExecutionError, match=re.escape(error)):
        run_notebook(nbformat.read(path, as_version=4))
    assert not marker.exists(), "execution must stop at the first failing cell"


def test_runner_passes_a_good_notebook_and_renders_its_figure():
    nb = run_notebook(notebook(BOOTSTRAP, "import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.show()"))
    assert figures_missing(nb) == []
    png = nb.cells[1].outputs[0]["data"]["image/png"]
    assert len(png) > 1000  # a real picture, base64-encoded


def test_runner_notices_a_figure_that_did_not_render():
    # With the plain Agg backend, plt.show() draws nothing into the notebook: the check must catch that.
    agg = "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt"
    nb = run_notebook(notebook(agg, "plt.plot([1, 2])\nplt.show()"))
    assert figures_missing(nb) == [1]


def test_runner_notices_printed_warnings():
    nb = run_notebook(notebook("print('fine')", "import warnings\nwarnings.warn('this API goes away soon')"))
    assert any("UserWarning: this API goes away soon" in line for line in warnings_printed(nb)), warnings_printed(nb)


@pytest.mark.parametrize("cwd", [ROOT, NOTEBOOK_DIR], ids=["from-repo-root", "from-notebooks-dir"])
def test_bootstrap_cell_finds_the_package(cwd):
    # Learners start Jupyter in either place; the first cell of every notebook must find gpt/ from both.
    nb = run_notebook(notebook(BOOTSTRAP, "import gpt\nprint(gpt.__file__)"), cwd=cwd)
    assert nb.cells[1].outputs[0]["text"].strip() == str(ROOT / "gpt" / "__init__.py")


def test_kernel_is_this_interpreter():
    nb = run_notebook(notebook("import sys\nprint(sys.prefix)\nprint(sys.version)"))
    prefix, version = nb.cells[0].outputs[0]["text"].splitlines()[:2]
    assert prefix == sys.prefix and version == sys.version.splitlines()[0]
