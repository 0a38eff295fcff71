"""Reading several sampled passes out as one prediction (``model.test_pooling``).

The Monte-Carlo readouts average each pass's class probabilities: the model's expectation over
its draws (eqs 3 / 9), whatever a pass pooled (``features`` or ``probabilities``).

``places`` is not an estimate of that expectation: it counts. The draws of all passes are
grouped into *places* (draws whose patch centres lie within ``radius`` level-0 pixels of each
other, chained: connected components), each place's class probabilities are the mean of its
draws' ``softmax(g(f))``, and every place the reader is sure of (largest class probability
>= ``min_confidence``) votes with them. A place drawn at least ``full_rate`` times per pass on
average casts a whole vote, a place drawn less often that share of one: an object drawn every
other pass weighs what an object drawn twenty times a pass weighs, while the places a few stray
draws visit — whose number grows with the passes — stay small; places the reader is unsure of (background, fragments,
noise) stay silent. It suits labels that count objects — Megapixel MNIST's label is the digit class present
most often, and there the mixture lets one salient distractor the attention draws often outvote
three faint label digits (docs/benchmarks.md, "Counting places"). It does not suit labels meaning
"some object present", where one place should decide. An image with no confident place is read
as the mean of its draws' class probabilities.
"""
from __future__ import annotations

import torch

from .trace import Trace

READOUTS = ("mean", "places")


def connected_places(centres: torch.Tensor, valid: torch.Tensor, radius: float) -> torch.Tensor:
    """Connected components of the draws under "centres closer than ``radius``": centres (B, M, 2),
    valid (B, M) bool -> (B, M) long, each draw labelled with the smallest index in its place
    (invalid draws: M). Min-label propagation over the (B, M, M) adjacency, all images at once."""
    B, M = valid.shape
    near = torch.cdist(centres.float(), centres.float()) < radius  # (B, M, M)
    near &= valid[:, :, None] & valid[:, None, :]
    sentinel = torch.full((B, M), M, dtype=torch.long, device=valid.device)
    labels = torch.where(valid, torch.arange(M, device=valid.device).expand(B, M), sentinel)  # (B, M)
    for _ in range(M):  # a place's label reaches all its draws in at most M - 1 steps
        spread = torch.where(near, labels[:, None, :], M).amin(-1)  # (B, M) smallest label of a neighbour
        new = torch.minimum(labels, spread)
        if torch.equal(new, labels):
            break
        labels = new
    return labels


def place_vote(centres: torch.Tensor, probs: torch.Tensor, valid: torch.Tensor, radius: float,
               min_confidence: float = 0.5, passes: int = 1, full_rate: float = 0.5) -> torch.Tensor:
    """The ``places`` readout (module doc): centres (B, M, 2) level-0, probs (B, M, classes) each
    draw's class probabilities, valid (B, M) bool, all from ``passes`` passes -> (B, classes)
    probabilities: the normalised sum of the confident places' mean probabilities, each weighted by
    min(1, its draws / (full_rate x passes)); the plain mean of the valid draws where no place is
    confident."""
    B, M, C = probs.shape
    probs = probs.float() * valid[..., None]
    labels = connected_places(centres, valid, radius).clamp(max=M - 1)  # invalid draws add zeros below
    sums = torch.zeros(B, M, C, device=probs.device).scatter_add_(1, labels[..., None].expand(B, M, C), probs)
    counts = torch.zeros(B, M, device=probs.device).scatter_add_(1, labels, valid.float())  # (B, M) draws per place
    place = sums / counts.clamp(min=1)[..., None]  # (B, M, C) mean probabilities of each place
    sure = (counts > 0) & (place.amax(-1) >= min_confidence)  # (B, M)
    vote = sure * (counts / max(full_rate * passes, 1e-12)).clamp(max=1)  # (B, M) whole once drawn often enough
    votes = (place * vote[..., None]).sum(1)  # (B, C)
    mixture = probs.sum(1) / valid.sum(1, keepdim=True).clamp(min=1)  # (B, C)
    return torch.where(sure.any(1, keepdim=True), votes / votes.sum(-1, keepdim=True).clamp(min=1e-12), mixture)


def _draws(traces: list[Trace]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The draws of several passes of one batch side by side -> centres (B, M, 2), probs
    (B, M, classes), valid (B, M)."""
    if any(t.draw_probs is None for t in traces):
        raise ValueError("the places readout needs each draw's class probabilities: read the model out "
                         "with model.test_pooling 'places' (eval mode)")
    boxes = torch.cat([t.subtile_boxes.flatten(1, -2) for t in traces], 1).float()  # (B, M, 4) x, y, w, h
    centres = boxes[..., :2] + boxes[..., 2:] / 2
    probs = torch.cat([t.draw_probs.flatten(1, -2) for t in traces], 1)
    valid = torch.cat([t.subtile_valid.flatten(1) for t in traces], 1)
    order = torch.sort(valid.byte(), dim=1, descending=True, stable=True).indices  # drawn first: M = the most drawn
    m = max(int(valid.sum(1).max()), 1)
    keep = order[:, :m]  # (B, m)
    return (centres.gather(1, keep[..., None].expand(-1, -1, 2)),
            probs.gather(1, keep[..., None].expand(-1, -1, probs.shape[-1])), valid.gather(1, keep))


def read_out(traces: list[Trace], readout: str = "mean", radius: float = 0.0,
             min_confidence: float = 0.5, full_rate: float = 0.5) -> torch.Tensor:
    """Passes of one batch (a list of traces, one per pass) -> class probabilities (B, classes).
    ``mean``: the mean of the passes' probabilities. ``places``: ``place_vote`` over all their
    draws; ``radius`` 0 means half the side of the patches fed to ``f``."""
    if readout not in READOUTS:
        raise ValueError(f"readout must be one of {READOUTS}, got {readout!r}")
    if readout == "mean":
        return torch.stack([t.logits.float().softmax(-1) for t in traces]).mean(0)
    centres, probs, valid = _draws(traces)
    radius = radius or float(traces[0].subtile_boxes[..., 2:].amax()) / 2
    return place_vote(centres, probs, valid, radius, min_confidence, len(traces), full_rate)
