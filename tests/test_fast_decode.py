"""gpt/fast_decode.py: the faster ways to decode give the eager loop's tokens exactly."""

import functools

import pytest
import torch

from gpt import GPT, GPTConfig, generate, generate_stream, matvec, onednn
from gpt.fast_decode import (
    ONEDNN_ENV,
    PACK_MIN_STEPS,
    CompiledDecoder,
    EagerDecodeStep,
    eager_step,
    is_plain_gpt,
    onednn_linear,
    prepare_for_decoding,
)
from gpt.generate import decode_one_token

V = 97
TINY = dict(vocab_size=V, context_length=32, n_layer=2, n_head=3, n_embd=48)
PROMPTS = [[5, 17, 3, 90, 42, 8, 61], [11, 2], [70, 70, 1, 33]]  # unequal lengths: left padding is exercised


def sharp_model(**overrides) -> GPT:
    """Larger than init weights, so the logits are far from uniform and their argmax is not a near tie."""
    m = GPT(GPTConfig(**{**TINY, **overrides})).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(4.0)
    return m


def _kernel_off(monkeypatch, off: bool = True):
    """As on a machine where gpt/matvec.c cannot be built (no C compiler): GPT_DECODE_MATVEC=0, until the test ends."""
    if off:
        monkeypatch.setenv(matvec.MATVEC_ENV, "0")
    matvec._library.cache_clear()
    yield
    monkeypatch.delenv(matvec.MATVEC_ENV, raising=False)
    matvec._library.cache_clear()


@pytest.fixture
def no_kernel(monkeypatch):
    yield from _kernel_off(monkeypatch)


@pytest.fixture(params=["kernel", "no kernel"])
def kernel(request, monkeypatch):
    """Each test twice: with gpt/matvec.c's kernel (where it builds here) and without it. Yields whether it is on."""
    if request.param == "kernel" and not matvec.available():
        pytest.skip("gpt/matvec.c cannot be built here")
    for _ in _kernel_off(monkeypatch, off=request.param == "no kernel"):
        yield request.param == "kernel"


def column_major(w: torch.Tensor) -> bool:
    """(out, in) tensor stored as (in, out): the layout oneDNN streams fastest."""
    return w.t().is_contiguous() and not w.is_contiguous()


def test_decoding_layout_changes_storage_not_values(kernel):
    model = sharp_model()
    m = GPT(GPTConfig(**TINY)).eval()
    m.load_state_dict(model.state_dict())
    idx = torch.randint(0, V, (2, 8))
    before = generate(m, idx, 20, temperature=0)
    m.transformer.h[1].attn.c_attn.weight.data = m.transformer.h[1].attn.c_attn.weight.data.t().contiguous().t()
    prepare_for_decoding(m)
    for w in (m.transformer.h[0].mlp.c_fc.weight, m.transformer.h[1].attn.c_attn.weight):
        # the kernel reads the plain layout (and gets it back); oneDNN the column-major one
        assert w.shape[1] == 48 and column_major(w) == (not kernel)
    assert m.lm_head.weight is m.transformer.wte.weight  # still tied
    assert torch.equal(m.state_dict()["lm_head.weight"], model.state_dict()["lm_head.weight"])
    assert torch.equal(generate(m, idx, 20, temperature=0), before)


def test_compiled_decode_step_matches_eager():
    # torch.compile of the fixed-shape decode step (on a CPU: inductor, one-row matmuls as fused reductions).
    m = sharp_model(n_layer=1)
    decoder = CompiledDecoder(compile=True)  # held across calls: its compiled step and caches are reused
    idx = torch.randint(0, V, (1, 6))
    eager = generate(m, idx, 40, temperature=0)  # passes the context: compiled decode + eager re-prefills
    assert torch.equal(generate(m, idx, 40, temperature=0, decoder=decoder), eager)
    # left-padded rows: position ids looked up inside the graph, pad slots masked
    assert generate(m, PROMPTS, 20, temperature=0, decoder=decoder) == generate(m, PROMPTS, 20, temperature=0)


# ---- eager decode steps on a CPU: written out (EagerDecodeStep), Linears through oneDNN ------------------------------
def _ran_onednn(fn) -> bool:
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return any("_linear_pointwise" in e.key for e in prof.key_averages())


needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN")
PACKS_BF16 = torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()  # packs bf16 here
needs_onednn_bf16 = pytest.mark.skipif(
    not PACKS_BF16,
    reason="oneDNN packs bf16 weights only on a CPU with AVX-512 (BW, VL, DQ) or AVX-NE-CONVERT",
)


