"""Stain counts: a slide-level evidence that a convex head can learn from slide labels (method §10.6).

Small foci of a few stained cells (brown DAB on H&E, red cells, pale patches) are a handful of
pixels at a fine resolution and nothing at stage I's. A learnt per-pixel detector has to find the
stain's colour direction by gradient from a random start, and a pixel that is not already in the
tail it counts gives it no gradient (the cold start of method §10): on real tissue it stays at
chance. Counting is the part that needs no learning, so it is fixed; only the weighing is learnt:

* the slide is read at ``model.count_mpp`` (finer than stage I) and its foreground pixels are
  binned by colour (``colour_histogram``: 7 bits a channel, so a slide of any size is one vector
  of 2^21 counts, streamed band by band);
* each colour is turned into optical density (``optical_density``, Beer-Lambert: stains add there),
  standardised with the training slides' mean and spread, and projected on ``n`` directions
  spread evenly over the sphere (``directions``);
* a slide's features are ``log(1 + count)`` of its pixels beyond three tail quantiles of the
  training pixels along each direction (``CountHead.tails``); the quantiles, the standardisation and
  the features' own mean and spread are fitted once, before training, on the training slides
  (``CountHead.fit``) and kept in the checkpoint;
* with ``model.count_cells`` k > 0, the counts also take colour cells (``CELL_BITS`` bits a
  channel) inside the tissue's range: before training, the k cells whose ``log(1 + count)`` is
  raised most on each lesion class's training slides against the others' (a Welch t-statistic,
  ``screen_cells``) are chosen, and a slide's ``log(1 + count)`` of each chosen cell is a feature
  beside the tails. A lesion painted in a colour the tissue has too (crowded or giant nuclei of
  their own hue) adds pixels there, where no tail reaches; ``model.count_directions: 0`` leaves
  the tails out;
* a linear head on those features gives class logits (``CountHead.forward``), trained with the
  slide labels like the pooled evidence: a logistic regression, convex in its weights.

Where it counts is also where the model looks: each counted pixel weighs what its colour adds to a
lesion class's logit (``CountHead.pixel_weights``), those weights are summed over each stage-I
location into a count map (``count_map``), and alpha is tilted toward it (``count_attention``), so
the tiles drawn, and the explorer's alpha, show the places the counts' answer comes from.

Once fitted, what a slide's counts depend on is fixed: its tails (the features before
standardisation) and its tail pixels (the pixels beyond any tail or in a chosen cell, as stage-I
location, colour bin and count). ``CountMemo`` keeps both per slide, so a slide seen again (the next epoch, another
readout) is not read again at ``model.count_mpp``.

With ``model.count_peaks`` each lesion class also has a feature of where its chosen cells are
densest: ``log(1 + n)`` of the most pixels of its cells at any one stage-I location
(``CountHead.peaks``, from the tail pixels). A lesion that is one compact patch in colours the
tissue also has, scattered, stands out there and not in the slide's totals. Its mean and spread
are fitted on the training slides once the cells are chosen (``CountHead.fit_peaks``).

With ``model.count_filled`` the counted pixels are those of the foreground's colours and every
pixel inside the tissue's outline (``outline``: stage I's foreground, closed, its holes filled), so
a pale patch inside the tissue, lighter than the threshold that tells tissue from glass, is counted.

What it cannot see: a lesion that differs from the tissue around it by shape or arrangement only,
in exactly the tissue's own colours. Stage I and stage II are left for those.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from functools import lru_cache

import torch
from torch import nn

from . import foreground
from .evidence import evidence_class_logits

BITS = 7  # colour bins: the top BITS bits of each 8-bit channel
CELL_BITS = 5  # colour cells (model.count_cells): the top CELL_BITS bits of each 8-bit channel
QUANTILES = (0.99, 0.999, 0.9999)  # the tails counted along each direction, as quantiles of the training pixels
BAND_PIXELS = 2**22  # a view larger than this is binned band by band
MEMO_MB = 256  # CountMemo's budget: what the counts found on the slides seen most recently


def directions(n: int) -> torch.Tensor:
    """``n`` unit vectors spread evenly over the sphere (a Fibonacci lattice) -> (n, 3)."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    polar, turn = torch.acos(1 - 2 * i / n), math.pi * (1 + 5**0.5) * i
    return torch.stack([polar.sin() * turn.cos(), polar.sin() * turn.sin(), polar.cos()], 1).float()


