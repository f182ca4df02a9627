"""Export any of our weights — a .safetensors file, a checkpoint directory or a run directory — as a Hugging Face
GPT-2 directory that transformers, TransformerLens and lm-evaluation-harness load as they are.

    python scripts/export_hf.py runs/tiny hf/tiny                       # a run: its latest checkpoint
    python scripts/export_hf.py runs/tiny/step_000100 hf/tiny-100       # one checkpoint
    python scripts/export_hf.py weights/gpt2-124M.safetensors hf/gpt2   # a converted OpenAI model

Writes config.json, model.safetensors, generation_config.json (generation stops at the context length) and, for a
model with GPT-2's vocabulary, the tokenizer (vocab.json, merges.txt, tokenizer_config.json with model_max_length =
the context length). Prints the directory on stdout. Then, in Python:

    from transformers import pipeline
    pipe = pipeline("text-generation", model="hf/tiny")
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package imports from the repo root

from gpt.weights import export_hf, load_model, resolve_weights_path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__
    )
    p.add_argument("weights", help="a .safetensors file of ours, a checkpoint directory (step_XXXXXX/) or a run dir")
    p.add_argument("out_dir", help="the Hugging Face directory to write (created; files in it are replaced)")
    args = p.parse_args(argv)
    out = Path(args.out_dir)
    if out.exists() and not out.is_dir():
        print(f"error: {out} exists and is not a directory; choose another output directory", file=sys.stderr)
        return 1
    try:
        path = resolve_weights_path(args.weights)
        model = load_model(path)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"exporting {path} ({model.config.n_layer} layers, context {model.config.context_length})", file=sys.stderr)
    try:
        written = export_hf(model, out)
    except OSError as e:
        print(f"error: could not write {out}: {e}", file=sys.stderr)
        return 1
    print(written)  # outside the try: a closed stdout is no write error of the export (run_script: exit 141)
    return 0


if __name__ == "__main__":
    from gpt.utils import run_script

    run_script(main)  # UTF-8 output whatever the console's encoding; Ctrl-C → one line, exit 130
