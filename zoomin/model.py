"""``ZoomInNet`` (two-stage hierarchical attention sampling, §2.2) and ``AttentionSamplingNet``
(the one-stage ATS baseline, §2.1). They share ``attend`` (stage I, eq 1), the feature net ``f``
and ``classify`` (g); ``ZoomInNet`` adds ``zoom`` (stage II, eq 4). A forward pass is vectorised
over the batch, the tiles and the samples, and returns one ``Trace``.

Inference modes:

* ``mode="sample"`` (default, also used for training): Monte-Carlo estimates, eq 3 / eq 9. Two
  passes with different generators give different (unbiased) predictions; average several
  passes to reduce variance.
* ``mode="topk"``: deterministic. Stage I keeps the ``N`` most attended tiles, stage II the
  ``topk_subtiles`` most attended sub-tiles of each, and the attention is renormalised over what
  was kept (a truncation of eq 2 / eq 5, not an unbiased estimate).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from . import foreground
from .config import ModelConfig
from .geometry import subtile_boxes, tile_boxes, view_size
from .nets import AttentionNet, Classifier, build_backbone
from .sampling import (Draws, expected_topk, expected_with_replacement, expected_without_replacement,
                       gumbel_top_k, sample_with_replacement, subtile_weights, top_locations)
from .sources import Source, as_source
from .trace import Trace


def complement_log_probs(log_p: torch.Tensor, fg: torch.Tensor | None = None) -> torch.Tensor:
    """Contrastive sampling distribution ``(1 - p)`` normalised, in log space (METHOD §6, §2.3),
    over the same foreground as ``p``."""
    if log_p.shape[-1] == 1:
        return log_p
    return foreground.apply(torch.log1p(-log_p.exp().clamp(max=1 - 1e-6)), fg)


class _AttentionSampler(nn.Module):
    """What both models share: stage-I attention ``a``, features ``f``, classifier ``g``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.attention1 = AttentionNet(cfg.in_channels, cfg.attention_hidden, cfg.attention_depth)
        self.features = build_backbone(cfg.backbone, in_channels=cfg.in_channels, out_dim=cfg.feature_dim,
                                       width=cfg.feature_width, depth=cfg.feature_depth,
                                       norm=cfg.feature_norm)
        self.classifier = Classifier(cfg.feature_dim, cfg.num_classes, cfg.dropout)

    def attend(self, src: Source) -> tuple[torch.Tensor, tuple[int, int], torch.Tensor | None, torch.Tensor | None]:
        """Stage I, eq 1: ``alpha = softmax(a(V(x, s1)))`` over the foreground -> log alpha (B, h*w),
        the view size, the per-image foreground threshold (B,) and mask (B, h*w) (None: no mask)."""
        view = src.view(self.stage1_scale(src.size))  # (B, C, h, w)
        logits = self.attention1(view)  # (B, h, w)
        threshold = foreground.fit(view, self.cfg.foreground)
        fg = foreground.mask(view, threshold, self.cfg.foreground)
        return foreground.apply(logits.flatten(1).float(), fg), tuple(logits.shape[-2:]), threshold, fg

    def stage1_scale(self, size: tuple[int, int]) -> float:
        """``s1``: ``scale1``, or with ``view_size`` the scale that gives a view of that many pixels
        on its longer side (so stage I costs the same on any slide size)."""
        if self.cfg.view_size:
            return min(1.0, self.cfg.view_size / max(size))
        return self.cfg.scale1

    def classify(self, z: torch.Tensor) -> torch.Tensor:
        """``g(z)`` -> class logits (B, classes)."""
        return self.classifier(z)

    def draw(self, log_alpha: torch.Tensor, n: int, mode: str, generator=None) -> Draws:
        if mode == "sample":
            return sample_with_replacement(log_alpha.exp(), n, generator)
        if mode == "topk":
            return top_locations(log_alpha, n)
        raise ValueError(f"mode must be 'sample' or 'topk', got {mode!r}")

    def forward(self, x, n: int | None = None, mode: str = "sample", negatives: bool = False,
                generator: torch.Generator | None = None) -> Trace:
        """x: (B, C, H, W) tensor or a ``Source``. ``negatives=True`` adds the contrastive trace."""
        src = as_source(x)
        if src.channels != self.cfg.in_channels:
            raise ValueError(f"model expects {self.cfg.in_channels} channel(s), the input has {src.channels}")
        n = n or self.cfg.n_samples
        log_alpha, view_hw, threshold, fg = self.attend(src)
        trace = self.aggregate(src, log_alpha, view_hw, n, mode, generator, threshold)
        if negatives and log_alpha.shape[-1] > 1:
            trace.negatives = self.aggregate(src, complement_log_probs(log_alpha, fg), view_hw, n, mode,
                                             generator, threshold, complement=True)
        return trace


