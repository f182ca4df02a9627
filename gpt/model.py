"""GPT-2, written by hand: GPTConfig → CausalSelfAttention → MLP → Block → GPT.

Parameter names follow Hugging Face's GPT2LMHeadModel (transformer.wte, transformer.h.0.attn.c_attn, lm_head, ...),
so converting OpenAI's or Hugging Face's weights is a short loop (see gpt/weights/). One difference: HF stores the
four projection matrices as Conv1D (in, out); ours are nn.Linear (out, in), so those four are transposed on load.

Shapes in comments: B batch, T tokens in this call, S cached positions, C = n_embd, H = n_head, D = C // H, V = vocab.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from gpt.config import GPTConfig
from gpt.loss import linear_cross_entropy
from gpt.onednn import fp32_forward


def manual_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
) -> torch.Tensor:
    """softmax(q kᵀ / √D) v, spelled out. Same contract as F.scaled_dot_product_attention (without dropout):
    q (B, H, T, D), k/v (B, H, S, D); attn_mask is a bool (…, T, S) with True = may attend; is_causal masks s > t."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, H, T, S)
    if is_causal:
        T, S = scores.shape[-2:]
        causal = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=S - T)
        scores = scores.masked_fill(~causal, float("-inf"))
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    return scores.softmax(dim=-1) @ v  # (B, H, T, D)


class KVCache:
    """Preallocated keys and values for every layer, so decoding one token costs one token of compute.

    k, v: one (B, H, max_len, D) tensor per layer. A forward call with `input_pos` (T,) writes its keys/values at
    those slots; attention then reads the buffer, masked so each token sees only slots ≤ its own position (and slots
    the caller's attn_mask allows). Fixed shapes are what let a decode step be compiled or captured as a CUDA graph.
    Separate tensors rather than views of one (n_layer, ...) tensor: torch.compile writes into a graph input in
    place, but turns a write into a *view* of one into copies of the whole buffer, every step.
    """

    def __init__(
        self, config: GPTConfig, batch_size: int, max_len: int | None = None, *, device=None, dtype=torch.float32
    ):
        max_len = config.context_length if max_len is None else max_len
        if not 1 <= max_len <= config.context_length:
            raise ValueError(
                f"KVCache max_len must be in [1, {config.context_length}] (the context length), got {max_len}"
            )
        shape = (batch_size, config.n_head, max_len, config.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        self.max_len = max_len

    def update(self, layer: int, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor):
        """Write k/v (B, H, T, D) at slots input_pos (T,); return this layer's full buffers (B, H, max_len, D)."""
        k_buf, v_buf = self.k[layer], self.v[layer]
        k_buf[:, :, input_pos] = k.to(k_buf.dtype)  # index_put_: in place, also inside a compiled graph
        v_buf[:, :, input_pos] = v.to(v_buf.dtype)
        return k_buf, v_buf

    def causal_mask(self, input_pos: torch.Tensor) -> torch.Tensor:
        """(1, 1, T, max_len) bool: token at position p may attend to slots 0..p."""
        slots = torch.arange(self.max_len, device=input_pos.device)
        return (slots[None, :] <= input_pos[:, None])[None, None]


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.n_embd = config.n_head, config.n_embd
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.qkv_bias)  # Q, K, V in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd)
        self.c_proj.residual_proj = True  # scaled init, GPT-2 paper §2.3 (see GPT._init_weights)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.dropout = config.dropout
        self.attn_impl = "sdpa"  # or "manual": the same maths through manual_attention (tests, notebooks)

    def forward(
        self,
        x: torch.Tensor,
        kv_cache: KVCache | None = None,
        layer: int = 0,
        input_pos: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # 3 × (B, T, C)
        q = q.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, H, T, D)
        k = k.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        v = v.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
        if kv_cache is not None:
            k, v = kv_cache.update(layer, input_pos, k, v)  # (B, H, max_len, D)
            S = attn_mask.size(-1)  # the caller may show us only the first S slots, to skip reading empty ones
            k, v = k[:, :, :S].to(q.dtype), v[:, :, :S].to(q.dtype)
        is_causal = attn_mask is None  # without a mask: plain causal attention over this call's T tokens
        if self.attn_impl == "manual":
            y = manual_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal)
        else:
            p = self.dropout if self.training else 0.0
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=p, is_causal=is_causal)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble heads side by side: (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2 used the tanh approximation; the exact erf form differs ~1e-3
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd)
        self.c_proj.residual_proj = True
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))  # (B, T, C) → (B, T, 4C) → (B, T, C)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, eps=1e-5)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, eps=1e-5)
        self.mlp = MLP(config)

    def forward(self, x, kv_cache=None, layer=0, input_pos=None, attn_mask=None):
        x = x + self.attn(self.ln_1(x), kv_cache, layer, input_pos, attn_mask)
        return x + self.mlp(self.ln_2(x))


