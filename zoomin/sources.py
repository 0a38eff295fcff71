"""Image sources: what the model reads pixels from (method §2, §5).

A source is a batch of images of one size that answers two questions:

* ``view(scale)``: the whole image resampled at ``scale`` -> (B, C, h, w);
* ``read(batch_index, boxes, scale, size_hw)``: level-0 boxes (M, 4) of images ``batch_index``
  (M,) read at ``scale`` as ``size_hw`` windows -> (M, C, h, w), zero outside the image.

``ArraySource`` serves in-memory tensors; it keeps one resampled level per scale asked for, the
way a slide pyramid keeps levels, so stage-II views are cut from the ``s2`` level and only
sub-tiles are cut from level 0.
"""
from __future__ import annotations

import os
from typing import Protocol

import torch
import torch.nn.functional as F

from .geometry import crop, scale_box, view_size


DEFAULT_MAX_PIXELS = 2**28  # pixel budget of one read when neither the caller nor ZOOMIN_MAX_PIXELS sets one


def pixel_budget(max_pixels: int | None = None) -> int:
    """The largest number of pixels one read may decode: ``max_pixels`` if > 0, else the
    ``ZOOMIN_MAX_PIXELS`` environment variable, else ``DEFAULT_MAX_PIXELS``."""
    if max_pixels:
        return int(max_pixels)
    env = os.environ.get("ZOOMIN_MAX_PIXELS", "")
    try:
        return int(float(env)) if env else DEFAULT_MAX_PIXELS
    except ValueError:
        raise ValueError(f"ZOOMIN_MAX_PIXELS={env!r} is not a number of pixels") from None


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Pixels as floats in [0, 1]: uint8 (a slide's raw pixels) is divided by 255, floats pass through."""
    return x.float().div_(255) if x.dtype == torch.uint8 else x.float()


class MemoryBudgetError(ValueError):
    """A read larger than the pixel budget (a ``ValueError``: one line, per-slide, skippable)."""


def check_budget(name: str, what: str, pixels: int, budget: int) -> None:
    """The memory guard: raise before allocating a read of more than ``budget`` pixels."""
    if pixels > budget:
        raise MemoryBudgetError(f"{name}: {what} would decode {pixels:,} pixels, over the budget of "
                                f"{budget:,} (data.max_pixels / ZOOMIN_MAX_PIXELS)")


class Source(Protocol):
    """What ``ZoomInNet`` and ``AttentionSamplingNet`` need from an image (or batch of images)."""

    batch_size: int
    channels: int
    size: tuple[int, int]  # level-0 (H, W)

    def view(self, scale: float) -> torch.Tensor: ...

    def read(self, batch_index: torch.Tensor, boxes: torch.Tensor, scale: float,
             size_hw: tuple[int, int]) -> torch.Tensor: ...


class StreamedSource(Source, Protocol):
    """A ``Source`` whose stage-I view can be had as the file's own pixels, whole or band by band
    (``zoomin.slides.SlideSource``): ``ZoomInNet.attend`` streams a view of more than
    ``zoomin.stage1.STREAM_ABOVE`` locations from it instead of holding it (``streamed`` tells)."""

    piece: int  # bands of a view are read in whole multiples of this many rows (1: any band)
    identity: tuple | None  # what its pixels are a function of (``SlideSource.identity``); None: unknown

    def raw_view(self, scale: float) -> torch.Tensor: ...  # V(x, s) as stored (uint8 for 8-bit) -> (B, C, h, w)

    def has_view(self, scale: float) -> bool: ...  # whether raw_view(scale) is decoded already (prefetched)

    def check_view(self, scale: float) -> None: ...  # the memory guard for raw_view(scale), reading nothing

    def view_rows(self, scale: float, r0: int, r1: int) -> torch.Tensor: ...  # rows r0:r1 of raw_view(scale)


STREAMED = ("raw_view", "has_view", "check_view", "view_rows")  # what a StreamedSource adds to a Source


def streamed(src) -> bool:
    """Whether ``src`` is a ``StreamedSource``: it has each of ``STREAMED``, looked up as attributes
    (a wrapper forwarding them through ``__getattr__`` counts, which ``isinstance`` on a runtime
    protocol does not promise: Python 3.12 looks them up statically)."""
    return all(callable(getattr(src, name, None)) for name in STREAMED)


class ArraySource:
    """A batch of in-memory images (B, C, H, W) as a source; levels are area-resampled on demand."""

    def __init__(self, images: torch.Tensor, max_pixels: int | None = None):
        if images.dim() == 3:
            images = images.unsqueeze(0)
        if images.dim() != 4:
            raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
        if not images.is_floating_point():
            images = images.float()
        self.images = images
        self.batch_size, self.channels = images.shape[:2]
        self.size = (images.shape[2], images.shape[3])
        self.pixels_read = 0  # level pixels resampled or cut, for memory/IO accounting
        self._levels: dict[float, torch.Tensor] = {}
        self.max_pixels = pixel_budget(max_pixels)

    def view(self, scale: float) -> torch.Tensor:
        """``V(x, s)`` (method §2): area resampling to ``floor(s H) x floor(s W)``; cached per scale."""
        if scale not in self._levels:
            h, w = view_size(*self.size, scale)
            check_budget("array", f"a {w}x{h} view", h * w * self.batch_size, self.max_pixels)
            level = self.images if (h, w) == self.size else F.interpolate(self.images, size=(h, w), mode="area")
            self.pixels_read += level.shape[-1] * level.shape[-2] * self.batch_size
            self._levels[scale] = level
        return self._levels[scale]

    def read(self, batch_index: torch.Tensor, boxes: torch.Tensor, scale: float,
             size_hw: tuple[int, int]) -> torch.Tensor:
        """Level-0 ``boxes`` (M, 4) of images ``batch_index`` (M,) at ``scale`` -> (M, C, h, w)."""
        check_budget("array", f"{boxes.shape[0]} windows of {size_hw[1]}x{size_hw[0]}",
                     boxes.shape[0] * size_hw[0] * size_hw[1], self.max_pixels)
        level = self.images if scale >= 1.0 else self.view(scale)
        factor = (level.shape[-2] / self.size[0], level.shape[-1] / self.size[1])
        out = crop(level, batch_index, scale_box(boxes, factor), size_hw)
        self.pixels_read += out.shape[0] * out.shape[-1] * out.shape[-2]
        return out


def as_source(x) -> Source:
    """Tensors become an ``ArraySource``; anything with ``view`` and ``read`` passes through."""
    if isinstance(x, torch.Tensor):
        return ArraySource(x)
    if hasattr(x, "view") and hasattr(x, "read"):
        return x
    raise TypeError(f"expected a (B, C, H, W) tensor or a Source, got {type(x).__name__}")
