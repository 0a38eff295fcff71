"""Hostile input files, written at test time (small on disk): name -> writer, and what zoomin
must answer for each (None: read normally; a string: the one-line error contains it).

docs/reliability.md carries the same table."""
from __future__ import annotations

import math
import zlib
from pathlib import Path

import numpy as np


def picture(H: int, W: int, C: int = 3) -> np.ndarray:
    """A smooth gradient with a few dark blobs (tissue-like: darker than the background)."""
    yy, xx = np.mgrid[0:H, 0:W]
    img = np.stack([xx * 255 // max(W, 1), yy * 255 // max(H, 1), (xx + yy) % 256], -1).astype(np.uint8)
    img[H // 4: H // 2, W // 4: W // 2] = 30
    return img[..., :C]


def _tiff(path, data, **kw):
    import tifffile
    tifffile.imwrite(path, data, **kw)


def _png(path, data, fmt="PNG"):
    from PIL import Image
    Image.fromarray(data).save(path, format=fmt)


def good_pyramid(path: Path) -> None:
    from zoomin.slides import write_pyramidal_tiff
    write_pyramidal_tiff(path, picture(512, 512), tile=128, compression="zlib")


def truncated(path: Path) -> None:
    good_pyramid(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def huge_tiled_level0_only(path: Path, side: int = 60_000, tile: int = 1024) -> None:
    """A 60,000 x 60,000 RGB tiled TIFF without a pyramid, ~10 MB on disk: every tile is the same
    pre-compressed blank tile (tifffile writes the bytes as they are)."""
    import tifffile
    blob = zlib.compress(np.full((tile, tile, 3), 255, np.uint8).tobytes(), 9)
    n = math.ceil(side / tile) ** 2
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        tw.write((blob for _ in range(n)), shape=(side, side, 3), dtype=np.uint8, tile=(tile, tile),
                 photometric="rgb", compression="zlib")


def huge_striped(path: Path) -> None:
    """A 40,000 x 40,000 untiled TIFF; no strip is written, so the file is sparse (a few kB)."""
    import tifffile
    with tifffile.TiffWriter(path) as tw:
        tw.write(shape=(40_000, 40_000), dtype=np.uint8, photometric="minisblack", rowsperstrip=64)


def float_nan(path: Path) -> None:
    f = picture(300, 300).astype(np.float32) / 255
    f[10:60, 10:60] = np.nan
    f[100:110, 100:110] = np.inf
    _tiff(path, f, tile=(128, 128), photometric="rgb")


WRITERS = {
    "zero_bytes.tif": lambda p: p.write_bytes(b""),
    "truncated.tif": truncated,
    "png_named.tif": lambda p: _png(p, picture(100, 120)),
    "tiff_named.jpg": good_pyramid,
    "notes.svs": lambda p: p.write_text("patient notes, not pixels\n"),
    "random_bytes.tif": lambda p: p.write_bytes(b"II*\x00" + np.random.default_rng(0).bytes(4000)),
    "huge_level0_only.tif": huge_tiled_level0_only,
    "huge_striped.tif": huge_striped,
    "one_pixel.png": lambda p: _png(p, picture(1, 1)),
    "smaller_than_tile.png": lambda p: _png(p, picture(20, 30)),
    "grayscale.tif": lambda p: _tiff(p, picture(300, 300)[..., 0], tile=(128, 128)),
    "rgba.tif": lambda p: _tiff(p, np.concatenate([picture(300, 300), np.full((300, 300, 1), 255, np.uint8)], -1),
                                tile=(128, 128), photometric="rgb", extrasamples=[2]),
    "sixteen_bit.tif": lambda p: _tiff(p, picture(300, 300).astype(np.uint16) * 257, tile=(128, 128),
                                       photometric="rgb"),
    "float_nan.tif": float_nan,
    "all_background.tif": lambda p: _tiff(p, np.full((600, 600, 3), 240, np.uint8), tile=(128, 128),
                                          photometric="rgb"),
}

# what reading each file must give: None = it is read and predicted; else part of the one-line error
EXPECTED = {
    "zero_bytes.tif": "not a readable image (empty file, 0 bytes)",
    "truncated.tif": "truncated TIFF (image data runs to byte",
    "png_named.tif": None,
    "tiff_named.jpg": None,
    "notes.svs": "not a readable image (TileSourceError)",
    "random_bytes.tif": "not a readable image",
    "huge_level0_only.tif": "reading a 60000x60000 region at 3000x3000 would decode 3,600,000,000 pixels, "
                            "over the budget of 268,435,456",
    "huge_striped.tif": "not a readable image (an untiled 40000x40000 TIFF; convert it to a tiled pyramid",
    "one_pixel.png": None,
    "smaller_than_tile.png": None,
    "grayscale.tif": None,
    "rgba.tif": None,
    "sixteen_bit.tif": None,
    "float_nan.tif": None,
    "all_background.tif": None,
    "missing.tif": "file not found",  # not written at all
}


def write_all(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / name for name in EXPECTED}
    for name, write in WRITERS.items():
        write(paths[name])
    return paths
