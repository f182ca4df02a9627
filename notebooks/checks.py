"""Check functions for the exercises at the end of each notebook.

    import checks
    checks.check_decode(my_decode)      # prints a ✓ line, or raises AssertionError saying what is wrong

Each check runs your function on a few inputs and compares it with the package (gpt/) or with a property the
answer must have. The solutions are in notebooks/solutions/, one notebook per chapter.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import json
import math
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gpt import GPT, GPTConfig, KVCache, generate, get_tokenizer
from gpt import filter_logits
from gpt.model import manual_attention

SMALL = GPTConfig(vocab_size=100, context_length=32, n_layer=2, n_head=2, n_embd=16)  # a model that runs in ms


def ok(message: str) -> None:
    print(f"✓ {message}")


def small_model(config: GPTConfig = SMALL, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(config).eval()


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise AssertionError(message)


def expect_close(actual, expected, what: str, atol: float = 1e-5, rtol: float = 1e-4) -> None:
    actual, expected = torch.as_tensor(actual), torch.as_tensor(expected)
    expect(actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)}")
    gap = (actual.double() - expected.double()).abs().max().item() if actual.numel() else 0.0
    expect(torch.allclose(actual.double(), expected.double(), atol=atol, rtol=rtol), f"{what}: off by up to {gap:.2e}")


# ---- 01 · tokenizer -------------------------------------------------------------------------------------------------
TEXTS = [
    "Hello, world!",
    "O Romeo, Romeo! 🌹",
    "naïve café 😀 日本語",
    "line one\n\nline two\ttabbed",
    "the end<|endoftext|>",
]


def check_decode(my_decode) -> None:
    """my_decode(ids: list[int]) -> str, written with encoder.json and the stand-in table, without tiktoken."""
    enc = get_tokenizer()
    for text in TEXTS:
        ids = enc.encode(text, allowed_special="all")
        got = my_decode(ids)
        expect(got == text, f"my_decode({ids}) gave {got!r}, expected {text!r}")
    ok(f"my_decode reproduces {len(TEXTS)} texts, emoji and <|endoftext|> included")


def check_merges(learn_merges) -> None:
    """learn_merges(text: str, n: int) -> list of (left: bytes, right: bytes), each the most frequent adjacent pair
    (counted with Counter(zip(seq, seq[1:]))) of the sequence the earlier merges left."""
    text = "To be, or not to be, that is the question: to be is to do, and to do is to be.\n" * 3
    n = 20
    merges = learn_merges(text, n)
    expect(len(merges) == n, f"asked for {n} merges, got {len(merges)}")
    seq = [bytes([b]) for b in text.encode("utf-8")]
    for r, pair in enumerate(merges):
        expect(isinstance(pair, tuple) and len(pair) == 2, f"merge {r} is {pair!r}, expected a (bytes, bytes) pair")
        counts = collections.Counter(zip(seq, seq[1:]))
        top = max(counts.values())
        expect(
            counts[pair] == top,
            f"merge {r} {pair!r} occurs {counts[pair]} times, but {counts.most_common(1)[0][0]!r} occurs {top} times",
        )
        merged, i = [], 0
        while i < len(seq):
            if i + 1 < len(seq) and (seq[i], seq[i + 1]) == pair:
                merged.append(seq[i] + seq[i + 1])
                i += 2
            else:
                merged.append(seq[i])
                i += 1
        seq = merged
    ok(f"{n} merges, each the most frequent pair at its turn: {len(text.encode())} bytes → {len(seq)} tokens")


def check_stream_decoder(my_stream) -> None:
    """my_stream(enc, ids) yields str pieces: joined they equal enc.decode(ids), and none holds a '\\ufffd'."""
    enc = get_tokenizer()
    for text in TEXTS[:4]:
        ids = enc.encode(text)
        pieces = list(my_stream(enc, ids))
        expect("".join(pieces) == enc.decode(ids), f"joined pieces {''.join(pieces)!r} != {enc.decode(ids)!r}")
        expect(not any("\ufffd" in p for p in pieces), f"a piece holds a replacement character: {pieces}")
    ok("streamed pieces join to the decoded text, with no half characters")


# ---- 02 · attention -------------------------------------------------------------------------------------------------
def _qkv(T: int = 7, D: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, T, D, generator=g).unbind(0)


def check_attention_loop(my_attention) -> None:
    """my_attention(q, k, v) with q, k, v (T, D) → (T, D): causal attention, one query at a time."""
    q, k, v = _qkv()
    expected = manual_attention(q[None, None], k[None, None], v[None, None], is_causal=True)[0, 0]
    expect_close(my_attention(q, k, v), expected, "my_attention vs manual_attention(is_causal=True)")
    ok("the loop over queries equals manual_attention")


def check_local_attention(my_local_attention) -> None:
    """my_local_attention(q, k, v, window) → (T, D): token t attends to tokens t - window + 1 … t only."""
    q, k, v = _qkv(T=9)
    T = q.size(0)
    for window in (1, 2, 4, T):
        t, s = torch.arange(T)[:, None], torch.arange(T)[None, :]
        band = (s <= t) & (s > t - window)
        expected = manual_attention(q[None, None], k[None, None], v[None, None], attn_mask=band)[0, 0]
        expect_close(my_local_attention(q, k, v, window), expected, f"window={window}")
    expect_close(my_local_attention(q, k, v, 1), v, "window=1 (each token sees only itself, so it returns v)")
    ok("sliding-window attention for windows 1, 2, 4 and T (= plain causal attention)")


def check_last_query_attention(my_last_query) -> None:
    """my_last_query(q_last (D,), k (T, D), v (T, D)) → (D,): the last row of causal attention, from one query."""
    q, k, v = _qkv()
    full = manual_attention(q[None, None], k[None, None], v[None, None], is_causal=True)[0, 0]
    expect_close(my_last_query(q[-1], k, v), full[-1], "the last query's output")
    ok("one query against all keys = the last row of the full causal attention (what a KV cache computes)")


# ---- 03 · the model -------------------------------------------------------------------------------------------------
def check_gelu_erf(my_gelu_erf) -> None:
    """my_gelu_erf(x) = x · Φ(x), Φ the standard normal CDF, written with torch.erf."""
    x = torch.linspace(-6, 6, 1201)
    expect_close(my_gelu_erf(x), F.gelu(x), "my_gelu_erf vs F.gelu (exact)", atol=1e-6)
    gap = (F.gelu(x) - F.gelu(x, approximate="tanh")).abs().max().item()
    ok(f"exact GELU by hand; GPT-2's tanh form differs from it by at most {gap:.1e}")


def check_param_count(my_count) -> None:
    """my_count(config: GPTConfig) -> int: the parameters of GPT(config), from the config's numbers alone."""
    configs = [GPTConfig.from_preset(p) for p in ("124M", "355M", "1558M", "tiny")]
    configs += [GPTConfig(qkv_bias=False), GPTConfig(vocab_multiple=64), GPTConfig(context_length=256, n_layer=3)]
    for c in configs:
        with torch.device("meta"):
            n = GPT(c).num_params()
        got = my_count(c)
        expect(got == n, f"{c}: you count {got:,}, the model has {n:,} (off by {got - n:+,})")
    ok(f"parameter counts of {len(configs)} configs, with and without Q/K/V bias and vocabulary padding")


