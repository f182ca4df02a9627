"""The exercise checks of chapters 07–10; `import checks` gives them with the others (notebooks/checks.py)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import torch

from gpt import GPT, GPTConfig

from check_tools import SMALL, expect, expect_close, ok, small_model


# ---- 07 · evaluation ------------------------------------------------------------------------------------------------
def check_sliding_logprob(my_sliding_logprob) -> None:
    """my_sliding_logprob(model, ids: list[int], window, stride, prefix) -> float: Σ log p (nats) of every token of
    ids, the token `prefix` before them, each scored exactly once (as gpt.eval.window_plan lays the windows out).
    (The check's model has a 100-token vocabulary, so it passes prefix=0 instead of <|endoftext|>.)"""
    from gpt.eval import score_texts

    model = small_model()
    ids = torch.randint(0, SMALL.vocab_size, (70,), generator=torch.Generator().manual_seed(4)).tolist()
    for window, stride in ((32, 32), (32, 8), (16, 5), (32, 1)):
        (expected,) = score_texts(model, [ids], window=window, stride=stride, prefix=0)
        got = my_sliding_logprob(model, ids, window, stride, prefix=0)
        expect(math.isclose(got, expected.logprob, rel_tol=1e-4), f"window={window}, stride={stride}: you say "
               f"{got:.4f}, gpt.eval.score_texts says {expected.logprob:.4f}")  # fmt: skip
    ok("sliding-window log-likelihoods for 4 (window, stride) pairs equal gpt.eval.score_texts")


def check_harness_logprobs(my_harness_logprobs) -> None:
    """my_harness_logprobs(model, row: dict) -> 4 floats: Σ log p of each ending, lm-evaluation-harness style."""
    from gpt.eval import score_hellaswag

    path = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "eval" / "hellaswag_val_200.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()[:40:8]]  # WikiHow + ActivityNet
    torch.manual_seed(0)
    model = GPT(dataclasses.replace(SMALL, vocab_size=50257, context_length=128)).eval()
    for row, expected in zip(rows, score_hellaswag(model, rows, "harness")):
        got = list(my_harness_logprobs(model, row))
        mine, want = np.round(got, 3).tolist(), np.round(expected.logprobs, 3).tolist()
        expect(
            np.allclose(got, expected.logprobs, atol=1e-3),
            f"row {row['ind']}: you say {mine}, the harness gives {want}",
        )
    ok(f"{len(rows)} HellaSwag rows scored as lm-evaluation-harness scores them")


def check_accuracy_stderr(my_stderr) -> None:
    """my_stderr(hits: list of 0/1) -> float: the standard error of their mean, sample std (n - 1), as the harness."""
    from gpt.eval.results import accuracy

    for hits in ([1, 0, 0, 1, 0], [1] * 3 + [0] * 17, [0, 1] * 50):
        expected = accuracy("t", "acc", [bool(h) for h in hits]).stderr
        got = my_stderr(hits)
        expect(math.isclose(got, expected, rel_tol=1e-9), f"{sum(hits)} of {len(hits)}: you say {got:.6f}, "
               f"expected {expected:.6f}")  # fmt: skip
    ok("standard errors of 3 accuracies, as lm-evaluation-harness reports them")


# ---- 08 · what the model learned ----------------------------------------------------------------------------------
def check_induction_scores(my_induction_scores) -> None:
    """my_induction_scores(attentions (L, B, H, T, T), period) -> (L, H): the mean attention from each query
    t >= period to key t - period + 1 (the token after the previous occurrence of token t)."""
    L, B, H, T = 2, 3, 4, 20
    att = torch.rand(L, B, H, T, T, generator=torch.Generator().manual_seed(5)).tril()
    att = att / att.sum(-1, keepdim=True)
    for period in (5, 8, 10):
        t = torch.arange(period, T)
        expected = att[:, :, :, t, t - period + 1].mean(dim=(1, 3))
        expect_close(my_induction_scores(att, period), expected, f"period {period}")
    ok("induction scores: attention from t to t - period + 1, averaged over batch and queries")


def check_lens_next_token_probs(my_lens) -> None:
    """my_lens(model, idx (B, T)) -> (L + 1, B, T - 1): p(true next token) read from each layer's residual stream
    through the final LayerNorm and the head (index 0 = the embeddings)."""
    from gpt.introspect import logit_lens

    model = small_model()
    idx = torch.randint(0, SMALL.vocab_size, (2, 12), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        got = my_lens(model, idx)
    expect_close(got, logit_lens(model, idx).next_token_probs, "next-token probabilities by layer")
    ok(f"the logit lens by hand: {SMALL.n_layer + 1} readouts equal gpt.introspect.logit_lens")


# ---- 09 · fine-tuning ---------------------------------------------------------------------------------------------
def check_instruction_targets(my_instruction_targets) -> None:
    """my_instruction_targets(prompt_ids: list[int], response_ids: list[int]) -> (x, y), 1-D tensors: x the whole
    sequence without its last token, y the sequence shifted by one with -100 wherever the target is a prompt token."""
    cases = [([5, 6, 7], [8, 9]), ([1, 2, 3, 4, 5], [6]), ([10, 11], [12, 13, 14, 15])]
    for prompt, response in cases:
        ids = torch.tensor(prompt + response)
        y = ids[1:].clone()
        y[: len(prompt) - 1] = -100
        x_got, y_got = my_instruction_targets(prompt, response)
        expect_close(x_got, ids[:-1], f"x for prompt {prompt}, response {response}")
        expect_close(y_got, y, f"y for prompt {prompt}, response {response}")
        expect(int((torch.as_tensor(y_got) != -100).sum()) == len(response), "every response token, and only they")
    ok(f"{len(cases)} examples: the loss counts exactly the response's tokens")


def check_lora_merge(my_merged_weight) -> None:
    """my_merged_weight(W (out, in), A (r, in), B (out, r), scale) -> (out, in): the weight of one nn.Linear that
    computes W x + scale · B A x (LoRA, Hu et al. 2021, arXiv 2106.09685, eq. 3)."""
    g = torch.Generator().manual_seed(9)
    for out_f, in_f, r, scale in [(6, 5, 2, 2.0), (12, 8, 4, 0.5)]:
        W, A = torch.randn(out_f, in_f, generator=g), torch.randn(r, in_f, generator=g)  # (out, in), (r, in)
        B = torch.randn(out_f, r, generator=g)  # (out, r)
        x = torch.randn(3, in_f, generator=g)
        merged = my_merged_weight(W.clone(), A, B, scale)
        expect_close(x @ torch.as_tensor(merged).T, x @ W.T + scale * (x @ A.T) @ B.T, f"outputs for r={r}")
    ok("the merged weight computes what the frozen weight plus its LoRA update does")


# ---- 10 · data and speed ------------------------------------------------------------------------------------------
def check_padded_vocab(my_padded_vocab) -> None:
    """my_padded_vocab(vocab_size, multiple) -> int: vocab_size rounded up to a multiple of `multiple`."""
    cases = [(50257, 64), (50257, 128), (100, 8), (64, 64), (1, 1)]
    for v, m in cases:
        expected = GPTConfig(vocab_size=v, vocab_multiple=m).padded_vocab_size
        got = my_padded_vocab(v, m)
        expect(got == expected, f"vocab {v}, multiple {m}: you say {got}, expected {expected}")
    ok(f"{len(cases)} vocabulary sizes padded as GPTConfig.padded_vocab_size pads them")


def check_train_flops(my_train_flops) -> None:
    """my_train_flops(n_params, n_tokens) -> float: the training compute C ≈ 6 N D in FLOPs (2 N D forward, 4 N D
    backward; Kaplan et al. 2020 §2.1, used by Chinchilla, arXiv 2203.15556)."""
    for n, d in [(124e6, 10e9), (70e9, 1.4e12), (1e6, 20e6)]:
        got = my_train_flops(n, d)
        expected = 6 * n * d
        expect(
            math.isclose(got, expected, rel_tol=1e-9), f"N={n:.0e}, D={d:.0e}: you say {got:.3e}, not {expected:.3e}"
        )
    ok("C = 6 N D for three models, Chinchilla 70B on 1.4T tokens among them")
