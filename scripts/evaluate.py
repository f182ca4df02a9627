"""Evaluate a GPT-2 on HellaSwag, LAMBADA and WikiText-2, scored as lm-evaluation-harness scores them.

    python scripts/evaluate.py                                        # weights/gpt2-124M.safetensors, all tasks
    python scripts/evaluate.py --weights runs/shakespeare --tasks hellaswag --limit 500
    python scripts/evaluate.py --model-size 124M --tasks lambada --device cuda --dtype bfloat16 --out lambada.json
    python scripts/evaluate.py --data-dir /datasets/eval --no-download    # files you already have

The test sets are downloaded on first use into data/eval/ (resumed if interrupted, checked before use; a mirror
with --mirror URL or $GPT2_EVAL_MIRROR). The table goes to stdout, progress and logs to stderr; --out also writes
every number with its standard error, the weights' sha256 and the settings as JSON (written only when everything
has run). Published GPT-2 124M numbers to compare with: README, section "Evaluate".
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the package imports from the repository root, without installing

MODEL_SIZES = ("124M", "355M", "774M", "1558M")


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, not usage + message
        self.exit(2, f"error: {message} (see --help)\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = Parser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_mutually_exclusive_group()
    src.add_argument("--weights", type=Path, help="a .safetensors file, a checkpoint directory or a run directory")
    src.add_argument("--model-size", choices=MODEL_SIZES, default="124M",
                     help="OpenAI's weights, converted: weights/gpt2-<size>.safetensors")  # fmt: skip
    p.add_argument("--tasks", default="hellaswag,lambada,wikitext", help="comma-separated; any of the default's")
    p.add_argument("--data-dir", type=Path, default=ROOT / "data" / "eval", help="where the test sets are (or go)")
    p.add_argument("--no-download", action="store_true", help="use only files already in --data-dir")
    p.add_argument("--mirror", default=None, help="fetch {mirror}/<file name> instead of the canonical URLs")
    p.add_argument("--limit", type=int, default=None, help="the first N examples of each task (None: all)")
    p.add_argument("--hellaswag-style", choices=["both", "completion", "harness"], default="both",
                   help="completion: build-nanogpt's scoring; harness: lm-evaluation-harness's")  # fmt: skip
    p.add_argument("--window", type=int, default=None, help="wikitext window in tokens (None: the context length)")
    p.add_argument("--stride", type=int, default=None, help="wikitext stride (None: the window, i.e. disjoint windows)")
    p.add_argument("--batch-size", type=int, default=16, help="rows per forward pass")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    p.add_argument("--out", type=Path, default=None, help="also write the results as JSON here")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    for name in ("limit", "batch_size", "window", "stride"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.stride is not None and args.window is not None and args.stride > args.window:
        p.error(f"--stride ({args.stride}) must not exceed --window ({args.window})")
    from gpt.utils import output_file_problem

    if args.out is not None and output_file_problem(args.out):
        p.error(f"--out: {output_file_problem(args.out)}")
    converted = ROOT / "weights" / f"gpt2-{args.model_size}.safetensors"
    args.weights = args.weights or converted
    if not args.weights.exists():
        fix = "no such file or directory"
        if args.weights == converted:
            fix = f"convert OpenAI's GPT-2 first: python scripts/load_openai_weights.py --model-size {args.model_size}"
        p.error(f"no weights at {args.weights}: {fix} (or pass --weights PATH)")
    return args


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    import torch
    from safetensors import SafetensorError

    from gpt.eval import EvalDataError, format_table, write_json
    from gpt.eval.tasks import evaluate, load_data, parse_tasks
    from gpt.tokenizer import VOCAB_SIZE, sha256_file
    from gpt.train import emulated_matmul_note
    from gpt.utils import get_device, get_dtype
    from gpt.weights import load_model, resolve_weights_path

    def fail(msg: str) -> int:
        log(f"error: {msg}")
        return 2

    try:
        tasks = parse_tasks(args.tasks)
        device = get_device(args.device)
        weights = resolve_weights_path(args.weights)
        model = load_model(weights, device=device, dtype=get_dtype(args.dtype))
    except EvalDataError as e:
        return fail(str(e))
    except (ValueError, FileNotFoundError, OSError, SafetensorError) as e:
        return fail(f"could not load the weights ({e}); pass a .safetensors written by this project "
                    "(scripts/load_openai_weights.py, scripts/pretrain.py)")  # fmt: skip
    slow = emulated_matmul_note(get_dtype(args.dtype), device)
    if slow:  # a user's choice, not an error: it runs, slowly
        log(f"warning: --dtype {args.dtype}: {slow}; pass --dtype float32 to evaluate faster")
    C = model.config
    if C.vocab_size < VOCAB_SIZE:
        return fail(f"the model's vocabulary ({C.vocab_size}) is smaller than GPT-2's ({VOCAB_SIZE}); these tasks "
                    "are tokenized with GPT-2's BPE, so evaluate a model trained with it")  # fmt: skip
    if args.window is not None and args.window > C.context_length:
        return fail(f"--window {args.window} is longer than the model's context ({C.context_length})")
    window = args.window or C.context_length
    if args.stride is not None and args.stride > window:
        return fail(f"--stride ({args.stride}) must not exceed the window ({window})")
    try:  # every file fetched and checked before anything runs
        data = load_data(tasks, args.data_dir, download=not args.no_download, mirror=args.mirror,
                         progress=not args.quiet)  # fmt: skip
    except EvalDataError as e:
        return fail(str(e))
    log(f"{weights}: {model.num_params() / 1e6:.1f}M parameters, context {C.context_length}, on {device} in "
        f"{args.dtype}; tasks: {', '.join(tasks)}")  # fmt: skip
    t0 = time.perf_counter()
    metrics, info = evaluate(
        model, tasks, data=data, limit=args.limit, hellaswag_style=args.hellaswag_style, window=window,
        stride=args.stride, batch_size=args.batch_size, progress=not args.quiet, log=log,
    )  # fmt: skip
    for task, i in info.items():
        if not i["complete_split"] or i["evaluated"] < i["examples"]:
            log(f"note: {task} used {i['evaluated']:,} of the split's examples; not comparable with published numbers")
        if "note" in i:
            log(f"note: {task}: {i['note']}")
    if args.out:  # the file first: a stdout nobody reads any more (a killed `| tee`) must not lose the results
        write_json(
            args.out, metrics, weights=str(weights), weights_sha256=sha256_file(weights), dtype=args.dtype,
            device=str(device), model_config=C.to_dict(), data=info, seconds=round(time.perf_counter() - t0, 2),
            settings=dict(batch_size=args.batch_size, limit=args.limit, hellaswag_style=args.hellaswag_style,
                          window=window, stride=args.stride or window),
            torch=torch.__version__,
        )  # fmt: skip
        log(f"wrote {args.out}")
    print(format_table(metrics))
    return 0


if __name__ == "__main__":
    from gpt.utils import run_script

    run_script(main)  # UTF-8 output whatever the console's encoding; Ctrl-C → one line, exit 130
