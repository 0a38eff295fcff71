"""Learning from image labels alone (method §10): a dense, per-location signal that needs no hit.

At initialisation ``alpha`` is uniform over the foreground, so a lesion that fills one location in
~15,000 is drawn once in hundreds of slide-steps and the sampled estimate (eq 3, eq 9) gives the
attention almost nothing to learn from. Multiple-instance learning on the low-resolution views,
which every step computes anyway, gives *every* location a gradient from the image label:

* an evidence map ``e`` (``E`` channels per view location: one for two classes, one per class
  otherwise) comes out of the attention trunks ``a`` and ``b`` (``zoomin.nets.AttentionNet``);
* it is pooled over the foreground by a smooth maximum, the mean of the ``k`` largest values
  (``mil_pool``), into an auxiliary image-level prediction trained with the image label
  (``evidence_class_logits``; the losses are in ``zoomin.losses``): positives raise their most
  suspicious locations, negatives lower theirs;
* the attention logits *are* the evidence (``attention_logits``), so ``alpha`` and ``beta`` follow
  it. The Monte-Carlo estimators are untouched: they are unbiased for whatever ``alpha`` and
  ``beta`` they sample from.

The attention nets see each view standardised per image over its foreground (``standardise``):
the scale of the input, not only the pooling, decides whether the evidence learns at all.
Nothing averages a location's evidence over an area before the softmax: the nets are stride-1
convolutions with a 3 x 3 receptive field per layer, and pooling happens only across locations.
"""
from __future__ import annotations

import torch


def evidence_channels(num_classes: int) -> int:
    """``E``: one evidence channel for a binary task (positive against negative), else one per class."""
    return 1 if num_classes == 2 else num_classes


def standardise(view: torch.Tensor, fg: torch.Tensor | None,
                stats: tuple[torch.Tensor, torch.Tensor] | None = None, eps: float = 1e-3):
    """Per-image, per-channel standardisation over the foreground (method §10).

    view: (B, C, h, w); fg: (B, h*w) bool or None (all locations). ``stats`` (mean, std), each
    (B, C), are used instead of fitting: stage-II views of one image reuse the stage-I statistics,
    so a tile that is all lesion is not standardised back to look like tissue.
    -> (standardised view (B, C, h, w), (mean, std)).
    """
    if stats is None:
        stats = moment_stats(*moments(view, fg), eps)
    mean, std = stats
    out = (view.float() - mean[..., None, None]) / std[..., None, None]
    return out.to(view.dtype), stats


