"""gpt/eval against independent computations: hand-written forward passes, lm-evaluation-harness's own functions
(its HellaSwag preprocessing, WikiText detokenizer and rolling windows, imported from the installed `lm_eval`), and
the invariants: every token scored once, batch size and padding never change a score, compiled == eager, and
2 processes under torchrun == 1 process. (Scores equal to the harness end to end: test_eval_harness_parity.py.)"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from eval_helpers import hellaswag_rows, lambada_texts, peaky_gpt, wikitext_articles, wikitext_paragraphs

from gpt.eval import (
    encode_pair,
    harness_texts,
    hellaswag_counts,
    score_continuations,
    score_hellaswag,
    score_lambada,
    score_texts,
    split_wikitext_articles,
    wikitext_detokenize,
    wikitext_scores,
    window_plan,
)
from gpt.eval.hellaswag import build_request
from gpt.eval.perplexity import perplexity
from gpt.tokenizer import EOT_ID, get_tokenizer

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model():
    return peaky_gpt()


@pytest.fixture(scope="module")
def enc():
    return get_tokenizer()


def logprobs_by_hand(model, tokens: list[int]) -> torch.Tensor:
    """log p(tokens[t] | tokens[:t]) for t ≥ 1: one plain forward pass over tokens[:-1], no batching, no packing."""
    with torch.no_grad():
        logits = model(torch.tensor([tokens[:-1]]))[0].double()  # (T - 1, V)
    return -F.cross_entropy(logits, torch.tensor(tokens[1:]), reduction="none")  # (T - 1,)


# ---- sliding-window perplexity ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("n,window,stride", [(1, 4, 4), (10, 4, 2), (10, 4, 4), (9, 4, 1), (3, 8, 5), (50, 16, 5)])
def test_window_plan_scores_each_token_exactly_once(n, window, stride):
    plan = window_plan(n, window, stride)
    scored = [t for w in plan for t in range(w.end - w.n_scored, w.end)]
    assert scored == list(range(n))  # every token once, in order
    for i, w in enumerate(plan):
        assert 0 <= w.begin < w.end and w.end - w.begin <= window and 1 <= w.n_scored <= (stride if i else window)
        if i:  # after the first window, a scored token sees at least window - stride tokens before it
            assert w.end - w.n_scored - w.begin >= window - stride and w.end - w.begin == window


def test_sliding_window_equals_a_hand_computation(model, enc):
    ids = enc.encode(" The quick brown fox jumps over the lazy dog, again and again.")[:10]
    s = [EOT_ID, *ids]
    # window 4, stride 2, by hand: (input s[a:b], how many of its last predictions are scored)
    table = [(0, 4, 4), (2, 6, 2), (4, 8, 2), (6, 10, 2)]
    expected = sum(logprobs_by_hand(model, s[a : b + 1])[-k:].sum().item() for a, b, k in table)
    assert [tuple(w) for w in window_plan(10, 4, 2)] == table
    got = score_texts(model, [ids], window=4, stride=2)[0]
    assert got.n_tokens == 10 and got.logprob == pytest.approx(expected, rel=1e-6)
    assert got.perplexity == pytest.approx(math.exp(-expected / 10), rel=1e-6)


def test_window_plan_at_its_boundaries(model, enc):
    assert [tuple(w) for w in window_plan(4, 4, 2)] == [(0, 4, 4)]  # exactly one window: no second one of 0 tokens
    assert [tuple(w) for w in window_plan(5, 4, 2)] == [(0, 4, 4), (1, 5, 1)]  # one more token: the last window
    assert [tuple(w) for w in window_plan(8, 4)] == [(0, 4, 4), (4, 8, 4)]  # two disjoint windows end to end
    assert [tuple(w) for w in window_plan(1, 4)] == [(0, 1, 1)] and window_plan(0, 4) == []
    ids = enc.encode(" Hello")  # one token: scored once, after <|endoftext|>
    by_hand = logprobs_by_hand(model, [EOT_ID, *ids]).sum().item()
    assert perplexity(model, " Hello", window=4).logprob == pytest.approx(by_hand, rel=1e-6)
    with pytest.raises(ValueError, match="empty"):
        perplexity(model, "")


def test_stride_equal_to_window_is_the_harness_disjoint_windows(model, enc):
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

    ids = enc.encode(wikitext_detokenize(wikitext_articles()[0]))[:500]
    expected = 0.0
    for ctx, cont in map(make_disjoint_window, get_rolling_token_windows(ids, EOT_ID, 96, 1)):
        tokens = (ctx + cont)[-97:]  # the harness's model input is tokens[:-1], at most the context length
        expected += logprobs_by_hand(model, tokens)[-len(cont) :].sum().item()
    assert score_texts(model, [ids], stride=96)[0].logprob == pytest.approx(expected, rel=1e-6)
    assert score_texts(model, [ids])[0].logprob == pytest.approx(expected, rel=1e-6)  # stride defaults to window
    assert score_texts(model, [ids], stride=32)[0].logprob > expected  # more context per token: more likely text


# ---- the harness's text handling, compared with the harness's own code -----------------------------------------------
def test_hellaswag_preprocessing_is_the_harness_s():
    from datasets import Dataset
    from lm_eval.tasks.hellaswag.utils import process_docs

    rows = hellaswag_rows()
    theirs = process_docs(Dataset.from_list(rows))
    assert any("[title]" in r["ctx"] for r in rows)  # the WikiHow markers really are exercised
    for row, doc in zip(rows, theirs):
        assert harness_texts(row) == (doc["query"], doc["choices"])


def test_wikitext_detokenizer_and_articles_are_the_harness_s():
    from lm_eval.tasks.wikitext.preprocess_wikitext import wikitext_detokenizer

    articles = wikitext_articles()
    assert len(articles) == 7 and all(a.startswith(" = ") for a in articles)
    assert articles[0].startswith(" = Robert <unk> = \n")
    crafted = " ( a ) [ b ] { c } \" d \" ' e ' 1 @,@ 000 3 @.@ 5 well @-@ known 5 ° C N dogs ' s \n = = H = = \n x "
    for text in [*articles, crafted]:
        assert wikitext_detokenize(text) == wikitext_detokenizer({"page": text})
    assert split_wikitext_articles(" \n = A = \n x \n = = B = = \n y \n = C = \n z") == [
        " = A = \n x \n = = B = = \n y ",
        " = C = \n z",
    ]


def test_encode_pair_moves_trailing_spaces_and_tokenizes_the_whole(enc):
    assert encode_pair(enc, "Hello ", "world") == (enc.encode("Hello"), enc.encode(" world"))
    # a token across the boundary ("31"): as in the harness, the continuation is whatever follows the context's own
    # token count in the whole encoding (here only " years"), not an encoding of "1 years"
    ctx, cont = encode_pair(enc, "It was 3", "1 years")
    assert ctx == enc.encode("It was 3") and cont == enc.encode("It was 31 years")[len(ctx) :] == enc.encode(" years")


# ---- HellaSwag completion style, by hand (build-nanogpt's definition) -----------------------------------------------
def test_completion_hellaswag_equals_a_direct_computation(model, enc):
    rows = hellaswag_rows()[:6]
    ours = score_hellaswag(model, rows, "completion", batch_size=4)
    for row, got in zip(rows, ours):
        ctx = enc.encode(row["ctx"])
        sums, means = [], []
        for ending in row["endings"]:
            end = enc.encode(" " + ending)
            lp = logprobs_by_hand(model, (ctx + end)[-97:])[-len(end) :]  # each ending alone, cut like the scorer
            sums.append(lp.sum().item())
            means.append(lp.mean().item())
        assert got.logprobs == pytest.approx(sums, rel=1e-5)
        assert got.n_tokens == [len(enc.encode(" " + e)) for e in row["endings"]]
        assert got.pred() == max(range(4), key=sums.__getitem__)
        assert got.pred_norm("completion") == max(range(4), key=means.__getitem__)
        assert got.label == int(row["label"])


def test_harness_acc_norm_divides_by_characters(model):
    row = hellaswag_rows()[1]
    got = score_hellaswag(model, [row], "harness")[0]
    _, endings = harness_texts(row)
    assert got.n_chars == [len(e) for e in endings]
    per_char = [lp / len(e) for lp, e in zip(got.logprobs, endings)]
    assert got.pred_norm("harness") == max(range(4), key=per_char.__getitem__)


# ---- batching, padding and packing never change a score -------------------------------------------------------------
def test_batch_1_equals_batch_16(model):
    rows, texts, docs = hellaswag_rows()[:24], lambada_texts()[:24], wikitext_paragraphs()[:12]
    for style in ("completion", "harness"):
        one = score_hellaswag(model, rows, style, batch_size=1)
        many = score_hellaswag(model, rows, style, batch_size=16)
        torch.testing.assert_close([s.logprobs for s in one], [s.logprobs for s in many], rtol=1e-5, atol=1e-5)
    one, many = score_lambada(model, texts, batch_size=1), score_lambada(model, texts, batch_size=16)
    torch.testing.assert_close([s.logprob for s in one], [s.logprob for s in many], rtol=1e-5, atol=1e-5)
    assert [s.is_greedy for s in one] == [s.is_greedy for s in many]
    one, many = wikitext_scores(model, docs, batch_size=1), wikitext_scores(model, docs, batch_size=16)
    torch.testing.assert_close([s.logprob for s in one], [s.logprob for s in many], rtol=1e-5, atol=1e-5)


def test_bfloat16_scores_are_close_to_float32(model):
    texts = lambada_texts()[:8]
    fp32 = [s.logprob for s in score_lambada(model, texts)]
    bf16 = [s.logprob for s in score_lambada(peaky_gpt().to(torch.bfloat16), texts)]  # log-softmax still in fp32
    torch.testing.assert_close(bf16, fp32, rtol=0.05, atol=0.5)


def test_packed_endings_equal_one_row_per_ending(model, enc):
    rows = hellaswag_rows()[:30]
    packed = [build_request(enc, r, "harness")[0] for r in rows]
    assert sum(len(c) + sum(len(x) - 1 for x in xs) <= 96 for c, xs in packed) >= 5  # packing really happens
    separate = [(ctx, [cont]) for ctx, conts in packed for cont in conts]
    a = [s.logprob for group in score_continuations(model, packed) for s in group]
    b = [s[0].logprob for s in score_continuations(model, separate, batch_size=7)]
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_is_greedy_flags_exactly_the_argmax_continuations(model, enc):
    ctx = enc.encode("The history of the city begins")
    greedy = []
    for _ in range(3):  # the model's own greedy continuation, by hand
        with torch.no_grad():
            greedy.append(int(model(torch.tensor([ctx + greedy]))[0, -1].argmax()))
    other = greedy[:2] + [(greedy[2] + 1) % 50257]
    (g,), (o,) = score_continuations(model, [(ctx, [greedy]), (ctx, [other])])
    assert g.is_greedy and not o.is_greedy
    assert g.logprob == pytest.approx(logprobs_by_hand(model, ctx + greedy)[-3:].sum().item(), rel=1e-6)


def test_bad_requests_are_refused(model):
    with pytest.raises(ValueError, match="empty context"):
        score_continuations(model, [([], [[1, 2]])])
    with pytest.raises(ValueError, match="1 to 96"):
        score_continuations(model, [([1], [list(range(97))])])
    with pytest.raises(ValueError, match="stride"):
        window_plan(10, 4, 5)


# ---- in-training HellaSwag: compiled == eager, 2 processes == 1 ------------------------------------------------------
def test_hellaswag_counts_compiled_equals_eager_and_restores_train_mode(model):
    rows = hellaswag_rows()[:12]  # one batch of packed and single-ending rows: one graph to compile
    eager = hellaswag_counts(model, rows, batch_size=64)
    train_model = peaky_gpt().train()
    compiled = torch.compile(train_model)
    assert hellaswag_counts(compiled, rows, batch_size=64) == eager
    assert train_model.training  # handed back in the mode it came in
    assert eager.n == 12 and eager.correct + eager.correct_norm > 0


def test_hellaswag_counts_two_processes_under_torchrun_equal_one(model, tmp_path):
    out = tmp_path / "counts.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(ROOT / "tests" / "eval_ddp_worker.py"), str(out), "25"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(out.read_text())
    assert got["per_rank_n"] == [13, 12]  # uneven shares, together every example once
    assert tuple(got["total"]) == tuple(hellaswag_counts(model, hellaswag_rows()[:25]))
