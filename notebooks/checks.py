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
import warnings

import numpy as np
import torch
import torch.nn.functional as F

from gpt import GPT, GPTConfig, KVCache, generate, get_tokenizer
from gpt import filter_logits
from gpt.model import manual_attention

from check_tools import SMALL, expect, expect_close, ok, small_model
from checks_later import (
    check_sliding_logprob,
    check_harness_logprobs,
    check_accuracy_stderr,
    check_induction_scores,
    check_lens_next_token_probs,
    check_instruction_targets,
    check_lora_merge,
    check_padded_vocab,
    check_train_flops,
)

__all__ = [
    "SMALL",
    "expect",
    "expect_close",
    "ok",
    "small_model",
    "check_sliding_logprob",
    "check_harness_logprobs",
    "check_accuracy_stderr",
    "check_induction_scores",
    "check_lens_next_token_probs",
    "check_instruction_targets",
    "check_lora_merge",
    "check_padded_vocab",
    "check_train_flops",
]


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
