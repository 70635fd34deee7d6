"""Training loss (docs/method.md#training-recipe)."""

from __future__ import annotations

import torch


def silog_loss(
    pred: torch.Tensor,
    gt: torch.Tensor,
    *,
    min_depth: float = 1e-3,
    variance_focus: float = 0.85,
    scale: float = 10.0,
    per_image: bool = False,
) -> torch.Tensor:
    """Scale-invariant log loss ``α·sqrt(mean(g²) − λ·mean(g)²)``, ``g = log pred − log gt``.

    Computed over the valid pixels of the whole batch (``gt > min_depth``), as BTS and AdaBins do, or,
    with ``per_image=True``, per image and then averaged over images (images without a valid pixel are
    left out). The per-image form is additive over samples, so data-parallel ranks average to exactly
    the single-process gradient.

    Args:
        pred: B×1×H×W predicted depth in metres (> 0).
        gt: B×1×H×W ground truth in metres, 0 = invalid.
        variance_focus: λ (0.85).
        scale: α (10).

    Returns:
        A scalar; NaN when the batch has no valid pixel (the trainer skips such steps).
    """
    mask = gt > min_depth
    if not bool(mask.any()):
        return pred.sum() * float("nan")
    if per_image:
        losses = [
            silog_loss(p[None], g[None], min_depth=min_depth, variance_focus=variance_focus, scale=scale)
            for p, g, m in zip(pred, gt, mask, strict=True)
            if bool(m.any())
        ]
        return torch.stack(losses).mean()
    g = torch.log(pred[mask].float()) - torch.log(gt[mask].float())
    d = (g.pow(2).mean() - variance_focus * g.mean().pow(2)).clamp_min(1e-12)
    return scale * torch.sqrt(d)
