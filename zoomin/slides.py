"""Slides as sources (METHOD §2, §5): a whole-slide image read lazily through large-image.

``SlideSource`` answers the same two questions as ``ArraySource`` — ``view(scale)`` and
``read(batch_index, boxes, scale, size_hw)`` — so ``ZoomInNet`` runs on a slide unchanged. Every
read asks large-image for the region at the output size it needs, and large-image decodes the
pyramid level nearest to that scale: level 0 is only decoded for full-resolution reads (the
sub-tiles). Needs the ``slides`` extra (``pip install zoomin[slides]``).
"""
from __future__ import annotations

import contextlib
import io
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .geometry import view_size
from .pyramid import write_pyramidal_tiff  # noqa: F401  (writing lives in pyramid.py; kept importable here)
from .sources import check_budget, pixel_budget


class SlideSource:
    """One slide (batch of one) read through large-image; pixels become floats in [0, 1]."""

    batch_size = 1

    def __init__(self, path: str | Path, channels: int = 3, max_pixels: int | None = None):
        try:
            import large_image
        except ImportError:  # pragma: no cover - depends on the installed extras
            raise RuntimeError("reading slides needs the 'slides' extra: pip install 'zoomin[slides]'") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: file not found")
        if self.path.stat().st_size == 0:
            raise ValueError(f"{self.path}: not a readable image (empty file, 0 bytes)")
        check_tiff_complete(self.path)
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # pylibtiff prints notes about some tags
                self._ts = large_image.open(str(self.path))
                meta = self._ts.getMetadata()
        except Exception as e:
            raise unreadable(self.path, e) from None
        self._numpy = large_image.constants.TILE_FORMAT_NUMPY
        self.size = (int(meta["sizeY"]), int(meta["sizeX"]))  # level-0 (H, W)
        self.levels = int(meta.get("levels", 1))
        self.mpp = (meta.get("mm_x") or 0) * 1000 or None  # microns per pixel at level 0, if known
        self.channels = channels
        self.pixels_read = 0  # pixels large-image returned, for the "decoded vs needed" accounting
        self._views: dict[float, torch.Tensor] = {}
        self.max_pixels = pixel_budget(max_pixels)  # the memory guard: most pixels one read may decode

    def _to_tensor(self, arr: np.ndarray) -> torch.Tensor:
        """(h, w[, c]) uint8/uint16/float -> (C, h, w) float in [0, 1]."""
        if arr.ndim == 2:
            arr = arr[..., None]
        arr = arr[..., :3] if arr.shape[-1] >= 3 else arr[..., :1]
        t = torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1).float()
        if np.issubdtype(arr.dtype, np.integer):
            t = t / float(np.iinfo(arr.dtype).max)
        else:  # float images: NaN and infinities become 0 (background), values are kept as they are
            t = torch.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0)
        if t.shape[0] != self.channels:
            t = t.mean(0, keepdim=True).expand(self.channels, -1, -1) if self.channels in (1, 3) else t
        self.pixels_read += t.shape[-1] * t.shape[-2]
        return t

    def _data_level(self, level: int) -> int:
        """The pyramid level large-image decodes for ``level`` (0 = coarsest): the first level at
        least as fine that holds data (missing levels are built from finer ones)."""
        try:
            present = self._ts._nonemptyLevelsList()
        except Exception:  # a source without the private helper: trust the level it prefers
            return self._ts.getPreferredLevel(level)
        return next((k for k in range(level, len(present)) if present[k] is not None), len(present) - 1)

    def decoded_pixels(self, width: int, height: int, out_hw: tuple[int, int]) -> int:
        """Pixels large-image decodes to return a level-0 ``width x height`` region at ``out_hw``:
        the region at the finest level it has to read (level 0 for a file without a pyramid)."""
        ratio = max(out_hw[1] / width, out_hw[0] / height)  # output pixels per level-0 pixel
        down = max(0, math.floor(math.log2(1 / ratio) + 1e-9)) if ratio < 1 else 0
        level = self._data_level(max(0, self.levels - 1 - down))
        f = 2 ** (self.levels - 1 - level)
        return max(math.ceil(width / f) * math.ceil(height / f), out_hw[0] * out_hw[1])

    def _region(self, left: int, top: int, width: int, height: int, out_hw: tuple[int, int]) -> torch.Tensor:
        """An in-image level-0 rectangle resampled to exactly ``out_hw`` -> (C, h, w)."""
        oh, ow = out_hw
        check_budget(str(self.path), f"reading a {width}x{height} region at {ow}x{oh}",
                     self.decoded_pixels(width, height, out_hw), self.max_pixels)
        kw = dict(region=dict(left=left, top=top, width=width, height=height, units="base_pixels"),
                  format=self._numpy)
        if (oh, ow) != (height, width):
            kw["output"] = dict(maxWidth=ow, maxHeight=oh)
        try:
            arr, _ = self._ts.getRegion(**kw)
        except Exception as e:  # truncated or corrupt tiles
            raise ValueError(f"{self.path}: cannot decode pixels ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:120] if str(e) else 'no detail'})") from None
        t = self._to_tensor(arr)
        if t.shape[-2:] != (oh, ow):
            t = F.interpolate(t[None], size=(oh, ow), mode="bilinear", align_corners=False, antialias=True)[0]
        return t

    def check_view(self, scale: float) -> None:
        """The memory guard for ``view(scale)``, without reading anything."""
        h, w = view_size(*self.size, scale)
        check_budget(str(self.path), f"reading a {self.size[1]}x{self.size[0]} region at {w}x{h}",
                     self.decoded_pixels(self.size[1], self.size[0], (h, w)), self.max_pixels)

    def view(self, scale: float) -> torch.Tensor:
        """``V(x, s)`` from the pyramid level nearest to ``s`` -> (1, C, h, w); cached per scale."""
        if scale not in self._views:
            h, w = view_size(*self.size, scale)
            self._views[scale] = self._region(0, 0, self.size[1], self.size[0], (h, w))[None]
        return self._views[scale]

    def read(self, batch_index: torch.Tensor, boxes: torch.Tensor, scale: float,
             size_hw: tuple[int, int]) -> torch.Tensor:
        """Level-0 ``boxes`` (M, 4) read at ``scale`` as ``size_hw`` windows, zero outside -> (M, C, h, w).

        One region request per box (the I/O, not the model, is what loops here)."""
        h, w = size_hw
        out = torch.zeros(boxes.shape[0], self.channels, h, w)
        H, W = self.size
        for m, (x, y, bw, bh) in enumerate(boxes.tolist()):
            x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + bw, W), min(y + bh, H)
            if x0 >= x1 or y0 >= y1:
                continue
            fy, fx = h / bh, w / bw  # output pixels per level-0 pixel
            r0, c0 = round((y0 - y) * fy), round((x0 - x) * fx)
            r1, c1 = max(r0 + 1, min(h, round((y1 - y) * fy))), max(c0 + 1, min(w, round((x1 - x) * fx)))
            out[m, :, r0:r1, c0:c1] = self._region(x0, y0, x1 - x0, y1 - y0, (r1 - r0, c1 - c0))
        return out

    def __repr__(self) -> str:
        return f"SlideSource({str(self.path)!r}, size={self.size}, levels={self.levels})"


