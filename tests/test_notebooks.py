"""Every notebook of the course (notebooks/NN_*.ipynb, the appendix, and the exercise solutions in
notebooks/solutions/) runs top to bottom as a learner would run it, and the runner can fail.

Each notebook is executed by a fresh Jupyter kernel running this interpreter (nbclient), with the notebook's folder
as the working directory (what `jupyter lab` started there gives) and the network switched off inside the kernel.
Figures use matplotlib's inline backend, which draws with Agg into PNGs: no display needed. A cell that raises fails
the test named after its notebook. No test asserts a duration: a generous per-cell timeout only stops a hung kernel.
The committed .ipynb files carry no outputs, so diffs stay readable; the executed copies a reader sees on GitHub
are rendered by scripts/render_notebooks.py into docs/notebooks/, and a test keeps them in step with the sources.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import sys
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

_spec = importlib.util.spec_from_file_location(
    "render_notebooks", Path(__file__).parents[1] / "scripts" / "render_notebooks.py"
)
render_notebooks = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render_notebooks)
rendered_out_of_step = render_notebooks.rendered_out_of_step

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
CHAPTERS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
APPENDICES = sorted(NOTEBOOK_DIR.glob("appendix_*.ipynb"))
SOLUTIONS = sorted((NOTEBOOK_DIR / "solutions").glob("*_solutions.ipynb"))
COURSE = CHAPTERS + APPENDICES  # in reading order
ALL = COURSE + SOLUTIONS
CHECK_FILES = [NOTEBOOK_DIR / n for n in ("checks.py", "checks_later.py", "check_tools.py")]  # the exercises' checks
RENDERED = ROOT / "docs" / "notebooks"  # executed copies, as Markdown with PNG figures (scripts/render_notebooks.py)
HANG_S = 600  # per cell: only a hung kernel gets near it (the slowest cell, a training run, takes about a minute)


def ids(paths):
    return [p.stem for p in paths]


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


def run_notebook(nb: nbformat.NotebookNode, cwd: Path = NOTEBOOK_DIR, cell_timeout: int = HANG_S):
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
        # One OpenMP thread, as conftest.py gives every test process: CI machines are small and shared, and on 2
        # busy cores two spinning threads made 20 training steps take 120 s instead of 19 s with one.
        "OMP_NUM_THREADS": "1",
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
    numbers = [int(p.name[:2]) for p in CHAPTERS]
    assert CHAPTERS, f"no notebooks found in {NOTEBOOK_DIR}"
    assert numbers == list(range(1, len(numbers) + 1)), f"numbered 01, 02, ... with no gaps: {numbers}"


def title_prefix(path: Path) -> str:
    """'# 03 ·' for 03_gpt_model, '# Appendix ·' for appendix_*, '# 03 · Solutions' for 03_gpt_model_solutions."""
    if path.name.startswith("appendix_"):
        return "# Appendix ·" if path.parent == NOTEBOOK_DIR else "# Appendix · Solutions"
    return f"# {path.name[:2]} ·" if path.parent == NOTEBOOK_DIR else f"# {path.name[:2]} · Solutions"


def chapter_of(solution: Path) -> Path:
    return NOTEBOOK_DIR / solution.name.replace("_solutions", "")


def test_every_chapter_has_exercises_and_solutions():
    assert {p.name for p in SOLUTIONS} == {p.stem + "_solutions.ipynb" for p in COURSE}
    for path in COURSE:
        nb = nbformat.read(path, as_version=4)
        text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
        assert "## Exercises" in text and f"solutions/{path.stem}_solutions.ipynb" in text, path.name


@pytest.mark.slow
@pytest.mark.timeout(1800)  # a hard stop in case a kernel hangs outside nbclient's per-cell timeout
@pytest.mark.parametrize("path", ALL, ids=ids(ALL))
def test_notebook_runs_top_to_bottom(path, record_property):
    start = time.perf_counter()
    nb = run_notebook(nbformat.read(path, as_version=4), cwd=path.parent)
    record_property("seconds", round(time.perf_counter() - start, 1))  # reported, never asserted
    assert not figures_missing(nb), f"cells {figures_missing(nb)} of {path.name} call plt.show() but show no figure"
    assert not warnings_printed(nb), f"{path.name} prints warnings: {warnings_printed(nb)}"
    if path.parent.name == "solutions":  # every exercise's check ran and passed
        ticks = sum(out.get("text", "").count("✓") for cell in nb.cells for out in outputs(cell))
        calls = sum(cell.source.count("checks.check_") for cell in nb.cells if cell.cell_type == "code")
        assert calls >= 2 and ticks == calls, f"{path.name}: {calls} checks called, {ticks} passed"


@pytest.mark.parametrize("path", ALL, ids=ids(ALL))
def test_committed_notebook_is_clean(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"cell {i} has outputs: clear them"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and code[0].source.strip() == BOOTSTRAP.strip(), "the first code cell puts the repo root on sys.path"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith(title_prefix(path))


def _package_definitions() -> set[str]:
    names = set()
    for path in (ROOT / "gpt").rglob("*.py"):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:  # module-level functions and classes
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
    return names


@pytest.mark.parametrize("path", ALL + CHECK_FILES, ids=ids(ALL) + [p.stem for p in CHECK_FILES])
def test_notebook_does_not_redefine_the_package(path):
    """Notebooks import gpt/; a didactic version of something must have its own name (and be checked equal)."""
    package = _package_definitions()
    assert {"GPT", "manual_attention", "stream_decode"} <= package
    if path.suffix == ".py":
        sources = [path.read_text(encoding="utf-8")]
    else:
        sources = [c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    defined = {
        node.name
        for source in sources
        for node in ast.parse(source).body
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
    }
    assert not defined & package, f"{path.name} redefines {sorted(defined & package)} from gpt/"


def test_readme_reading_path_lists_every_notebook_in_order():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    positions = [readme.find(f"(notebooks/{p.name})") for p in COURSE]
    assert all(pos >= 0 for pos in positions), [p.name for p, pos in zip(COURSE, positions) if pos < 0]
    assert positions == sorted(positions)
    learn, use = readme.find("## Learn"), readme.find("## Use")
    assert 0 <= learn < min(positions) and max(positions) < use, "the Learn section, with the notebooks, comes first"
    for p in COURSE:  # each with its executed copy
        assert f"(docs/notebooks/{p.stem}.md)" in readme, f"README links no rendered copy of {p.name}"


def test_readme_local_links_resolve():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = [t for t in re.findall(r"\]\(([^)\s]+)\)", readme) if not re.match(r"[a-z]+://|#|mailto:", t)]
    assert targets, "the README links to files in the repository"
    missing = [t for t in targets if not (ROOT / t.split("#")[0]).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"


# ---- the executed copies a reader sees (docs/notebooks/*.md, made by scripts/render_notebooks.py) -----------------


@pytest.mark.parametrize("path", COURSE, ids=ids(COURSE))
def test_rendered_copy_is_in_step_with_the_notebook(path):
    rendered = RENDERED / f"{path.stem}.md"
    assert rendered.is_file(), f"no {rendered.relative_to(ROOT)}: run python scripts/render_notebooks.py"
    bad = rendered_out_of_step(nbformat.read(path, as_version=4), rendered.read_text(encoding="utf-8"))
    assert not bad, f"{rendered.name} differs from {path.name} in cells {bad}: run python scripts/render_notebooks.py"
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", rendered.read_text(encoding="utf-8")):
        assert (rendered.parent / image).is_file(), f"{rendered.name} shows a missing image {image}"


def test_in_step_check_can_fail():
    nb = notebook("print(1)", "x = 2")
    nb.cells.insert(0, nbformat.v4.new_markdown_cell("# Title"))
    good = "# Title\n\n```python\nprint(1)\n```\n\n    1\n\n```python\nx = 2\n```\n"
    assert rendered_out_of_step(nb, good) == []
    assert rendered_out_of_step(nb, good.replace("x = 2", "x = 3")) == [2]
    assert rendered_out_of_step(nb, good.replace("# Title", "# Old title")) == [0]
    assert rendered_out_of_step(nb, good + "```python\nextra\n```\n") == [-1]


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


# ---- the exercise checks (notebooks/checks.py): the solutions notebooks show they pass; here, that they can fail --


def _wrong_answers():
    import zlib

    import torch
    import torch.nn.functional as F

    from gpt import filter_logits, generate
    from gpt.eval import score_hellaswag, score_texts
    from gpt.introspect import residual_stream

    def naive_accumulate(model, micro_batches):  # divides by the number of micro-steps, ignoring padding
        for x, y in micro_batches:
            (model(x, y).loss / len(micro_batches)).backward()

    def stride_ignored(model, ids, window, stride, prefix=0):  # disjoint windows whatever the stride
        return score_texts(model, [ids], window=window, stride=window, prefix=prefix)[0].logprob

    def lens_without_ln_f(model, idx):
        probs = [(model.lm_head(r)[..., : model.config.vocab_size]).softmax(-1) for r in residual_stream(model, idx)]
        return torch.stack([p[:, :-1].gather(-1, idx[:, 1:, None]).squeeze(-1) for p in probs])

    def duplicate_token_scores(attentions, period):  # attends to the earlier copy of the token itself
        t = torch.arange(period, attentions.size(-1))
        return attentions[:, :, :, t, t - period].mean(dim=(1, 3))

    return {
        "check_decode": lambda ids: "",
        "check_merges": lambda text, n: [(b"z", b"q")] * n,
        "check_stream_decoder": lambda enc, ids: (enc.decode([i]) for i in ids),
        "check_attention_loop": lambda q, k, v: v,
        "check_local_attention": lambda q, k, v, window: (
            torch.softmax(
                (q @ k.T).masked_fill(~torch.ones(len(q), len(q), dtype=torch.bool).tril(), float("-inf")) / 2, -1
            )
            @ v
        ),
        "check_last_query_attention": lambda q_last, k, v: v[-1],
        "check_gelu_erf": lambda x: F.gelu(x, approximate="tanh"),
        "check_param_count": lambda c: (
            c.vocab_size * c.n_embd
            + c.context_length * c.n_embd
            + c.n_layer * (12 * c.n_embd**2 + 13 * c.n_embd)
            + 2 * c.n_embd
        ),  # ignores padding and qkv_bias
        "check_no_positions": lambda model, idx: model(idx),
        "check_greedy_eos": lambda model, idx, n, eos_id: generate(model, idx, n, temperature=0),
        "check_hf_conversion": lambda hf_state: dict(hf_state),  # forgets the transposes
        "check_openai_export": lambda model: {k: v.numpy() for k, v in model.state_dict().items()},
        "check_min_p": lambda logits, min_p: logits,
        "check_kv_cache_bytes": lambda c, B, T, nbytes: c.n_layer * B * T * c.n_embd * nbytes,  # keys only
        "check_top_k_then_p": lambda logits, k, p: filter_logits(logits, top_p=p),
        "check_token_weighted_accumulation": naive_accumulate,
        "check_param_groups": lambda model, wd: [{"params": list(model.parameters()), "weight_decay": wd}],
        "check_bf16_epsilon": 2.0**-8,
        "check_varint": lambda buf, pos: (buf[pos], pos + 1),
        "check_crc32c": lambda data: zlib.crc32(data),  # CRC-32, not CRC-32C
        "check_sliding_logprob": stride_ignored,
        "check_harness_logprobs": lambda model, row: score_hellaswag(model, [row], "completion")[0].logprobs,
        "check_accuracy_stderr": lambda hits: (sum(hits) / len(hits) * (1 - sum(hits) / len(hits)) / len(hits)) ** 0.5,
        "check_induction_scores": duplicate_token_scores,
        "check_lens_next_token_probs": lens_without_ln_f,
        "check_instruction_targets": lambda prompt, response: (
            torch.tensor(prompt + response)[:-1],
            torch.tensor(prompt + response)[1:],
        ),  # counts the prompt's tokens too
        "check_lora_merge": lambda W, A, B, scale: W + B @ A,  # forgets the scale
        "check_padded_vocab": lambda v, m: v // m * m,  # rounds down
        "check_train_flops": lambda n, d: 2 * n * d,  # the forward pass only
    }


def test_every_check_rejects_a_wrong_answer():
    sys.path.insert(0, str(NOTEBOOK_DIR))
    import checks

    wrong = _wrong_answers()
    defined = {name for name in dir(checks) if name.startswith("check_")}
    assert defined == set(wrong), f"checks without a wrong answer here: {defined - set(wrong)}"
    for name, answer in wrong.items():
        with pytest.raises(AssertionError):
            getattr(checks, name)(answer)
