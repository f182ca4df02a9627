"""Loss and gradient correctness of the training path, in float32 and bfloat16:
the fused output-layer cross-entropy against F.cross_entropy, the model's training forward against its plain
forward, and gradient accumulation against one big batch."""

import pytest
import torch
import torch.nn.functional as F

from gpt import GPT, GPTConfig
from gpt.loss import linear_cross_entropy

V, VP, C = 301, 320, 24  # a vocabulary padded to a multiple of 64, as GPTConfig.vocab_multiple does


def reference(h, w, t):
    return F.cross_entropy((h @ w.t())[..., :V].float().reshape(-1, V), t.reshape(-1), ignore_index=-100)


@pytest.mark.parametrize("chunk_rows", [1, 7, 64, 1000])
def test_fused_cross_entropy_matches_reference_float32(chunk_rows):
    h = torch.randn(3, 50, C, dtype=torch.float64).float().requires_grad_()
    w = (torch.randn(VP, C) * 0.5).requires_grad_()
    t = torch.randint(0, V, (3, 50))
    t[0, :9] = -100  # ignored positions (padding)
    ref = reference(h, w, t)
    g_ref = torch.autograd.grad(ref, (h, w))
    got = linear_cross_entropy(h, w, t, vocab_size=V, chunk_rows=chunk_rows)
    g_got = torch.autograd.grad(got, (h, w))
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
    for a, b in zip(g_got, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert g_got[1][V:].abs().max() == 0  # padding rows of the output matrix get no gradient


def test_fused_cross_entropy_matches_reference_under_bfloat16_autocast():
    h = torch.randn(4, 40, C, requires_grad=True)
    w = (torch.randn(VP, C) * 0.5).requires_grad_()
    t = torch.randint(0, V, (4, 40))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref = reference(h, w, t)
        got = linear_cross_entropy(h, w, t, vocab_size=V)
    g_ref = torch.autograd.grad(ref, (h, w))
    g_got = torch.autograd.grad(got, (h, w))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=2e-3, atol=2e-3)  # both use bf16 logits; summation order differs
    for a, b in zip(g_got, g_ref):
        assert a.dtype == b.dtype == torch.float32  # gradients come back in the parameters' dtype
        torch.testing.assert_close(a, b, rtol=0.05, atol=2e-3 * b.abs().max().item())
    # and bf16 is close to the float32 truth
    fp32 = reference(h, w, t)
    assert abs(got.item() - fp32.item()) < 0.02


def test_scaled_loss_scales_the_gradient():
    h = torch.randn(10, C, requires_grad=True)
    w = torch.randn(VP, C, requires_grad=True)
    t = torch.randint(0, V, (10,))
    (g1,) = torch.autograd.grad(linear_cross_entropy(h, w, t, V), h)
    (g3,) = torch.autograd.grad(3.0 * linear_cross_entropy(h, w, t, V), h)
    torch.testing.assert_close(g3, 3.0 * g1)


def tiny_model(**kw):
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=V, context_length=32, n_layer=2, n_head=2, n_embd=C, vocab_multiple=64, **kw))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_training_forward_equals_plain_forward(dtype):
    model = tiny_model()
    x, y = torch.randint(0, V, (2, 2, 32)).unbind(0)
    grads = []
    losses = []
    for return_logits in (True, False):
        model.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            out = model(x, y, return_logits=return_logits)
        out.loss.backward()
        assert (out.logits is None) == (not return_logits)
        losses.append(out.loss.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=0.05, atol=1e-3)
    torch.testing.assert_close(losses[1], losses[0], **tol)
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], **tol, msg=name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gradient_accumulation_equals_one_big_batch(dtype):
    """What the training loop does — backward(loss / accum) per micro-batch — equals one batch of them all."""
    model = tiny_model()
    x, y = torch.randint(0, V, (2, 8, 32)).unbind(0)
    amp = torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16)
    with amp:
        big = model(x, y, return_logits=False).loss
    big.backward()
    g_big = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    accum, total = 4, 0.0
    for xm, ym in zip(x.chunk(accum), y.chunk(accum)):
        with amp:
            loss = model(xm, ym, return_logits=False).loss
        (loss / accum).backward()
        total += loss.item() / accum
    tol = dict(rtol=1e-4, atol=1e-6) if dtype == torch.float32 else dict(rtol=0.05, atol=2e-3)
    assert total == pytest.approx(big.item(), rel=tol["rtol"])
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, g_big[n], **tol, msg=n)


def test_initial_loss_is_about_log_vocab():
    model = GPT(GPTConfig.from_preset("tiny", n_layer=2, vocab_multiple=64))
    x, y = torch.randint(0, 50257, (2, 2, 64)).unbind(0)
    with torch.no_grad():
        loss = model(x, y, return_logits=False).loss.item()
    assert loss == pytest.approx(torch.log(torch.tensor(50257.0)).item(), abs=0.3)


def test_works_under_no_grad_for_evaluation():
    h = torch.randn(5, C, requires_grad=True)
    w = torch.randn(VP, C, requires_grad=True)
    t = torch.randint(0, V, (5,))
    with torch.no_grad():
        loss = linear_cross_entropy(h, w, t, V)
    assert not loss.requires_grad
    torch.testing.assert_close(loss, reference(h, w, t).detach())


@pytest.mark.parametrize("onednn", ["0", "1"], ids=["torch matmul", "oneDNN matmul"])
def test_both_fp32_cpu_matmul_kernels_give_the_reference_loss_and_gradients(monkeypatch, onednn):
    # the loss's fp32 CPU matmuls run oneDNN's kernel where MKL is slow (not on Intel), else torch's a @ b: whichever
    # a machine picks, both must compute F.cross_entropy's values (GPT_ONEDNN_FP32 forces one)
    from gpt import onednn as onednn_module

    if onednn == "1" and not torch.backends.mkldnn.is_available():
        pytest.skip("this torch build has no oneDNN")
    monkeypatch.setenv(onednn_module.ONEDNN_ENV, onednn)
    onednn_module.fp32_pays.cache_clear()
    try:
        assert onednn_module.fp32_pays() == (onednn == "1")
        h = torch.randn(70, C, requires_grad=True)
        w = (torch.randn(VP, C) * 0.5).requires_grad_()
        t = torch.randint(0, V, (70,))
        t[:5] = -100
        ref = reference(h, w, t)
        g_ref = torch.autograd.grad(ref, (h, w))
        got = linear_cross_entropy(h, w, t, vocab_size=V)
        g_got = torch.autograd.grad(got, (h, w))
        torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-6)
        for a, b in zip(g_got, g_ref):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
        assert g_got[1].is_contiguous() and g_got[1][V:].abs().max() == 0
        with torch.no_grad():  # evaluation: the chunked path
            torch.testing.assert_close(linear_cross_entropy(h, w, t, vocab_size=V), ref.detach())
    finally:
        onednn_module.fp32_pays.cache_clear()
