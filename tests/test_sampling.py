"""gpt/sampling.py: the sampling rules on hand-made logits (generate() runs them in tests/test_generate.py)."""

import math

import pytest
import torch

from gpt import SamplingParams, filter_logits, sample_next_token


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


# ---- at the limits (issue 14): each parameter near its edge behaves as in the limit --------------------------------
def test_temperature_is_applied_before_top_p():
    # p = (0.6, 0.3, 0.1). At temperature 2 the probabilities go as their square roots: 0.6 / (√0.6 + √0.3 + √0.1)
    # = 0.473 < 0.55, so top-p 0.55 keeps two tokens, renormalised to √0.6 : √0.3 = 1 : 1/√2, i.e. 2 - √2 and √2 - 1.
    # (Filtering at temperature 1 first would keep the 0.6 alone.)
    logits = torch.tensor([[0.6, 0.3, 0.1]]).log()
    got = SamplingParams(temperature=2.0, top_p=0.55).probs(logits)
    torch.testing.assert_close(got, torch.tensor([[2 - math.sqrt(2), math.sqrt(2) - 1, 0.0]]))


def test_top_p_at_exactly_the_boundary_keeps_the_set_that_reaches_it():
    logits = torch.zeros(1, 8)  # eight tokens of probability 1/8 each: every partial sum is exact in float32
    for p, n in [(1 / 8, 1), (3 / 8, 3), (0.5, 4), (0.5 + 1e-6, 5), (7 / 8, 7), (1.0, 8)]:
        assert torch.isfinite(filter_logits(logits, top_p=p)).sum().item() == n, p  # reaching p exactly is enough
        assert (SamplingParams(top_p=p).probs(logits) > 0).sum().item() == n, p


@pytest.mark.parametrize("t", [1e-8, 1e-30, 1e-45, 5e-324])
def test_a_temperature_near_zero_is_greedy_with_no_inf_or_nan(t):
    torch.manual_seed(0)
    logits = torch.randn(64, 50) * 3  # no ties
    probs = SamplingParams(temperature=t).probs(logits)
    assert torch.equal(probs, torch.nn.functional.one_hot(logits.argmax(-1), 50).float())
    assert torch.equal(sample_next_token(logits, temperature=t), logits.argmax(-1))
    tie = SamplingParams(temperature=t).probs(torch.tensor([[3.0, 3.0, 1.0]]))  # the limit shares a tie
    assert tie.tolist() == [[0.5, 0.5, 0.0]]


@pytest.mark.parametrize("t", [1e30, 1e300, 1.7e308])
def test_a_huge_temperature_is_uniform_over_the_tokens_with_finite_logits(t):
    probs = SamplingParams(temperature=t).probs(torch.tensor([[1.0, 3.0, -50.0, float("-inf")]]))
    torch.testing.assert_close(probs, torch.tensor([[1 / 3, 1 / 3, 1 / 3, 0.0]]))
    with pytest.raises(ValueError, match="must be >= 0 and finite"):
        SamplingParams(temperature=float("inf"))


@pytest.mark.parametrize("p", [1e-9, 1e-30, 1e-45])
def test_a_top_p_near_zero_keeps_exactly_the_argmax(p):
    torch.manual_seed(1)
    logits = torch.randn(16, 50)
    probs = SamplingParams(top_p=p).probs(logits)
    assert torch.equal(probs, torch.nn.functional.one_hot(logits.argmax(-1), 50).float())


def test_top_p_one_keeps_even_tokens_whose_probability_rounds_to_zero():
    logits = torch.tensor([[0.0, -200.0]])  # e^-200 is 0 in float32, yet the token is in the vocabulary
    assert torch.isfinite(filter_logits(logits, top_p=1.0)).all()


def test_top_k_one_is_greedy_and_top_k_of_the_vocabulary_or_more_keeps_all():
    logits = torch.tensor([[0.5, 2.0, -1.0, 1.0]])
    assert SamplingParams(top_k=1).probs(logits).tolist() == [[0.0, 1.0, 0.0, 0.0]]
    z = sum(math.exp(v) for v in logits[0].tolist())
    by_hand = torch.tensor([[math.exp(v) / z for v in logits[0].tolist()]])
    for k in (4, 5, 10**9):  # V, V + 1 and far past it
        torch.testing.assert_close(SamplingParams(top_k=k).probs(logits), by_hand)


def test_bfloat16_logits_give_the_distribution_of_their_float32_values():
    torch.manual_seed(2)
    logits = (torch.randn(4, 100) * 4).bfloat16()
    params = SamplingParams(temperature=0.7, top_k=20, top_p=0.9)
    got = params.probs(logits)
    assert got.dtype == torch.float32 and torch.isfinite(got).all()
    torch.testing.assert_close(got, params.probs(logits.float()), rtol=0, atol=0)
    assert torch.equal(sample_next_token(logits, temperature=0), logits.float().argmax(-1))
