"""gpt/generate.py (+ gpt/padding.py): the KV-cache loop against the uncached reference, prompt by prompt."""

import copy
import math

import pytest
import torch

from gpt import GPT, GPTConfig, KVCache, SamplingParams, decode_one_token, generate, generate_stream, prefill
from gpt.model import CausalSelfAttention
from gpt.padding import left_pad

V, CTX = 97, 32
TINY = dict(vocab_size=V, context_length=CTX, n_layer=2, n_head=3, n_embd=48)
PROMPTS = [[5, 17, 3, 90, 42, 8, 61], [11, 2], [70, 70, 1, 33]]  # unequal lengths: left padding is exercised


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = GPT(GPTConfig(**TINY)).eval()
    # Larger than init weights, so the logits are far from uniform and their argmax is not a near tie.
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(4.0)
    return m


def sampled(seed):
    return dict(temperature=1.0, top_k=50, top_p=0.95, generator=torch.Generator().manual_seed(seed))


# ---- the cache against the full forward ----------------------------------------------------------------------------
def test_prefill_and_decode_logits_match_full_forward(model):
    idx = torch.randint(0, V, (2, 24))
    cache = KVCache(model.config, batch_size=2, max_len=24)
    with torch.no_grad():
        full = model(idx)  # (2, 24, V)
        got = [prefill(model, idx[:, :10], cache)]
        for t in range(10, 24):
            mask = torch.ones(1, 1, 1, t + 1, dtype=torch.bool)
            got.append(decode_one_token(model, idx[:, t : t + 1], cache, torch.tensor([t]), None, mask))
    torch.testing.assert_close(torch.stack(got, 1), full[:, 9:], atol=1e-4, rtol=0)


def test_left_padded_prefill_and_decode_match_each_row_alone(model):
    # Row by row, the padded batch must compute what the row computes alone (positions from its first real token,
    # no attention to pad slots): prefill the padded prompts, decode 3 more tokens, compare every logit.
    cont = torch.randint(0, V, (3, 3))
    got = generate(model, PROMPTS, 0)  # list in, list out: nothing generated, prompts returned whole
    assert got == PROMPTS
    idx, lengths = left_pad(PROMPTS, pad_id=7)
    T = idx.size(1)
    pads = (T - lengths)[:, None]
    slots = torch.arange(T + 3)
    valid = (slots >= pads)[:, None, None, :]  # (3, 1, 1, T + 3)
    positions = (slots - pads).clamp(min=0)
    prefill_mask = (torch.ones(T, T, dtype=torch.bool).tril() & valid[..., :T]) | torch.eye(T, dtype=torch.bool)
    cache = KVCache(model.config, batch_size=3, max_len=T + 3)
    with torch.no_grad():
        logits = [prefill(model, idx, cache, positions[:, :T], prefill_mask)]
        for j in range(3):
            s = T + j
            logits.append(
                decode_one_token(
                    model, cont[:, j : j + 1], cache, torch.tensor([s]), positions[:, s : s + 1], valid[..., : s + 1]
                )
            )
        for b, prompt in enumerate(PROMPTS):
            alone = model(torch.cat([torch.tensor([prompt]), cont[b : b + 1]], 1))[0, len(prompt) - 1 :]
            torch.testing.assert_close(torch.stack([lg[b] for lg in logits]), alone, atol=1e-4, rtol=0)


# ---- cached generation equals uncached, token for token ------------------------------------------------------------
@pytest.mark.parametrize("slide", [None, 1, 5])  # default ctx // 4, nanoGPT's exact window, an odd size
@pytest.mark.parametrize("how", ["greedy", "sampled"])
def test_cached_equals_uncached_batch_1_past_the_context(model, how, slide):
    idx = torch.randint(0, V, (1, 9))
    n = 3 * CTX  # slides the window several times
    kw = lambda: dict(temperature=0) if how == "greedy" else sampled(seed=3)  # noqa: E731
    cached = generate(model, idx, n, slide=slide, **kw())
    uncached = generate(model, idx, n, slide=slide, use_cache=False, **kw())
    assert cached.shape == (1, 9 + n)
    assert torch.equal(cached, uncached)
    assert torch.equal(cached[:, :9], idx)


