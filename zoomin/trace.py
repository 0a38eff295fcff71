"""The one object a forward pass returns: everything a person (or a widget) needs to see what
the model looked at. Widgets render a ``Trace``; they never reach into the model.

The forward pass stores only what it computed anyway (and ``draw_weights`` where a loss needs
them); quantities that exist for display (``beta`` as a map, ``weights``, ``contributions``) are
derived from those fields when first read.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Optional

import torch

from .foreground import MASKED
from .sampling import two_stage_weights

SHARED = {"shared": True}  # field metadata: one value for the whole batch (``item`` keeps it whole)


@dataclass
class Trace:
    """Result of ``ZoomInNet`` / ``AttentionSamplingNet`` forward. Boxes are level-0 ``(x, y, w, h)``.

    B images; P distinct stage-I tiles per image (padded); K draws per tile (padded); u x v the
    stage-II view; D feature size. One-stage traces have ``K = 1`` and no stage-II fields.
    New optional fields need a default; tensors are per image (dim 0 = B) unless their metadata
    is ``SHARED``.
    """

    logits: torch.Tensor  # (B, classes) the answer: g(z) (model.estimate probabilities: log E[softmax(g(f))]) + answer_evidence; the counts' logits alone with model.count_answer
    tile_index: torch.Tensor  # (B, P) flat stage-I location of each distinct tile
    tile_counts: torch.Tensor  # (B, P) stage-I draws per tile; 0 marks padding
    tile_boxes: torch.Tensor  # (B, P, 4) level-0 tile boxes (one stage: the patches themselves)
    subtile_index: torch.Tensor  # (B, P, K) flat stage-II locations, in draw order
    subtile_valid: torch.Tensor  # (B, P, K) bool: a drawn sub-tile (features computed)
    subtile_boxes: torch.Tensor  # (B, P, K, 4) level-0 boxes of the sub-tiles fed to f
    features: torch.Tensor  # (B, P, K, D) f of each sample (0 where not drawn)
    z: torch.Tensor  # (B, D) aggregated feature
    log_alpha: torch.Tensor  # (B, h*w) log-softmax of the stage-I logits; ``alpha`` is derived from it
    log_beta: Optional[torch.Tensor] = None  # (B, P, u*v) stage-II log attention of each tile (losses)
    negatives: Optional["Trace"] = None  # the contrastive negatives' trace (method §6), if asked for
    image_size: tuple[int, int] = (0, 0)  # level-0 (H, W)
    view_hw: tuple[int, int] = (0, 0)  # (h, w) of the stage-I view
    mode: str = "sample"  # "sample" (Monte Carlo, eqs 3/9) or "topk" (deterministic)
    scale1: float = 0.0  # the stage-I view scale used for this image
    scale2: float = 0.0  # the stage-II view scale (two stages; 0 for one stage)
    subview_hw: tuple[int, int] = (0, 0)  # (u, v) the stage-II view of a tile (two stages)
    head_weight: Optional[torch.Tensor] = field(default=None, metadata=SHARED)  # (classes, D) g's linear map
    evidence_logits: Optional[torch.Tensor] = None  # (B, classes) stage-I evidence pooled by a smooth max (method §10)
    count_logits: Optional[torch.Tensor] = None  # (B, classes) the stain counts' logits (method §10.6)
    count_map: Optional[torch.Tensor] = None  # (B, h*w) the count map alpha is tilted toward (method §10.6)
    evidence2_logits: Optional[torch.Tensor] = None  # (B, classes) stage-II evidence pooled over the drawn tiles
    instance_logits: Optional[torch.Tensor] = None  # (B, classes) instance head on each drawn sub-tile, pooled over the draws
    instance_draw_logits: Optional[torch.Tensor] = None  # (B, P, K, E) instance head on each drawn sub-tile, unpooled (model.instance_pool: mean; 0 where not drawn)
    mixture_logits: Optional[torch.Tensor] = None  # (B, classes) log E[softmax(g(f))] beside g(z) (model.estimate: both, training)
    draw_probs: Optional[torch.Tensor] = None  # (B, P, K, classes) softmax(g(f)) of each drawn sub-tile (model.estimate: probabilities; 0 where not drawn)
    tile_log_q: Optional[torch.Tensor] = None  # (B, P) log proposal of the drawn tiles when not drawn from alpha (method §10)
    answer_evidence: Optional[torch.Tensor] = None  # (B, classes) the pooled evidence added to logits (model.evidence_answer)
    stages_logits: Optional[torch.Tensor] = None  # (B, classes) the stages' own answer, g(z) + answer_evidence, where the counts answer alone (model.count_answer)
    draw_weights: Optional[torch.Tensor] = None  # (B, P, K) each draw's weight in z as the forward pass computed it (losses that need it)

    @property
    def probs(self) -> torch.Tensor:
        return self.logits.softmax(-1)

    @property
    def distinct_tiles(self) -> torch.Tensor:  # (B,) N' per image
        return (self.tile_counts > 0).sum(-1)

    @property
    def alpha(self) -> torch.Tensor:
        """(B, h, w) stage-I attention (probabilities), from ``log_alpha`` when read (on a gigapixel
        slide a second map of the view's size is only made for whoever looks at it)."""
        return self.log_alpha.exp().view(-1, *self.view_hw)

    @property
    def foreground(self) -> torch.Tensor:
        """(B, h*w) bool: the stage-I locations not masked out as background (``foreground.MASKED``)."""
        return self.log_alpha > MASKED / 2

    @property
    def stages(self) -> int:
        """2 for the Zoom-In network; 1 for the one-stage model, which has no stage II (``log_beta``
        None, one patch per stage-I draw)."""
        return 1 if self.log_beta is None else 2

    @property
    def beta(self) -> Optional[torch.Tensor]:
        """(B, P, u, v) stage-II attention of each tile (uniform on padding); None for one stage."""
        if self.log_beta is None:
            return None
        return self.log_beta.exp().view(*self.log_beta.shape[:2], *self.subview_hw)

    @cached_property
    def weights(self) -> torch.Tensor:
        """(B, P, K) the value of each sample's weight in ``z`` (sums to 1 per image, in expectation when
        drawn from a proposal ``tile_log_q``; 0 where not drawn), detached: ``z = sum weights * features``.
        The forward pass's own ``draw_weights`` where it computed them, else derived when first read."""
        if self.draw_weights is not None:
            return self.draw_weights.detach()
        la = self.log_alpha.detach().gather(1, self.tile_index)  # (B, P) of the drawn tiles
        if self.stages == 1:  # K = S = 1, beta = 1
            lb, S = torch.zeros(self.subtile_index.shape, device=la.device), 1
        else:
            lb, S = self.log_beta.detach().gather(-1, self.subtile_index), self.log_beta.shape[-1]  # (B, P, K)
        return two_stage_weights(la, lb, self.tile_counts, self.subtile_valid, S, self.mode, self.tile_log_q)

    @property
    def contribution_name(self) -> str:
        """What ``contributions`` are shares of, as the explorer labels them; where the counts answer
        alone (``model.count_answer``), shares of the stages' own answer, not of the answer."""
        name = "logit share" if self.draw_probs is None else "probability share"
        return name if self.stages_logits is None else f"{name} of the stages' answer; the counts answer alone"

    @cached_property
    def contributions(self) -> Optional[torch.Tensor]:
        """(B, P, K, classes) each sample's additive share of the logits, detached: ``g`` is linear
        and ``z = sum w f``, so ``logits = bias + sum contributions`` (in eval mode). With
        ``model.estimate: probabilities`` each sample's share of the expected class probabilities
        instead: ``logits = log sum contributions``."""
        if self.draw_probs is not None:
            return self.weights.unsqueeze(-1) * self.draw_probs.detach()  # (B, P, K, classes)
        if self.head_weight is None:
            return None
        return self.weights.unsqueeze(-1) * (self.features.detach() @ self.head_weight.T)  # (B, P, K, classes)

    def _map(self, tensor_fn, trace_fn) -> "Trace":
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                v = tensor_fn(v, f.metadata.get("shared", False))
            elif isinstance(v, Trace):
                v = trace_fn(v)
            out[f.name] = v
        return Trace(**out)

    def detach(self) -> "Trace":
        """A copy on the CPU with no autograd history: what widgets and files get."""
        return self._map(lambda v, shared: v.detach().cpu(), Trace.detach)

    def item(self, b: int) -> "Trace":
        """Image ``b`` of the batch as a batch of one."""
        return self._map(lambda v, shared: v if shared else v[b:b + 1], lambda t: t.item(b))
