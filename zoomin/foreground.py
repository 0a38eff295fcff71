"""Foreground masks that remove background from the attention distributions.

For a slide this is the tissue mask; for Megapixel MNIST it is the ink. A threshold is fitted per
image on the stage-I view (Otsu by default) and applied to that view and to every stage-II view
of the same image, so both sampling stages only ever draw locations with content. Masked
locations get a log-probability of ``MASKED`` (finite, so entropies stay finite); an image with no
foreground at all keeps every location.
"""
from __future__ import annotations

import torch

MASKED = -1e4  # log-probability offset of a background location (exp() underflows to exactly 0)
BINS = 64


def gray(view: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h, w) channel mean."""
    return view.float().mean(1)


def histogram(values: torch.Tensor, lo: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
    """``BINS``-bin histogram per row of ``values`` (B, L) over ``[lo, lo + span]`` (B, 1) -> (B, BINS).
    Histograms of the pieces of a view add up to the histogram of the view (streamed stage I)."""
    idx = ((values - lo) / span * (BINS - 1)).round().long()  # (B, L)
    return torch.zeros(values.shape[0], BINS, device=values.device).scatter_add_(1, idx, torch.ones_like(values))


def otsu_cut(hist: torch.Tensor, lo: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
    """Otsu's threshold from a ``histogram`` (B, BINS) of the values in ``[lo, lo + span]`` -> (B,)."""
    p = hist / hist.sum(-1, keepdim=True)
    centres = torch.arange(BINS, device=hist.device, dtype=torch.float32)
    w0 = p.cumsum(-1)  # (B, BINS) class-0 weight for a cut after each bin
    m0 = (p * centres).cumsum(-1)
    mt = m0[:, -1:]
    between = (mt * w0 - m0) ** 2 / (w0 * (1 - w0)).clamp(min=1e-12)
    cut = between[:, :-1].argmax(-1)  # (B,)
    return lo.squeeze(-1) + (cut.float() + 0.5) / (BINS - 1) * span.squeeze(-1)


def otsu_threshold(values: torch.Tensor) -> torch.Tensor:
    """Otsu's threshold per row of ``values`` (B, L), vectorised over rows -> (B,)."""
    lo, hi = values.min(-1, keepdim=True).values, values.max(-1, keepdim=True).values
    span = (hi - lo).clamp(min=1e-12)
    return otsu_cut(histogram(values, lo, span), lo, span)


def check(kind: str) -> str:
    """``kind`` if it is a foreground rule zoomin knows, else a one-line error."""
    if kind not in ("none", "otsu_bright", "otsu_dark"):
        raise ValueError(f"foreground must be 'none', 'otsu_bright' or 'otsu_dark', got {kind!r}")
    return kind


def fit(view: torch.Tensor, kind: str) -> torch.Tensor | None:
    """Per-image threshold (B,) from the stage-I view, or None for ``kind == "none"``."""
    if check(kind) == "none":
        return None
    return otsu_threshold(gray(view).flatten(1))


def mask(view: torch.Tensor, threshold: torch.Tensor | None, kind: str) -> torch.Tensor | None:
    """Foreground locations of ``view`` (B, C, h, w) under per-image ``threshold`` (B,) -> (B, h*w) bool.

    Rows with no foreground become all-True (nothing is masked). Under ``otsu_dark`` exact zeros
    (the padding where a tile sticks out of the image) are background, however dark."""
    if threshold is None:
        return None
    fg = raw_mask(view, threshold, kind)
    return fg | ~fg.any(-1, keepdim=True)


def raw_mask(view: torch.Tensor, threshold: torch.Tensor, kind: str) -> torch.Tensor:
    """``mask`` before rows with no foreground are given back every location -> (B, h*w) bool."""
    g = gray(view).flatten(1)  # (B, h*w)
    t = threshold.view(-1, 1)
    return g > t if kind == "otsu_bright" else (g < t) & (g > 0)  # 0: the zero padding outside the image


def apply(logits: torch.Tensor, fg: torch.Tensor | None) -> torch.Tensor:
    """Log-softmax of ``logits`` (..., L) with background moved to ``MASKED``."""
    if fg is not None:
        logits = logits + (~fg).to(logits.dtype) * MASKED
    return logits.log_softmax(-1)
