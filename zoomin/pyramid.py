"""One writer of tiled pyramidal TIFFs that large-image and OpenSlide read fast, fed tile by tile.

``write_pyramid`` asks a tile source ``tile_at(level, ti, tj) -> (t, t, 3) uint8`` for every tile
of every level (level 0 = full resolution, each next level half the side), so memory holds a few
tiles whatever the image size. Reduced levels are ordinary pages with ``subfiletype=1`` (not
SubIFDs: OpenSlide ignores those), resolutions are in pixels per centimetre, and ``aperio=True``
writes Aperio-style image descriptions (and no tifffile metadata), so OpenSlide opens the file as
an Aperio SVS slide with its microns per pixel. ``write_pyramidal_tiff`` feeds it from an array.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import numpy as np

TileSource = Callable[[int, int, int], np.ndarray]  # (level, tile row, tile col) -> (t, t, C) uint8
APERIO = "Aperio Image Library v12.0.15 \n"
BUFFER = 2**24  # bytes of tiles tifffile encodes per pass (its default, 256 MB, is what memory would grow to)


def pyramid_levels(h: int, w: int, tile: int) -> int:
    """Levels that halve the side until one tile covers the image."""
    return max(1, math.ceil(math.log2(max(h / tile, w / tile, 1))) + 1)


def level_shape(h: int, w: int, level: int) -> tuple[int, int]:
    """(h, w) of ``level``: the level-0 side halved ``level`` times (rounded down, at least 1)."""
    return max(1, h >> level), max(1, w >> level)


def _description(h: int, w: int, level: int, tile: int, mpp: float, codec: str, quality: int) -> str:
    """The Aperio ImageDescription of one level (level 0 carries AppMag and MPP)."""
    lh, lw = level_shape(h, w, level)
    head = f"{APERIO}{w}x{h} [0,0 {w}x{h}] "
    if level:
        return head + f"-> {lw}x{lh} {codec}/RGB Q={quality}"
    return head + f"({tile}x{tile}) {codec}/RGB Q={quality}|AppMag = {10 / mpp:g}|MPP = {mpp}"


def write_pyramid(path: str | Path, shape: tuple[int, int], tile_at: TileSource, tile: int = 512,
                  levels: int | None = None, mpp: float = 0.25, compression: str = "jpeg", quality: int = 85,
                  aperio: bool = False) -> Path:
    """Write a level-0 ``shape`` (H, W) RGB pyramid whose tiles ``tile_at`` returns, level by
    level in row-major order. A tile may be smaller at the right/bottom edge (zero-padded) or
    extend past it (cropped by the readers). BigTIFF when the raw pixels pass 2 GiB."""
    import tifffile
    path = Path(path)
    h, w = shape
    levels = levels or pyramid_levels(h, w, tile)
    res = 1e4 / mpp  # pixels per centimetre at level 0
    codec = {"jpeg": "JPEG"}.get(compression, compression.upper())
    args = {"compressionargs": {"level": quality}} if compression == "jpeg" else {}
    with tifffile.TiffWriter(path, bigtiff=h * w * 3 > 2**31) as tw:
        for k in range(levels):
            lh, lw = level_shape(h, w, k)
            tiles = (tile_at(k, i, j) for i in range(math.ceil(lh / tile)) for j in range(math.ceil(lw / tile)))
            extra = dict(description=_description(h, w, k, tile, mpp, codec, quality), metadata=None) if aperio else {}
            tw.write(tiles, shape=(lh, lw, 3), dtype=np.uint8, tile=(tile, tile), photometric="rgb",
                     compression=compression, subfiletype=1 if k else 0, resolution=(res / 2**k, res / 2**k),
                     resolutionunit="CENTIMETER", buffersize=BUFFER, **args, **extra)
    return path


def halve(a: np.ndarray) -> np.ndarray:
    """(h, w, C) uint8 -> 2 x 2 means, (max(1, h // 2), max(1, w // 2), C); a side of 1 stays 1."""
    h, w = a.shape[:2]
    fh, fw = (2 if h > 1 else 1), (2 if w > 1 else 1)
    a = a[: h // fh * fh, : w // fw * fw]
    return a.reshape(h // fh, fh, w // fw, fw, -1).mean((1, 3)).round().astype(np.uint8)


def write_pyramidal_tiff(path: str | Path, image: np.ndarray, tile: int = 256, levels: int | None = None,
                         mpp: float = 0.25, compression: str = "jpeg", aperio: bool = False,
                         quality: int = 90) -> Path:
    """Write ``image`` (H, W, 3) uint8 as a tiled pyramid; each level is the 2 x 2 means of the
    one before (only the current level is kept)."""
    image = np.ascontiguousarray(image)
    state = {"level": 0, "data": image}

    def tile_at(level: int, ti: int, tj: int) -> np.ndarray:
        while state["level"] < level:  # the writer asks for the levels in order
            state["level"], state["data"] = state["level"] + 1, halve(state["data"])
        return state["data"][ti * tile:(ti + 1) * tile, tj * tile:(tj + 1) * tile]

    return write_pyramid(path, image.shape[:2], tile_at, tile=tile, levels=levels, mpp=mpp, compression=compression,
                         quality=quality, aperio=aperio)
