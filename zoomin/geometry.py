"""Views, view-location -> level-0 mapping, tile and sub-tile boxes (method §2).

One vocabulary, used everywhere in zoomin:

* a *view* ``V(x, s)`` of an ``H x W`` image has ``h = max(1, floor(s H))`` rows and
  ``w = max(1, floor(s W))`` columns;
* a *location* is a flat index ``i * w + j`` into a view;
* a *box* is level-0 (full-resolution) pixels ``(x, y, w, h)``: column, row, width, height of
  the top-left corner and size. Boxes may stick out of the image; reads zero-pad outside.

All functions are vectorised over arbitrary leading dimensions.
"""
from __future__ import annotations

import math

import torch


def view_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """Size ``(h, w)`` of the view ``V(x, s)``: ``h = floor(s H)``, ``w = floor(s W)`` (method §2).

    *(zoomin)* at least 1 x 1, so images smaller than ``1/s`` still have one location.
    """
    if not 0.0 < scale <= 1.0:
        raise ValueError(f"scale must be in (0, 1], got {scale}")
    # the small epsilon keeps e.g. floor(0.12 * 1500) = 180 despite 0.12 being inexact in binary
    return max(1, math.floor(scale * height + 1e-9)), max(1, math.floor(scale * width + 1e-9))


def location_centres(index: torch.Tensor, view_hw: tuple[int, int], full_hw: tuple[int, int]) -> torch.Tensor:
    """Level-0 centres ``(row, col)`` of flat view locations (method §2, the ``T_s(x, c)`` map).

    Location ``(i, j)`` of an ``h x w`` view maps to ``(floor(i (H-1)/(h-1)), floor(j (W-1)/(w-1)))``:
    it depends only on the image size and the view size, never on the tile size. A view axis of
    length 1 maps to the centre of the image axis *(zoomin; the paper leaves it undefined)*.

    index: (...) int64 flat locations -> (..., 2) int64 level-0 (row, col).
    """
    h, w = view_hw
    H, W = full_hw
    i, j = index // w, index % w
    row = (i * (H - 1)) // (h - 1) if h > 1 else torch.full_like(i, (H - 1) // 2)
    col = (j * (W - 1)) // (w - 1) if w > 1 else torch.full_like(j, (W - 1) // 2)
    return torch.stack([row, col], dim=-1)


def centred_boxes(centres: torch.Tensor, size_hw: tuple[int, int]) -> torch.Tensor:
    """Level-0 boxes ``(x, y, w, h)`` of ``size_hw`` centred on ``centres`` (..., 2) ``(row, col)``.

    The top-left corner is ``centre - floor(size / 2)``: the same as zero-padding the image by
    ``floor(h1/2), floor(w1/2)`` on every side and cutting the tile there (method §2).
    """
    th, tw = size_hw
    y = centres[..., 0] - th // 2
    x = centres[..., 1] - tw // 2
    return torch.stack([x, y, torch.full_like(x, tw), torch.full_like(y, th)], dim=-1)


def tile_boxes(index: torch.Tensor, view_hw: tuple[int, int], full_hw: tuple[int, int],
               tile_hw: tuple[int, int]) -> torch.Tensor:
    """Boxes of the stage-I tiles ``T_s1(x, c)`` at flat view locations ``index`` -> (..., 4)."""
    return centred_boxes(location_centres(index, view_hw, full_hw), tile_hw)


def subtile_boxes(tiles: torch.Tensor, index: torch.Tensor, view_hw: tuple[int, int],
                  tile_hw: tuple[int, int], subtile_hw: tuple[int, int]) -> torch.Tensor:
    """Boxes of sub-tiles ``T_s2(T_s1(x, c), c')`` in level-0 pixels (method §4).

    The tile is treated as an image of its own: location ``c'`` of its ``u x v`` view maps into
    the tile with the same rule as stage I, then offsets by the tile's top-left corner.

    tiles: (..., 4) tile boxes; index: (..., K) flat locations in the tile's view -> (..., K, 4).
    """
    centres = location_centres(index, view_hw, tile_hw)  # (..., K, 2) relative to the tile
    origin = torch.stack([tiles[..., 1], tiles[..., 0]], dim=-1).unsqueeze(-2)  # (..., 1, 2)
    return centred_boxes(centres + origin, subtile_hw)


def scale_box(boxes: torch.Tensor, factor_hw: tuple[float, float]) -> torch.Tensor:
    """Top-left corners of level-0 boxes in a view scaled by ``factor_hw`` (rounded) -> (..., 2) (row, col)."""
    fy, fx = factor_hw
    row = torch.round(boxes[..., 1].double() * fy).long()
    col = torch.round(boxes[..., 0].double() * fx).long()
    return torch.stack([row, col], dim=-1)


def crop(image: torch.Tensor, batch_index: torch.Tensor, corners: torch.Tensor,
         size_hw: tuple[int, int]) -> torch.Tensor:
    """Cut fixed-size windows out of a batch of images, zero outside the image.

    image: (B, C, H, W); batch_index: (M,) which image; corners: (M, 2) int64 top-left
    ``(row, col)`` -> (M, C, h, w). One gather for all windows: no loop over tiles.
    """
    B, C, H, W = image.shape
    h, w = size_hw
    rows = corners[:, 0, None] + torch.arange(h, device=image.device)  # (M, h)
    cols = corners[:, 1, None] + torch.arange(w, device=image.device)  # (M, w)
    inside = ((rows >= 0) & (rows < H))[:, :, None] & ((cols >= 0) & (cols < W))[:, None, :]  # (M, h, w)
    b = batch_index[:, None, None]
    patch = image[b, :, rows.clamp(0, H - 1)[:, :, None], cols.clamp(0, W - 1)[:, None, :]]  # (M, h, w, C)
    patch = patch * inside[..., None].to(patch.dtype)
    return patch.permute(0, 3, 1, 2)  # (M, C, h, w)
