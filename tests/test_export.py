"""A trained run exported in one command, then used by transformers as it is: AutoTokenizer truncates to the
context length, a default pipeline("text-generation") stays inside it, and ids the tokenizer cannot decode are
never generated."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gpt import GPT, GPTConfig, generate, get_tokenizer, save_model

ROOT = Path(__file__).resolve().parents[1]
EXPORT = ROOT / "scripts" / "export_hf.py"
CONTEXT = 32

TEXT = (
    "The quick brown fox jumps over the lazy dog while the cat sleeps by the fire. "
    "A storm came over the hills, and the shepherds gathered their flocks before night fell. "
)


def run_export(*args, cwd=None):
    cmd = [sys.executable, str(EXPORT), *map(str, args)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A real scripts/pretrain.py run: 3 steps of a 1-layer model with 32-token context on a small corpus."""
    root = tmp_path_factory.mktemp("export_run")
    corpus = root / "corpus"
    corpus.mkdir()
    for i in range(10):
        (corpus / f"doc{i:02d}.txt").write_text(TEXT * (3 + i), encoding="utf-8")
    spec = importlib.util.spec_from_file_location("pretrain_for_export", ROOT / "scripts" / "pretrain.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    run = root / "run"
    args = ["--force-cpu", "--no-compile", "--no-progress", "--model", "tiny", "--model.n-layer", "1",
            "--model.n-head", "2", "--model.n-embd", "32", "--model.context-length", str(CONTEXT),
            "--batch-size", "2", "--total-batch-tokens", "64", "--max-steps", "3", "--warmup-steps", "1",
            "--eval-iters", "1", "--eval-interval", "3", "--sample-tokens", "0", "--wandb-mode", "disabled",
            "--no-tensorboard", "--data-source", str(corpus), "--data-dir", str(root / "prepared"),
            "--out-dir", str(run)]  # fmt: skip
    assert module.main(args) == 0
    return run


def test_a_run_exports_in_one_command_and_transformers_uses_it_as_it_is(tiny_run, tmp_path):
    from transformers import AutoTokenizer, GPT2LMHeadModel, pipeline

    out = tmp_path / "hf"
    result = run_export(tiny_run, out)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(out)
    hf_files = ["config.json", "model.safetensors", "generation_config.json", "vocab.json", "merges.txt"]
    for name in [*hf_files, "tokenizer_config.json", "special_tokens_map.json"]:
        assert (out / name).is_file(), name

    tok = AutoTokenizer.from_pretrained(out)
    enc = get_tokenizer()
    assert tok.model_max_length == CONTEXT  # not transformers' 1e30 default
    assert tok("Hello, world!")["input_ids"] == [15496, 11, 995, 0] == enc.encode("Hello, world!")
    assert tok.eos_token_id == 50256
    assert len(tok(TEXT * 20, truncation=True)["input_ids"]) == CONTEXT

    # a default pipeline call: no max_new_tokens given, so transformers' default (256) would run past 32 positions
    pipe = pipeline("text-generation", model=str(out), device="cpu")
    text = pipe("The quick brown", do_sample=False)[0]["generated_text"]
    n = len(enc.encode(text, allowed_special="all"))
    assert 3 < n <= CONTEXT

    # what it generated is our model's greedy continuation (our sampler, not transformers')
    ours = torch.load(tiny_run / (tiny_run / "latest").read_text().strip() / "state.pt", weights_only=True)
    assert "step" in ours  # the run really trained (the checkpoint holds the loop's state)
    from gpt import load_model

    model = load_model(tiny_run)
    prompt = enc.encode("The quick brown")
    want = generate(model, torch.tensor([prompt]), max_new_tokens=8, temperature=0.0)[0].tolist()
    hf = GPT2LMHeadModel.from_pretrained(out).eval()
    got = hf.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False)[0].tolist()
    assert got[: len(want)] == want


def test_ids_past_the_tokenizer_are_never_generated_by_an_exported_larger_vocab(tmp_path):
    from transformers import GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50304, context_length=CONTEXT, n_layer=1, n_head=2, n_embd=32)).eval()
    with torch.no_grad():
        model.transformer.ln_f.weight.fill_(0.01)  # the final hidden state ≈ ln_f's bias ...
        model.transformer.ln_f.bias.fill_(1.0)
        model.transformer.wte.weight[50260] = 1.0  # ... so this row (past the tokenizer) wins every position
    path = save_model(model, tmp_path / "big_vocab.safetensors")
    out = tmp_path / "hf"
    assert run_export(path, out).returncode == 0
    gen = json.loads((out / "generation_config.json").read_text(encoding="utf-8"))
    assert gen["suppress_tokens"] == list(range(50257, 50304))
    assert gen["max_length"] == CONTEXT
    hf = GPT2LMHeadModel.from_pretrained(out).eval()
    unconstrained = hf(torch.tensor([[464, 2068]])).logits[0, -1].argmax().item()
    assert unconstrained >= 50257  # the test is real: without suppression the model picks an undecodable id
    ids = hf.generate(torch.tensor([[464, 2068]]), do_sample=False, max_new_tokens=10)[0].tolist()
    assert max(ids) < 50257
    get_tokenizer().decode(ids)  # decodes


def test_a_small_vocabulary_model_exports_without_a_tokenizer(tmp_path):
    model = GPT(GPTConfig(vocab_size=1000, context_length=CONTEXT, n_layer=1, n_head=2, n_embd=32))
    out = tmp_path / "hf"
    assert run_export(save_model(model, tmp_path / "small.safetensors"), out).returncode == 0
    assert not (out / "vocab.json").exists() and not (out / "tokenizer_config.json").exists()
    gen = json.loads((out / "generation_config.json").read_text(encoding="utf-8"))
    assert gen == {"max_length": CONTEXT}  # no <|endoftext|> id in a 1,000-token vocabulary


@pytest.mark.parametrize("case", ["missing", "not_ours", "out_is_a_file"])
def test_export_mistakes_end_in_one_error_line(case, tmp_path):
    weights, out = tmp_path / "nothing_here", tmp_path / "hf"
    if case == "not_ours":
        weights = tmp_path / "x.safetensors"
        weights.write_bytes(b"not a safetensors file at all")
    if case == "out_is_a_file":
        model = GPT(GPTConfig(vocab_size=1000, context_length=8, n_layer=1, n_head=1, n_embd=8))
        weights = save_model(model, tmp_path / "w.safetensors")
        out.write_text("x")
    result = run_export(weights, out)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr


def test_load_openai_weights_points_our_own_directories_to_export_hf(tiny_run):
    script = ROOT / "scripts" / "load_openai_weights.py"
    args = [sys.executable, str(script), "--from-dir", str(tiny_run), "--export-hf", "x"]
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "scripts/export_hf.py" in result.stderr and "Traceback" not in result.stderr


def test_the_readme_plain_pytorch_snippet_loads_a_checkpoint(tiny_run):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### Export, or load with plain PyTorch") :]
    code = section[section.index("```python\n") + len("```python\n") :]
    code = code[: code.index("```")]
    checkpoint = tiny_run / (tiny_run / "latest").read_text(encoding="utf-8").strip() / "model.safetensors"
    code = code.replace('"runs/tiny/step_000100/model.safetensors"', repr(str(checkpoint)))
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)  # the snippet's own assert checks the missing key
    model = scope["model"]
    from gpt import load_model

    reference = load_model(checkpoint)
    assert model.lm_head.weight is model.transformer.wte.weight
    x = torch.tensor([[464, 2068, 7586]])
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(x), reference(x), rtol=0, atol=1e-5)  # load_model: decode layout
