"""Metrics as data: one Metric per number, a printed table, a JSON file written atomically.

Standard errors follow lm-evaluation-harness where it has one: an accuracy's is the sample standard deviation of
the per-example 0/1 scores (n − 1 in the denominator) over √n. A perplexity exp(−mean ℓ) gets the delta-method
estimate ppl · sd(ℓ)/√n (the harness bootstraps it instead; both estimate the same spread). Corpus-level
perplexities (wikitext) have none, as in the harness.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Metric:
    task: str  # hellaswag, lambada, wikitext
    metric: str  # acc, acc_norm, perplexity, word_perplexity, ...
    value: float
    stderr: float | None  # standard error of value, None where it is not defined
    n: int  # examples (documents for wikitext) the value is computed over
    unit: str = ""  # what the number counts: "fraction of examples", "per word", ...
    settings: dict = field(default_factory=dict)  # how it was computed (scoring style, window, stride, ...)


def sample_stderr(values: Sequence[float]) -> float | None:
    """Standard error of the mean: sample standard deviation (ddof = 1) / √n; None for fewer than 2 values."""
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1) / n)


def accuracy(task: str, metric: str, hits: Sequence[bool], unit: str = "fraction correct", **settings) -> Metric:
    scores = [float(h) for h in hits]
    return Metric(task, metric, sum(scores) / len(scores), sample_stderr(scores), len(scores), unit, settings)


def format_table(metrics: Sequence[Metric]) -> str:
    """A fixed-width table that reads the same in a terminal and in a log file."""
    head = ("task", "metric", "value", "± stderr", "n", "unit / settings")
    rows = []
    for m in metrics:
        note = ", ".join([m.unit] * bool(m.unit) + [f"{k}={v}" for k, v in m.settings.items()])
        se = "" if m.stderr is None else f"± {m.stderr:.4f}"
        rows.append((m.task, m.metric, f"{m.value:.4f}", se, str(m.n), note))
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    line = lambda r: "  ".join(c.rjust(w) if i in (2, 3, 4) else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join(line(r).rstrip() for r in [head, tuple("-" * w for w in widths), *rows])


def write_json(path: str | Path, metrics: Sequence[Metric], **info) -> Path:
    """{"results": [Metric...], **info} to path, via a temp file + rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(json.dumps({"results": [asdict(m) for m in metrics], **info}, indent=2) + "\n", "utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
