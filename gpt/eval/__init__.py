"""Evaluation: HellaSwag, LAMBADA and WikiText perplexity, computed as lm-evaluation-harness computes them.

    scoring.py     log-likelihood of continuations, batched and packed: the primitive every task uses
    hellaswag.py   both scorings in use (build-nanogpt's completion style, the harness's); hellaswag_counts for training
    lambada.py     lambada_openai: last-word accuracy and perplexity
    perplexity.py  sliding-window perplexity of any text; the harness's `wikitext` (word/byte perplexity, bits/byte)
    data.py        canonical sources, robust download, reading and checking the files
    results.py     Metric, the printed table, the JSON file

scripts/evaluate.py is the command line; README "Evaluate" has published numbers and how to reproduce them.
"""

from gpt.eval.data import SOURCES, TASKS, EvalDataError, load_task
from gpt.eval.hellaswag import (
    EndingScores,
    HellaSwagCounts,
    harness_texts,
    hellaswag_counts,
    hellaswag_metrics,
    score_hellaswag,
)
from gpt.eval.lambada import lambada_metrics, score_lambada, split_passage
from gpt.eval.perplexity import (
    TextScore,
    Window,
    perplexity,
    score_texts,
    split_wikitext_articles,
    wikitext_detokenize,
    wikitext_metrics,
    wikitext_scores,
    window_plan,
)
from gpt.eval.results import Metric, format_table, write_json
from gpt.eval.scoring import ContinuationScore, encode_pair, score_continuations

__all__ = [
    "SOURCES",
    "TASKS",
    "ContinuationScore",
    "EndingScores",
    "EvalDataError",
    "HellaSwagCounts",
    "Metric",
    "TextScore",
    "Window",
    "encode_pair",
    "format_table",
    "harness_texts",
    "hellaswag_counts",
    "hellaswag_metrics",
    "lambada_metrics",
    "load_task",
    "perplexity",
    "score_continuations",
    "score_hellaswag",
    "score_lambada",
    "score_texts",
    "split_passage",
    "split_wikitext_articles",
    "wikitext_detokenize",
    "wikitext_metrics",
    "wikitext_scores",
    "window_plan",
    "write_json",
]
