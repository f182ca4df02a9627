"""GPTConfig: every number that shapes a GPT-2, plus named presets.

cfg = GPTConfig.from_preset("124M")                      # OpenAI's smallest GPT-2
cfg = GPTConfig.from_preset("gpt2-medium", context_length=256, qkv_bias=False)
cfg = GPTConfig.from_yaml(cfg.to_yaml())                 # round-trips through YAML and JSON
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

import yaml


def build_dataclass(cls, d: dict[str, Any]):
    """cls(**d), but a misspelt key is an error naming the valid fields (not a TypeError deep in __init__)."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; valid fields are {sorted(known)}")
    return cls(**d)


@dataclass
class GPTConfig:
    vocab_size: int = 50257  # GPT-2 BPE: 50,000 merges + 256 byte tokens + <|endoftext|>
    context_length: int = 1024  # longest sequence the learned position table (wpe) covers
    n_layer: int = 12  # number of transformer blocks
    n_head: int = 12  # attention heads per block; n_embd must divide evenly between them
    n_embd: int = 768  # width of the residual stream
    dropout: float = 0.0  # on embeddings, attention weights and residual branches (GPT-2 trained with 0.1)
    qkv_bias: bool = True  # GPT-2 has a bias on the fused Q/K/V projection; many modern models drop it
    vocab_multiple: int = 1  # pad the embedding/head rows to a multiple of this (64 → 50304, faster matmuls);
    #                          the extra rows never reach the logits, so loss and sampling are unchanged

    def __post_init__(self) -> None:
        for name in ("vocab_size", "context_length", "n_layer", "n_head", "n_embd", "vocab_multiple"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"GPTConfig.{name} must be a positive integer, got {value!r}")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}): "
                "each head gets n_embd // n_head dims"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def padded_vocab_size(self) -> int:
        """Rows of wte / lm_head: vocab_size rounded up to a multiple of vocab_multiple."""
        m = self.vocab_multiple
        return (self.vocab_size + m - 1) // m * m

    # ---- presets -------------------------------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> GPTConfig:
        """A named size (see PRESETS, ALIASES) with any field overridden, e.g. context_length=256."""
        return cls(**{**PRESETS[canonical_preset(name)], **overrides})

    # ---- serialisation ---------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> GPTConfig:
        return build_dataclass(cls, d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> GPTConfig:
        return cls.from_dict(json.loads(text))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> GPTConfig:
        return cls.from_dict(yaml.safe_load(text) or {})


# OpenAI's four released sizes (named by parameter count, as in their download URLs) and small CPU-sized ones.
PRESETS: dict[str, dict[str, int]] = {
    "124M": dict(n_layer=12, n_head=12, n_embd=768),
    "355M": dict(n_layer=24, n_head=16, n_embd=1024),
    "774M": dict(n_layer=36, n_head=20, n_embd=1280),
    "1558M": dict(n_layer=48, n_head=25, n_embd=1600),
    "mini": dict(n_layer=6, n_head=6, n_embd=384, context_length=256),  # ≈ 30M params (19M of them embeddings)
    "tiny": dict(n_layer=4, n_head=4, n_embd=128, context_length=128),  # ≈ 7M params; tests and CPU demos
}
ALIASES: dict[str, str] = {"gpt2": "124M", "gpt2-medium": "355M", "gpt2-large": "774M", "gpt2-xl": "1558M"}
OPENAI_SIZES: tuple[str, ...] = ("124M", "355M", "774M", "1558M")


def canonical_preset(name: str) -> str:
    """'gpt2-medium' → '355M'; case-insensitive; unknown names raise a ValueError that lists the valid ones."""
    lookup = {k.lower(): k for k in PRESETS} | {k.lower(): v for k, v in ALIASES.items()}
    key = str(name).strip().lower()
    if key not in lookup:
        valid = ", ".join(list(PRESETS) + list(ALIASES))
        raise ValueError(f"unknown model preset {name!r}; valid presets: {valid}")
    return lookup[key]
