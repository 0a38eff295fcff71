"""Training objectives: cross-entropy, the attention entropy regulariser (method §3), the
contrastive-negatives loss (method §6), the multiple-instance losses that let attention
learn from image labels alone (method §10) and annotation supervision (method §7)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .evidence import evidence_class_logits
from .trace import Trace


def classification_loss(trace: Trace, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the answer against the image labels; where the counts answer alone
    (``model.count_answer``), plus that of the stages' own answer, which they still learn."""
    loss = F.cross_entropy(trace.logits, y)
    return loss if trace.stages_logits is None else loss + F.cross_entropy(trace.stages_logits, y)


def attention_entropy(trace: Trace) -> torch.Tensor:
    """Mean entropy of the stage-I attention plus, for two stages, the mean entropy of the
    stage-II attention of the drawn tiles (ATS's regulariser: the loss *subtracts* it)."""
    H = -(trace.log_alpha.exp() * trace.log_alpha).sum(-1).mean()
    if trace.log_beta is not None:
        valid = trace.tile_counts > 0  # (B, P)
        hb = -(trace.log_beta.exp() * trace.log_beta).sum(-1)  # (B, P)
        H = H + (hb * valid).sum() / valid.sum().clamp(min=1)
    return H


def contrastive_loss(trace: Trace, y: torch.Tensor, reference_class: int = 0) -> torch.Tensor:
    """Eq 10, ``L_con = -sum_n log(1 - Psi(x_n | y_n = 1))``, generalised to a reference class:
    the low-attention content (``trace.negatives``) of every image whose label is not the
    reference class must be classified as the reference class. Averaged over those images.
    With two classes and reference 0 this is exactly the paper's binary loss."""
    if trace.negatives is None:
        raise ValueError("the trace has no negatives: call the model with negatives=True")
    pos = y != reference_class
    if not pos.any():
        return trace.logits.new_zeros(())
    target = torch.full_like(y[pos], reference_class)
    return F.cross_entropy(trace.negatives.logits[pos], target)


def evidence_loss(trace: Trace, y: torch.Tensor) -> torch.Tensor:
    """Multiple-instance learning on the views (method §10): cross-entropy of the stage-I evidence
    pooled by a smooth maximum and, for two stages, of the stage-II evidence pooled over the drawn
    tiles, against the image labels, and of the stain counts' logits where the model has them
    (``model.count_mpp``, method §10.6). Every location gets a gradient; no draw has to hit the ROI."""
    terms = [F.cross_entropy(lg, y) for lg in (trace.evidence_logits, trace.evidence2_logits, trace.count_logits)
             if lg is not None]
    return sum(terms) / len(terms)


def instance_loss(trace: Trace, y: torch.Tensor) -> torch.Tensor:
    """The instance head on each drawn sub-tile against the image label (method §10), in one of two
    forms (``model.instance_pool``):

    - "max": the head pooled by a smooth maximum over the draws, then cross-entropy: one hit trains
      ``f`` at full weight, not at its 1/N share of ``z`` (an ROI that a few sub-tiles show);
    - "mean": every draw labelled with its image's label, its cross-entropy weighted by its weight
      in ``z`` as the forward pass computed it (``trace.draw_weights``): the same estimator as eqs
      3 + 9 applied to the loss, so an unbiased estimate of ``E_{alpha, beta}[CE(h(f(patch)), y)]``. For labels that most of the
      objects carry (Megapixel MNIST's majority digit), where a smooth maximum per class would also
      fire on the minority. The weights are detached: it trains ``f`` and the head, not the attention.
    """
    if trace.instance_draw_logits is None:
        return F.cross_entropy(trace.instance_logits, y)
    logits = evidence_class_logits(trace.instance_draw_logits)  # (B, P, K, classes)
    ce = F.cross_entropy(logits.flatten(0, 2), y[:, None, None].expand(logits.shape[:3]).flatten(),
                         reduction="none").view(logits.shape[:3])  # (B, P, K)
    if trace.draw_weights is None:
        raise ValueError("the instance loss needs the forward pass's draw_weights (model.instance_pool: mean)")
    return (trace.draw_weights.detach() * ce).sum((1, 2)).mean()