@needs_onednn
def test_onednn_linear_equals_f_linear_and_applies_only_to_few_rows_without_autograd():
    F = torch.nn.functional
    g = torch.Generator().manual_seed(0)
    lin = torch.nn.Linear(96, 300)
    w, b = lin.weight.detach().clone(), lin.bias.detach().clone()
    for col_major in (False, True):
        if col_major:  # the decode layout: the same matrix stored column-major
            lin.weight.data = w.t().contiguous().t()
        for x in (torch.randn(1, 96, generator=g), torch.randn(8, 1, 96, generator=g)):
            for bias in (b, None):
                lin.bias = None if bias is None else torch.nn.Parameter(b.clone())
                with torch.inference_mode():
                    y = onednn_linear(lin)(x)
                torch.testing.assert_close(y, F.linear(x, w, bias), rtol=1e-5, atol=1e-4)
    x1, x9 = torch.randn(1, 96), torch.randn(9, 96)

    def ran(x, module, grad=False):
        def run():
            with torch.set_grad_enabled(grad):
                onednn_linear(module)(x)

        return _ran_onednn(run)

    assert ran(x1, lin)  # one row, fp32, no autograd: oneDNN
    assert not ran(x9, lin)  # more than MAX_ROWS rows: F.linear
    assert not ran(x1, lin, grad=True)  # autograd on: F.linear (oneDNN's op has no backward)
    assert not ran(x1.bfloat16(), torch.nn.Linear(96, 300).bfloat16())  # bf16 unpacked: F.linear
    for odd_bias in (torch.randn(600)[::2], torch.randn(1).expand(300)):  # oneDNN would read these as contiguous
        lin.bias = torch.nn.Parameter(odd_bias)
        with torch.inference_mode():
            assert torch.equal(onednn_linear(lin)(x1), F.linear(x1, lin.weight, lin.bias))  # F.linear's own values


@needs_onednn_bf16
def test_packed_bf16_linear_equals_f_linear_and_notices_a_changed_weight():
    F = torch.nn.functional
    lin = torch.nn.Linear(96, 300).bfloat16()
    x = torch.randn(1, 1, 96).bfloat16()
    linear = onednn_linear(lin, pack=True)
    with torch.inference_mode():
        assert _ran_onednn(lambda: linear(x))
        torch.testing.assert_close(linear(x), F.linear(x, lin.weight, lin.bias), rtol=2e-2, atol=2e-2)  # bf16
    with torch.no_grad():
        lin.weight.mul_(2)  # changed in place: the packed copy is stale
    with torch.inference_mode():
        assert not _ran_onednn(lambda: linear(x))  # F.linear, on the weight as it is now
        assert torch.equal(linear(x), F.linear(x, lin.weight, lin.bias))
    lin.weight = torch.nn.Parameter(torch.randn(300, 96).bfloat16())  # replaced: the same
    with torch.inference_mode():
        assert torch.equal(linear(x), F.linear(x, lin.weight, lin.bias))


def _step_logits(step, m, prompts, n_steps=6):
    """The logits of n_steps eager decode steps after a prefill, with step (decode_one_token's arguments less the
    model), for left-padded prompts: what generate() does, spelled out so each step's logits can be compared."""
    from gpt.generate import prefill
    from gpt.model import KVCache
    from gpt.padding import prefill_mask, prompt_buffer, window_inputs

    seq, T, pads = prompt_buffer(prompts, n_steps, None, torch.device("cpu"))
    cache = KVCache(m.config, seq.size(0), T + n_steps)
    positions, valid = window_inputs(pads, 0, cache.max_len, torch.device("cpu"))
    out = []
    with torch.inference_mode():
        logits = prefill(m, seq[:, :T], cache, positions[:, :T] if positions is not None else None,
                         prefill_mask(valid, T))  # fmt: skip
        for slot in range(T, T + n_steps):
            tok = logits.argmax(-1, keepdim=True)  # (B, 1)
            pos_ids = positions[:, slot : slot + 1] if positions is not None else None
            logits = step(tok, cache, torch.tensor([slot]), pos_ids, valid[..., : slot + 1])
            out.append(logits)
    return torch.stack(out)


