#!/usr/bin/env python
"""Run lm-evaluation-harness (`lm_eval`, the reference) offline on local copies of its own tasks.

    python bench/lm_eval_offline.py --hf-dir hf_out/ --hellaswag data/eval/hellaswag_val.jsonl \\
        --lambada data/eval/lambada_test.jsonl --wikitext-pages pages.jsonl --out harness.json

The harness normally downloads its data sets from the Hugging Face Hub. Here each task is the harness's own task
config (`include:` of its YAML, so its preprocessing, prompts and metrics are used unchanged) with only the data
source replaced by a local JSON-lines file: HellaSwag rows as in the original release, LAMBADA {"text": ...} lines,
WikiText {"page": ...} lines (one article each). The model is loaded by the harness's `hf` backend from a
Hugging Face directory (gpt.export_hf writes one). Nothing touches the network (HF_*_OFFLINE are set before import).

Writes {"results": {task: {metric: value}}, "seconds": wall time of the evaluation, "model_load_seconds": ...}.
Used by tests/test_eval_harness_parity.py (parity) and bench/eval.py (speed).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

HARNESS_TASKS = {  # ours: (the harness's task, its folder in lm_eval/tasks, the split the local file replaces,
    #                  splits switched off because the local file has only one)
    "hellaswag": ("hellaswag", "hellaswag", "validation", ("training_split",)),
    "lambada": ("lambada_openai", "lambada", "test", ()),
    "wikitext": ("wikitext", "wikitext", "test", ("training_split", "validation_split")),
}


def task_yaml(task: str, data_file: Path) -> str:
    """A task config: the harness's own YAML included, the data source replaced by a local JSON-lines file."""
    import lm_eval

    name, folder, split, off = HARNESS_TASKS[task]
    harness_yaml = Path(lm_eval.__file__).parent / "tasks" / folder / f"{name}.yaml"
    if not harness_yaml.is_file():
        raise SystemExit(f"error: lm_eval {lm_eval.__version__} has no {harness_yaml}; pip install -U lm_eval")
    lines = [
        f"include: {json.dumps(str(harness_yaml))}",
        f"task: {name}_local",
        "dataset_path: json",
        "dataset_name: null",
        "dataset_kwargs:",
        "  data_files:",
        f"    {split}: {json.dumps(str(data_file))}",
    ]
    return "\n".join(lines + [f"{k}: null" for k in off]) + "\n"  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--hf-dir", type=Path, required=True, help="a Hugging Face GPT-2 directory (gpt.export_hf)")
    p.add_argument("--hellaswag", type=Path, help="HellaSwag rows (.jsonl)")
    p.add_argument("--lambada", type=Path, help="LAMBADA passages (.jsonl of {'text': ...})")
    p.add_argument("--wikitext-pages", type=Path, help="WikiText articles (.jsonl of {'page': ...})")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    os.environ.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")

    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    files = {"hellaswag": args.hellaswag, "lambada": args.lambada, "wikitext": args.wikitext_pages}
    files = {t: f.resolve() for t, f in files.items() if f is not None}
    names = {HARNESS_TASKS[t][0] + "_local": t for t in files}
    with tempfile.TemporaryDirectory() as yaml_dir:
        for task, f in files.items():
            Path(yaml_dir, f"{task}.yaml").write_text(task_yaml(task, f), encoding="utf-8")
        t0 = time.perf_counter()
        lm = HFLM(pretrained=str(args.hf_dir), device=args.device, dtype=args.dtype, batch_size=args.batch_size)
        t1 = time.perf_counter()
        out = lm_eval.simple_evaluate(
            model=lm, tasks=list(names), task_manager=TaskManager(include_path=yaml_dir),
            limit=args.limit, log_samples=False, bootstrap_iters=0,
        )  # fmt: skip
        t2 = time.perf_counter()
    results = {names[t]: {k.split(",")[0]: v for k, v in r.items() if k != "alias" and "stderr" not in k}
               for t, r in out["results"].items()}  # fmt: skip
    text = json.dumps({"results": results, "seconds": t2 - t1, "model_load_seconds": t1 - t0,
                       "lm_eval": lm_eval.__version__}, indent=2)  # fmt: skip
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, args.out)
    print(text)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # gpt/, from the repository root
    from gpt.utils import run_script

    run_script(main)  # UTF-8 output whatever the console's encoding; Ctrl-C → one line, exit 130
