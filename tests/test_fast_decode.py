"""gpt/fast_decode.py: the faster ways to decode give the eager loop's tokens exactly."""

import torch

from gpt import GPT, GPTConfig, generate
from gpt.fast_decode import CompiledDecoder, prepare_for_decoding

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


def test_decoding_layout_changes_storage_not_values():
    model = sharp_model()
    m = GPT(GPTConfig(**TINY)).eval()
    m.load_state_dict(model.state_dict())
    idx = torch.randint(0, V, (2, 8))
    before = generate(m, idx, 20, temperature=0)
    prepare_for_decoding(m)
    w = m.transformer.h[0].mlp.c_fc.weight
    assert w.shape == (4 * 48, 48) and w.t().is_contiguous()  # (out, in) tensor stored as (in, out)
    assert m.lm_head.weight is m.transformer.wte.weight  # still tied
    assert torch.equal(m.state_dict()["lm_head.weight"], model.state_dict()["lm_head.weight"])
    assert torch.equal(generate(m, idx, 20, temperature=0), before)


def test_compiled_decode_step_matches_eager():
    # torch.compile of the fixed-shape decode step (on a CPU: inductor, one-row matmuls as fused reductions).
    m = sharp_model(n_layer=1)
    decoder = CompiledDecoder()  # held across calls: its compiled step and caches are reused
    idx = torch.randint(0, V, (1, 6))
    eager = generate(m, idx, 40, temperature=0)  # passes the context: compiled decode + eager re-prefills
    assert torch.equal(generate(m, idx, 40, temperature=0, decoder=decoder), eager)
    # left-padded rows: position ids looked up inside the graph, pad slots masked
    assert generate(m, PROMPTS, 20, temperature=0, decoder=decoder) == generate(m, PROMPTS, 20, temperature=0)