@pytest.mark.parametrize(
    "overrides", [{}, {"qkv_bias": False}, {"vocab_multiple": 8}], ids=["gpt2", "no qkv bias", "padded vocab"]
)
def test_the_written_out_step_computes_what_the_model_computes(overrides, monkeypatch):

    m = sharp_model(**overrides)
    prepare_for_decoding(m)
    assert is_plain_gpt(m)
    model_step = functools.partial(decode_one_token, m)
    for prompts in (torch.randint(0, V, (1, 7)), PROMPTS):  # one row; unequal rows, left-padded (masked, shifted)
        with monkeypatch.context() as mp:  # the model's forward on torch's own fp32 matmul (not oneDNN, gpt/onednn.py)
            mp.setattr(onednn, "fp32_pays", lambda: False)
            reference = _step_logits(model_step, m, prompts)
        assert reference.size(-1) == V  # the padded vocabulary's extra rows are dropped
        # the same kernels (F.linear): the same values bit for bit
        assert torch.equal(_step_logits(EagerDecodeStep(m, onednn=False), m, prompts), reference)
        # the model's forward as it runs by default (on AMD: its fp32 Linears through oneDNN): to fp32 rounding
        torch.testing.assert_close(_step_logits(model_step, m, prompts), reference, rtol=1e-5, atol=1e-4)
        if torch.backends.mkldnn.is_available():  # oneDNN's kernel: the same to fp32 rounding
            torch.testing.assert_close(_step_logits(EagerDecodeStep(m), m, prompts), reference, rtol=1e-5, atol=1e-4)
        if matvec.available():  # gpt/matvec.c's kernel: the same to fp32 rounding
            step = EagerDecodeStep(m, onednn=False, kernel=True)
            torch.testing.assert_close(_step_logits(step, m, prompts), reference, rtol=1e-5, atol=1e-4)


def test_the_written_out_step_reads_the_weights_at_each_call(monkeypatch):

    monkeypatch.setattr(onednn, "fp32_pays", lambda: False)  # the model's forward on F.linear too: bit for bit

    m = sharp_model()
    step = EagerDecodeStep(m, onednn=False)  # built before the weights change, as at a paused generate_stream
    with torch.no_grad():
        m.transformer.h[1].mlp.c_fc.weight.mul_(-1)
        m.transformer.ln_f.bias.add_(0.5)
    m.transformer.h[0].attn.c_proj.weight = torch.nn.Parameter(torch.randn(48, 48))
    assert torch.equal(_step_logits(step, m, PROMPTS), _step_logits(functools.partial(decode_one_token, m), m, PROMPTS))


def test_a_model_the_step_does_not_know_is_decoded_by_its_own_forward():
    idx = torch.randint(0, V, (2, 8))
    m = sharp_model()
    assert isinstance(eager_step(m), EagerDecodeStep)
    tokens = generate(m, idx, 10, temperature=0)
    calls = []
    handle = m.transformer.h[1].attn.c_attn.register_forward_hook(lambda mod, args, out: calls.append(out.shape))
    assert not isinstance(eager_step(m), EagerDecodeStep)  # a hook expects its module to be called
    assert torch.equal(generate(m, idx, 10, temperature=0), tokens)
    assert len(calls) == 10 and calls[-1] == (2, 1, 3 * 48)  # the prefill, then every decode step
    handle.remove()
    assert isinstance(eager_step(m), EagerDecodeStep)

    class Doubled(torch.nn.Linear):  # a subclass with its own forward: the step would skip it
        def forward(self, x):
            return 2 * super().forward(x)

    odd = sharp_model()
    odd.transformer.h[0].mlp.c_proj.__class__ = Doubled
    odd.transformer.h[1].attn.attn_impl = "manual"
    assert not is_plain_gpt(odd)
    odd.transformer.h[0].mlp.c_proj.__class__ = torch.nn.Linear
    assert not is_plain_gpt(odd)  # manual attention: the same maths, other roundings
    odd.transformer.h[1].attn.attn_impl = "sdpa"
    assert is_plain_gpt(odd) and not is_plain_gpt(odd.train())  # training mode: dropout


def _model_forward_path(monkeypatch):
    """generate() with every eager decode step through the model's own forward (what it did before EagerDecodeStep)."""
    from gpt import fast_decode

    monkeypatch.setattr(fast_decode, "eager_step", lambda model, *_: functools.partial(decode_one_token, model))


def sharp_model_like(m):
    """A fresh model with m's weights and dtype (no hooks, no swapped modules)."""
    c = GPT(m.config).eval().to(next(m.parameters()).dtype)
    c.load_state_dict(m.state_dict())
    return c


def _paused_then_changed(m, change, n=12):
    """Tokens of a generate_stream over PROMPTS, with change(m) applied after its third token (while paused)."""
    stream = generate_stream(m, PROMPTS, n, temperature=0)
    tokens = [next(stream) for _ in range(3)]
    change(m)
    return torch.stack(tokens + list(stream)).tolist()