def nanogpt_generate(model, idx, n, params, generator):
    """nanoGPT's loop, the independent reference: crop to the last context_length tokens, one full forward per token."""
    for _ in range(n):
        idx_cond = idx if idx.size(1) <= CTX else idx[:, -CTX:]
        with torch.no_grad():
            logits = model(idx_cond)[:, -1, :]
        idx = torch.cat([idx, params.sample(logits, generator)[:, None]], dim=1)
    return idx


@pytest.mark.parametrize("prompt_len", [9, CTX, CTX + 5])  # shorter than, as long as, longer than the context
@pytest.mark.parametrize("use_cache", [True, False])
@pytest.mark.parametrize("how", ["greedy", "sampled"])
def test_slide_1_equals_nanogpts_crop_to_the_last_context_tokens(model, how, use_cache, prompt_len):
    idx = torch.randint(0, V, (1, prompt_len), generator=torch.Generator().manual_seed(prompt_len))
    n = 2 * CTX + 3
    params = SamplingParams(temperature=0) if how == "greedy" else SamplingParams(temperature=1.0, top_k=50, top_p=0.95)
    ours = generate(model, idx, n, params.temperature, params.top_k, params.top_p, slide=1, use_cache=use_cache,
                    generator=torch.Generator().manual_seed(7))  # fmt: skip
    reference = nanogpt_generate(model, idx, n, params, torch.Generator().manual_seed(7))
    assert ours.tolist() == reference.tolist()


@pytest.mark.parametrize("how", ["greedy", "sampled"])
def test_cached_equals_uncached_unequal_prompts_past_the_context(model, how):
    n = 2 * CTX
    kw = lambda: dict(temperature=0) if how == "greedy" else sampled(seed=5)  # noqa: E731
    cached = generate(model, PROMPTS, n, slide=7, **kw())
    uncached = generate(model, PROMPTS, n, slide=7, use_cache=False, **kw())
    assert cached == uncached
    assert [len(r) for r in cached] == [len(p) + n for p in PROMPTS]
    assert all(r[: len(p)] == p for r, p in zip(cached, PROMPTS))


@pytest.mark.parametrize("attn_impl", ["sdpa", "manual"])
def test_batch_rows_equal_each_prompt_alone_within_the_context(model, attn_impl):
    # "manual" softmax turns a fully masked row into NaN (SDPA's CPU kernel returns 0): pad tokens must see something
    model = copy.deepcopy(model)
    for mod in model.modules():
        if isinstance(mod, CausalSelfAttention):
            mod.attn_impl = attn_impl
    together = generate(model, PROMPTS, 20, temperature=0)
    alone = [generate(model, [p], 20, temperature=0)[0] for p in PROMPTS]
    assert together == alone
    # The same batch as a left-padded tensor + lengths gives the same rows, padding kept in place.
    idx, lengths = left_pad(PROMPTS, pad_id=0)
    out = generate(model, idx, 20, temperature=0, prompt_lengths=lengths)
    assert out.shape == (3, idx.size(1) + 20)
    assert [row[idx.size(1) - n :] for row, n in zip(out.tolist(), lengths.tolist())] == together


def test_prompt_longer_than_context_keeps_its_end(model):
    idx = torch.randint(0, V, (1, CTX + 9))
    out = generate(model, idx, 10, temperature=0)
    assert torch.equal(out[:, : CTX + 9], idx)  # the prompt comes back whole
    assert torch.equal(out, generate(model, idx, 10, temperature=0, use_cache=False))
    # Only the last CTX tokens matter: a different beginning changes nothing.
    changed = idx.clone()
    changed[:, :9] = (changed[:, :9] + 1) % V
    assert torch.equal(generate(model, changed, 10, temperature=0)[:, CTX + 9 :], out[:, CTX + 9 :])


def test_generate_stream_yields_what_generate_returns(model):
    idx = torch.randint(0, V, (2, 5))
    steps = list(generate_stream(model, idx, 12, **sampled(seed=9)))
    assert len(steps) == 12 and all(s.shape == (2,) for s in steps)
    assert torch.equal(torch.stack(steps, 1), generate(model, idx, 12, **sampled(seed=9))[:, 5:])