class AttentionSamplingNet(_AttentionSampler):
    """One-stage attention sampling (ATS, eqs 1-3): ``N`` full-resolution ``tile x tile`` patches
    drawn from the attention over ``V(x, scale1)``."""

    def aggregate(self, src, log_alpha, view_hw, n, mode, generator=None, threshold=None,
                  complement=False) -> Trace:
        cfg, B = self.cfg, src.batch_size
        draws = self.draw(log_alpha, n, mode, generator)
        valid = draws.valid  # (B, P)
        boxes = tile_boxes(draws.index, view_hw, src.size, (cfg.tile, cfg.tile))  # (B, P, 4)
        rows = torch.arange(B, device=boxes.device)[:, None].expand_as(draws.index)
        patches = src.read(rows[valid], boxes[valid], 1.0, (cfg.tile, cfg.tile))  # (M, C, t, t)
        f = self.features(patches).float()  # (M, D): once per distinct patch
        feats = f.new_zeros(*valid.shape, f.shape[-1])
        feats[valid] = f  # (B, P, D)
        la = log_alpha.gather(1, draws.index)  # (B, P)
        if mode == "sample":
            z = expected_with_replacement(la, draws.count.unsqueeze(-1) * feats, n)  # eq 3
            weights = draws.count.float() / n
        else:
            z = expected_topk(la, feats)
            weights = la.detach().softmax(-1)
        zeros = torch.zeros_like(draws.index).unsqueeze(-1)
        return Trace(logits=self.classify(z), alpha=log_alpha.exp().view(B, *view_hw), tile_index=draws.index,
                     tile_counts=draws.count, tile_boxes=boxes, subtile_index=zeros, subtile_valid=valid.unsqueeze(-1),
                     subtile_boxes=boxes.unsqueeze(2), weights=weights.unsqueeze(-1), features=feats.unsqueeze(2),
                     contributions=self.classifier.contributions(weights, feats).unsqueeze(2), z=z,
                     log_alpha=log_alpha, image_size=src.size, mode=mode, scale1=self.stage1_scale(src.size))