def check_no_positions(my_logits_without_positions) -> None:
    """my_logits_without_positions(model, idx) → logits (B, T, V): the model's forward pass without wpe."""
    idx = torch.randint(0, SMALL.vocab_size, (2, 10), generator=torch.Generator().manual_seed(1))
    perm = torch.cat([torch.randperm(9, generator=torch.Generator().manual_seed(2)), torch.tensor([9])])
    changed = {}
    for n_layer in (1, 2):
        model = small_model(dataclasses.replace(SMALL, n_layer=n_layer))
        reference = copy.deepcopy(model)
        with torch.no_grad():
            reference.transformer.wpe.weight.zero_()
            got = my_logits_without_positions(model, idx)
            expect_close(got, reference(idx), f"{n_layer} block(s): logits without position embeddings")
            shuffled = my_logits_without_positions(model, idx[:, perm])  # the first 9 tokens in another order
            changed[n_layer] = not torch.allclose(shuffled[:, -1], got[:, -1], atol=1e-5)
    expect(not changed[1], "with one block and no positions, the last logits must not depend on the order before it")
    ok(
        f"without wpe, shuffling the earlier tokens changes the last logits: with 1 block {changed[1]}, with 2 blocks "
        f"{changed[2]} (there, each earlier position saw a different prefix in block 1)"
    )


# ---- 04 · OpenAI's weights ------------------------------------------------------------------------------------------
def check_greedy_eos(my_greedy) -> None:
    """my_greedy(model, idx (1, T), max_new_tokens, eos_id) → (1, T + n): greedy, stopping after the first eos_id."""
    model = small_model()
    idx = torch.tensor([[1, 2, 3]])
    free = generate(model, idx, 12, temperature=0)
    for eos in (int(free[0, 3 + 4]), -1):  # a token the greedy text reaches, and one it never emits
        expected = generate(model, idx, 12, temperature=0, eos_id=eos)
        got = my_greedy(model, idx, 12, eos)
        expect(
            torch.equal(torch.as_tensor(got), expected),
            f"eos_id={eos}: got {got.tolist()}, expected {expected.tolist()}",
        )
    ok("greedy decoding that stops at the end-of-text token, as generate(..., eos_id=...) does")


