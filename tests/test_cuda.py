"""The GPU paths, run only where torch sees a CUDA GPU (marker `cuda`; tests/conftest.py skips them elsewhere).
bench/gpu_check.sh runs them with `python -m pytest -m cuda` as part of the first GPU check."""

import pytest
import torch

from gpt import GPT, GPTConfig, generate
from gpt.fast_decode import CompiledDecoder
from gpt.train import configure_optimizer
from gpt.train.checkpoint import save_checkpoint
from gpt.weights import load_model

pytestmark = pytest.mark.cuda

V = 97
TINY = dict(vocab_size=V, context_length=64, n_layer=2, n_head=3, n_embd=48)
PROMPTS = [[5, 17, 3, 90, 42, 8, 61], [11, 2], [70, 70, 1, 33]]


def sharp_model(dtype=torch.float32) -> GPT:
    """On the GPU, with weights large enough that greedy argmaxes are not near ties."""
    torch.manual_seed(0)
    m = GPT(GPTConfig(**TINY)).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(4.0)
    return m.to("cuda", dtype)


def test_cached_equals_uncached_decoding_on_cuda():
    m = sharp_model()
    idx = torch.randint(0, V, (2, 6), device="cuda")
    cached = generate(m, idx, 80, temperature=0)  # past the context: the window slides and re-prefills
    assert torch.equal(cached, generate(m, idx, 80, temperature=0, use_cache=False))
    assert generate(m, PROMPTS, 20, temperature=0) == generate(m, PROMPTS, 20, temperature=0, use_cache=False)


def test_cuda_graph_decode_equals_eager():
    m = sharp_model()
    decoder = CompiledDecoder()
    assert decoder.compiles("cuda")
    idx = torch.randint(0, V, (1, 6), device="cuda")
    eager = generate(m, idx, 40, temperature=0)
    assert torch.equal(generate(m, idx, 40, temperature=0, decoder=decoder), eager)
    assert torch.equal(generate(m, idx, 40, temperature=0, decoder=decoder), eager)  # the graph replayed
    assert generate(m, PROMPTS, 20, temperature=0, decoder=decoder) == generate(m, PROMPTS, 20, temperature=0)


def training_step(model, x, compile_model=False):
    opt = configure_optimizer(model, lr=1e-3, weight_decay=0.1, device_type="cuda")
    fwd = torch.compile(model) if compile_model else model
    model.train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = fwd(x, x, return_logits=False).loss
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    return loss.detach(), grad_norm


def test_bf16_training_step_is_finite():
    m = sharp_model()
    x = torch.randint(0, V, (4, 32), device="cuda")
    loss, grad_norm = training_step(m, x)
    assert torch.isfinite(loss) and torch.isfinite(grad_norm) and grad_norm > 0
    assert all(torch.isfinite(p).all() for p in m.parameters())


def test_compiled_training_step_equals_eager():
    x = torch.randint(0, V, (4, 32), device="cuda")
    eager, compiled = sharp_model(), sharp_model()
    loss_e, norm_e = training_step(eager, x)
    loss_c, norm_c = training_step(compiled, x, compile_model=True)
    torch.testing.assert_close(loss_c, loss_e, rtol=2e-2, atol=2e-2)  # bf16 autocast: kernels may round differently
    torch.testing.assert_close(norm_c, norm_e, rtol=5e-2, atol=5e-2)
    for (name, a), b in zip(eager.state_dict().items(), compiled.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=1e-2, atol=1e-3, msg=name)


def test_checkpoint_saved_on_cuda_loads_on_cpu(tmp_path):
    m = sharp_model()
    ckpt = save_checkpoint(tmp_path / "run", 1, m, {"note": "cuda"})
    cpu = load_model(ckpt, device="cpu")
    assert next(cpu.parameters()).device.type == "cpu"
    for name, t in m.state_dict().items():
        torch.testing.assert_close(cpu.state_dict()[name], t.cpu(), rtol=0, atol=0, msg=name)
    idx = torch.randint(0, V, (1, 6))
    assert torch.equal(generate(cpu, idx, 20, temperature=0), generate(m, idx.cuda(), 20, temperature=0).cpu())
