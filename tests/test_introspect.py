"""gpt/introspect.py held to the model itself: the attention weights reproduce the attention output, the logit lens's
last layer is the model's output, the filtered distribution is what the sampler draws from."""

import pytest
import torch

from gpt import GPT, GPTConfig, generate, sample_next_token
from gpt.introspect import (
    LogitLens,
    attention_weights,
    logit_lens,
    next_token_distribution,
    residual_stream,
    token_losses,
    trace,
    unembed,
)

V, CTX = 97, 32
TINY = dict(vocab_size=V, context_length=CTX, n_layer=3, n_head=4, n_embd=48, vocab_multiple=64)  # 128 rows, 97 real


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = GPT(GPTConfig(**TINY)).eval()
    with torch.no_grad():  # larger than init: sharp attention and logits far from uniform
        for p in m.parameters():
            p.mul_(4.0)
    return m


@pytest.fixture(scope="module")
def idx():
    return torch.randint(0, V, (2, 20), generator=torch.Generator().manual_seed(1))


def test_trace_records_the_models_own_forward(model, idx):
    tr = trace(model, idx)
    L, H = model.config.n_layer, model.config.n_head
    assert tr.logits.shape == (2, 20, V) and tr.residuals.shape == (L + 1, 2, 20, 48)
    assert tr.attentions.shape == (L, 2, H, 20, 20) and tr.attentions.dtype == torch.float32
    with torch.no_grad():
        assert torch.equal(tr.logits, model(idx))
        emb = model.transformer.wte(idx) + model.transformer.wpe(torch.arange(20))
        torch.testing.assert_close(tr.residuals[0], emb, atol=0, rtol=0)
        for i, block in enumerate(model.transformer.h):  # each entry is the block applied to the one before
            torch.testing.assert_close(tr.residuals[i + 1], block(tr.residuals[i]), atol=1e-5, rtol=0)
    assert torch.equal(residual_stream(model, idx), tr.residuals)
    assert trace(model, idx, attentions=False).attentions is None
    last = trace(model, idx, last_only=True)
    torch.testing.assert_close(last.logits, tr.logits[:, -1:], atol=1e-5, rtol=0)
    assert torch.equal(last.residuals, tr.residuals)


def test_attention_weights_times_v_is_the_sdpa_output(model, idx):
    # The input of each attention's c_proj is SDPA's output, heads side by side: record it independently.
    assert all(b.attn.attn_impl == "sdpa" for b in model.transformer.h)
    seen_v, seen_y = [], []
    hooks = []
    for b in model.transformer.h:
        hooks.append(b.attn.c_attn.register_forward_hook(lambda m, a, out: seen_v.append(out[..., 2 * 48 :])))
        hooks.append(b.attn.c_proj.register_forward_pre_hook(lambda m, a: seen_y.append(a[0])))
    try:
        att = attention_weights(model, idx)  # (L, B, H, T, T)
    finally:
        for h in hooks:
            h.remove()
    H, D = 4, 12
    for layer in range(model.config.n_layer):
        v = seen_v[layer].view(2, 20, H, D).transpose(1, 2)  # (B, H, T, D)
        y = seen_y[layer].view(2, 20, H, D).transpose(1, 2)
        assert (att[layer] @ v - y).abs().max() <= 1e-5


def test_attention_rows_sum_to_one_and_nothing_reads_the_future(model, idx):
    att = attention_weights(model, idx)
    torch.testing.assert_close(att.sum(-1), torch.ones(att.shape[:-1]), atol=1e-6, rtol=0)
    future = torch.ones(20, 20, dtype=torch.bool).triu(diagonal=1)
    assert torch.all(att[..., future] == 0)
    assert torch.all(att[..., ~future] > 0)
    assert att[..., 0, 0].eq(1).all()  # the first token can only read itself
    assert att.max() > 0.9  # sharp heads exist: the test is not passing on near-uniform weights


def test_logit_lens_last_layer_is_the_models_output(model, idx):
    lens = logit_lens(model, idx, k=5)
    L = model.config.n_layer
    assert lens.top_ids.shape == (L + 1, 2, 20, 5) and lens.next_token_probs.shape == (L + 1, 2, 19)
    assert len(LogitLens.layer_names(L)) == L + 1
    with torch.no_grad():
        probs = model(idx).softmax(-1)  # (B, T, V)
    p, i = probs.topk(5, dim=-1)
    assert torch.equal(lens.top_ids[-1], i)
    torch.testing.assert_close(lens.top_probs[-1], p, atol=1e-6, rtol=0)
    torch.testing.assert_close(lens.next_token_probs[-1], probs[:, :-1].gather(-1, idx[:, 1:, None])[..., 0])
    assert lens.top_ids.max() < V  # the padding rows of the head never show up
    assert not torch.equal(lens.top_ids[0], lens.top_ids[-1])  # earlier layers really predict something else
    tr = trace(model, idx)
    torch.testing.assert_close(unembed(model, tr.residuals[-1]), tr.logits, atol=1e-5, rtol=0)