def check_hf_conversion(my_convert) -> None:
    """my_convert(hf_state_dict) → our state dict: transformers' GPT2LMHeadModel (Conv1D (in, out)) → our GPT."""
    with warnings.catch_warnings():  # tqdm, imported by transformers, asks for ipywidgets, which we do not need
        warnings.filterwarnings("ignore", message="IProgress not found")
        from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    hf_config = GPT2Config(vocab_size=SMALL.vocab_size, n_positions=SMALL.context_length, n_embd=SMALL.n_embd,
                           n_layer=SMALL.n_layer, n_head=SMALL.n_head, bos_token_id=0, eos_token_id=0)  # fmt: skip
    hf = GPT2LMHeadModel(hf_config).eval()
    state = my_convert({k: v.clone() for k, v in hf.state_dict().items()})
    model = GPT(SMALL).eval()
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a tensor of the wrong shape
        raise AssertionError(f"your state dict does not fit our GPT: {str(e).splitlines()[-1].strip()}") from None
    expect(not unexpected, f"keys our GPT does not have: {unexpected[:5]}")
    expect(set(missing) <= {"lm_head.weight"}, f"keys missing: {missing[:5]}")
    idx = torch.randint(0, SMALL.vocab_size, (2, 12))
    with torch.no_grad():
        expect_close(model(idx), hf(idx).logits, "our logits vs transformers' logits")
    ok("Hugging Face's GPT-2 state dict converted by hand: the same logits")


def check_openai_export(my_export) -> None:
    """my_export(model) → {OpenAI name: np.ndarray}: our GPT written back in OpenAI's checkpoint layout."""
    from gpt.weights import convert_state_dict, openai_key

    model = small_model()
    arrays = my_export(model)
    expect(all(isinstance(a, np.ndarray) for a in arrays.values()), "the values should be NumPy arrays")
    expect(len(arrays) == 2 + 12 * SMALL.n_layer + 2, f"{len(arrays)} arrays; OpenAI's layout has 2 + 12·L + 2")
    try:
        back = convert_state_dict(SMALL, dict(arrays), openai_key, lambda s: (1, *s[::-1]), "your export")
    except ValueError as e:  # a name or shape outside OpenAI's layout
        raise AssertionError(str(e)) from None
    ours = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight"}
    for k, v in ours.items():
        expect(torch.equal(back[k], v), f"{k} does not survive the round trip")
    ok(f"{len(arrays)} arrays in OpenAI's layout; converting them back gives our weights exactly")


# ---- 05 · sampling and the KV cache -----------------------------------------------------------------------------
def check_min_p(my_min_p) -> None:
    """my_min_p(logits (B, V), min_p) → logits, -inf wherever p < min_p · (the largest p in that row)."""
    logits = torch.randn(3, 500, generator=torch.Generator().manual_seed(0)) * 3
    for min_p in (0.01, 0.1, 0.5, 1.0):
        p = logits.softmax(-1)
        keep = p >= min_p * p.max(-1, keepdim=True).values
        got = my_min_p(logits, min_p)
        expect(
            torch.equal(got.isfinite(), keep),
            f"min_p={min_p}: kept {int(got.isfinite().sum())}, expected {int(keep.sum())}",
        )
        expect(torch.equal(got[keep], logits[keep]), f"min_p={min_p}: kept logits must stay unchanged")
    ok("min-p keeps the tokens at least min_p times as likely as the favourite")