class LogitsAndLoss(NamedTuple):
    logits: torch.Tensor | None  # (B, T, V); None when forward(..., return_logits=False)
    loss: torch.Tensor  # () mean cross-entropy over non-ignored targets


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        Vp = config.padded_vocab_size
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(Vp, config.n_embd),  # token embeddings, also the output head (tied below)
                wpe=nn.Embedding(config.context_length, config.n_embd),  # learned position embeddings
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList(Block(config) for _ in range(config.n_layer)),
                ln_f=nn.LayerNorm(config.n_embd, eps=1e-5),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, Vp, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # weight tying: one Parameter, not a copy (saves 38.6M)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        # GPT-2: N(0, 0.02) everywhere; projections that write into the residual stream get 0.02/√(2·n_layer),
        # because every block adds two of them and the stream's variance would otherwise grow with depth.
        if isinstance(module, nn.Linear):
            std = 0.02 / math.sqrt(2 * self.config.n_layer) if getattr(module, "residual_proj", False) else 0.02
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        # nn.LayerNorm already starts at weight 1, bias 0.

    def num_params(self, non_embedding: bool = False) -> int:
        """Unique parameters (the tied head counts once); non_embedding drops wte and wpe, as scaling laws count."""
        n = sum(p.numel() for p in self.parameters())
        if non_embedding:
            n -= self.transformer.wte.weight.numel() + self.transformer.wpe.weight.numel()
        return n

    @fp32_forward  # fp32 on a CPU not made by Intel: the Linears run oneDNN's matmul, ≈ 2× MKL's (gpt/onednn.py)
    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        *,
        input_pos: torch.Tensor | None = None,
        kv_cache: KVCache | None = None,
        position_ids: torch.Tensor | None = None,
        attn_mask: torch.Tensor | None = None,
        last_only: bool = False,
        return_logits: bool = True,
        hidden_only: bool = False,
    ) -> torch.Tensor | LogitsAndLoss:
        """idx (B, T) token ids → logits (B, T, vocab_size); with targets (B, T), LogitsAndLoss(logits, loss)
        where target -100 is ignored (padding).

        For cached decoding (see gpt/generate.py): input_pos (T,) are the positions of these T tokens, which are
        also their KV-cache slots; position_ids (B, T) override the positions fed to wpe (left-padded batches);
        attn_mask (B or 1, 1, T, S) bool, True = may attend, replaces the default causal mask.
        last_only: logits for the last position only, (B, 1, V) — all sampling needs. Skips the head's other T - 1
        rows (the head is 31% of GPT-2 124M's matmul FLOPs) and a (B, T, V) output that is 200 MB for B=1, T=1024.
        return_logits=False (training): the same loss, computed without materialising the (B, T, V) logits
        (gpt/loss.py; much less memory traffic); the result's logits are then None.
        hidden_only: the final hidden states (B, T, C) after ln_f, without the head: for callers that need logits at
        a few positions only (gpt/eval applies lm_head to the scored ones).
        """
        B, T = idx.shape
        if input_pos is None:
            if T > self.config.context_length:
                raise ValueError(
                    f"sequence of {T} tokens is longer than the context length {self.config.context_length}; "
                    f"crop the input to its last {self.config.context_length} tokens"
                )
            input_pos = torch.arange(T, device=idx.device)
        if kv_cache is not None and attn_mask is None:
            attn_mask = kv_cache.causal_mask(input_pos)  # (1, 1, T, max_len)
        pos = input_pos if position_ids is None else position_ids
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        for i, block in enumerate(self.transformer.h):
            x = block(x, kv_cache, i, input_pos, attn_mask)
        if last_only:
            x = x[:, -1:]  # (B, 1, C)
        x = self.transformer.ln_f(x)
        if hidden_only:
            return x
        if targets is not None and not return_logits:
            return LogitsAndLoss(None, linear_cross_entropy(x, self.lm_head.weight, targets, self.config.vocab_size))
        logits = self.lm_head(x)  # (B, T, Vp)
        if self.config.padded_vocab_size != self.config.vocab_size:
            logits = logits[..., : self.config.vocab_size]  # padding rows are never valid tokens: drop them
        if targets is None:
            return logits
        loss = F.cross_entropy(logits.reshape(B * T, -1).float(), targets.reshape(B * T), ignore_index=-100)
        return LogitsAndLoss(logits, loss)
