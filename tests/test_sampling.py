"""gpt/sampling.py: the sampling rules on hand-made logits (generate() runs them in tests/test_generate.py)."""

import torch

from gpt import filter_logits, sample_next_token


def test_top_p_keeps_exactly_the_smallest_set_reaching_p():
    probs = torch.tensor([[0.15, 0.50, 0.05, 0.30]])  # sorted: 0.50, 0.30, 0.15, 0.05
    logits = probs.log()
    kept = lambda p: torch.isfinite(filter_logits(logits, top_p=p))[0].tolist()  # noqa: E731
    assert kept(0.45) == [False, True, False, False]  # 0.50 alone reaches 0.45
    assert kept(0.55) == [False, True, False, True]  # needs 0.50 + 0.30
    assert kept(0.79) == [False, True, False, True]
    assert kept(0.81) == [True, True, False, True]  # 0.80 < 0.81: needs the 0.15 too
    assert kept(0.96) == [True, True, True, True]
    assert kept(1.0) == [True, True, True, True]
    # The kept logits are unchanged, so sampling renormalises over the kept set.
    torch.testing.assert_close(filter_logits(logits, top_p=0.55)[0, [1, 3]], logits[0, [1, 3]])
    # Rows are filtered independently, and sampling never leaves the set.
    two = torch.stack([logits[0], logits[0].flip(-1)])
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([sample_next_token(two, top_p=0.55, generator=g) for _ in range(200)])
    assert set(draws[:, 0].tolist()) == {1, 3} and set(draws[:, 1].tolist()) == {0, 2}


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[0.1, 3.0, -1.0, 2.0, 0.5]])
    assert torch.isfinite(filter_logits(logits, top_k=2))[0].tolist() == [False, True, False, True, False]
    assert torch.isfinite(filter_logits(logits, top_k=9)).all()


def test_low_temperature_approaches_greedy():
    torch.manual_seed(1)
    logits = torch.randn(256, 50) * 3
    g = torch.Generator().manual_seed(0)
    greedy = logits.argmax(-1)
    assert torch.equal(sample_next_token(logits, temperature=1e-4, generator=g), greedy)
    agree = [(sample_next_token(logits, t, generator=g) == greedy).float().mean().item() for t in (2, 1, 0.3)]
    assert agree[0] < agree[1] < agree[2] < 1  # colder → closer to greedy, but not yet equal
