"""Continue a prompt with a GPT-2 and stream the text to stdout as it is sampled.

    python scripts/generate.py --prompt "The meaning of life is"          # weights/gpt2-124M.safetensors
    python scripts/generate.py --weights runs/shakespeare --prompt "ROMEO:" --num-samples 3 --seed 1
    echo -n "Once upon a time" | python scripts/generate.py --prompt - --temperature 0 > story.txt

stdout carries only text: the prompt, then its continuation (several samples are separated by a line
"--- sample 2/3 ---"), so it can be piped; everything else (loading, speed, warnings) goes to stderr. Generation
stops at <|endoftext|> or after --max-new-tokens. Same --seed, same weights, device and dtype → same text.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the package imports from the repository root, without installing

MODEL_SIZES = ("124M", "355M", "774M", "1558M")


def sample_separator(i: int, n: int) -> str:
    """The line printed before sample i (0-based) of n, for i > 0."""
    return f"\n\n--- sample {i + 1}/{n} ---\n\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Continue a prompt with GPT-2; the text streams to stdout, logs go to stderr.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--prompt", required=True, help="the text to continue; '-' reads it from stdin (UTF-8)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--weights", type=Path, help="a converted .safetensors, a checkpoint dir or a run dir")
    src.add_argument(
        "--model-size", choices=MODEL_SIZES, default="124M", help="OpenAI's weights: weights/gpt2-<size>.safetensors"
    )
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy; < 1 sharper, > 1 more random")
    p.add_argument("--top-k", type=int, default=200, help="sample among the k likeliest tokens only")
    p.add_argument("--top-p", type=float, default=None, help="nucleus: the smallest set of tokens with mass >= p")
    p.add_argument("--seed", type=int, default=None, help="default: a random seed, printed to stderr")
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    p.add_argument("--compile", action="store_true", help="compile the decode step (slow first call, faster after)")
    args = p.parse_args(argv)
    # Checked before anything heavy is imported, so a typo fails in a fraction of a second.
    if not 0 <= args.temperature < float("inf"):
        p.error(f"--temperature must be >= 0 and finite (0 = greedy), got {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        p.error(f"--top-k must be >= 1, got {args.top_k}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        p.error(f"--top-p must be in (0, 1], got {args.top_p}")
    if args.max_new_tokens < 0:
        p.error(f"--max-new-tokens must be >= 0, got {args.max_new_tokens}")
    if args.num_samples < 1:
        p.error(f"--num-samples must be >= 1, got {args.num_samples}")
    from gpt.utils import utf8_text

    try:
        raw = sys.stdin.buffer.read() if args.prompt == "-" else args.prompt
        args.prompt = utf8_text(raw, "the prompt on stdin" if args.prompt == "-" else "--prompt")
    except ValueError as e:
        p.error(str(e))
    if not args.prompt:
        p.error('the prompt is empty; pass some text with --prompt "..." (or pipe it in with --prompt -)')
    if args.weights is None:
        args.weights = ROOT / "weights" / f"gpt2-{args.model_size}.safetensors"
        if not args.weights.is_file():
            p.error(
                f"no weights at {args.weights}; convert OpenAI's GPT-2 {args.model_size} first with:\n"
                f"  python scripts/load_openai_weights.py --model-size {args.model_size}\n"
                "or pass --weights PATH (a .safetensors file, a checkpoint directory or a run directory)"
            )
    elif not args.weights.exists():
        p.error(f"--weights {args.weights}: no such file or directory")
    return args


def until_eos(stream, eos_id: int, seen: list[int]):
    """Ids of a batch-1 token stream as ints (also appended to `seen`), ending before eos_id: the end of a
    document stops the sample, and its marker is not printed."""
    for tok in stream:
        tok = int(tok[0])  # the one sync per token that streaming needs
        if tok == eos_id:
            return
        seen.append(tok)
        yield tok


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    import torch

    from gpt import generate_stream
    from gpt.fast_decode import CompiledDecoder, prepare_for_decoding
    from gpt.tokenizer import EOT_ID, get_tokenizer, stream_decode
    from gpt.utils import cpu_threads, get_device, get_dtype
    from gpt.weights import load_model

    try:
        device = get_device(args.device)
        if device.type == "cpu":  # threads only on the cores other programs leave free (GPT_THREADS=N chooses)
            torch.set_num_threads(cpu_threads())
        model = load_model(args.weights, device=device, dtype=get_dtype(args.dtype))
    except (ValueError, FileNotFoundError) as e:
        log(f"error: {e}")
        return 2
    decoder = CompiledDecoder() if args.compile else None  # one for all samples: compiled once
    compiled = decoder is not None and decoder.compiles(device.type, 1, get_dtype(args.dtype))
    if args.compile and not compiled:
        log(f"--compile: eager decoding, not the slower choice on this {device.type} (fast_decode.compile_helps)")
    model = prepare_for_decoding(model, compile=compiled)  # the weight layout that path streams fastest
    enc = get_tokenizer()
    if model.config.vocab_size < enc.n_vocab:
        log(f"error: the model's vocabulary ({model.config.vocab_size}) is smaller than GPT-2's ({enc.n_vocab})")
        return 2
    ids = enc.encode(args.prompt, allowed_special="all")  # "<|endoftext|>" in a prompt is the separator token
    ctx = model.config.context_length
    if len(ids) > ctx:
        log(f"warning: the prompt is {len(ids)} tokens, longer than the context ({ctx}); the model sees its last {ctx}")
    seed = args.seed if args.seed is not None else secrets.randbelow(2**31)
    generator = torch.Generator(device=device).manual_seed(seed)
    log(
        f"{args.weights}: {model.num_params() / 1e6:.1f}M parameters on {device} in {args.dtype}; "
        f"prompt: {len(ids)} tokens; seed {seed}"
    )

    out = sys.stdout
    if hasattr(out, "reconfigure"):
        out.reconfigure(encoding="utf-8")  # GPT-2 emits any Unicode; never fail on a narrower console encoding
    for i in range(args.num_samples):
        if i:
            out.write(sample_separator(i, args.num_samples))
        out.write(args.prompt)
        out.flush()
        t0 = time.perf_counter()
        stream = generate_stream(
            model,
            [ids],
            args.max_new_tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            eos_id=EOT_ID,
            generator=generator,
            decoder=decoder,
            n_vocab=enc.n_vocab,  # ids past the tokenizer's (a model with vocab_size 50304) are never sampled
        )

        new_ids = []
        for text in stream_decode(enc, until_eos(stream, EOT_ID, new_ids)):  # holds a character back until whole
            out.write(text)
            out.flush()
        dt = time.perf_counter() - t0
        n = len(new_ids)
        log(f"\n[sample {i + 1}/{args.num_samples}: {n} tokens in {dt:.1f} s, {n / max(dt, 1e-9):.1f} tok/s]")
    if out.isatty():
        out.write("\n")  # end the line on a terminal; a pipe gets exactly prompt + continuation
    out.flush()
    return 0


if __name__ == "__main__":
    from gpt.utils import run_script

    run_script(main)  # UTF-8 output whatever the console's encoding; Ctrl-C → one line, exit 130
