"""Download OpenAI's GPT-2 (or Hugging Face's copy) and convert it into one self-describing .safetensors file.

    python scripts/load_openai_weights.py --model-size 124M                    # → weights/gpt2-124M.safetensors
    python scripts/load_openai_weights.py --model-size gpt2-xl --source hf     # from Hugging Face instead
    python scripts/load_openai_weights.py --from-dir weights/openai/124M       # files already on disk: no network
    python scripts/load_openai_weights.py --model-size 124M --export-hf out/   # also write a transformers dir
    GPT2_BASE_URL=https://my.mirror/gpt-2/models python scripts/load_openai_weights.py   # a mirror

Prints the path(s) it wrote on stdout; progress goes to stderr. On any failure it exits 1 with a message that says
what to do, and writes no converted file. Then: model = gpt.load_model("weights/gpt2-124M.safetensors").
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the package imports from the repo root

from gpt.config import ALIASES, OPENAI_SIZES, GPTConfig, canonical_preset
from gpt.download import DownloadError
from gpt.utils import output_file_problem
from gpt.weights import BASE_URL_ENV, convert_hf, convert_openai, download_model, export_hf, load_model, save_state_dict
from gpt.weights.tf_checkpoint import CheckpointError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sizes = ", ".join(OPENAI_SIZES) + " or " + ", ".join(ALIASES)
    p.add_argument("--model-size", help=f"{sizes} (default 124M; with --from-dir, read from the files)")
    p.add_argument("--source", choices=("openai", "hf"), help="download from OpenAI (default) or Hugging Face")
    p.add_argument("--models-dir", default="weights", help="downloads go to MODELS_DIR/SOURCE/SIZE/ (default weights)")
    p.add_argument("--from-dir", help="convert the files in this directory (OpenAI or Hugging Face layout), no network")
    p.add_argument("--out", help="output file (default MODELS_DIR/gpt2-SIZE.safetensors)")
    p.add_argument("--base-url", help=f"download from this mirror (or set ${BASE_URL_ENV}); see gpt/weights/hub.py")
    p.add_argument("--reader", choices=("numpy", "tensorflow"), default="numpy", help="TF checkpoint reader")
    p.add_argument("--export-hf", metavar="DIR", help="also write a Hugging Face transformers directory here")
    p.add_argument("--retries", type=int, default=5, help="retries per file on network errors (default 5)")
    args = p.parse_args(argv)
    if args.out and output_file_problem(args.out):  # before a download of up to 6 GB
        p.error(f"--out: {output_file_problem(args.out)}")
    if args.retries < 0:
        p.error(f"--retries must be >= 0, got {args.retries}")
    return args


def detect_source(directory: Path) -> str:
    if (directory / "hparams.json").is_file():
        return "openai"
    if (directory / "config.json").is_file():
        return "hf"
    if (directory / "model.safetensors").is_file() or (directory / "latest").is_file():
        raise FileNotFoundError(
            f"{directory} is one of our checkpoint or run directories, already in our format: load it with "
            f"--weights {directory} wherever weights are asked for, or export it with "
            f"`python scripts/export_hf.py {directory} OUT_DIR`"
        )
    raise FileNotFoundError(
        f"{directory} holds neither hparams.json (OpenAI's layout) nor config.json (Hugging Face's); "
        "point --from-dir at the directory with the model files"
    )


def matching_size(config: GPTConfig) -> str | None:
    """The OpenAI size whose shape this config has, if any."""
    shape = lambda c: (c.n_layer, c.n_head, c.n_embd, c.vocab_size)
    return next((s for s in OPENAI_SIZES if shape(GPTConfig.from_preset(s)) == shape(config)), None)


def main(argv: list[str] | None = None) -> int:
    """Exit status: 0, or 1 after printing what went wrong and what to do (no traceback for expected failures)."""
    args = parse_args(argv)
    try:
        return run(args)
    except BrokenPipeError:  # stdout's reader went away: no error of the conversion (run_script exits 141)
        raise
    except (DownloadError, CheckpointError, ValueError, OSError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


def run(args: argparse.Namespace) -> int:
    size = canonical_preset(args.model_size or "124M")
    if size not in OPENAI_SIZES:
        raise ValueError(f"--model-size {args.model_size!r}: OpenAI released {', '.join(OPENAI_SIZES)} only")
    if args.from_dir:
        directory = Path(args.from_dir)
        if not directory.is_dir():
            raise FileNotFoundError(f"--from-dir {directory} is not a directory")
        source = args.source or detect_source(directory)
    else:
        source = args.source or "openai"
        directory = download_model(size, source, args.models_dir, args.base_url, retries=args.retries)
    print(f"converting {directory} ({source} layout)", file=sys.stderr)
    config, state = convert_openai(directory, args.reader) if source == "openai" else convert_hf(directory)
    found = matching_size(config)
    if (args.model_size or not args.from_dir) and found != size:  # we asked for `size` and got something else
        problem = f"{directory} holds a {found or 'non-standard'} GPT-2 ({config}), not {size}"
        if not args.out:  # never write a file whose name claims a size it does not hold
            raise ValueError(f"{problem}; check the mirror or --model-size, or pass --out to convert it anyway")
        print(f"warning: {problem}", file=sys.stderr)
    if args.out:
        out = Path(args.out)
    else:
        name = size if args.model_size or not args.from_dir else (found or directory.resolve().name)
        out = Path(args.models_dir) / f"gpt2-{name}.safetensors"
    path = save_state_dict(config, state, out, {"source": f"{source}:{directory}"})
    del state
    exported = export_hf(load_model(path), args.export_hf) if args.export_hf else None
    print(path)  # after all the writing: a closed stdout must not skip the export
    if exported:
        print(exported)
    return 0


if __name__ == "__main__":
    from gpt.utils import run_script

    run_script(main)  # UTF-8 output whatever the console's encoding; Ctrl-C → one line, exit 130