def check_kv_cache_bytes(my_bytes) -> None:
    """my_bytes(config, batch_size, seq_len, bytes_per_number) → int: the memory of a KV cache."""
    for preset in ("124M", "355M", "1558M"):
        c = GPTConfig.from_preset(preset)
        for B, T, dtype in ((1, 1024, torch.float32), (8, 512, torch.bfloat16)):
            cache = KVCache(c, B, T, device="meta", dtype=dtype)
            n = sum(t.numel() * t.element_size() for t in cache.k + cache.v)
            got = my_bytes(c, B, T, torch.finfo(dtype).bits // 8)
            expect(got == n, f"{preset}, B={B}, T={T}, {dtype}: you say {got:,} bytes, KVCache holds {n:,}")
    ok("KV-cache sizes for three GPT-2 sizes, two batch shapes and two dtypes")


def check_top_k_then_p(my_filter) -> None:
    """my_filter(logits (B, V), k, p) → logits: top-k first, then top-p among the survivors (as filter_logits)."""
    logits = torch.randn(2, 300, generator=torch.Generator().manual_seed(0)) * 2
    for k, p in ((5, 0.5), (50, 0.9), (300, 0.3), (1, 0.99)):
        got, expected = my_filter(logits, k, p), filter_logits(logits, top_k=k, top_p=p)
        expect(torch.equal(got.isfinite(), expected.isfinite()), f"k={k}, p={p}: a different set of tokens survives")
    ok("top-k, then top-p on the renormalised survivors: the same tokens as gpt.sampling.filter_logits")


# ---- 06 · pretraining ---------------------------------------------------------------------------------------------
def check_token_weighted_accumulation(my_accumulate) -> None:
    """my_accumulate(model, micro_batches) leaves in .grad the gradient of the mean loss over every target token of
    all micro-batches (targets of -100 are padding and do not count), as one big batch would."""
    model = small_model()
    g = torch.Generator().manual_seed(3)
    batches = []
    for n_pad in (0, 6, 9):  # micro-batches with 0, 6 and 9 padded targets of 2 × 8
        x = torch.randint(0, SMALL.vocab_size, (2, 8), generator=g)
        y = torch.randint(0, SMALL.vocab_size, (2, 8), generator=g)
        y.view(-1)[:n_pad] = -100
        batches.append((x, y))
    big_x, big_y = torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])
    model.zero_grad()
    model(big_x, big_y).loss.backward()
    expected = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    my_accumulate(model, batches)
    for (name, p), e in zip(model.named_parameters(), expected):
        expect(p.grad is not None, f"{name} has no gradient")
        expect_close(p.grad, e, f"gradient of {name}", atol=1e-6, rtol=1e-4)
    ok("accumulated gradients equal the big batch's, with micro-batches of unequal token counts")


def check_param_groups(my_groups) -> None:
    """my_groups(model, weight_decay) → [{'params': [...], 'weight_decay': wd}, {'params': [...], 'weight_decay': 0}]
    with every parameter exactly once: matrices decayed, biases and LayerNorm gains not."""
    from gpt.train import param_groups

    model = small_model()
    groups = my_groups(model, 0.1)
    ids = [id(p) for grp in groups for p in grp["params"]]
    expect(len(ids) == len(set(ids)) == len(list(model.parameters())), "every parameter exactly once")

    def decayed(gs):
        return {id(p) for grp in gs if grp["weight_decay"] > 0 for p in grp["params"]}

    expect(decayed(groups) == decayed(param_groups(model, 0.1)), "decay exactly the 2-D weights (matrices)")
    ok(f"{len(decayed(groups))} decayed tensors, {len(ids) - len(decayed(groups))} without decay")


def check_bf16_epsilon(eps: float) -> None:
    """eps: the smallest power of two with 1 + eps != 1 in bfloat16."""
    one = torch.ones((), dtype=torch.bfloat16)
    expect(one + eps != one, f"1 + {eps} is still 1 in bfloat16: too small")
    expect(one + eps / 2 == one, f"1 + {eps / 2} is already > 1 in bfloat16: {eps} is not the smallest")
    ok(f"bfloat16 has {eps} = 2^{int(np.log2(eps))} between 1 and the next number (float32: {torch.finfo().eps:.1e})")


# ---- appendix · the TensorFlow checkpoint ---------------------------------------------------------------------------
def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not out[-1] & 0x80:
            return bytes(out)


def check_varint(my_read_varint) -> None:
    """my_read_varint(buf: bytes, pos: int) → (value, position after it)."""
    numbers = [0, 1, 127, 128, 300, 16_383, 16_384, 497_759_232, 2**32, 2**63 - 1]
    buf = b"\x07" + b"".join(_varint(n) for n in numbers)
    pos = 1
    for n in numbers:
        value, new_pos = my_read_varint(buf, pos)
        expect((value, new_pos) == (n, pos + len(_varint(n))), f"at {pos}: got {(value, new_pos)}, expected "
               f"{(n, pos + len(_varint(n)))}")  # fmt: skip
        pos = new_pos
    ok(f"{len(numbers)} varints read back to back, up to 2^63 - 1")


def check_crc32c(my_crc32c) -> None:
    """my_crc32c(data: bytes) → int: CRC-32C (Castagnoli), as in the checkpoint's index."""
    from gpt.weights import tf_checkpoint

    expect(my_crc32c(b"123456789") == 0xE3069283, "CRC-32C of b'123456789' is 0xE3069283 (the standard check value)")
    data = np.random.default_rng(0).bytes(3000)
    expect(my_crc32c(data) == tf_checkpoint.crc32c(data), "3,000 random bytes: differs from tf_checkpoint.crc32c")
    ok("CRC-32C by hand: the standard check value, and tf_checkpoint.crc32c on random bytes")


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
