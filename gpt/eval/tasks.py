"""All tasks in one call: what scripts/evaluate.py and the notebooks run.

metrics, info = evaluate(model, ["hellaswag", "lambada", "wikitext"], limit=500)
print(format_table(metrics))
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from gpt.eval.data import DEFAULT_DATA_DIR, TASKS, EvalDataError, load_task
from gpt.eval.hellaswag import STYLES, hellaswag_metrics, score_hellaswag
from gpt.eval.lambada import lambada_metrics, score_lambada
from gpt.eval.perplexity import wikitext_metrics, wikitext_scores
from gpt.eval.results import Metric

ALIASES = {"lambada_openai": "lambada", "wikitext2": "wikitext", "wikitext-2": "wikitext"}


def parse_tasks(text: str | Sequence[str]) -> list[str]:
    """Parse "hellaswag,lambada" → ["hellaswag", "lambada"]; harness names accepted; raises EvalDataError for others."""
    names = text.split(",") if isinstance(text, str) else list(text)
    tasks = [ALIASES.get(n.strip().lower(), n.strip().lower()) for n in names if n.strip()]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise EvalDataError(f"unknown task(s) {unknown or names}; choose from {', '.join(TASKS)} (comma-separated)")
    return list(dict.fromkeys(tasks))


def load_data(tasks: Sequence[str], data_dir: str | Path = DEFAULT_DATA_DIR, **kwargs) -> dict:
    """{task: (examples, info)} for every task, each file fetched and checked (kwargs: download, mirror, progress)."""
    return {t: load_task(t, data_dir, **kwargs) for t in tasks}


def evaluate(
    model: torch.nn.Module,
    tasks: Sequence[str] = TASKS,
    *,
    data_dir: str | Path = DEFAULT_DATA_DIR,
    download: bool = True,
    mirror: str | None = None,
    limit: int | None = None,
    hellaswag_style: str = "both",
    window: int | None = None,
    stride: int | None = None,
    batch_size: int = 16,
    progress: bool = True,
    log: Callable[[str], None] = print,
    data: dict | None = None,
) -> tuple[list[Metric], dict]:
    """Run tasks on model; returns (metrics, {task: data file, examples, seconds, ...}).
    limit: the first N examples (articles for wikitext) of each task, as the harness's --limit.
    hellaswag_style: "both", "completion" or "harness". window/stride: the wikitext sliding window (default: the
    model's context length, disjoint). Data is read from data_dir, downloaded there first when missing, unless
    `data` holds it already ({task: load_task(task, ...)}, see load_data)."""
    if hellaswag_style not in ("both", *STYLES):
        raise ValueError(f"hellaswag_style must be both, completion or harness, got {hellaswag_style!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be >= 1 (or None for everything), got {limit}")
    window = window or model.config.context_length
    stride = stride or window
    data = data or load_data(tasks, data_dir, download=download, mirror=mirror, progress=progress)
    metrics, info, kw = [], {}, dict(batch_size=batch_size, progress=progress)
    for task, (examples, task_info) in data.items():
        examples = examples[:limit] if limit else examples
        t0 = time.perf_counter()
        log(f"{task}: {len(examples):,} examples from {task_info['file']}")
        if task == "hellaswag":
            for style in STYLES if hellaswag_style == "both" else (hellaswag_style,):
                metrics += hellaswag_metrics(score_hellaswag(model, examples, style, **kw), style)
        elif task == "lambada":
            metrics += lambada_metrics(score_lambada(model, examples, **kw))
        else:
            scores = wikitext_scores(model, examples, window=window, stride=stride, **kw)
            metrics += wikitext_metrics(examples, scores, window, stride)
        info[task] = {**task_info, "evaluated": len(examples), "seconds": round(time.perf_counter() - t0, 2)}
    return metrics, info