def tiff_layout(path: Path) -> dict | None:
    """For a TIFF: where its image data ends, whether level 0 is tiled, and level 0's shape
    (tags only, nothing decoded); None for other files or TIFFs tifffile cannot parse."""
    with open(path, "rb") as fh:
        if fh.read(2) not in (b"II", b"MM"):
            return None
    import logging

    import tifffile
    log = logging.getLogger("tifffile")
    level = log.level
    log.setLevel(logging.CRITICAL)  # tifffile logs pages past the end; the caller reports it once
    try:
        with tifffile.TiffFile(path) as tf:
            end = max((int(np.add(p.dataoffsets, p.databytecounts).max(initial=0)) for p in tf.pages), default=0)
            first = tf.pages.first
            return {"end": end, "tiled": bool(first.is_tiled), "shape": tuple(first.shape)}
    except Exception:  # not a TIFF tifffile can parse: large-image decides
        return None
    finally:
        log.setLevel(level)


def check_tiff_complete(path: Path) -> None:
    """A TIFF whose image data runs past the end of the file (a truncated copy or download) is an
    error: large-image would otherwise return the missing tiles as black. Other files pass."""
    layout, size = tiff_layout(path), path.stat().st_size
    if layout and layout["end"] > size:
        raise ValueError(f"{path}: truncated TIFF (image data runs to byte {layout['end']:,}, the file has {size:,})")


def unreadable(path: Path, e: Exception) -> ValueError:
    """The one-line error for a file large-image cannot open (untiled TIFFs get a hint)."""
    layout = tiff_layout(path)
    if layout and not layout["tiled"]:
        h, w = layout["shape"][:2]
        return ValueError(f"{path}: not a readable image (an untiled {w}x{h} TIFF; convert it to a tiled "
                          f"pyramid, e.g. vips tiffsave --tile --pyramid)")
    return ValueError(f"{path}: not a readable image ({type(e).__name__})")
