"""scripts/generate.py end to end in a subprocess, on tiny checkpoints saved by save_model (the converter's format)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpt import GPT, GPTConfig, load_model, save_model
from gpt.tokenizer import EOT_ID, get_tokenizer

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "generate.py"
TINY = dict(vocab_size=50257, context_length=64, n_layer=1, n_head=2, n_embd=32)  # GPT-2's vocabulary: real text
SONG = "naïve café 😀 日本語. "  # 12 tokens a cycle, 9 of them pieces of a multi-byte character


@pytest.fixture(scope="module")
def random_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    return save_model(GPT(GPTConfig(**TINY)), tmp_path_factory.mktemp("ckpt") / "random.safetensors")


@pytest.fixture(scope="module")
def song_ckpt(tmp_path_factory):
    """A model that has memorised SONG, so its greedy continuation is full of characters split across tokens."""
    torch.manual_seed(0)
    ids = get_tokenizer().encode(SONG * 8)[: TINY["context_length"] + 1]
    x, y = torch.tensor([ids[:-1]]), torch.tensor([ids[1:]])
    model = GPT(GPTConfig(**TINY))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-2)
    for _ in range(300):
        loss = model(x, y).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if loss.item() < 0.02:
            break
    assert loss.item() < 0.02
    return save_model(model, tmp_path_factory.mktemp("ckpt") / "song.safetensors")


def run_cli(*args, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}  # narrow console: must not matter
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)], input=stdin, capture_output=True, env=env, timeout=300
    )


def expected_text(path, prompt, n, seed, temperature, top_k=200) -> str:
    """prompt + its continuation, computed without gpt.generate or gpt.sampling (an independent reference): nanoGPT's
    loop — the whole window through model(idx) at every step, logits / temperature, every logit below the k-th
    largest set to -inf, softmax, torch.multinomial with the seeded generator (argmax at temperature 0) — with the
    window rule the generate.py docstring states: past the context, drop the oldest context_length // 4 tokens.
    Cut at <|endoftext|>, which is not printed."""
    enc = get_tokenizer()
    model = load_model(path).eval()
    ids = enc.encode(prompt, allowed_special="all")
    ctx = model.config.context_length
    keep = ctx - max(1, ctx // 4) + 1  # tokens in the window right after it slides
    start, out = max(0, len(ids) - ctx), []
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _ in range(n):
            if len(ids) - start > ctx:
                start = len(ids) - keep
            logits = model(torch.tensor([ids[start:]]))[0, -1].float()  # (V,)
            if temperature == 0:
                nxt = int(logits.argmax())
            else:
                logits = logits / temperature
                kth = torch.topk(logits, min(top_k, logits.numel())).values[-1]
                logits[logits < kth] = float("-inf")
                nxt = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=g))
            if nxt == EOT_ID:
                break
            ids.append(nxt)
            out.append(nxt)
    return prompt + enc.decode(out)


def test_stdout_is_exactly_prompt_plus_generated_text(random_ckpt):
    prompt = "The meaning of life is"
    r = run_cli("--weights", random_ckpt, "--prompt", prompt, "--max-new-tokens", 30, "--seed", 7, "--device", "cpu")
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode("utf-8")
    assert out == expected_text(random_ckpt, prompt, 30, seed=7, temperature=0.8)
    assert len(out) > len(prompt)
    assert "seed 7" in r.stderr.decode() and "tok/s" in r.stderr.decode()  # logs went to stderr, not stdout


def test_same_seed_same_text_and_samples_are_separated(random_ckpt):
    args = ("--weights", random_ckpt, "--prompt", "Hello", "--max-new-tokens", 20, "--temperature", 1.0)
    a = run_cli(*args, "--seed", 3, "--num-samples", 2)
    b = run_cli(*args, "--seed", 3, "--num-samples", 2)
    c = run_cli(*args, "--seed", 4, "--num-samples", 2)
    assert a.returncode == b.returncode == c.returncode == 0, a.stderr.decode()
    assert a.stdout == b.stdout
    assert a.stdout != c.stdout
    samples = a.stdout.decode().split("\n\n--- sample 2/2 ---\n\n")
    assert len(samples) == 2 and all(s.startswith("Hello") and len(s) > 5 for s in samples)
    assert samples[0] != samples[1]  # the second sample continues the generator, it does not restart it


def test_multibyte_characters_stream_intact(song_ckpt):
    prompt = "naïve café"  # the continuation: 3 × " 😀 日本語. naïve café" (36 tokens)
    r = run_cli("--weights", song_ckpt, "--prompt", prompt, "--max-new-tokens", 36, "--temperature", 0)
    assert r.returncode == 0, r.stderr.decode()
    out = r.stdout.decode("utf-8")
    assert out == expected_text(song_ckpt, prompt, 36, seed=0, temperature=0)
    assert out == prompt + " 😀 日本語. naïve café" * 3
    assert "\ufffd" not in out


def test_prompt_from_stdin_and_too_long_prompt_warns(song_ckpt):
    prompt = SONG * 7  # 84 tokens > the context of 64
    r = run_cli("--weights", song_ckpt, "--prompt", "-", "--max-new-tokens", 12, "--seed", 1, stdin=prompt.encode())
    assert r.returncode == 0, r.stderr.decode()
    assert "longer than the context (64)" in r.stderr.decode()
    assert r.stdout.decode("utf-8") == expected_text(song_ckpt, prompt, 12, seed=1, temperature=0.8)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--temperature", "-1"], "--temperature must be >= 0"),
        (["--top-k", "0"], "--top-k must be >= 1"),
        (["--top-p", "0"], "--top-p must be in (0, 1]"),
        (["--top-p", "1.5"], "--top-p must be in (0, 1]"),
        (["--prompt", ""], "the prompt is empty"),
        (["--device", "tpu"], "invalid choice: 'tpu'"),
        (["--weights", "no/such/file.safetensors"], "no such file or directory"),
    ],
)
def test_bad_input_is_a_clear_error(random_ckpt, args, message):
    base = {"--weights": str(random_ckpt), "--prompt": "Hi"}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    r = run_cli(*[x for kv in base.items() for x in kv])
    assert r.returncode != 0
    assert message in r.stderr.decode()
    assert r.stdout == b""


def test_missing_model_size_weights_say_how_to_get_them():
    path = ROOT / "weights" / "gpt2-1558M.safetensors"
    if path.exists():
        pytest.skip(f"{path} exists here, so it is not missing")
    r = run_cli("--model-size", "1558M", "--prompt", "Hi")
    assert r.returncode != 0
    assert "python scripts/load_openai_weights.py --model-size 1558M" in r.stderr.decode()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device_is_a_clear_error(random_ckpt):
    r = run_cli("--weights", random_ckpt, "--prompt", "Hi", "--device", "cuda")
    assert r.returncode != 0
    assert "CUDA is not available" in r.stderr.decode()
