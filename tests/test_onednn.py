"""gpt/onednn.py: fp32 CPU Linears through oneDNN's kernel, forward and backward, equal to F.linear's to fp32
rounding; where it applies and where it stands aside."""

import pytest
import torch
import torch.nn.functional as F

from gpt import GPT, GPTConfig
from gpt import onednn as onednn_module
from gpt.onednn import fp32_linears

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN")


@pytest.fixture
def forced(monkeypatch):
    """fp32_pays() forced on (GPT_ONEDNN_FP32=1), whatever this CPU's vendor; the cached answer reset around it."""
    monkeypatch.setenv(onednn_module.ONEDNN_ENV, "1")
    onednn_module.fp32_pays.cache_clear()
    yield
    onednn_module.fp32_pays.cache_clear()


@pytest.fixture
def calls(monkeypatch):
    """How many times the mode sent a call to the oneDNN Function."""
    n = [0]
    apply = onednn_module._Linear.apply

    def counted(*args):
        n[0] += 1
        return apply(*args)

    monkeypatch.setattr(onednn_module._Linear, "apply", counted)
    return n


def test_a_linear_inside_the_mode_equals_f_linear_forward_and_backward(forced, calls):
    torch.manual_seed(0)
    for shape, bias in (((2, 5, 24), True), ((7, 24), False)):  # (B, T, C) as in the model, and a plain matrix
        x = torch.randn(*shape, requires_grad=True)
        w = torch.randn(40, 24, requires_grad=True)
        b = torch.randn(40, requires_grad=True) if bias else None
        dy = torch.randn(*shape[:-1], 40)
        ref = F.linear(x, w, b)
        g_ref = torch.autograd.grad(ref, [t for t in (x, w, b) if t is not None], dy)
        before = calls[0]
        with fp32_linears("cpu"):
            got = F.linear(x, w, b)
        assert calls[0] == before + 1  # it ran the oneDNN Function
        g_got = torch.autograd.grad(got, [t for t in (x, w, b) if t is not None], dy)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
        for a, r in zip(g_got, g_ref):
            assert a.shape == r.shape
            torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-4)


def _tiny_gpt():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=300, context_length=32, n_layer=2, n_head=2, n_embd=32, vocab_multiple=64))


def _pays(monkeypatch, on: bool) -> None:
    monkeypatch.setenv(onednn_module.ONEDNN_ENV, "1" if on else "0")
    onednn_module.fp32_pays.cache_clear()


def test_a_training_step_through_onednn_matches_one_through_torchs_matmul(monkeypatch, forced, calls):
    def step(on):
        _pays(monkeypatch, on)
        model = _tiny_gpt()
        x, y = torch.randint(0, 300, (2, 2, 16)).unbind(0)
        loss = model(x, y, return_logits=False).loss  # GPT.forward enters the mode by itself (fp32_forward)
        loss.backward()
        return loss.detach(), {n: p.grad for n, p in model.named_parameters()}

    loss_ref, g_ref = step(False)
    assert calls[0] == 0
    loss, g = step(True)
    assert calls[0] == 2 * 4  # the 4 Linears of each of the 2 blocks; the head is the loss's own (gpt/loss.py)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-5, atol=1e-6)
    for name in g_ref:
        torch.testing.assert_close(g[name], g_ref[name], rtol=1e-4, atol=1e-6, msg=name)


def test_inference_forwards_take_onednn_too_logits_head_included(monkeypatch, forced, calls):
    x = torch.randint(0, 300, (3, 20))
    _pays(monkeypatch, False)
    with torch.no_grad():
        ref = _tiny_gpt().eval()(x)
    _pays(monkeypatch, True)
    with torch.no_grad():
        got = _tiny_gpt().eval()(x)
    assert calls[0] == 2 * 4 + 1  # the blocks' Linears and lm_head
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_forward_stands_aside_under_autocast_with_bf16_weights_and_inside_an_outer_mode(forced, calls):
    model, x = _tiny_gpt().eval(), torch.randint(0, 300, (1, 8))
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        model(x)
    with torch.no_grad():
        model.to(torch.bfloat16)(x)
    assert calls[0] == 0
    depths = []
    model.float().transformer.h[0].register_forward_hook(lambda *_: depths.append(onednn_module._depth()))
    with torch.no_grad():
        model(x)
        with fp32_linears("cpu"):  # a caller's own mode around the forward: the forward adds none of its own
            model(x)
        assert onednn_module._depth() == 0
    assert depths == [1, 1]
    assert calls[0] == 2 * (2 * 4 + 1)


def test_the_mode_stands_aside_for_bf16_autocast_other_dtypes_and_when_it_does_not_pay(monkeypatch, forced, calls):
    lin = torch.nn.Linear(16, 8)
    x = torch.randn(3, 16)
    with fp32_linears("cpu"), torch.autocast("cpu", dtype=torch.bfloat16):
        assert lin(x).dtype == torch.bfloat16  # autocast's own bf16 matmul, not ours
    with fp32_linears("cpu"):
        lin.double()(x.double())  # float64: not ours
    assert calls[0] == 0
    assert not fp32_linears("cuda").active  # a GPU: a no-op
    monkeypatch.setenv(onednn_module.ONEDNN_ENV, "0")
    onednn_module.fp32_pays.cache_clear()
    mode = fp32_linears("cpu")
    assert not mode.active
    with mode:
        lin.float()(x)
    assert calls[0] == 0


def test_the_choice_follows_the_vendor_unless_told(monkeypatch):
    monkeypatch.delenv(onednn_module.ONEDNN_ENV, raising=False)
    for vendor, pays in (("AuthenticAMD", True), ("GenuineIntel", False), ("", False)):
        monkeypatch.setattr(onednn_module, "_cpu_vendor", lambda v=vendor: v)
        onednn_module.fp32_pays.cache_clear()
        assert onednn_module.fp32_pays() is pays, vendor
    onednn_module.fp32_pays.cache_clear()


def test_one_mode_object_serves_many_steps(forced, calls):
    mode, lin = fp32_linears("cpu"), torch.nn.Linear(8, 4)
    for _ in range(3):  # scripts/pretrain.py enters the same object at every step
        with mode:
            lin(torch.randn(2, 8))
    assert calls[0] == 3
    lin(torch.randn(2, 8))  # outside: F.linear as usual
    assert calls[0] == 3


def test_cpuinfo_reads_the_first_value_of_a_field(tmp_path):
    from gpt.utils import cpuinfo

    f = tmp_path / "cpuinfo"  # the layout Linux writes: a tab-padded name, ": ", the value; one block per CPU
    f.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9B45\nflags\t\t: fpu avx2 avx512_bf16\n\n"
        "processor\t: 1\nvendor_id\t: GenuineIntel\n",
        encoding="utf-8",
    )
    assert cpuinfo("vendor_id", f) == "AuthenticAMD"
    assert cpuinfo("model name", f) == "AMD EPYC 9B45"
    assert cpuinfo("flags", f).split() == ["fpu", "avx2", "avx512_bf16"]
    assert cpuinfo("microcode", f) == ""  # no such line
    assert cpuinfo("flags", tmp_path / "absent") is None  # no such file (macOS, Windows)