def _swap_mlp_fc(m):
    m.transformer.h[1].mlp.c_fc = torch.nn.Linear(48, 4 * 48)


def _swap_ln_2(m):
    m.transformer.h[1].ln_2 = torch.nn.LayerNorm(48, eps=0.5)


def _swap_block(m):
    from gpt.model import Block

    m.transformer.h[0] = Block(m.config).eval()


@pytest.mark.parametrize("change", [_swap_mlp_fc, _swap_ln_2, _swap_block], ids=["Linear", "LayerNorm", "Block"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_module_changed_while_a_stream_is_paused_is_used_from_the_next_step(monkeypatch, change, dtype):
    reference = sharp_model().to(dtype)

    def run():
        m = sharp_model_like(reference)
        torch.manual_seed(1)  # the swapped-in module's initial weights
        return _paused_then_changed(m, lambda m: (change(m), m.to(dtype)))

    fast = run()
    _model_forward_path(monkeypatch)
    assert fast == run()


def test_a_hook_registered_while_a_stream_is_paused_is_called_at_every_later_step():
    calls = []
    m = sharp_model()
    tokens = _paused_then_changed(m, lambda m: m.transformer.h[0].register_forward_hook(lambda *a: calls.append(1)))
    assert len(calls) == 12 - 3  # the decode steps that computed tokens 4 to 12
    assert tokens == torch.stack(list(generate_stream(sharp_model_like(m), PROMPTS, 12, temperature=0))).tolist()


def test_a_class_level_forward_patch_or_autocast_runs_the_models_own_forward(monkeypatch):
    from gpt.model import MLP

    m = sharp_model()
    idx = torch.randint(0, V, (1, 6))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        fast = generate(m, idx, 16, temperature=0)
    original = MLP.forward
    monkeypatch.setattr(MLP, "forward", lambda self, x: 2 * original(self, x))
    assert not is_plain_gpt(m)
    doubled = generate(m, idx, 16, temperature=0)
    monkeypatch.setattr(MLP, "forward", original)
    _model_forward_path(monkeypatch)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(generate(m, idx, 16, temperature=0), fast)  # oneDNN's op would ignore autocast
    monkeypatch.setattr(MLP, "forward", lambda self, x: 2 * original(self, x))
    assert torch.equal(generate(m, idx, 16, temperature=0), doubled)


@needs_onednn
def test_eager_decoding_through_onednn_gives_the_same_tokens(monkeypatch, no_kernel):
    m = sharp_model()
    prepare_for_decoding(m)  # the layout load_model gives an fp32 model on a CPU
    idx = torch.randint(0, V, (2, 8))
    assert isinstance(eager_step(m), EagerDecodeStep)
    assert _ran_onednn(lambda: generate(m, idx, 3, temperature=0))
    assert _ran_onednn(lambda: generate(m.train(), idx, 3, temperature=0))  # generate() samples in eval mode
    assert m.training  # and gives the caller's mode back
    m.eval()
    fast, padded = generate(m, idx, 30, temperature=0), generate(m, PROMPTS, 20, temperature=0)
    monkeypatch.setenv(ONEDNN_ENV, "0")  # F.linear (MKL), as before
    monkeypatch.setattr(onednn, "fp32_pays", lambda: False)  # the prefill's forward too (gpt/onednn.py)
    assert not _ran_onednn(lambda: generate(m, idx, 3, temperature=0))
    assert torch.equal(generate(m, idx, 30, temperature=0), fast)
    assert generate(m, PROMPTS, 20, temperature=0) == padded
    assert torch.equal(generate(m, idx, 30, temperature=0, use_cache=False), fast)  # the uncached reference


@needs_onednn_bf16
def test_bf16_eager_decoding_packs_only_for_enough_steps_and_gives_the_same_tokens(monkeypatch):
    m = sharp_model().to(torch.bfloat16)
    idx = torch.randint(0, V, (2, 8))
    assert _ran_onednn(lambda: generate(m, idx, PACK_MIN_STEPS + 1, temperature=0))
    assert not _ran_onednn(lambda: generate(m, idx, 4, temperature=0))  # packing would not pay
    packed = generate(m, idx, 40, temperature=0)
    monkeypatch.setenv(ONEDNN_ENV, "0")
    assert not _ran_onednn(lambda: generate(m, idx, 40, temperature=0))
    assert torch.equal(generate(m, idx, 40, temperature=0), packed)
