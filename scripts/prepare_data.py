#!/usr/bin/env python
"""Tokenize text into the token files pretraining reads: your own files, or FineWeb-Edu / FineWeb / OpenWebText.

    python scripts/prepare_data.py                                   # the embedded Shakespeare corpus
    python scripts/prepare_data.py my_texts/ notes.txt --out-dir data/mine/prepared --val-fraction 0.05
    python scripts/prepare_data.py --dataset fineweb-edu --subset sample-10BT     # 10B tokens → data/fineweb-edu/...
    python scripts/prepare_data.py --dataset fineweb-edu --max-tokens 200M --out-dir data/fineweb-edu/200M
    python scripts/prepare_data.py parquet_dir/ --out-dir data/local               # local .parquet/.jsonl files

Inputs: .txt files (a document per file, or parts separated by lines reading exactly <|endoftext|>), .jsonl (one
{"text": ...} object per line) and .parquet files (a `text` column), or folders of them. --dataset downloads the
hub's Parquet files (from $HF_ENDPOINT or https://huggingface.co, into --cache-dir) as the preparation reaches them;
the same files given locally give the same shards. Output: OUT_DIR/meta.json and uint16 token files: shards of
--shard-tokens tokens (train_000000.bin, ..., val_000000.bin) for --dataset and .parquet/.jsonl inputs, train.bin +
val.bin for .txt inputs (unless --shard-tokens is given). Every document gets <|endoftext|> before it; the train/val
split is by document and deterministic. Tokenization uses every core.
Interrupted (Ctrl-C, kill, full disk)? Run the same command again: it continues from its last checkpoint.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package imports from the repo root

import argparse
import re

from gpt.data import DATASETS, DataError, Source, hub_sources, list_source_files, prepare_shards
from gpt.data.datasets import LISTINGS, approx_tokens
from gpt.download import DownloadError

DEFAULT_INPUT = "data/shakespeare"
DEFAULT_OUT = "data/shakespeare/prepared"
DATASET_SHARD_TOKENS = 100_000_000  # 200 MB per shard, as build-nanogpt and llm.c
SUFFIXES = {"K": 10**3, "M": 10**6, "B": 10**9, "G": 10**9}


def count(text: str) -> int:
    """'100M', '10B', '1e8', '100_000_000' → an int."""
    m = re.fullmatch(r"([\d_.eE+]+)\s*([KMBG]?)", text.strip().upper())
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count; write e.g. 100000000, 1e8, 100M or 10B")
    return int(float(m[1].replace("_", "")) * SUFFIXES.get(m[2], 1))


class Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, like every other mistake (argparse would print the usage first)
        self.exit(2, f"error: {message} (see --help)\n")


def main(argv: list[str] | None = None) -> int:
    p = Parser(
        description=__doc__.strip().splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.strip().splitlines()[2:]),
    )  # fmt: skip
    p.add_argument("inputs", nargs="*", help=f"text/.jsonl/.parquet files and/or folders (default: {DEFAULT_INPUT})")
    p.add_argument("--dataset", help=f"a hub corpus instead of inputs: {', '.join(DATASETS)}")
    p.add_argument("--subset", help="fineweb(-edu): sample-10BT (default), sample-100BT, sample-350BT, CC-MAIN-2024-10")
    p.add_argument("--out-dir", help="where meta.json and the token files go (default: data/shakespeare/prepared, or "
                   "data/<dataset>/<subset> with --dataset)")  # fmt: skip
    p.add_argument("--max-tokens", type=count, help="stop after about this many tokens (a slice: 200M, 1B)")
    p.add_argument("--shard-tokens", type=count, help=f"tokens per shard (default {DATASET_SHARD_TOKENS:,} with "
                   "--dataset or .parquet/.jsonl inputs; for .txt inputs one train.bin and one val.bin)")  # fmt: skip
    p.add_argument("--val-fraction", type=float, default=0.1, help="every (1/f)-th document goes to val (0.1)")
    p.add_argument("--val-tokens", type=count, default=10_000_000,
                   help="...until val holds this many tokens; then all go to train (10M; 0 = no limit)")  # fmt: skip
    p.add_argument("--processes", type=int, help="tokenizer processes (default: every core; 1 for small inputs)")
    p.add_argument("--cache-dir", default="data/hub", help="where --dataset downloads go (data/hub)")
    p.add_argument("--delete-downloads", action="store_true", help="delete each downloaded file once it is tokenized")
    p.add_argument("--list-files", default="auto", help=f"how to find a subset's files: {', '.join(LISTINGS)} (auto: "
                   "the hub's API, else the known names)")  # fmt: skip
    p.add_argument("--text-column", default="text", help="the column (or JSON field) that holds the text (text)")
    p.add_argument("--batch-chars", type=count, default=1 << 20, help="characters per work item of a process (1M)")
    p.add_argument("--chunk-chars", type=int, default=1 << 20, help="characters of a .txt file tokenized at a time")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    args = p.parse_args(argv)
    try:
        if args.dataset and args.inputs:
            raise DataError("pass either --dataset or input files, not both")
        if args.dataset:
            if args.dataset not in DATASETS:
                raise DataError(
                    f"unknown dataset {args.dataset!r}; choose {', '.join(DATASETS)}, or pass your own "
                    ".parquet/.jsonl/.txt files as inputs"
                )
            subset = args.subset or DATASETS[args.dataset].default_subset
            out_dir = args.out_dir or f"data/{args.dataset}/{subset}"
            sources = hub_sources(args.dataset, subset, args.cache_dir, listing=args.list_files,
                                  progress=not args.no_progress, log=lambda m: print(m, file=sys.stderr))  # fmt: skip
            shard_tokens = args.shard_tokens or DATASET_SHARD_TOKENS
            expected, inputs = approx_tokens(args.dataset, subset), [f"hf:{DATASETS[args.dataset].repo}/{subset}"]
        else:
            if not args.inputs:
                args.inputs, args.out_dir = [DEFAULT_INPUT], args.out_dir or DEFAULT_OUT
            if not args.out_dir:
                p.error("--out-dir is required when inputs are given, e.g. --out-dir data/mine/prepared")
            files = list_source_files(args.inputs)
            sources = [Source.local(f) for f in files]
            corpus = any(f.suffix in (".parquet", ".jsonl") for f in files)  # shards, as the same files from the hub
            out_dir, expected = args.out_dir, None
            shard_tokens = args.shard_tokens or (DATASET_SHARD_TOKENS if corpus else None)
            inputs = [str(Path(i).resolve()) for i in args.inputs]
        if Path(out_dir).exists() and not Path(out_dir).is_dir():
            raise DataError(f"--out-dir {out_dir} is a file; pass a directory (it is created if missing)")
        done_before = (Path(out_dir) / "meta.json").is_file()
        meta = prepare_shards(
            sources, out_dir, val_fraction=args.val_fraction, val_tokens=args.val_tokens or None,
            shard_tokens=shard_tokens, max_tokens=args.max_tokens, processes=args.processes, approx_tokens=expected,
            text_column=args.text_column, chunk_chars=args.chunk_chars, batch_chars=args.batch_chars,
            delete_downloads=args.delete_downloads, inputs=inputs, progress=not args.no_progress,
        )  # fmt: skip
    except (DataError, DownloadError, OSError) as e:  # OSError: a full disk, a folder we may not write
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: run the same command again to continue from the last checkpoint", file=sys.stderr)
        return 130
    tr, va, shards = meta["train"], meta["val"], meta["shards"]
    print(
        f"{'already prepared' if done_before else 'wrote'} {out_dir}: train {tr['tokens']:,} tokens "
        f"({tr['documents']:,} documents, {len(shards['train'])} file(s)), val {va['tokens']:,} tokens "
        f"({va['documents']:,} documents, {len(shards['val'])} file(s))"
    )
    return 0


if __name__ == "__main__":
    from gpt.utils import run_script

    run_script(main)  # UTF-8 output whatever the console's encoding; Ctrl-C → one line, exit 130