def test_filtered_distribution_is_what_the_sampler_draws_from(model, idx):
    logits = trace(model, idx).logits[:, -1]  # (B, V)
    for temperature, top_k, top_p in [(1.0, None, None), (0.7, 20, None), (1.3, None, 0.8), (0.5, 10, 0.9)]:
        dist = next_token_distribution(logits, temperature, top_k, top_p)
        torch.testing.assert_close(dist.probs, logits.softmax(-1))
        torch.testing.assert_close(dist.filtered.sum(-1), torch.ones(2))
        kept = (dist.filtered > 0).sum(-1)
        assert (kept <= (top_k or V)).all() and (kept < V).any() == (top_k is not None or top_p is not None)
        for seed in range(20):  # the same uniform draws pick the same token from our probabilities
            ours = torch.multinomial(dist.filtered, 1, generator=torch.Generator().manual_seed(seed))[:, 0]
            theirs = sample_next_token(logits, temperature, top_k, top_p, torch.Generator().manual_seed(seed))
            assert torch.equal(ours, theirs)
        # and the sampler's frequencies over many draws follow them, never leaving the kept set
        g = torch.Generator().manual_seed(0)
        many = sample_next_token(logits[:1].expand(20000, V), temperature, top_k, top_p, g)
        freq = torch.bincount(many, minlength=V).float() / 20000
        assert freq[dist.filtered[0] == 0].sum() == 0
        assert (freq - dist.filtered[0]).abs().max() < 0.015
    greedy = next_token_distribution(logits[0], temperature=0)
    assert greedy.filtered.shape == (V,) and greedy.filtered[logits[0].argmax()] == 1 and greedy.filtered.sum() == 1
    with pytest.raises(ValueError, match="top_p"):
        next_token_distribution(logits, top_p=0)


def test_the_generate_loop_samples_from_the_same_distribution(model, idx):
    # generate() prefills a KV cache and samples; its first token follows our filtered distribution, seed for seed.
    prompt = idx[0].tolist()
    dist = next_token_distribution(trace(model, idx[:1]).logits[:, -1], 0.9, 30, 0.95)
    for seed in range(10):
        out = generate(model, [prompt], 1, 0.9, 30, 0.95, generator=torch.Generator().manual_seed(seed))[0][-1]
        assert out == torch.multinomial(dist.filtered, 1, generator=torch.Generator().manual_seed(seed)).item()


def test_token_losses_average_to_the_models_loss(model, idx):
    losses = token_losses(model, idx)
    assert losses.shape == (2, 19) and (losses > 0).all()
    with torch.no_grad():
        loss = model(idx[:, :-1], idx[:, 1:]).loss
    torch.testing.assert_close(losses.mean(), loss, atol=1e-5, rtol=0)
    lens = logit_lens(model, idx)  # the same numbers, seen as probabilities of the next token
    torch.testing.assert_close(losses, -lens.next_token_probs[-1].log(), atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(token_losses(model, idx, logits=trace(model, idx).logits), losses, atol=1e-5, rtol=0)
    full = torch.randint(0, V, (1, CTX + 1))  # a whole context of predictions: T = context_length + 1 tokens
    assert token_losses(model, full).shape == (1, CTX)


def test_training_mode_is_restored_and_long_inputs_refused(model):
    model.train()
    try:
        trace(model, torch.zeros(1, 4, dtype=torch.long))
        assert model.training
    finally:
        model.eval()
    with pytest.raises(ValueError, match="context length"):
        trace(model, torch.zeros(1, CTX + 1, dtype=torch.long))


def test_bfloat16_model_gives_float32_attention(model, idx):
    m16 = GPT(GPTConfig(**TINY)).to(torch.bfloat16).eval()
    m16.load_state_dict({k: v.to(torch.bfloat16) for k, v in model.state_dict().items()})
    att = attention_weights(m16, idx)
    assert att.dtype == torch.float32
    # bf16 rounding grows with depth in this sharpened model; the first layer stays close
    torch.testing.assert_close(att[0], attention_weights(model, idx)[0], atol=0.05, rtol=0)
