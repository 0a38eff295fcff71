"""The one object a forward pass returns: everything a person (or a widget) needs to see what
the model looked at. Widgets render a ``Trace``; they never reach into the model."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Optional

import torch


@dataclass
class Trace:
    """Result of ``ZoomInNet`` / ``AttentionSamplingNet`` forward. Boxes are level-0 ``(x, y, w, h)``.

    B images; P distinct stage-I tiles per image (padded); K draws per tile (padded); u x v the
    stage-II view; D feature size. One-stage traces have ``K = 1`` and no stage-II fields.
    """

    logits: torch.Tensor  # (B, classes) g(z)
    alpha: torch.Tensor  # (B, h, w) stage-I attention (probabilities)
    tile_index: torch.Tensor  # (B, P) flat stage-I location of each distinct tile
    tile_counts: torch.Tensor  # (B, P) stage-I draws per tile; 0 marks padding
    tile_boxes: torch.Tensor  # (B, P, 4) level-0 tile boxes (one stage: the patches themselves)
    subtile_index: torch.Tensor  # (B, P, K) flat stage-II locations, in draw order
    subtile_valid: torch.Tensor  # (B, P, K) bool: a drawn sub-tile (features computed)
    subtile_boxes: torch.Tensor  # (B, P, K, 4) level-0 boxes of the sub-tiles fed to f
    weights: torch.Tensor  # (B, P, K) weight of each sample's feature in z (sums to 1 per image)
    features: torch.Tensor  # (B, P, K, D) f of each sample (0 where not drawn)
    z: torch.Tensor  # (B, D) aggregated feature
    log_alpha: torch.Tensor  # (B, h*w) log-softmax of the stage-I logits (kept for losses)
    beta: Optional[torch.Tensor] = None  # (B, P, u, v) stage-II attention of each tile
    log_beta: Optional[torch.Tensor] = None  # (B, P, u*v) its log (kept for losses)
    contributions: Optional[torch.Tensor] = None  # (B, P, K, classes) each sample's share of the logits
    negatives: Optional["Trace"] = None  # the contrastive negatives' trace (METHOD §6), if asked for
    image_size: tuple[int, int] = (0, 0)  # level-0 (H, W)
    mode: str = "sample"  # "sample" (Monte Carlo, eqs 3/9) or "topk" (deterministic)
    scale1: float = 0.0  # the stage-I view scale used for this image
    scale2: float = 0.0  # the stage-II view scale (two stages; 0 for one stage)

    @property
    def probs(self) -> torch.Tensor:
        return self.logits.softmax(-1)

    @property
    def distinct_tiles(self) -> torch.Tensor:  # (B,) N' per image
        return (self.tile_counts > 0).sum(-1)

    def detach(self) -> "Trace":
        """A copy on the CPU with no autograd history: what widgets and files get."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                v = v.detach().cpu()
            elif isinstance(v, Trace):
                v = v.detach()
            out[f.name] = v
        return Trace(**out)

    def item(self, b: int) -> "Trace":
        """Image ``b`` of the batch as a batch of one."""
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                v = v[b:b + 1]
            elif isinstance(v, Trace):
                v = v.item(b)
            out[f.name] = v
        return Trace(**out)