# ---- eos -----------------------------------------------------------------------------------------------------------
def test_each_row_stops_at_eos(model):
    free = generate(model, PROMPTS, 30, temperature=0)
    gen0 = free[0][len(PROMPTS[0]) :]
    eos = gen0[4]  # a token row 0 really emits, at step 4 or earlier
    out = generate(model, PROMPTS, 30, temperature=0, eos_id=eos)
    for row, full, p in zip(out, free, PROMPTS):
        gen = full[len(p) :]
        expected = p + (gen[: gen.index(eos) + 1] if eos in gen else gen)  # cut right after its own eos
        assert row == expected
    assert len(out[0]) <= len(PROMPTS[0]) + 5
    # Tensor in, tensor out: finished rows are filled with eos; the batch stops once every row is done.
    idx, lengths = left_pad(PROMPTS)
    t_out = generate(model, idx, 30, temperature=0, eos_id=eos, prompt_lengths=lengths)
    for row, expected, p in zip(t_out.tolist(), out, PROMPTS):
        gen = row[idx.size(1) :]
        k = len(expected) - len(p)
        assert gen[:k] == expected[len(p) :]
        assert all(t == eos for t in gen[k:])
    only_row0 = generate(model, [PROMPTS[0]], 30, temperature=0, eos_id=eos)[0]
    assert only_row0[-1] == eos and len(only_row0) < len(PROMPTS[0]) + 30  # a lone row stops early


# ---- sampling inside generate --------------------------------------------------------------------------------------
def test_top_k_1_equals_greedy(model):
    idx = torch.randint(0, V, (2, 6))
    greedy = generate(model, idx, 40, temperature=0)
    assert torch.equal(generate(model, idx, 40, temperature=1.5, top_k=1, generator=torch.Generator()), greedy)
    # ...and sampling without top_k does not (so the comparison above can fail)
    assert not torch.equal(generate(model, idx, 40, temperature=1.5, generator=torch.Generator()), greedy)


def test_fixed_generator_reproduces_samples(model):
    idx = torch.randint(0, V, (2, 4))
    a = generate(model, idx, 30, **sampled(seed=11))
    assert torch.equal(a, generate(model, idx, 30, **sampled(seed=11)))
    assert not torch.equal(a, generate(model, idx, 30, **sampled(seed=12)))


def test_padded_vocabulary_leaves_the_sampled_distribution_unchanged(model):
    # vocab_multiple=64 adds 31 rows to the tied embedding/head (97 → 128). Fill them with large weights: if those
    # logits reached the softmax they would take most of the probability. Sampling must not notice they exist.
    padded = GPT(GPTConfig(**TINY, vocab_multiple=64)).eval()
    sd = copy.deepcopy(model.state_dict())
    sd["transformer.wte.weight"] = torch.cat([sd["transformer.wte.weight"], 50 * torch.randn(31, TINY["n_embd"])])
    sd["lm_head.weight"] = sd["transformer.wte.weight"]
    padded.load_state_dict(sd)
    assert padded.lm_head.weight.shape[0] == 128
    idx = torch.randint(0, V, (4, 3))
    with torch.no_grad():
        torch.testing.assert_close(padded(idx), model(idx))  # the same logits (to float rounding)
    for kw in (dict(temperature=1.0), dict(temperature=1.3, top_p=0.9), dict(temperature=0.7, top_k=20)):
        a = generate(model, idx, 25, **kw, generator=torch.Generator().manual_seed(3))
        b = generate(padded, idx, 25, **kw, generator=torch.Generator().manual_seed(3))
        assert torch.equal(a, b) and int(b.max()) < V


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(temperature=-0.1), "temperature"),
        (dict(temperature=math.nan), "temperature"),
        (dict(top_k=0), "top_k"),
        (dict(top_p=0.0), "top_p"),
        (dict(top_p=1.5), "top_p"),
    ],
)
def test_bad_sampling_arguments_are_clear_errors(model, kw, match):
    args = dict(temperature=1.0, top_k=None, top_p=None) | kw
    with pytest.raises(ValueError, match=match):
        SamplingParams(**args)
    with pytest.raises(ValueError, match=match):
        generate(model, torch.zeros(1, 3, dtype=torch.long), 5, **kw)


def test_generate_keeps_the_training_mode(model):
    model.train()
    try:
        generate(model, torch.zeros(1, 3, dtype=torch.long), 2)
        assert model.training
    finally:
        model.eval()
