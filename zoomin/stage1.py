"""Stage I (eq 1) over a view of any size, streamed in pieces (METHOD §2, §3).

``alpha = softmax(a(V(x, s1)))`` over the foreground, computed without ever holding the attention
net's activations for the whole view:

* the view (uint8 pixels for a slide) is cut into ``chunk x chunk`` pieces; each piece goes
  through ``a`` with a halo of ``a``'s receptive field around it and only its own locations are
  kept, so every location sees exactly what it sees in the one-piece computation (at the view's
  border the net's own zero padding applies, as it does in one piece);
* pieces without foreground are skipped (their locations are masked out of alpha anyway);
* under autograd each piece is gradient-checkpointed: its activations are recomputed in the
  backward pass instead of being kept;
* the foreground threshold (Otsu) and the standardisation statistics are fitted from per-piece
  histograms and moments, which add up to the whole view's.

Peak memory: one piece's activations, the logits map (4 bytes per location), the foreground mask
(1 byte) and the view's pixels. ``chunk = 0`` is the one-piece computation.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from . import foreground
from .evidence import (attention_logits, evidence_class_logits, mean_finite, moment_stats, moments, pooled_logits,
                       standardise, top_values)


@dataclass
class Stage1:
    """What stage I (eq 1) computed for a batch; later stages (and extra heads) read it."""

    log_alpha: torch.Tensor  # (B, h*w) log alpha, background at foreground.MASKED
    view_hw: tuple[int, int]  # (h, w) of the view
    scale: float  # s1
    view: torch.Tensor  # (B, C, h, w) V(x, s1) as the source gave it (uint8 pixels for a slide)
    threshold: torch.Tensor | None = None  # (B,) foreground threshold fitted on the view (None: no mask)
    fg: torch.Tensor | None = None  # (B, h*w) bool foreground mask (None: no mask)
    evidence_logits: torch.Tensor | None = None  # (B, classes) evidence pooled over the foreground (METHOD §10)
    stats: tuple | None = None  # ((B, C), (B, C)) foreground mean and std the views are standardised with

    def standardised(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Stage-II views or patches ``x`` (M, C, h, w) of images ``rows`` (M,) standardised with their
        image's stage-I statistics (unchanged without evidence heads)."""
        if self.stats is None:
            return x
        return standardise(x, None, (self.stats[0][rows], self.stats[1][rows]))[0]


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Pixels as floats in [0, 1]: uint8 is divided by 255, floats pass through."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x.float()


def pieces(h: int, w: int, chunk: int) -> list[tuple[int, int, int, int]]:
    """``(r0, r1, c0, c1)`` of the ``chunk x chunk`` pieces covering an ``h x w`` view (one piece if
    ``chunk <= 0``)."""
    if chunk <= 0:
        return [(0, h, 0, w)]
    return [(r, min(r + chunk, h), c, min(c + chunk, w)) for r in range(0, h, chunk) for c in range(0, w, chunk)]


def fit(view: torch.Tensor, kind: str, with_stats: bool, chunk: int = 0):
    """Foreground threshold (B,) and mask (B, h*w) (``zoomin.foreground``), and with ``with_stats``
    the foreground mean and std (B, C) each, of ``view`` (B, C, h, w), piece by piece -> (threshold,
    fg, stats); None for what is not asked for."""
    B, C, h, w = view.shape
    grid = pieces(h, w, chunk)
    threshold = fg = stats = None
    if foreground.check(kind) != "none":
        def greys():  # (B, piece locations) grey levels, one piece at a time
            return (foreground.gray(to_unit(view[..., r0:r1, c0:c1])).flatten(1) for r0, r1, c0, c1 in grid)
        lo = torch.stack([g.min(-1).values for g in greys()]).min(0).values.unsqueeze(-1)  # (B, 1)
        hi = torch.stack([g.max(-1).values for g in greys()]).max(0).values.unsqueeze(-1)
        span = (hi - lo).clamp(min=1e-12)
        threshold = foreground.otsu_cut(sum(foreground.histogram(g, lo, span) for g in greys()), lo, span)
        fg = torch.empty(B, h, w, dtype=torch.bool, device=view.device)
        for r0, r1, c0, c1 in grid:
            fg[:, r0:r1, c0:c1] = foreground.raw_mask(to_unit(view[..., r0:r1, c0:c1]), threshold, kind).view(
                B, r1 - r0, c1 - c0)
        fg = fg.flatten(1)
        fg |= ~fg.any(-1, keepdim=True)  # an image with no foreground keeps every location
    if with_stats:
        fgv = None if fg is None else fg.view(B, h, w)
        parts = [moments(to_unit(view[..., r0:r1, c0:c1]), None if fgv is None else fgv[:, r0:r1, c0:c1].flatten(1))
                 for r0, r1, c0, c1 in grid]
        stats = moment_stats(*(sum(p[i] for p in parts) for i in range(3)))
    return threshold, fg, stats


