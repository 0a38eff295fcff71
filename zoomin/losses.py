"""Training objectives: cross-entropy, the attention entropy regulariser (METHOD §3) and the
contrastive-negatives loss (METHOD §6, §2.3)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .trace import Trace


def classification_loss(trace: Trace, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of ``g(z)`` against the image labels."""
    return F.cross_entropy(trace.logits, y)


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


def total_loss(trace: Trace, y: torch.Tensor, entropy_weight: float = 0.0, contrastive_weight: float = 0.0,
               reference_class: int = 0) -> tuple[torch.Tensor, dict[str, float]]:
    """The training objective and its parts (as floats, for logging)."""
    ce = classification_loss(trace, y)
    loss, parts = ce, {"ce": float(ce.detach())}
    if entropy_weight:
        ent = attention_entropy(trace)
        loss = loss - entropy_weight * ent
        parts["entropy"] = float(ent.detach())
    if contrastive_weight and trace.negatives is not None:
        con = contrastive_loss(trace, y, reference_class)
        loss = loss + contrastive_weight * con
        parts["contrastive"] = float(con.detach())
    return loss, parts