def moments(view: torch.Tensor, fg: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-channel sums of x and x^2 over the foreground and its size, in float64: (B, C), (B, C),
    (B, 1). The moments of the pieces of a view add up to the view's (streamed stage I)."""
    x = view.double().flatten(2)  # (B, C, L)
    w = torch.ones_like(x[:, :1]) if fg is None else fg.unsqueeze(1).to(x.dtype)  # (B, 1, L)
    return (x * w).sum(-1), (x * x * w).sum(-1), w.sum(-1)


def moment_stats(total: torch.Tensor, total_sq: torch.Tensor, n: torch.Tensor, eps: float = 1e-3):
    """``moments`` (sums of values and of squares, counts) -> (mean, std) (B, C) each, float32; std at
    least ``eps``."""
    n = n.clamp(min=1)
    mean = total / n
    std = (total_sq / n - mean**2).clamp(min=0).sqrt()
    return mean.float(), std.float().clamp(min=eps)


def mil_pool(values: torch.Tensor, valid: torch.Tensor | None, k: int) -> torch.Tensor:
    """Smooth maximum: the mean of the ``k`` largest values over the valid locations (method §10).

    A location's evidence enters unaveraged; with fewer than ``k`` valid locations the mean is over
    those there are. values: (..., L); valid: (..., L) bool or None -> (...).
    """
    return mean_finite(top_values(values, valid, k))


def top_values(values: torch.Tensor, valid: torch.Tensor | None, k: int) -> torch.Tensor:
    """The ``k`` largest valid values (..., L) -> (..., min(k, L)), -inf where fewer are valid. The top
    values of a view are the top values of its pieces' top values (streamed stage I)."""
    k = max(1, min(k, values.shape[-1]))
    if valid is not None:
        values = values.masked_fill(~valid, -float("inf"))
    return values.topk(k, dim=-1).values  # (..., k)


def mean_finite(top: torch.Tensor) -> torch.Tensor:
    """Mean of the finite entries of ``top`` (..., k) -> (...); 0 where none is finite."""
    finite = torch.isfinite(top)
    return torch.where(finite, top, 0.0).sum(-1) / finite.sum(-1).clamp(min=1)


def attention_logits(evidence: torch.Tensor, sharpness: float = 1.0) -> torch.Tensor:
    """The attention logits a location gets from its evidence: the positive channel of a binary
    task; for several classes, how strongly the location shows *any* class (log-sum-exp); times
    ``sharpness``, so that the few most evident locations take most of the attention (a lesion
    ranked first among 15,000 locations but only a few units of evidence above them is otherwise
    drawn by one draw in ten). evidence: (B, E, ...) -> (B, ...)."""
    return sharpness * (evidence[:, 0] if evidence.shape[1] == 1 else evidence.logsumexp(1))


def whitening(sample: torch.Tensor, fg: torch.Tensor | None, stats, eps: float = 1e-2) -> torch.Tensor:
    """The colour whitening of ``model.evidence_prior_whiten``: the inverse Cholesky factor (B, C, C) of
    the channels' correlation over the foreground of ``sample`` (B, C, h, w) standardised with
    ``stats``; ``fg``: (B, h*w) bool or None. Applied to a standardised pixel it gives coordinates in
    which the slide's own colours are uncorrelated and unit, so a colour off the slide's usual
    mix (a brown stain on H&E) stands out as much as a darker or paler one."""
    x = standardise(sample, None, stats)[0].double().flatten(2)  # (B, C, L)
    w = torch.ones_like(x[:, :1]) if fg is None else fg.unsqueeze(1).to(x.dtype)  # (B, 1, L)
    corr = (x * w) @ x.transpose(1, 2) / w.sum(-1, keepdim=True).clamp(min=1)  # (B, C, C)
    corr = corr + eps * torch.eye(x.shape[1], dtype=x.dtype)
    return torch.linalg.inv(torch.linalg.cholesky(corr)).float()


def outlier_score(view: torch.Tensor, window: int = 5, fg: torch.Tensor | None = None,
                  whiten: torch.Tensor | None = None) -> torch.Tensor:
    """A fixed prior for the stage-I evidence (method §10, the cold start; ``model.evidence_prior``):
    how far each location's neighbourhood stands out of its image's tissue — the norm over channels
    of the standardised view averaged over a ``window x window`` neighbourhood (no parameters, any
    appearance: darker, paler or another hue). Added to the learnt evidence, it puts the slide's
    most unusual places first in alpha and in the top-k pooling from the first step, so the MIL
    loss learns which of them are lesions instead of waiting for a random net to rank one high.
    The average is over the neighbourhood's foreground only (``fg``), so the edge of the tissue
    does not stand out for the glass beside it; ``whiten`` (``whitening``) measures it in the
    slide's whitened colours. view: (B, C, h, w) standardised; fg: (B, h, w) bool or None;
    whiten: (B, C, C) or None -> (B, 1, h, w)."""
    pool = lambda t: torch.nn.functional.avg_pool2d(t, window, 1, window // 2, count_include_pad=False)  # noqa: E731
    if whiten is not None:  # (B, C, C) from ``whitening``: Mahalanobis instead of the channels' norm
        view = torch.einsum("bij,bjhw->bihw", whiten.to(view.device), view.float())
    if fg is None:
        smooth = pool(view.float())
    else:
        w = fg.unsqueeze(1).float()  # (B, 1, h, w)
        smooth = pool(view.float() * w) / pool(w).clamp(min=1e-6)
    return smooth.pow(2).sum(1, keepdim=True).sqrt()


def evidence_class_logits(pooled: torch.Tensor) -> torch.Tensor:
    """Pooled evidence (B, E) as class logits (B, classes): ``[0, e]`` for a binary task."""
    return torch.cat([torch.zeros_like(pooled), pooled], -1) if pooled.shape[-1] == 1 else pooled


def pooled_logits(values: torch.Tensor, valid: torch.Tensor | None, k: int) -> torch.Tensor:
    """An auxiliary image-level prediction: evidence (B, E, L) pooled by ``mil_pool`` over the
    ``valid`` (B, 1 or E, L) locations, as class logits (B, classes)."""
    return evidence_class_logits(mil_pool(values, valid, k))


def scale_grad(t: torch.Tensor, weight: float) -> torch.Tensor:
    """``t`` in value, ``weight * grad`` in gradient. With evidence heads the attention can learn
    from the MIL losses alone (``weight = 0``): the estimators' score gradient into ``alpha``
    (eq 3) and ``beta`` (eq 9) is unbiased but, while ``f`` is still noise, it is noise too, and
    it drowns the evidence signal. The estimate's value, and its gradient to ``f``, are unchanged."""
    return t.detach() + weight * (t - t.detach())


def roi_attention(alpha: torch.Tensor, roi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Diagnostics (outlines used to look, never to train): the attention mass on the ROI and the
    ROI's best rank in ``alpha`` (1: the most attended location is in the ROI).
    alpha: (B, L); roi: (B, L) bool -> mass (B,), rank (B,) (0 where an image has no ROI)."""
    mass = (alpha * roi).sum(-1)
    best = alpha.masked_fill(~roi, -1.0).max(-1).values  # (B,) the ROI's most attended location
    rank = (alpha > best.unsqueeze(-1)).sum(-1) + 1
    return mass, torch.where(roi.any(-1), rank, torch.zeros_like(rank))