def mixture_loss(trace: Trace, y: torch.Tensor) -> torch.Tensor:
    """``model.estimate: both``: cross-entropy of the mixture ``log E_{alpha, beta}[softmax(g(f))]``
    (``model.probability_logits``) beside that of ``g(z)``, so that ``g`` read on one patch is
    the calibrated vote the test-time mixture averages, while ``g(z)`` keeps its fast start."""
    return F.cross_entropy(trace.mixture_logits, y)


def total_loss(trace: Trace, y: torch.Tensor, entropy_weight: float = 0.0, contrastive_weight: float = 0.0,
               reference_class: int = 0, evidence_weight: float = 0.0,
               instance_weight: float = 0.0, mixture_weight: float = 0.0) -> tuple[torch.Tensor, dict[str, float]]:
    """The training objective and its parts (as floats, for logging). A term is added when its
    weight is non-zero and the trace has what it needs (negatives; evidence heads)."""
    ce = classification_loss(trace, y)
    loss, parts = ce, {"ce": float(ce.detach())}
    terms = [("entropy", -entropy_weight, True, lambda tr, yy: attention_entropy(tr)),  # ATS subtracts it
             ("contrastive", contrastive_weight, trace.negatives is not None,
              lambda tr, yy: contrastive_loss(tr, yy, reference_class)),
             ("evidence", evidence_weight, trace.evidence_logits is not None, evidence_loss),
             ("instance", instance_weight, trace.instance_logits is not None or trace.instance_draw_logits is not None,
              instance_loss),
             ("mixture", mixture_weight, trace.mixture_logits is not None, mixture_loss)]
    for name, weight, present, fn in terms:
        if weight and present:
            value = fn(trace, y)
            loss = loss + weight * value
            parts[name] = float(value.detach())
    return loss, parts


def annotation_loss(trace: Trace, mask, floor: float = -30.0) -> torch.Tensor:
    """Pixel-level supervision of the attention (method §7): cross-entropy from the ROI mask,
    resampled to each view and normalised to a distribution, to ``alpha`` (mask read at
    ``trace.scale1``) — and, for two stages, to every drawn tile's ``beta`` (mask read at
    ``trace.scale2`` over the tile, on the ``trace.subview_hw`` grid). Equal to the KL divergence
    KL(mask || attention) up to a constant. Images (tiles) without ROI add nothing.

    mask: (B, 1, H, W) tensor or a Source of the ROI (same size as the image). ``floor`` bounds
    the log-attention of foreground-masked locations so that a stray ROI pixel cannot explode it.
    """
    from .sources import as_source
    src = as_source(mask)
    dev = trace.log_alpha.device
    q = src.view(trace.scale1).float().sum(1).flatten(1).to(dev)  # (B, L)
    terms = []
    has = q.sum(-1) > 0
    if has.any():
        q = q[has] / q[has].sum(-1, keepdim=True)
        terms.append(-(q * trace.log_alpha[has].clamp(min=floor)).sum(-1).mean())
    if trace.log_beta is not None:
        valid = trace.tile_counts > 0  # (B, P)
        rows = torch.arange(valid.shape[0], device=valid.device)[:, None].expand_as(valid)[valid]
        q2 = src.read(rows.cpu(), trace.tile_boxes[valid].cpu(), trace.scale2, trace.subview_hw)  # (M, 1, u, v)
        q2 = q2.float().sum(1).flatten(1).to(dev)  # (M, S)
        has2 = q2.sum(-1) > 0
        if has2.any():
            q2 = q2[has2] / q2[has2].sum(-1, keepdim=True)
            terms.append(-(q2 * trace.log_beta[valid][has2].clamp(min=floor)).sum(-1).mean())
    return sum(terms) if terms else trace.logits.new_zeros(())
