#!/usr/bin/env python
"""Tokenize text into the token files pretraining reads.

    python scripts/prepare_data.py                                   # the embedded Shakespeare corpus
    python scripts/prepare_data.py my_texts/ notes.txt --out-dir data/mine/prepared --val-fraction 0.05

Writes OUT_DIR/train.bin and OUT_DIR/val.bin (uint16 GPT-2 token ids, <|endoftext|> before every document) and
OUT_DIR/meta.json (counts, tokenizer hash). Documents are files, or parts of a file separated by lines reading
exactly <|endoftext|>; the train/val split is by document and deterministic. Inputs larger than memory are fine.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package imports from the repo root

import argparse

from gpt.data import DataError, prepare_data

DEFAULT_INPUT = "data/shakespeare"
DEFAULT_OUT = "data/shakespeare/prepared"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    p.add_argument("inputs", nargs="*", help=f"text files and/or folders of .txt files (default: {DEFAULT_INPUT})")
    p.add_argument("--out-dir", help=f"where train.bin/val.bin/meta.json go (default with no inputs: {DEFAULT_OUT})")
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of documents for validation (0.1)")
    p.add_argument("--chunk-chars", type=int, default=1 << 20, help="characters tokenized at a time (memory bound)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if not args.inputs:
        args.inputs, args.out_dir = [DEFAULT_INPUT], args.out_dir or DEFAULT_OUT
    if not args.out_dir:
        p.error("--out-dir is required when inputs are given, e.g. --out-dir data/mine/prepared")
    try:
        meta = prepare_data(
            args.inputs, args.out_dir, args.val_fraction, chunk_chars=args.chunk_chars, progress=not args.no_progress
        )
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    tr, va = meta["train"], meta["val"]
    print(
        f"wrote {args.out_dir}: train {tr['tokens']:,} tokens ({tr['documents']} documents), "
        f"val {va['tokens']:,} tokens ({va['documents']} documents)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
