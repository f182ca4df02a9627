"""What the training loop does at each evaluation: the validation loss, and a text sample to read.

    val_loss = evaluate(model, val_batches, device, autocast, ddp=dinfo.ddp)
    text = eval_sample(raw_model, enc, "ROMEO:", n_tokens=48, seed=1337, device=device, autocast=autocast)

The validation batches are drawn once (gpt/data's eval_batches), so successive losses are comparable.
"""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch
import torch.distributed as dist

from gpt.generate import generate
from gpt.tokenizer import EOT_ID
from gpt.train.tracking import sample_text


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    autocast: AbstractContextManager,
    *,
    return_logits: bool = True,
    ddp: bool = False,
) -> float:
    """Mean loss (nats per token) over `batches` of (x, y) (B, T), in eval mode (no dropout); the model is back in
    train mode after. Under DDP each rank holds its share of the batches and the mean is over all of them.
    return_logits=False takes the loss path that skips the (B, T, V) logits (gpt/loss.py)."""
    model.eval()
    val = torch.zeros(2, device=device)  # (sum of batch losses, batches) on this rank
    for x, y in batches:
        with autocast:
            val[0] += model(x.to(device), y.to(device), return_logits=return_logits).loss.float()
        val[1] += 1
    if ddp:
        dist.all_reduce(val)
    model.train()
    return (val[0] / val[1]).item()


def eval_sample(
    model: torch.nn.Module,
    enc,
    prompt: str,
    n_tokens: int,
    seed: int,
    device: torch.device,
    autocast: AbstractContextManager,
) -> str:
    """prompt + n_tokens sampled at temperature 1, top-k 50, with the same seed at every evaluation (so samples
    differ only because the weights did). An empty prompt starts from <|endoftext|>."""
    ids = enc.encode_ordinary(prompt) or [EOT_ID]
    gen = torch.Generator(device=device).manual_seed(seed)
    with autocast:
        out = generate(
            model, torch.tensor([ids], device=device), n_tokens, temperature=1.0, top_k=50, generator=gen,
            n_vocab=enc.n_vocab,  # a model with more rows than the tokenizer (vocab_size 50304) never samples them
        )  # fmt: skip
    return prompt + sample_text(enc, out[0, len(ids) :].tolist())
