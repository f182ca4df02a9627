"""gpt/fast_decode.py on gpt/matvec.c's kernels: every Linear of a decode step through the kernel (fp32, bf16 at
batch 1), all blocks one kernel call at batch 1 (matvec.blocks), and the tokens that gives."""

import copy
import functools

import pytest
import torch
from test_fast_decode import PACKS_BF16, PROMPTS, V, sharp_model

from gpt import generate, matvec, onednn
from gpt.fast_decode import ONEDNN_ENV, PACK_MIN_STEPS, EagerDecodeStep
from gpt.generate import decode_one_token


def _forced_logits(step, m, seq, T):
    """The logits (n, V) of the decode steps along the tokens of seq (1, T + n), after a prefill of its first T: each
    step is fed seq's token, whatever the one before predicted (teacher forcing), so two steps compare token by
    token. step: decode_one_token's arguments less the model."""
    from gpt.generate import prefill
    from gpt.model import KVCache

    cache = KVCache(m.config, 1, seq.size(1), dtype=next(m.parameters()).dtype)
    with torch.inference_mode():
        prefill(m, seq[:, :T], cache, None, None)
        out = [step(seq[:, s : s + 1], cache, torch.tensor([s]), None, torch.ones(1, 1, 1, s + 1, dtype=torch.bool))
               for s in range(T, seq.size(1))]  # fmt: skip
    return torch.cat(out).double()


def _kernel_calls(monkeypatch) -> list:
    """Records the weight dtype of each Linear gpt/matvec.c's kernel runs (the real one runs): one per
    matvec.linear call, four per block of a matvec.blocks call (whole blocks at batch 1: their four Linears)."""
    calls, real, real_blocks = [], matvec.linear, matvec.blocks

    def blocks(x, layers, *a):
        calls.extend(p[2].dtype for p in layers for _ in range(4))
        return real_blocks(x, layers, *a)

    monkeypatch.setattr(matvec, "linear", lambda x, w, b=None: calls.append(w.dtype) or real(x, w, b))
    monkeypatch.setattr(matvec, "blocks", blocks)
    return calls


@pytest.mark.skipif(not matvec.available(), reason="gpt/matvec.c cannot be built here")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_the_kernel_decodes_to_the_same_tokens_as_f_linear(monkeypatch, dtype):
    m = sharp_model(context_length=64).to(dtype)  # room for every token: no re-prefill of a full window
    idx = torch.randint(0, V, (2, 8))
    calls = _kernel_calls(monkeypatch)
    fast, padded = generate(m, idx, PACK_MIN_STEPS + 2, temperature=0), generate(m, PROMPTS, 20, temperature=0)
    n_linear = 2 * 4 + 1  # Linears a decode step runs: 4 a block, and the head
    if dtype == torch.float32 or not PACKS_BF16:  # bf16: where oneDNN cannot pack it (no AVX-512 BF16 / NE-CONVERT)
        assert calls.count(dtype) == n_linear * (PACK_MIN_STEPS + 1 + 19)  # every decode step, both calls
    else:  # the PACK_MIN_STEPS + 1 steps run on weights packed for oneDNN; the 19 of the short call, unpacked, here
        assert 19 < PACK_MIN_STEPS and calls.count(dtype) == len(calls) == n_linear * 19
    calls.clear()
    generate(m, torch.randint(0, V, (9, 8)), 3, temperature=0)  # more rows than MAX_ROWS: GEMMs (MKL)
    assert not calls
    monkeypatch.setenv(matvec.MATVEC_ENV, "0")
    monkeypatch.setenv(ONEDNN_ENV, "0")  # F.linear, the model's own kernels
    matvec._library.cache_clear()
    try:
        assert torch.equal(generate(m, idx, PACK_MIN_STEPS + 2, temperature=0), fast)
        assert generate(m, PROMPTS, 20, temperature=0) == padded
        assert not calls
    finally:
        monkeypatch.delenv(matvec.MATVEC_ENV)
        matvec._library.cache_clear()


