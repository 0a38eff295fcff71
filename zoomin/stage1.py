"""Stage I (eq 1) over a view of any size, streamed in pieces (method §3, §12).

``alpha = softmax(a(V(x, s1)))`` over the foreground, computed without ever holding the attention
net's activations for the whole view:

* the view (uint8 pixels for a slide) is cut into ``chunk x chunk`` pieces; each piece goes
  through ``a`` with a halo of ``a``'s receptive field around it and only its own locations are
  kept, so every location sees exactly what it sees in the one-piece computation (at the view's
  border the net's own zero padding applies, as it does in one piece);
* pieces without foreground are skipped (their locations are masked out of alpha anyway);
* under autograd each piece is gradient-checkpointed: its activations are recomputed in the
  backward pass instead of being kept;
* the foreground threshold (Otsu) and the standardisation statistics are fitted once, on an
  evenly strided sample of at most ``FIT_LOCATIONS`` view locations (every location of a
  view up to that size, e.g. any training slide); each piece's mask is computed with it.

Peak memory: one piece's activations and the logits map (4 bytes per location), plus the view's
pixels unless it is streamed from the source (``Bands``); the foreground mask is read off alpha.
``chunk = 0`` is the one-piece computation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import torch
from torch.utils.checkpoint import checkpoint

from . import foreground
from .sampling import BLOCKED_ABOVE, block_masses
from .sources import to_unit
from .evidence import (attention_logits, evidence_class_logits, mean_finite, moment_stats, moments, outlier_score,
                       pooled_logits, standardise, top_values, whitening)


@dataclass
class Stage1:
    """What stage I (eq 1) computed for a batch; later stages (and extra heads) read it."""

    log_alpha: torch.Tensor  # (B, h*w) log alpha, background at foreground.MASKED
    view_hw: tuple[int, int]  # (h, w) of the view
    scale: float  # s1
    view: torch.Tensor | None  # (B, C, h, w) V(x, s1) as the source gave it (uint8 for a slide; None when streamed)
    threshold: torch.Tensor | None = None  # (B,) foreground threshold fitted on the view (None: no mask)
    evidence_logits: torch.Tensor | None = None  # (B, classes) evidence pooled over the foreground (method §10)
    stats: tuple | None = None  # ((B, C), (B, C)) foreground mean and std the views are standardised with
    count_logits: torch.Tensor | None = None  # (B, classes) the stain counts' logits (zoomin.counts, method §10.6)
    count_map: torch.Tensor | None = None  # (B, h*w) what the counted pixels of each location weigh (zoomin.counts)

    def tilt(self, logits: torch.Tensor) -> None:
        """alpha times ``exp(logits)`` (B, h*w), renormalised over the foreground (background stays at
        ``foreground.MASKED``): another map's say in where stage I looks (the count map)."""
        self.log_alpha = (self.log_alpha + logits).log_softmax(-1)
        self.__dict__.pop("masses", None)  # recomputed from the tilted alpha when asked

    @property
    def fg(self) -> torch.Tensor | None:
        """(B, h*w) bool foreground mask (None: no mask), read off alpha: background locations sit at
        ``foreground.MASKED`` (no second map of the view's size is kept)."""
        if self.threshold is None:
            return None
        return self.log_alpha.detach() > foreground.MASKED / 2

    @cached_property
    def masses(self) -> torch.Tensor | None:
        """``zoomin.sampling.block_masses`` of alpha on a view large enough to be sampled in blocks
        (computed once, shared by the passes that redraw from it); None otherwise."""
        if self.log_alpha.shape[-1] <= BLOCKED_ABOVE:
            return None
        return block_masses(self.log_alpha)

    def once(self, name: str, keys: torch.Tensor, compute: Callable, keep: bool = True) -> tuple:
        """What ``compute(new)`` gives for the items ``keys`` (M,) (distinct; ``name`` says what they
        are: stage II's tiles, ``f``'s patches), ``new`` a bool mask over ``keys``, as a tuple of
        (n, ...) tensors (or None). With ``keep`` and no autograd each item is computed once over the
        passes that share this Stage1 (``zoomin.readout.iter_passes``: a trained alpha draws the same
        few tiles in every pass) and kept here; otherwise every call computes them all."""
        if torch.is_grad_enabled() or not keep or not len(keys):
            return compute(torch.ones_like(keys, dtype=torch.bool))
        kept = self.__dict__.setdefault("_once", {}).get(name)  # (keys (K,), values) computed so far
        new = torch.ones_like(keys, dtype=torch.bool) if kept is None else ~torch.isin(keys, kept[0])  # (M,)
        if new.any():
            out = compute(new)
            kept = (keys[new], out) if kept is None else (torch.cat([kept[0], keys[new]]), tuple(
                None if a is None else torch.cat([a, b]) for a, b in zip(kept[1], out)))
            self._once[name] = kept
        at = (keys[:, None] == kept[0][None, :]).int().argmax(1)  # (M,) where each item is kept
        return tuple(None if v is None else v[at] for v in kept[1])

    def standardised(self, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Stage-II views or patches ``x`` (M, C, h, w) of images ``rows`` (M,) standardised with their
        image's stage-I statistics (unchanged without evidence heads)."""
        if self.stats is None:
            return x
        return standardise(x, None, (self.stats[0][rows], self.stats[1][rows]))[0]


STREAM_ABOVE = BLOCKED_ABOVE  # stage-I views with more locations are read from the source band by band (``Bands``)
# instead of held. Another saving than ``zoomin.sampling.BLOCKED_ABOVE``'s (the view's pixels, not alpha's
# draws), at the same size of view; each can be changed (or patched in a test) without the other
BAND = 1024  # rows per band when the fit samples a streamed view


@dataclass
class Bands:
    """A stage-I view read band by band, never whole: ``rows(r0, r1)`` -> (B, C, r1 - r0, w) pixels
    (``SlideSource.view_rows``); ``shape`` is the view's (B, C, h, w)."""

    rows: Callable[[int, int], torch.Tensor]
    shape: tuple[int, int, int, int]


def _rows(view, r0: int, r1: int) -> torch.Tensor:
    """Rows ``r0:r1`` of a view (a tensor or ``Bands``) -> (B, C, r1 - r0, w)."""
    return view[:, :, r0:r1] if isinstance(view, torch.Tensor) else view.rows(r0, r1)


def _spans(n: int, chunk: int) -> list[tuple[int, int]]:
    return [(0, n)] if chunk <= 0 else [(a, min(a + chunk, n)) for a in range(0, n, chunk)]


def pieces(h: int, w: int, chunk: int) -> list[tuple[int, int, int, int]]:
    """``(r0, r1, c0, c1)`` of the ``chunk x chunk`` pieces covering an ``h x w`` view (one piece if
    ``chunk <= 0``)."""
    return [(r0, r1, c0, c1) for r0, r1 in _spans(h, chunk) for c0, c1 in _spans(w, chunk)]


FIT_LOCATIONS = 2**18  # the threshold and statistics are fitted on at most about this many view locations


def fit_stride(h: int, w: int) -> int:
    """Every how many rows and columns the fit samples the view: 1 up to ``FIT_LOCATIONS``."""
    return max(1, math.ceil(math.sqrt(h * w / FIT_LOCATIONS)))


def fit(view: torch.Tensor, kind: str, with_stats: bool, whiten: bool = False):
    """Foreground threshold (B,) (``zoomin.foreground``, Otsu), whether each image has foreground
    (B,) bool, and with ``with_stats`` the foreground mean and std (B, C) each (``zoomin.evidence``),
    of ``view`` (B, C, h, w), on an evenly strided sample of at most about ``FIT_LOCATIONS``
    locations (every location of a view up to that size) -> (threshold, has_fg, stats); None for
    what is not asked for. The same sample whether or not stage I is streamed. ``whiten`` (with
    stats) adds a fourth result, ``zoomin.evidence.whitening`` of the sample."""
    h, k = view.shape[-2], fit_stride(*view.shape[-2:])
    if isinstance(view, torch.Tensor):
        sample = to_unit(view[..., ::k, ::k])  # (B, C, h/k, w/k)
    else:  # bands whose first row is a multiple of k
        band, (B, C, _, w) = math.ceil(BAND / k) * k, view.shape
        sample = torch.empty(B, C, math.ceil(h / k), math.ceil(w / k))  # (B, C, h/k, w/k) before the bands
        for r in range(0, h, band):
            sample[:, :, r // k:(r + band) // k] = to_unit(view.rows(r, min(h, r + band))[..., ::k, ::k])
    threshold = foreground.fit(sample, kind)
    has_fg = fg = None
    if threshold is not None:
        fg = foreground.raw_mask(sample, threshold, kind)  # (B, L')
        has_fg = fg.any(-1)
        fg = fg | ~has_fg.unsqueeze(-1)  # an image with no foreground keeps every location
    stats = moment_stats(*moments(sample, fg)) if with_stats else None
    if whiten and stats is not None:  # the outlier prior's colour whitening, from the same sample
        return threshold, has_fg, stats, whitening(sample, fg, stats)
    return threshold, has_fg, stats


def _normalise_(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-softmax of ``x`` (B, L) in place (no temporary of ``x``'s size) and the
    ``zoomin.sampling.block_masses`` of the result, from one pass over ``exp(x - max)`` -> (x, masses)."""
    m = x.max(-1, keepdim=True).values  # (B, 1)
    masses = block_masses(x, shift=m)  # (B, blocks) sums of exp(x - m)
    total = masses.sum(-1, keepdim=True)  # (B, 1)
    return x.sub_(m + total.log().float()), masses / total


PRIOR_WINDOW = 5  # view pixels a side of the outlier prior's neighbourhood (zoomin.evidence.outlier_score)


def attend(net, view: torch.Tensor, scale: float, kind: str, sharpness: float = 1.0, evidence: bool = False,
           topk: int = 8, chunk: int = 0, device: torch.device | None = None, prior: float = 0.0,
           whiten: bool = False) -> Stage1:
    """Stage I, eq 1, on ``view`` (B, C, h, w) with attention net ``net`` (``zoomin.nets.AttentionNet``):
    log alpha over the foreground; with ``evidence``, ``net``'s output is the evidence map, pooled
    by a top-``topk`` mean over the foreground (``zoomin.evidence``, method §10) and standardised
    inputs; ``prior`` > 0 adds that times ``outlier_score`` of the standardised view (``whiten``: in
    the slide's whitened colours) to the evidence
    (method §10, the cold start). Streamed in ``chunk x chunk`` pieces (0: one piece); the result
    equals one piece. The view stays where it is (a slide's on the CPU); each piece moves to
    ``device`` (the net's)."""
    prior = prior if evidence else 0.0
    B, C, h, w = view.shape
    device = device or view.device
    threshold, has_fg, stats, *white = fit(view, kind, evidence, whiten=bool(prior) and whiten)
    white = white[0].to(device) if white else None  # (B, C, C) the prior's colour whitening (whiten)
    threshold, has_fg, stats = (None if threshold is None else threshold.to(device),
                                None if has_fg is None else has_fg.to(device),
                                None if stats is None else tuple(t.to(device) for t in stats))
    rows, cols, grad = _spans(h, chunk), _spans(w, chunk), torch.is_grad_enabled()
    halo = max(net.halo, PRIOR_WINDOW // 2 if prior else 0)  # what a piece needs around it
    one_piece = len(rows) * len(cols) == 1
    att = torch.full((B, h, w), foreground.MASKED, device=device)  # (B, h, w) skipped pieces: background
    fg = None if threshold is None or not (evidence and grad) else torch.zeros(B, h, w, dtype=torch.bool, device=device)
    ev_map = torch.zeros(B, net.out_channels, h, w, device=device) if evidence and grad else None
    tops = torch.full((B, net.out_channels, len(rows) * len(cols) * topk), -float("inf"), device=device) \
        if evidence and not grad else None  # (B, E, pieces x k) each piece's largest foreground evidence
    for i, (r0, r1, c0, c1) in enumerate((r0, r1, c0, c1) for r0, r1 in rows for c0, c1 in cols):
        a0, a1, b0, b1 = max(0, r0 - halo), min(h, r1 + halo), max(0, c0 - halo), min(w, c1 + halo)
        if c0 == 0:
            band = _rows(view, a0, a1)  # (B, C, ph + halos, w) the pieces' rows, read once per row of pieces
        x = to_unit(band[..., b0:b1].to(device))  # (B, C, ph + halos, pw + halos)
        own = (slice(None), slice(None), slice(r0 - a0, r1 - a0), slice(c0 - b0, c1 - b0))
        f = fgp = None  # (B, ph, pw) foreground of the piece's own locations; (B, ph + halos, pw + halos) with its halo
        if threshold is not None:
            fgp = foreground.raw_mask(x, threshold, kind).view(B, *x.shape[-2:]) | ~has_fg.view(B, 1, 1)
            f = fgp[own[1:]]
            if fg is not None:  # the evidence loss pools over it (training)
                fg[:, r0:r1, c0:c1] = f
            if not f.any():
                continue
        x = x if stats is None else standardise(x, None, stats)[0]  # once, for the net and the prior
        out = net(x) if one_piece or not grad else checkpoint(net, x, use_reentrant=False)
        out = out[own].float()  # (B, E, ph, pw) the piece's own locations
        if prior:  # a fixed score, no gradient: added after the (checkpointed) net
            out = out + prior * outlier_score(x, PRIOR_WINDOW, fgp, white)[own]  # (B, 1, ph, pw) broadcast
        a = attention_logits(out, sharpness)  # (B, ph, pw)
        att[:, r0:r1, c0:c1] = a if f is None else a + (~f).to(a.dtype) * foreground.MASKED
        if ev_map is not None:
            ev_map[..., r0:r1, c0:c1] = out
        elif evidence:
            valid = None if f is None else f.flatten(1).unsqueeze(1)  # (B, 1, ph*pw)
            cand = top_values(out.flatten(2), valid, topk)  # (B, E, <= k)
            tops[..., i * topk:i * topk + cand.shape[-1]] = cand
    fg = None if fg is None else fg.flatten(1)  # (B, h*w)
    att = att.flatten(1)  # (B, h*w)
    if grad:
        log_alpha, masses = att.log_softmax(-1), None
    else:  # in place: one map of the view's size
        log_alpha, masses = _normalise_(att)
    pooled = None
    if ev_map is not None:
        pooled = pooled_logits(ev_map.flatten(2), None if fg is None else fg.unsqueeze(1), topk)
    elif evidence:
        pooled = evidence_class_logits(mean_finite(top_values(tops, None, topk)))
    first = Stage1(log_alpha, (h, w), scale, view if isinstance(view, torch.Tensor) else None, threshold, pooled, stats)
    if masses is not None and log_alpha.shape[-1] > BLOCKED_ABOVE:
        first.__dict__["masses"] = masses  # what Stage1.masses would compute, from the pass just made
    return first
