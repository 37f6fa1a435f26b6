"""The output head + cross-entropy without the (n, vocab) logits tensor: `head_cross_entropy`."""
from __future__ import annotations

import torch

# rows of bf16 gradient held for one head-gradient product (1024 x 58k: 120 MB), and the head
# rows added to the fp32 gradient at a time
GRAD_ROWS_HELD = 1024
ADD_ROWS = 4096


class _HeadCrossEntropy(torch.autograd.Function):
    """Sum over rows of cross_entropy(h @ weight.T, targets), computed in row chunks.

    The gradients are computed in the forward pass, chunk by chunk, while each chunk's logits
    are at hand (softmax - one-hot, then two matmuls), so neither the logits nor their softmax
    is ever stored whole: at GPT-2 width a 2 x 1024-token batch saves ~1 GB of logits and their
    gradient, and every pass over them but one. Backward only scales the stored gradients by
    the incoming scalar. The same matmuls as the straightforward head, the same numbers.
    """

    @staticmethod
    def forward(ctx, h, weight, targets, rows_per_chunk, grad_enabled):
        n = h.shape[0]
        want_h = grad_enabled and ctx.needs_input_grad[0]
        want_w = grad_enabled and ctx.needs_input_grad[1]
        dtype = (torch.get_autocast_dtype(h.device.type)
                 if torch.is_autocast_enabled(h.device.type) else h.dtype)
        hc, wc = h.to(dtype), weight.to(dtype)
        acc = torch.promote_types(dtype, torch.float32)   # softmax and sums at least in fp32
        per_token = torch.empty(n, dtype=acc, device=h.device)
        predicted = torch.empty(n, dtype=torch.long, device=h.device)
        grad_h = torch.empty_like(h) if want_h else None
        grad_w = torch.zeros(weight.shape, dtype=acc, device=h.device) if want_w else None
        # chunk-sized buffers reused by every chunk: a fresh (r, V) or (V, C) tensor per chunk
        # is fresh pages from the OS each time (their allocations are above malloc's mmap
        # threshold), which cost as much as the casts themselves in bf16
        rows_per_chunk = max(1, min(rows_per_chunk, n))
        logits_buf = torch.empty(rows_per_chunk, weight.shape[0], dtype=acc, device=h.device)
        low = dtype != acc
        low_buf = torch.empty_like(logits_buf, dtype=dtype) if low else None
        # below fp32 the head's gradient is one product per GRAD_ROWS_HELD rows: every chunk's
        # (r, C) x (r, V) product would be rounded to bf16, cast and added on its own, a
        # head-sized cast and sum per chunk and its rounding each time
        held = part = None
        if want_w and low:
            span = rows_per_chunk * max(1, min(n, GRAD_ROWS_HELD) // rows_per_chunk)
            held = torch.empty(min(span, n), weight.shape[0], dtype=dtype, device=h.device)
            part = torch.empty(weight.shape, dtype=dtype, device=h.device)
        held_from = 0

        def flush(upto):
            if upto > held_from:
                torch.mm(held[:upto - held_from].t(), hc[held_from:upto], out=part)
                # in slices of rows: a whole-head fp32 += bf16 casts into a head-sized temporary
                for first in range(0, part.shape[0], ADD_ROWS):
                    grad_w[first:first + ADD_ROWS].add_(part[first:first + ADD_ROWS])

        with torch.autocast(h.device.type, enabled=False):
            for start in range(0, n, rows_per_chunk):
                rows = slice(start, start + rows_per_chunk)
                r = hc[rows].shape[0]
                logits = logits_buf[:r]                                           # (r, V)
                if low:
                    logits.copy_(torch.mm(hc[rows], wc.t(), out=low_buf[:r]))
                else:
                    torch.mm(hc[rows], wc.t(), out=logits)
                target = targets[rows]
                target_logit = logits.gather(1, target[:, None])
                # max, exp and sum by hand, in place: two passes fewer over the chunk than
                # logsumexp + softmax, and the max gives the argmax on the way
                top, best = logits.max(dim=-1, keepdim=True)
                predicted[rows] = best.squeeze(1)
                exp = logits.sub_(top).exp_()
                total = exp.sum(dim=-1, keepdim=True)
                per_token[rows] = (total.log() + top - target_logit).squeeze(1)
                if want_h or want_w:
                    grad = exp.div_(total)                                    # softmax
                    grad[torch.arange(r, device=h.device), target] -= 1.0
                    if held is not None:
                        if start + r - held_from > held.shape[0]:
                            flush(start)
                            held_from = start
                        grad = held[start - held_from:start - held_from + r].copy_(grad)
                    elif low:
                        grad = low_buf[:r].copy_(grad)
                    if want_h:
                        grad_h[rows] = (grad @ wc).to(h.dtype)
                    if want_w and held is None:
                        grad_w.addmm_(grad.t(), hc[rows])
            if held is not None:
                flush(n)
            loss_sum = per_token.sum()
        ctx.save_for_backward(grad_h, grad_w.to(weight.dtype) if want_w else None)
        ctx.mark_non_differentiable(per_token, predicted)
        return loss_sum, per_token, predicted

    @staticmethod
    def backward(ctx, grad_loss, _grad_per_token, _grad_predicted):
        # scaled in place: a copy of the head-sized gradient would sit on top of the peak
        # activations; hence one backward per forward
        if getattr(ctx, "used", False):
            raise RuntimeError("head_cross_entropy: backward through the same loss twice")
        ctx.used = True
        grad_h, grad_w = ctx.saved_tensors
        return (grad_h.mul_(grad_loss.to(grad_h.dtype)) if grad_h is not None else None,
                grad_w.mul_(grad_loss.to(grad_w.dtype)) if grad_w is not None else None,
                None, None, None)


def head_cross_entropy(h: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                       rows_per_chunk: int | None = None):
    """(loss summed over rows, per-row losses (n,), per-row argmax (n,)) of the head `weight`
    (V, C) on hidden states h (n, C) against targets (n,) in [0, V).

    Equals F.cross_entropy(h @ weight.T, targets, reduction="sum") (and its gradients) without
    storing the (n, V) logits; per-row losses and argmax are detached, for logs and accuracy.
    The gradient is that of the loss sum only (what a training loss is built from).
    """
    if rows_per_chunk is None:
        rows_per_chunk = max(1, (1 << 24) // weight.shape[0])  # ~64 MB of fp32 logits a chunk
    return _HeadCrossEntropy.apply(h, weight, targets.long(), rows_per_chunk,
                                   torch.is_grad_enabled())