@pytest.mark.skipif(not matvec.available(), reason="gpt/matvec.c cannot be built here")
def test_bf16_at_batch_1_decodes_through_the_kernel_however_long_and_packs_from_batch_2(monkeypatch):
    # batch 1: the kernel streams bf16 weights at the memory's speed, packed oneDNN did not (PACK_MIN_BATCH)
    m = sharp_model(context_length=64).to(torch.bfloat16)
    one, two = torch.randint(0, V, (1, 8)), torch.randint(0, V, (2, 8))
    calls = _kernel_calls(monkeypatch)
    n_linear = 2 * 4 + 1
    fast = generate(m, one, PACK_MIN_STEPS + 2, temperature=0)
    assert calls.count(torch.bfloat16) == len(calls) == n_linear * (PACK_MIN_STEPS + 1)  # every decode step
    calls.clear()
    generate(m, two, PACK_MIN_STEPS + 2, temperature=0)
    assert len(calls) == (0 if PACKS_BF16 else n_linear * (PACK_MIN_STEPS + 1))  # packed for oneDNN where it can
    # Batch 1 runs the blocks in one call of the kernel (matvec.blocks), whose attention and GELU round as the model's
    # bf16 forward does but are not torch's kernels: a bf16 near tie (two logits less than a bf16 step apart) may
    # go either way. So: along the tokens it chose, each step's logits are as close to the exact (fp64) model's as
    # the model's own bf16 forward's, and its choice is the exact model's wherever that one is not a near tie.
    exact_model = copy.deepcopy(m).double()
    exact = _forced_logits(functools.partial(decode_one_token, exact_model), exact_model, fast, 8)
    own = _forced_logits(functools.partial(decode_one_token, m), m, fast, 8)
    ours = _forced_logits(EagerDecodeStep(m, onednn=False, kernel=True), m, fast, 8)
    err = (ours - exact).abs().amax(-1)  # per step
    assert (err <= 2 * (own - exact).abs().amax(-1) + 0.02).all(), (err, (own - exact).abs().amax(-1))
    top2 = exact.topk(2, -1).values
    clear = top2[:, 0] - top2[:, 1] > 2 * err  # no near tie at this step
    assert clear.sum() > len(clear) // 2  # (most steps: the check below checks something)
    assert torch.equal(ours.argmax(-1)[clear], exact.argmax(-1)[clear])
    assert torch.equal(fast[0, 9:], ours.argmax(-1)[:-1])  # generate() chose what the step computes


@pytest.mark.skipif(not matvec.available(), reason="gpt/matvec.c cannot be built here")
def test_at_batch_1_each_block_is_one_kernel_call_unless_the_kernel_cannot_compute_it(monkeypatch):
    m = sharp_model(context_length=64)
    one = torch.randint(0, V, (1, 8))
    blocks = []
    real = matvec.blocks
    monkeypatch.setattr(matvec, "blocks", lambda x, layers, *a: blocks.append(len(layers)) or real(x, layers, *a))
    fast = generate(m, one, 12, temperature=0)
    assert blocks == [2] * 11  # 11 decode steps, each one call for its 2 blocks
    exact = m.double()
    with monkeypatch.context() as mp:
        mp.setattr(onednn, "fp32_pays", lambda: False)
        assert torch.equal(generate(exact, one, 12, temperature=0), fast)  # the exact model's tokens
    m.float()
    blocks.clear()
    m.transformer.h[1].mlp.gelu.approximate = "none"  # the erf form: matvec.blocks computes only the tanh one
    calls = _kernel_calls(monkeypatch)
    erf = generate(m, one, 12, temperature=0)
    assert not blocks and calls.count(torch.float32) == 9 * 11  # every Linear on its own instead
    monkeypatch.setenv(matvec.MATVEC_ENV, "0")
    matvec._library.cache_clear()
    try:
        assert torch.equal(generate(m, one, 12, temperature=0), erf)
    finally:
        monkeypatch.delenv(matvec.MATVEC_ENV)
        matvec._library.cache_clear()


@pytest.mark.skipif(not matvec.available(), reason="gpt/matvec.c cannot be built here")
@pytest.mark.parametrize("kind", ["buffer", "attribute"])
def test_a_bias_that_is_not_a_parameter_is_still_added(kind, monkeypatch):
    # found by trying to break it: the block read biases from _parameters only, and a bias made a buffer was dropped
    m = sharp_model(context_length=64)
    for block in m.transformer.h:
        fc = block.mlp.c_fc
        b = fc.bias.detach() + 0.5
        del fc.bias
        fc.register_buffer("bias", b) if kind == "buffer" else setattr(fc, "bias", b)
    idx = torch.randint(0, V, (1, 5))
    blocks, real = [], matvec.blocks
    monkeypatch.setattr(matvec, "blocks", lambda *a: blocks.append(1) or real(*a))
    fast = generate(m, idx, 20, temperature=0)
    assert blocks  # the kernel ran the blocks
    assert torch.equal(fast, generate(m, idx, 20, temperature=0, use_cache=False))  # the uncached reference
