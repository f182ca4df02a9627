"""Cross-entropy of the output layer without materialising the (B, T, V) logits: a training-speed lever.

The usual path, F.cross_entropy(h @ Wᵀ, targets), writes B·T·V logits, upcasts them to float32, runs
log-softmax over them, and in backward makes a zero tensor of the same size, scatters into it, runs the
log-softmax backward and casts back: about ten passes over a tensor of B·T·50304 floats (0.2 GB for 1024
tokens), which on a CPU costs as much as the matmuls of a small model.

linear_cross_entropy() takes the final hidden states h and the output matrix W instead, and works through the rows
in chunks small enough to stay in cache. For each chunk it computes the logits, their log-sum-exp and the loss, and
at once the gradient of the loss with respect to those logits, softmax(z) − onehot(target) — the only thing
backward needs. So backward only scales precomputed gradients. (The same idea as Liger Kernel's fused linear
cross-entropy and Apple's Cut Cross-Entropy, in plain PyTorch.)

Matches F.cross_entropy(logits[..., :vocab_size].float(), targets, ignore_index=-100) (mean over non-ignored
targets) to float32 rounding; under bfloat16 autocast the matmuls run in bfloat16 as the nn.Linear would.
"""

from __future__ import annotations

import torch

from gpt.onednn import applies, mm_t


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, weight, targets, vocab_size, chunk_rows, compute_dtype, need_grad):
        # h (N, C) final hidden states; weight (Vp, C) output matrix (rows ≥ vocab_size are padding); targets (N,)
        N = h.size(0)
        hc, wc = h.to(compute_dtype), weight.to(compute_dtype)
        valid = targets != -100
        n_valid = valid.sum().clamp(min=1)
        safe_t = targets.masked_fill(~valid, 0)
        loss = torch.zeros((), dtype=torch.float32, device=h.device)
        # training: all the logits in one GEMM, into the buffer that becomes their gradient (a (64, C)·(C, Vp)
        # product per chunk ran at 77 GFLOP/s where the whole one runs at ≈ 160, 2-core AMD EPYC Zen 3, fp32);
        # each chunk of rows is then turned into its gradient in place, in cache. Evaluation keeps to chunks.
        dz_all = mm_t(hc, wc) if need_grad else None  # (N, Vp) logits, then d loss / d logits
        for i in range(0, N, chunk_rows):
            if need_grad:
                zc = dz_all[i : i + chunk_rows, :vocab_size]  # padding columns are never valid tokens
                z = zc.float()  # (R, V) float32: in fp32 the buffer itself, worked on in place
            else:
                z = mm_t(hc[i : i + chunk_rows], wc).float()[:, :vocab_size]  # (R, V) logits of this chunk
            t, ok = safe_t[i : i + chunk_rows], valid[i : i + chunk_rows]
            z_t = z.gather(1, t[:, None]).squeeze(1)  # (R,) the target's logit
            m = z.amax(dim=-1, keepdim=True)
            e = z.sub_(m).exp_()  # one exp pass serves both the loss and its gradient
            s = e.sum(dim=-1)
            lse = m.squeeze(1) + s.log()  # (R,) log-sum-exp
            loss += ((lse - z_t) * ok).sum()
            if need_grad:
                dz = e.mul_(((ok / n_valid) / s)[:, None])  # softmax, scaled for the mean over valid targets
                dz[torch.arange(dz.size(0), device=dz.device), t] -= ok / n_valid  # − onehot(target), scaled
                if dz.data_ptr() != zc.data_ptr():  # bf16: back into the buffer (ignored rows are all zero)
                    zc.copy_(dz)
        if need_grad:
            dz_all[:, vocab_size:] = 0
            ctx.save_for_backward(dz_all, hc, wc)
            ctx.dtypes = (h.dtype, weight.dtype)
        return loss / n_valid

    @staticmethod
    def backward(ctx, grad_loss):
        dz, hc, wc = ctx.saved_tensors
        g = grad_loss.to(dz.dtype)
        dh = (mm_t(dz, wc.t()) * g).to(ctx.dtypes[0]) if ctx.needs_input_grad[0] else None  # (N, C)
        dw = None  # (Vp, C) = dzᵀ (hc·g): g scales N·C
        if ctx.needs_input_grad[1] and applies(dz, hc):  # as its transpose (hc·g)ᵀ dz, the way oneDNN streams dz
            dw = mm_t((hc * g).t().contiguous(), dz.t()).t().contiguous().to(ctx.dtypes[1])  # 2.5× faster there
        elif ctx.needs_input_grad[1]:
            dw = (dz.t() @ (hc * g)).to(ctx.dtypes[1])
        return dh, dw, None, None, None, None, None


def linear_cross_entropy(
    h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, vocab_size: int | None = None, chunk_rows: int = 64
) -> torch.Tensor:
    """Mean cross-entropy of softmax(h @ weightᵀ) against targets (-100 = ignore). h (..., C), weight (Vp, C),
    targets (...). Only the first vocab_size columns of the logits are real tokens (the rest is padding)."""
    vocab_size = weight.size(0) if vocab_size is None else vocab_size
    device_type = h.device.type
    if torch.is_autocast_enabled(device_type):
        compute_dtype = torch.get_autocast_dtype(device_type)
    else:
        compute_dtype = h.dtype
    # (inside forward, grad mode is always off and needs_input_grad ignores torch.no_grad(), so decide here
    # whether to prepare gradients: evaluation under no_grad/inference_mode skips that work)
    need_grad = torch.is_grad_enabled() and (h.requires_grad or weight.requires_grad)
    with torch.autocast(device_type, enabled=False):
        return _LinearCrossEntropy.apply(
            h.reshape(-1, h.size(-1)), weight, targets.reshape(-1), vocab_size, chunk_rows, compute_dtype, need_grad
        )
