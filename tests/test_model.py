import math

import pytest
import torch
import torch.nn.functional as F

from gpt import GPT, GPTConfig, KVCache
from gpt.model import CausalSelfAttention, manual_attention

TINY = dict(vocab_size=97, context_length=32, n_layer=2, n_head=3, n_embd=48)


def tiny(**kw) -> GPT:
    return GPT(GPTConfig(**{**TINY, **kw}))


def test_param_count_124M_exact():
    assert GPT(GPTConfig.from_preset("124M")).num_params() == 124_439_808
    assert GPT(GPTConfig.from_preset("124M", qkv_bias=False)).num_params() == 124_412_160


def test_head_and_token_embedding_are_one_parameter():
    m = tiny()
    assert m.lm_head.weight is m.transformer.wte.weight
    with torch.no_grad():
        m.transformer.wte.weight[0, 0] = 123.0
    assert m.lm_head.weight[0, 0].item() == 123.0


def test_state_dict_names_match_hugging_face():
    keys = set(tiny().state_dict())
    for k in (
        "transformer.wte.weight",
        "transformer.wpe.weight",
        "transformer.h.1.attn.c_attn.bias",
        "transformer.h.0.mlp.c_fc.weight",
        "transformer.h.0.mlp.c_proj.bias",
        "transformer.ln_f.weight",
        "lm_head.weight",
    ):
        assert k in keys


def test_residual_projections_get_scaled_init():
    m = GPT(GPTConfig.from_preset("tiny", n_layer=8, n_embd=256, n_head=4))
    expected = 0.02 / math.sqrt(2 * 8)
    assert m.transformer.h[0].attn.c_proj.weight.std().item() == pytest.approx(expected, rel=0.05)
    assert m.transformer.h[0].mlp.c_proj.weight.std().item() == pytest.approx(expected, rel=0.05)
    assert m.transformer.h[0].mlp.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_causality_future_tokens_do_not_change_past_logits():
    m = tiny().eval()
    idx = torch.randint(0, 97, (2, 20))
    t = 11
    changed = idx.clone()
    changed[:, t + 1 :] = torch.randint(0, 97, (2, 20 - t - 1))
    assert not torch.equal(changed, idx)
    with torch.no_grad():
        a, b = m(idx), m(changed)
    torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], rtol=0, atol=0)
    assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :])


def test_manual_attention_equals_sdpa_function():
    q, k, v = torch.randn(3, 2, 4, 9, 16).unbind(0)
    torch.testing.assert_close(
        manual_attention(q, k, v, is_causal=True),
        F.scaled_dot_product_attention(q, k, v, is_causal=True),
        atol=1e-6,
        rtol=1e-5,
    )
    mask = torch.rand(2, 1, 9, 9) > 0.3
    mask |= torch.eye(9, dtype=torch.bool)  # every row attends somewhere
    torch.testing.assert_close(
        manual_attention(q, k, v, attn_mask=mask),
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
        atol=1e-6,
        rtol=1e-5,
    )


def test_model_sdpa_path_equals_manual_path():
    m = tiny().eval()
    idx = torch.randint(0, 97, (2, 32))
    with torch.no_grad():
        sdpa = m(idx)
        for mod in m.modules():
            if isinstance(mod, CausalSelfAttention):
                mod.attn_impl = "manual"
        manual = m(idx)
    assert (sdpa - manual).abs().max().item() <= 1e-5


def test_initial_loss_is_uniform_over_vocab():
    torch.manual_seed(1)
    m = GPT(GPTConfig.from_preset("124M", context_length=64))
    idx = torch.randint(0, 50257, (2, 64))
    with torch.no_grad():
        loss = m(idx, idx.roll(-1, dims=1)).loss.item()
    assert abs(loss - math.log(50257)) < 0.3


def test_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    m = tiny()
    x = torch.randint(0, 97, (4, 32))
    y = torch.randint(0, 97, (4, 32))
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    for _ in range(300):
        loss = m(x, y).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if loss.item() < 0.1:
            break
    assert loss.item() < 0.1


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_forward_backward_finite_in_dtype(dtype):
    m = tiny()
    x = torch.randint(0, 97, (2, 16))
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        out = m(x, x.roll(-1, 1))
    assert out.logits.dtype == dtype
    assert torch.isfinite(out.loss)
    out.loss.backward()
    for name, p in m.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_bf16_weights_forward_backward_finite():
    m = tiny().to(torch.bfloat16)
    x = torch.randint(0, 97, (2, 16))
    out = m(x, x)
    out.loss.backward()
    assert torch.isfinite(out.loss) and all(torch.isfinite(p.grad).all() for p in m.parameters())


def test_too_long_input_is_a_clear_error():
    with pytest.raises(ValueError, match="longer than the context length 32"):
        tiny()(torch.zeros(1, 33, dtype=torch.long))


def test_ignore_index_masks_padding_targets():
    m = tiny().eval()
    x = torch.randint(0, 97, (1, 10))
    y = torch.randint(0, 97, (1, 10))
    y_pad = y.clone()
    y_pad[:, 6:] = -100
    with torch.no_grad():
        logits = m(x)
        expected = F.cross_entropy(logits[0, :6], y[0, :6])
        assert m(x, y_pad).loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_padded_vocab_gives_identical_logits_and_loss():
    plain, padded = tiny(), tiny(vocab_multiple=64)
    assert padded.lm_head.weight.shape[0] == 128 and plain.lm_head.weight.shape[0] == 97
    sd = plain.state_dict()
    sd["transformer.wte.weight"] = torch.cat([sd["transformer.wte.weight"], torch.randn(31, 48)])  # junk in pad rows
    sd["lm_head.weight"] = sd["transformer.wte.weight"]
    padded.load_state_dict(sd)
    x = torch.randint(0, 97, (2, 16))
    with torch.no_grad():
        a, b = plain(x, x), padded(x, x)
    assert b.logits.shape[-1] == 97
    torch.testing.assert_close(a.logits, b.logits)
    torch.testing.assert_close(a.loss, b.loss)


def test_kv_cache_prefill_then_decode_matches_full_forward():
    m = tiny().eval()
    idx = torch.randint(0, 97, (2, 20))
    cache = KVCache(m.config, batch_size=2)
    with torch.no_grad():
        full = m(idx)
        pre = m(idx[:, :12], input_pos=torch.arange(12), kv_cache=cache)
        steps = [m(idx[:, t : t + 1], input_pos=torch.tensor([t]), kv_cache=cache) for t in range(12, 20)]
    torch.testing.assert_close(torch.cat([pre, *steps], dim=1), full, atol=1e-5, rtol=1e-5)


def test_kv_cache_rejects_length_beyond_context():
    with pytest.raises(ValueError, match="max_len"):
        KVCache(GPTConfig(**TINY), batch_size=1, max_len=33)
