"""Pyramid levels kept whole (issue #34): which level large-image would decode for a request, a
small level decoded once (``KeptLevels._level``), and each later request at that level cut from it
in memory — the pixels large-image's ``getRegion`` returns for it (``tests/test_slide_memo.py``).

``KeptLevels`` is the part of ``zoomin.slides.SlideSource`` that does this; the source holds the
state it uses (``levels``, ``file_size``, ``memo_pixels``, ``max_pixels``, ``_plain``, ``_ts``,
``_levels``, ``_level_pixels``, ``_levels_lock``, ``k``, ``channels``) and
answers ``_get_region``.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


class KeptLevels:
    """Kept pyramid levels and the requests cut from them (a mixin of ``SlideSource``)."""

    memo_pixels = 2 ** 20  # a native pyramid level of at most this many pixels is decoded whole, once

    def _present(self) -> list | None:
        """large-image's levels list (None where a level is not in the file), or None if it has none."""
        if self._plain is not None:
            return [True] * self.levels
        try:
            return self._ts._nonemptyLevelsList()
        except Exception:  # a source without the private helper
            return None

    def _preferred(self, level: int) -> int:
        """large-image's ``getPreferredLevel``: a level with data at least as fine as ``level``."""
        if self._plain is not None:  # every level is in the file
            return max(0, min(level, self.levels - 1))
        return self._ts.getPreferredLevel(level)

    def _data_level(self, level: int) -> int:
        """The pyramid level large-image decodes for ``level`` (0 = coarsest): the first level at
        least as fine that holds data (missing levels are built from finer ones)."""
        present = self._present()
        if present is None:  # trust the level it prefers
            return self._preferred(level)
        return next((k for k in range(level, len(present)) if present[k] is not None), len(present) - 1)

    def _level(self, level: int) -> np.ndarray | None:
        """Pyramid ``level`` (0 = coarsest) decoded whole, kept for the source's life -> (h, w, c)
        uint8; None where it is not kept: not stored in the file (large-image builds it from a finer
        one), more than ``memo_pixels`` pixels, or not 8-bit."""
        if level not in self._levels:
            self._keep({level})
        return self._levels[level]

    def _keeps(self, level: int) -> bool:
        """Whether ``_level`` keeps ``level`` (0 = coarsest): stored in the file and within
        ``memo_pixels`` (and the memory guard's ``max_pixels``)."""
        _, (h, w) = self._level_shape(level)
        present = self._present()  # None: decode every request as asked
        native = present is not None and present[level] is not None
        return native and 0 < h * w <= min(self.memo_pixels, self.max_pixels)

    def _keep(self, levels: set[int]) -> None:
        """Decode and keep each of ``levels`` not decided yet (``_level``): a plain pyramid's pages
        by tifffile, the file opened once; else the level's whole rectangle through large-image,
        which reads it from that level with no resampling."""
        with self._levels_lock:
            todo = sorted(k for k in levels if k not in self._levels)
            kept = [k for k in todo if self._keeps(k)]
            if self._plain is not None:
                arrays = self._plain.decode(kept) if kept else []
            else:
                arrays = [self._get_region(0, 0, w * f, h * f, None if f == 1 else (h, w))
                          for f, (h, w) in map(self._level_shape, kept)]
            decided = dict.fromkeys(todo)  # level -> its pixels (None: not kept)
            for k, arr in zip(kept, arrays):
                _, (h, w) = self._level_shape(k)
                self.requests += 1
                self.pixels_decoded += h * w
                if arr.dtype == np.uint8 and arr.shape[:2] == (h, w):
                    arr = arr if arr.flags.writeable and arr.flags.c_contiguous else np.array(arr, order="C")
                    self._level_pixels[k] = torch.from_numpy(arr).permute(2, 0, 1)  # (C, h, w), shared
                    arr.setflags(write=False)  # what a read returns is copied from it, never a view into it
                    decided[k] = arr
            self._levels.update(decided)  # after the pixels: a read never sees a level half kept

    def _level_shape(self, level: int) -> tuple[int, tuple[int, int]]:
        """Level ``level`` (0 = coarsest) -> (file pixels per level pixel, its (h, w))."""
        f = 2 ** (self.levels - 1 - level)
        return f, (self.file_size[0] // f, self.file_size[1] // f)

    def _cut(self, left: int, top: int, width: int, height: int, out_hw: tuple[int, int]) -> np.ndarray | None:
        """What ``_get_region`` returns for the request, cut from a level kept by ``_level`` -> (h, w, c)
        uint8; None where its level is not kept. Follows large-image 1.35's ``getRegion``: the output
        size that keeps the region's aspect, the level that size asks for, the region's bounds on
        that level, then a Lanczos (or, enlarging, bicubic) resize (``tests/test_slide_memo.py``
        holds it to large-image's answers)."""
        if not self.memo_pixels:
            return None
        from large_image.tilesource.utilities import _calculateWidthHeight, _imageToNumpy, _imageToPIL
        oh, ow = out_hw
        out_w, out_h = (width, height) if (oh, ow) == (height, width) else _calculateWidthHeight(ow, oh, width, height)[:2]
        level = self._level_for(min(out_w / width, out_h / height))
        arr = self._level(level)
        if arr is None:
            return None
        f = 2 ** (self.levels - 1 - level)
        x0, y0 = int(left / f), int(top / f)
        x1, y1 = max(int((left + width) / f), x0 + 1), max(int((top + height) / f), y0 + 1)
        region = arr[y0:y1, x0:x1]
        if region.shape[:2] != (y1 - y0, x1 - x0):  # past the kept pixels: ask large-image
            return None
        if (out_w, out_h) == (x1 - x0, y1 - y0):
            return region
        import PIL.Image
        method = PIL.Image.Resampling.BICUBIC if out_w > x1 - x0 else PIL.Image.Resampling.LANCZOS
        return _imageToNumpy(_imageToPIL(region).resize((out_w, out_h), method))[0]

    def _read_level(self, scale: float) -> int:
        """The pyramid level (0 = coarsest) large-image decodes for reads at ``scale``."""
        return self._level_for(scale / self.k)

    def _level_for(self, ratio: float) -> int:
        """The pyramid level (0 = coarsest) large-image's ``getRegion`` decodes for ``ratio`` output
        pixels per pixel of the file's level 0 (the finest for 1 or more)."""
        top_level = self.levels - 1
        if ratio >= 1:
            return top_level
        return self._preferred(max(0, top_level + math.ceil(round(math.log(ratio) / math.log(2), 4))))

    def _resampled(self, scale: float, level: int) -> bool:
        """Whether reads at ``scale`` resample the pixels of ``level`` (0 = coarsest)."""
        return abs(scale / self.k * 2 ** (self.levels - 1 - level) - 1) > 1e-9

    def _crops(self, boxes: torch.Tensor, scale: float, size_hw: tuple[int, int], level: int) -> torch.Tensor | None:
        """The boxes (M, 4) as windows of kept ``level`` (``_read_level(scale)``) where its pixels are
        the read's unresampled (sub-tiles) -> (M, C, h, w) uint8, zero outside; else None. The
        pixels ``read``'s region requests would give, in one ``windows`` call."""
        arr = self._levels.get(level)
        if arr is None or arr.shape[-1] != self.channels or self._resampled(scale, level):
            return None
        xy, wh = boxes[:, :2].double() * scale, boxes[:, 2:].double() * scale  # (M, 2) each, in the level's pixels
        if not (torch.equal(xy, xy.round()) and (wh == torch.tensor([size_hw[1], size_hw[0]])).all()):
            return None
        pixels = self._level_pixels[level]  # (C, H, W)
        corners = xy.flip(-1).long()  # (M, 2) (row, col)
        (h, w), (H, W) = size_hw, pixels.shape[-2:]
        if corners.min() >= 0 and (corners[:, 0] + h).max() <= H and (corners[:, 1] + w).max() <= W:
            # all inside: strided windows of the level itself, no padded copy of it
            return pixels.unfold(1, h, 1).unfold(2, w, 1)[:, corners[:, 0], corners[:, 1]].transpose(0, 1)
        return windows(pixels, corners, size_hw)


def windows(region: torch.Tensor, corners: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """``size_hw`` windows at top-left ``corners`` (m, 2) ``(row, col)`` of one ``region`` (C, H, W),
    zero outside it -> (m, C, h, w): ``zoomin.geometry.crop`` of a batch of one, as strided views of
    the zero-padded region (one copy of the windows; no index per pixel)."""
    h, w = size_hw
    C, H, W = region.shape
    padded = F.pad(region, (w, w, h, h))  # (C, H + 2h, W + 2w)
    view = padded.unfold(1, h, 1).unfold(2, w, 1)  # (C, H + h + 1, W + w + 1, h, w) every window
    rows, cols = corners[:, 0].clamp(-h, H) + h, corners[:, 1].clamp(-w, W) + w  # a window wholly outside: zeros
    return view[:, rows, cols].transpose(0, 1)  # (m, C, h, w)