def _logits(net, x: torch.Tensor, stats) -> torch.Tensor:
    """``a`` on one piece of raw pixels (standardised first when ``stats``) -> (B, E, h, w)."""
    x = to_unit(x)
    return net(x if stats is None else standardise(x, None, stats)[0])


def attend(net, view: torch.Tensor, scale: float, kind: str, sharpness: float = 1.0, evidence: bool = False,
           topk: int = 8, chunk: int = 0, device: torch.device | None = None) -> Stage1:
    """Stage I, eq 1, on ``view`` (B, C, h, w) with attention net ``net`` (``zoomin.nets.AttentionNet``):
    log alpha over the foreground; with ``evidence``, ``net``'s output is the evidence map, pooled
    by a top-``topk`` mean over the foreground (``zoomin.evidence``, METHOD §10) and standardised
    inputs. Streamed in ``chunk x chunk`` pieces (0: one piece); the result equals one piece. The
    view stays where it is (a slide's on the CPU); each piece moves to ``device`` (the net's)."""
    B, C, h, w = view.shape
    device = device or view.device
    threshold, fg, stats = fit(view, kind, evidence, chunk)
    threshold, fg, stats = (None if threshold is None else threshold.to(device), None if fg is None else fg.to(device),
                            None if stats is None else tuple(t.to(device) for t in stats))
    grid, halo, grad = pieces(h, w, chunk), net.halo, torch.is_grad_enabled()
    fgv = None if fg is None else fg.view(B, h, w)
    att = torch.full((B, h, w), foreground.MASKED, device=device)  # (B, h, w) skipped pieces: background
    ev_map = torch.zeros(B, net.out_channels, h, w, device=device) if evidence and grad else None
    top = None  # (B, E, k) the largest foreground evidence so far (without autograd)
    for r0, r1, c0, c1 in grid:
        f = None if fgv is None else fgv[:, r0:r1, c0:c1]  # (B, ph, pw)
        if f is not None and not f.any():
            continue
        a0, a1, b0, b1 = max(0, r0 - halo), min(h, r1 + halo), max(0, c0 - halo), min(w, c1 + halo)
        x = view[:, :, a0:a1, b0:b1].to(device)
        out = checkpoint(_logits, net, x, stats, use_reentrant=False) if grad and len(grid) > 1 else _logits(net, x, stats)
        out = out[..., r0 - a0:r1 - a0, c0 - b0:c1 - b0].float()  # (B, E, ph, pw) the piece's own locations
        a = attention_logits(out, sharpness)  # (B, ph, pw)
        att[:, r0:r1, c0:c1] = a if f is None else a + (~f).to(a.dtype) * foreground.MASKED
        if ev_map is not None:
            ev_map[..., r0:r1, c0:c1] = out
        elif evidence:
            valid = None if f is None else f.flatten(1).unsqueeze(1)  # (B, 1, ph*pw)
            cand = top_values(out.flatten(2), valid, topk)
            top = cand if top is None else top_values(torch.cat([top, cand], -1), None, topk)
    att = att.flatten(1)  # (B, h*w)
    log_alpha = att.log_softmax(-1) if grad else att.sub_(att.logsumexp(-1, keepdim=True))  # in place: one map
    pooled = None
    if ev_map is not None:
        pooled = pooled_logits(ev_map.flatten(2), None if fg is None else fg.unsqueeze(1), topk)
    elif evidence:
        pooled = evidence_class_logits(mean_finite(top)) if top is not None else None
    return Stage1(log_alpha, (h, w), scale, view, threshold, fg, pooled, stats)