class ZoomInNet(_AttentionSampler):
    """The Zoom-In network (§2.2, eqs 4-9): stage-I tiles from ``V(x, scale1)``, each viewed at
    ``scale2`` for its stage-II attention ``beta``, from which full-resolution sub-tiles are drawn
    without replacement. Only sub-tiles are ever read at full resolution."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        self.attention2 = AttentionNet(cfg.in_channels, cfg.attention_hidden, cfg.attention_depth)
        self.subview_hw = view_size(cfg.tile, cfg.tile, cfg.scale2)  # (u, v)

    def zoom(self, src: Source, rows: torch.Tensor, boxes: torch.Tensor,
             threshold: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Stage II, eq 4: ``beta^c = softmax(b(V(x, s2, c)))`` for tiles ``boxes`` (M, 4) of images
        ``rows`` (M,) -> log beta (M, u*v) and its foreground mask. Called once per distinct tile."""
        views = src.read(rows, boxes, self.cfg.scale2, self.subview_hw)  # (M, C, u, v)
        fg = foreground.mask(views, None if threshold is None else threshold[rows], self.cfg.foreground)
        return foreground.apply(self.attention2(views).flatten(1).float(), fg), fg

    def aggregate(self, src, log_alpha, view_hw, n, mode, generator=None, threshold=None,
                  complement=False) -> Trace:
        cfg, B = self.cfg, src.batch_size
        tile_hw, sub_hw, (u, v) = (cfg.tile, cfg.tile), (cfg.subtile, cfg.subtile), self.subview_hw
        S = u * v
        draws = self.draw(log_alpha, n, mode, generator)
        valid = draws.valid  # (B, P)
        boxes = tile_boxes(draws.index, view_hw, src.size, tile_hw)  # (B, P, 4)
        rows = torch.arange(B, device=boxes.device)[:, None].expand_as(draws.index)  # (B, P)
        log_beta = torch.full((*valid.shape, S), -math.log(S), device=boxes.device)  # padding: uniform
        log_beta[valid], fg_valid = self.zoom(src, rows[valid], boxes[valid], threshold)  # (B, P, S)
        if complement:
            fg = None
            if fg_valid is not None:
                fg = torch.ones_like(log_beta, dtype=torch.bool)
                fg[valid] = fg_valid
            lb = complement_log_probs(log_beta, fg)
        else:
            lb = log_beta
        k = draws.count if mode == "sample" else torch.full_like(draws.count, cfg.topk_subtiles) * valid
        kmax = max(1, min(int(k.max()), S))
        sub = gumbel_top_k(lb, kmax, generator) if mode == "sample" else lb.detach().topk(kmax, -1).indices
        used = torch.arange(kmax, device=sub.device) < k.clamp(max=S).unsqueeze(-1)  # (B, P, kmax)
        sboxes = subtile_boxes(boxes, sub, (u, v), tile_hw, sub_hw)  # (B, P, kmax, 4)
        patches = src.read(rows.unsqueeze(-1).expand_as(sub)[used], sboxes[used], 1.0, sub_hw)  # (M, C, h2, w2)
        f = self.features(patches).float()  # (M, D): each drawn sub-tile exactly once
        feats = f.new_zeros(*used.shape, f.shape[-1])
        feats[used] = f  # (B, P, kmax, D)
        la, lb_sel = log_alpha.gather(1, draws.index), lb.gather(-1, sub)  # (B, P), (B, P, kmax)
        if mode == "sample":
            tile_sums = expected_without_replacement(lb_sel, feats, draws.count, S) * valid.unsqueeze(-1)  # eq 9
            z = expected_with_replacement(la, tile_sums, n)  # (B, D), eqs 3 + 9
            weights = subtile_weights(lb_sel, draws.count, S) / n
        else:
            lb_kept = lb_sel.masked_fill(~used, -float("inf"))
            z = expected_topk(la, expected_topk(lb_kept, feats))
            weights = la.detach().softmax(-1).unsqueeze(-1) * lb_kept.detach().softmax(-1)
        return Trace(logits=self.classify(z), alpha=log_alpha.exp().view(B, *view_hw), tile_index=draws.index,
                     tile_counts=draws.count, tile_boxes=boxes, subtile_index=sub, subtile_valid=used,
                     subtile_boxes=sboxes, weights=weights, features=feats, z=z, log_alpha=log_alpha,
                     contributions=self.classifier.contributions(weights, feats),
                     beta=lb.exp().view(B, -1, u, v), log_beta=lb, image_size=src.size, mode=mode,
                     scale1=self.stage1_scale(src.size), scale2=cfg.scale2)


def build_model(cfg: ModelConfig) -> _AttentionSampler:
    return ZoomInNet(cfg) if cfg.kind == "zoom_in" else AttentionSamplingNet(cfg)