@lru_cache(maxsize=1)
def bin_colours() -> torch.Tensor:
    """The 8-bit RGB colour at the centre of each bin -> (2^(3 BITS), 3) float (one shared tensor:
    index it, never change it in place)."""
    v = torch.arange(2**BITS, dtype=torch.float32) * 2 ** (8 - BITS) + (2 ** (8 - BITS) - 1) / 2
    r, g, b = torch.meshgrid(v, v, v, indexing="ij")
    return torch.stack([r, g, b], -1).view(-1, 3)


def optical_density(rgb: torch.Tensor) -> torch.Tensor:
    """Optical density ``-log((I + 1) / 256)`` of 8-bit intensities (..., 3), Beer-Lambert: the
    stains of a pixel add up in it."""
    return -torch.log((rgb + 1) / 256)


def bin_index(pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The colour bin of each pixel, and whether it is counted (not 0 in every channel: the padding
    outside a slide): uint8 (B, 3, h, w) -> (B, h*w) int64, (B, h*w) bool."""
    q = (pixels >> (8 - BITS)).long()  # (B, 3, h, w)
    index = ((q[:, 0] << (2 * BITS)) | (q[:, 1] << BITS) | q[:, 2]).flatten(1)  # (B, h*w)
    return index, pixels.flatten(2).amax(1) > 0


def colour_histogram(pixels: torch.Tensor, index: torch.Tensor | None = None,
                     keep: torch.Tensor | None = None) -> torch.Tensor:
    """How many pixels of each image fall in each colour bin: uint8 (B, 3, h, w) -> (B, 2^(3 BITS))
    int64. Pixels that are 0 in every channel (the padding outside a slide) are not counted.
    ``index``, ``keep``: ``bin_index(pixels)`` when the caller has it already."""
    if index is None:
        index, keep = bin_index(pixels)
    return torch.stack([torch.bincount(i[k], minlength=2 ** (3 * BITS)) for i, k in zip(index, keep)])


def grid_cells(r0: int, rows: int, view_hw: tuple[int, int], grid_hw: tuple[int, int]) -> torch.Tensor:
    """The location of a coarser grid ``grid_hw`` covering the same image that each pixel of rows
    ``r0:r0 + rows`` of a view of ``view_hw`` lies in (pixel (i, j): (i gh // h, j gw // w)) ->
    (rows*w,) flat indices."""
    (h, w), (gh, gw) = view_hw, grid_hw
    r = (torch.arange(r0, r0 + rows) * gh // h).clamp(max=gh - 1)  # (rows,)
    c = (torch.arange(w) * gw // w).clamp(max=gw - 1)  # (w,)
    return (r[:, None] * gw + c[None, :]).flatten()


def tail_pixels(index: torch.Tensor, counted: torch.Tensor, cells: torch.Tensor, locations: int,
                in_tail: torch.Tensor) -> torch.Tensor:
    """The counted pixels whose colour bin is ``in_tail`` as (location, bin, count) triples: index,
    counted (B, P) bins and whether each pixel counts, cells (P,) each pixel's location among
    ``locations`` a image, in_tail (bins,) bool -> (T, 3) int64, location flat over (B, locations)."""
    keep = counted & in_tail[index]  # (B, P)
    b, p = keep.nonzero(as_tuple=True)
    key = (b * locations + cells[p]) * in_tail.numel() + index[b, p]  # (T',) location and bin in one
    key, n = torch.unique(key, return_counts=True)
    return torch.stack([key // in_tail.numel(), key % in_tail.numel(), n], 1)  # (T, 3)


def merge_tails(parts: list[torch.Tensor], bins: int) -> torch.Tensor:
    """``tail_pixels`` of a view's bands as the view's: the counts of a (location, bin) summed -> (T, 3)."""
    t = torch.cat(parts) if parts else torch.zeros(0, 3, dtype=torch.int64)
    key, inverse = torch.unique(t[:, 0] * bins + t[:, 1], return_inverse=True)
    n = torch.zeros(len(key), dtype=torch.int64).index_add_(0, inverse, t[:, 2])
    return torch.stack([key // bins, key % bins, n], 1)


def count_map(tails: torch.Tensor, weights: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """The count map: each tail pixel's weight (``CountHead.pixel_weights`` of its bin) summed over
    its stage-I location. tails (T, 3) ``tail_pixels``; weights (T,) -> (B, L) for ``shape`` (B, L)."""
    out = torch.zeros(shape[0] * shape[1])
    return out.index_add_(0, tails[:, 0], weights * tails[:, 2].float()).view(shape)


def count_attention(count_map: torch.Tensor, sharpness: float) -> torch.Tensor:
    """The attention logits the count map adds to alpha's: ``sharpness x log(1 + map)``, so a location
    whose counted pixels weigh ``m`` logits gets ``(1 + m)^sharpness`` times the attention it had
    (the evidence's sharpness: the same units). count_map: (B, L) -> (B, L) to add."""
    return sharpness * torch.log1p(count_map.clamp(min=0))


def cell_of(bins: torch.Tensor, bits: int = CELL_BITS) -> torch.Tensor:
    """The colour cell (``bits`` bits a channel) of each colour bin (U,) -> (U,) int64."""
    shift, mask = BITS - bits, 2**BITS - 1
    r, g, b = bins >> (2 * BITS), (bins >> BITS) & mask, bins & mask
    return ((r >> shift) << (2 * bits)) | ((g >> shift) << bits) | (b >> shift)


def cell_counts(hist: torch.Tensor, bits: int = CELL_BITS) -> torch.Tensor:
    """``log(1 + count)`` of each colour cell (``bits`` bits a channel): colour histograms (B, bins)
    -> (B, 2^(3 bits)) float64."""
    used = hist.sum(0).nonzero().squeeze(1)  # (U,)
    cells = torch.zeros(len(hist), 2 ** (3 * bits), dtype=torch.float64)
    return torch.log1p(cells.index_add_(1, cell_of(used, bits), hist[:, used].double()))


def screen_cells(x: torch.Tensor, y: torch.Tensor, k: int, groups: int) -> torch.Tensor:
    """The ``k`` colour cells whose ``log(1 + count)`` is raised most on each lesion class's images
    against the others', by a Welch t-statistic (method §10.6). x (S, cells) ``cell_counts``;
    y (S,) labels; ``groups``: 1 (a binary task: class 1 against 0) or one per class (each against
    the rest) -> (groups * k,) cell indices, group by group."""
    picks = []
    for c in range(groups):
        lesion = y == (1 if groups == 1 else c)
        a, n = x[lesion], x[~lesion]
        if not len(a) or not len(n):
            raise ValueError(f"model.count_cells: choosing cells needs training images in and out of class "
                             f"{1 if groups == 1 else c}")
        spread = a.var(0, correction=min(1, len(a) - 1)) / len(a) + n.var(0, correction=min(1, len(n) - 1)) / len(n)
        t = (a.mean(0) - n.mean(0)) / (spread + 1e-9).sqrt()  # (cells,)
        picks.append(t.argsort(descending=True)[:k])
    return torch.cat(picks)


def tissue_bins(threshold: torch.Tensor | None, kind: str) -> torch.Tensor | None:
    """Which colour bins are foreground for each image, by stage I's own threshold (``Stage1.threshold``,
    ``zoomin.foreground``): (B,) -> (B, bins) bool; None (no mask) -> None."""
    if threshold is None:
        return None
    colours = (bin_colours() / 255).T.reshape(1, 3, -1, 1)  # (1, 3, bins, 1) in [0, 1]
    return foreground.raw_mask(colours.expand(len(threshold), -1, -1, -1), threshold.cpu(), kind)


def outline(fg: torch.Tensor, view_hw: tuple[int, int]) -> torch.Tensor:
    """The tissue's outline on the stage-I grid: the foreground ``fg`` (B, h*w) closed over two
    locations and with its holes filled (``scipy.ndimage``) -> (B, h*w) bool. With
    ``model.count_filled`` the counts take every pixel of these locations, so a patch inside the
    tissue paler than stage I's threshold (washed-out, necrotic) is counted, and the glass around
    the tissue is not."""
    import numpy as np
    from scipy import ndimage
    masks = fg.view(-1, *view_hw).cpu().numpy()  # (B, h, w)
    out = [ndimage.binary_fill_holes(ndimage.binary_closing(m, iterations=2) | m) for m in masks]
    return torch.from_numpy(np.stack(out)).view(len(masks), -1)


class CountMemo:
    """What the counts found on each slide they read: its tails (1, F) and ``tail_pixels`` (T, 3), by
    the slide's identity; the least recently used dropped beyond ``MEMO_MB``. Valid as long as the
    head's fitted thresholds are: ``CountHead.fit`` empties it."""

    def __init__(self, mb: float = MEMO_MB):
        self.budget, self.bytes = mb * 2**20, 0
        self.items: OrderedDict = OrderedDict()

    def get(self, key):
        """The (tails, tail pixels) kept for ``key``, or None."""
        if key is None or key not in self.items:
            return None
        self.items.move_to_end(key)
        return self.items[key]

    def put(self, key, value: tuple[torch.Tensor, torch.Tensor]) -> None:
        if key is None:
            return
        size = sum(t.numel() * t.element_size() for t in value)
        self.items[key] = value
        self.bytes += size
        while self.bytes > self.budget and len(self.items) > 1:
            _, old = self.items.popitem(last=False)
            self.bytes -= sum(t.numel() * t.element_size() for t in old)

    def clear(self) -> None:
        self.items.clear()
        self.bytes = 0


def beyond(bins: torch.Tensor, od_mean: torch.Tensor, od_std: torch.Tensor, dirs: torch.Tensor,
           thresholds: torch.Tensor) -> torch.Tensor:
    """Whether colour bins (U,) lie beyond each threshold along each direction -> (U, n * q) float."""
    proj = standardised_od(bins, od_mean, od_std) @ dirs.T  # (U, n)
    return (proj.unsqueeze(-1) > thresholds).flatten(1).float()  # (U, n * q)


def standardised_od(bins: torch.Tensor, od_mean: torch.Tensor, od_std: torch.Tensor) -> torch.Tensor:
    """The standardised optical density of colour bins (U,) -> (U, 3)."""
    return (optical_density(bin_colours()[bins]) - od_mean) / od_std


def weighted_quantiles(values: torch.Tensor, weights: torch.Tensor, qs) -> torch.Tensor:
    """Quantiles ``qs`` of ``values`` (U, n) with ``weights`` (U,) per column -> (n, len(qs))."""
    order = values.argsort(0)  # (U, n)
    cum = weights[order].double().cumsum(0)  # (U, n)
    cum = cum / cum[-1]
    at = torch.stack([torch.searchsorted(cum.T.contiguous(), torch.full((values.shape[1], 1), q, dtype=cum.dtype))
                      .squeeze(1).clamp(max=len(values) - 1) for q in qs], 1)  # (n, q)
    return values.gather(0, order.gather(0, at.T)).T  # (n, q)


class CountHead(nn.Module):
    """The stain counts' class logits (method §10.6): fitted buffers, a linear layer on the counts.

    Features: ``n_directions`` x ``len(QUANTILES)`` tails, then ``n_cells`` colour cells for each
    lesion class (``screen_cells``). ``fit(hists, labels)`` sets the buffers from the training
    slides' colour histograms (and labels, for the cells); until then the head says nothing (its
    logits are 0)."""

    def __init__(self, n_directions: int, out_channels: int, n_cells: int = 0, peaks: bool = False):
        super().__init__()
        self.n_cells, self.n_peaks = n_cells, out_channels if peaks and n_cells else 0
        n = n_directions * len(QUANTILES) + n_cells * out_channels + self.n_peaks
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))
        self.register_buffer("od_mean", torch.zeros(3))
        self.register_buffer("od_std", torch.ones(3))
        self.register_buffer("dirs", directions(n_directions))
        self.register_buffer("thresholds", torch.zeros(n_directions, len(QUANTILES)))
        self.register_buffer("cells", torch.zeros(n_cells * out_channels, dtype=torch.int64))  # screened cells
        self.register_buffer("feature_mean", torch.zeros(n))
        self.register_buffer("feature_std", torch.ones(n))
        self.linear = nn.Linear(n, out_channels)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)
        self.memo = CountMemo()  # not state: rebuilt from the slides when they are read again

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        self.memo.clear()  # other thresholds: what was kept no longer holds
        if not self.n_cells:  # a checkpoint from before the cells: none were chosen
            state_dict.setdefault(prefix + "cells", self.cells)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def tails(self, hist: torch.Tensor, tail: torch.Tensor | None = None, shape: tuple[int, int] | None = None
              ) -> torch.Tensor:
        """The counts' features before standardisation: ``log(1 + count)`` of each image's pixels
        beyond each tail and in each chosen cell, from colour histograms (B, bins), then with
        ``peaks`` the ``peaks`` of the images' tail pixels ``tail`` on stage-I grids of ``shape``
        (B, L) -> (B, F)."""
        out = self.totals(hist)
        if self.n_peaks and tail is None:
            raise ValueError("model.count_peaks: the peaks are counted from the tail pixels (ZoomInNet.counted)")
        return torch.cat([out, self.peaks(tail, shape)], 1) if self.n_peaks else out  # (B, F)

    def totals(self, hist: torch.Tensor) -> torch.Tensor:
        """The features counted over the whole image (the tails and the cells, not the peaks) ->
        (B, F - peaks)."""
        hist = hist.cpu()
        used = hist.sum(0).nonzero().squeeze(1)  # (U,) the bins any image uses
        return torch.log1p(hist[:, used].float() @ self.beyond(used)[:, :self.feature_mean.numel() - self.n_peaks])

    def peaks(self, tail: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        """``log(1 + n)``, ``n`` the most pixels of each lesion class's chosen cells at one location:
        tail pixels (T, 3) (``tail_pixels``, locations flat over ``shape`` (B, L)) -> (B, classes)."""
        groups = self.n_peaks
        member = (cell_of(tail[:, 1])[:, None] == self.cells.cpu()).view(len(tail), groups, self.n_cells).any(-1)  # (T, groups)
        at = torch.zeros(shape[0] * shape[1], groups).index_add_(0, tail[:, 0], member.float() * tail[:, 2:].float())
        return torch.log1p(at.view(shape[0], shape[1], groups).amax(1))  # (B, groups)

    @torch.no_grad()
    def fit_peaks(self, tails: torch.Tensor) -> None:
        """The mean and spread of the peak features, from the training images' ``tails`` (S, F) read
        with the cells ``fit`` chose."""
        f = tails[:, -self.n_peaks:]
        self.feature_mean[-self.n_peaks:] = f.mean(0)
        self.feature_std[-self.n_peaks:] = f.std(0).nan_to_num(1.0).clamp(min=1e-3) if len(f) > 1 else 1.0

    def standardise(self, tails: torch.Tensor) -> torch.Tensor:
        """Tail counts (B, F) standardised with the training slides' mean and spread -> (B, F)."""
        return (tails.to(self.feature_mean.device) - self.feature_mean) / self.feature_std

    def features(self, hist: torch.Tensor) -> torch.Tensor:
        """Standardised tail counts of colour histograms (B, bins) -> (B, F)."""
        return self.standardise(self.tails(hist))

    def beyond(self, bins: torch.Tensor) -> torch.Tensor:
        """Which features colour bins (U,) count toward: beyond each fitted tail (``counts.beyond``),
        then in each chosen cell -> (U, F) float."""
        tails = beyond(bins, self.od_mean.cpu(), self.od_std.cpu(), self.dirs.cpu(), self.thresholds.cpu())
        cells = (cell_of(bins)[:, None] == self.cells.cpu()).float()  # (U, cells)
        peaks = cells.view(len(bins), self.n_peaks, self.n_cells).amax(-1) if self.n_peaks else cells[:, :0]  # (U, classes)
        return torch.cat([tails, cells, peaks], 1)  # (U, F)

    def in_tail(self, bins: torch.Tensor) -> torch.Tensor:
        """Whether colour bins (U,) count toward any feature (beyond a tail or in a chosen cell) -> (U,) bool."""
        return self.beyond(bins).any(-1) > 0

    def forward(self, hist: torch.Tensor) -> torch.Tensor:
        """Colour histograms (B, bins) -> class logits (B, classes); 0 before ``fit``."""
        if not bool(self.fitted):
            return evidence_class_logits(torch.zeros(len(hist), self.linear.out_features, device=self.linear.weight.device))
        return self.logits(self.features(hist))

    @torch.no_grad()
    def pixel_weights(self, bins: torch.Tensor) -> torch.Tensor:
        """What one pixel of each colour bin (U,) adds toward a lesion class, for the count map: the
        positive parts of the linear layer's weights (a lesion class's against class 0's for more
        than two classes) over the features' spread, summed over the tails the colour lies beyond,
        the largest over the lesion classes -> (U,) float, 0 before ``fit``."""
        if not bool(self.fitted):
            return torch.zeros(len(bins))
        w = self.linear.weight.detach().float().cpu()  # (E, F)
        lesion = w if len(w) == 1 else w[1:] - w[:1]  # (classes - 1, F) toward each lesion class
        per_tail = lesion.clamp(min=0) / self.feature_std.cpu()  # (classes - 1, F) logits per unit of log(1 + count)
        return (self.beyond(bins) @ per_tail.T).amax(-1)  # (U,)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Standardised tail counts (B, F) (``features``) -> class logits (B, classes)."""
        return evidence_class_logits(self.linear(features))

    @torch.no_grad()
    def fit(self, hists: list[torch.Tensor], labels=None) -> None:
        """Fit the optical-density standardisation, the tail thresholds, the chosen cells and the
        features' mean and spread on the training images' colour histograms, each (1, bins), dense
        or sparse; ``labels`` (one per image) are needed with cells only."""
        total = torch.zeros(2 ** (3 * BITS), dtype=torch.int64)
        x = []  # (1, cells) each: the cell counts the cells are chosen by
        for h in hists:
            dense = h.to_dense()
            total += dense[0]
            if self.n_cells:
                x.append(cell_counts(dense))
        used = total.nonzero().squeeze(1)
        if not len(used):
            raise ValueError("the stain counts found no foreground pixel in the training images")
        w = total[used].double()
        od = optical_density(bin_colours()[used]).double()  # (U, 3)
        mean = (od * w[:, None]).sum(0) / w.sum()
        std = ((((od - mean) ** 2) * w[:, None]).sum(0) / w.sum()).sqrt().clamp(min=1e-3)
        self.od_mean.copy_(mean.float())
        self.od_std.copy_(std.float())
        if len(self.dirs):
            proj = standardised_od(used, self.od_mean, self.od_std) @ self.dirs.T  # (U, n)
            self.thresholds.copy_(weighted_quantiles(proj, w, QUANTILES))
        if self.n_cells:
            if labels is None:
                raise ValueError("model.count_cells: the cells are chosen with the training images' labels")
            self.cells.copy_(screen_cells(torch.cat(x), torch.as_tensor(labels).view(-1), self.n_cells,
                                          len(self.cells) // self.n_cells))
        f = torch.cat([self.totals(h.to_dense()) for h in hists])  # (S, F - peaks): the peaks' come with fit_peaks
        n = f.shape[1]
        self.feature_mean[:n] = f.mean(0)
        self.feature_std[:n] = f.std(0).nan_to_num(1.0).clamp(min=1e-3) if len(f) > 1 else 1.0
        self.fitted.fill_(True)
        self.memo.clear()
