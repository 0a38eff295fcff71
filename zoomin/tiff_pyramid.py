"""Plain tiled pyramidal TIFFs read with tifffile: what ``SlideSource`` opens without large-image.

Opening a slide through large-image costs about 5 ms of Python (it parses every tag of every
directory and tries its readers in turn), and decoding a whole pyramid level through its
``getRegion`` about twice what tifffile takes for the same tiles. For the files where large-image's
own ``tiff`` reader would answer, and where its answer can be stated in a few lines — every page a
tiled 8-bit RGB image, each page half the one before, as many pages as large-image counts levels,
the pixel size in the resolution tags — ``probe`` reads what ``SlideSource`` needs (the size, the
levels, the µm per pixel) and ``Pyramid.level`` decodes a whole level: the same numbers and the same
pixels (``tests/test_tiff_pyramid.py`` holds both to large-image's). Every other file (SVS,
OME-TIFF, NDPI, a pyramid with missing levels, a description large-image reads metadata from)
gets None and is read through large-image as before. zoomin's own pyramids
(``zoomin.pyramid.write_pyramid`` without ``aperio``) are plain.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .slide_files import data_end, quiet_tifffile, truncated, undecodable

# tags a plain pyramid's pages may carry: none of them changes what large-image reads
_PLAIN_TAGS = frozenset({
    254, 256, 257, 258, 259, 262, 270, 274, 277, 282, 283, 284, 296, 305, 306, 317, 322, 323, 324, 325,
    339, 347, 530, 531, 532,
})
_UNITS_MM = {2: 25.4, 3: 10.0}  # ResolutionUnit -> mm per unit (inch, centimetre)
_SAME = (258, 259, 262, 274, 277, 284, 317, 322, 323)  # the tags every page must share with the first (or lack)


@dataclass(frozen=True)
class Pyramid:
    """A plain pyramid: ``size`` (H, W) of level 0, ``levels`` (large-image's count: halvings until
    one tile covers the image, plus one) and ``mm_x`` (mm per pixel, None if not stated). Level ``k`` (0 = coarsest, as large-image numbers them) is page ``levels - 1 - k``."""
    path: Path
    size: tuple[int, int]
    levels: int
    mm_x: float | None

    def page(self, level: int) -> int:
        """The file's page of ``level`` (0 = coarsest)."""
        return self.levels - 1 - level

    def level(self, level: int) -> np.ndarray:
        """Pyramid ``level`` (0 = coarsest) decoded whole -> (h, w, 3) uint8."""
        return self.decode([level])[0]

    def decode(self, levels: list[int]) -> list[np.ndarray]:
        """Pyramid ``levels`` (0 = coarsest) decoded whole, the file opened once -> [(h, w, 3) uint8].
        A tile that cannot be decoded is one line naming the file."""
        import tifffile
        try:
            with tifffile.TiffFile(self.path) as tf:
                return [tf.pages[self.page(k)].asarray(maxworkers=1) for k in levels]
        except Exception as e:
            raise undecodable(self.path, e) from None


def _resolution_mm(tags) -> float | None:
    """mm per pixel from XResolution and ResolutionUnit, as large-image's tiff reader takes it:
    libtiff's 32-bit float of the rational, ignored below 100 pixels per unit (a default such as
    72 dpi)."""
    if 282 not in tags or 296 not in tags:
        return None
    num, den = tags[282].value
    if not den:
        return None
    xres = float(np.float32(num / den))
    unit = _UNITS_MM.get(int(tags[296].value))
    return unit / xres if unit and xres >= 100 else None


def _plain_description(tags) -> bool:
    """No description, or tifffile's JSON shape record: nothing large-image reads metadata from."""
    if 270 not in tags:
        return True
    text = tags[270].value
    if isinstance(text, bytes):
        text = text.decode(errors="ignore")
    if not text:
        return True
    try:
        record = json.loads(text)
    except ValueError:
        return False
    return isinstance(record, dict) and set(record) <= {"shape"}


def probe(path: str | Path) -> Pyramid | None:
    """``path`` as a plain pyramid, or None where large-image must read it (see the module). A plain
    pyramid whose tiles run past the end of the file is an error (``check_tiff_complete``'s)."""
    path = Path(path)
    if [x.lower() for x in path.suffixes] not in ([".tif"], [".tiff"]):  # large-image reads every dot-part
        return None  # of a name (``x.ndpi.tif`` goes to OpenSlide), so a name with one only
    import tifffile
    try:
        with quiet_tifffile(), tifffile.TiffFile(path) as tf:
            pages = list(tf.pages)
            pyramid = None if tf.is_ome or tf.is_imagej else _plain(path, pages)
            end = data_end(pages)
    except Exception:  # anything tifffile cannot parse: large-image decides
        return None
    if pyramid is not None and end > path.stat().st_size:
        raise ValueError(truncated(path, end))
    return pyramid


def _plain(path: Path, pages: list) -> Pyramid | None:
    """The parsed ``pages`` of ``path`` as a plain pyramid, or None (see the module)."""
    if not pages or not pages[0].is_tiled or pages[0].tilewidth <= 0 or pages[0].tilelength <= 0:
        return None
    first = pages[0]
    H, W = int(first.imagelength), int(first.imagewidth)
    th, tw = int(first.tilelength), int(first.tilewidth)
    # large-image's count of levels, in its own expression (its floating point included)
    levels = max(1, int(math.ceil(math.log(max(W / tw, H / th)) / math.log(2))) + 1)
    if len(pages) != levels:
        return None
    h, w = H, W
    for k, page in enumerate(pages):
        tags = page.tags
        if not set(tags.keys()) <= _PLAIN_TAGS or page.subifds:
            return None
        if not page.is_tiled or page.dtype != np.uint8 or page.samplesperpixel != 3:
            return None
        if int(page.planarconfig) != 1 or int(tags[274].value if 274 in tags else 1) != 1:
            return None
        if int(page.photometric) not in (2, 6) or (int(page.photometric) == 6 and int(page.compression) != 7):
            return None
        if int(tags[339].value if 339 in tags else 1) != 1 or not _plain_description(tags):
            return None
        if any((c in tags) != (c in first.tags) or (c in tags and tags[c].value != first.tags[c].value)
               for c in _SAME):
            return None
        if k:  # half the page before, rounded down (large-image also takes rounded up, which a kept
            h, w = h // 2, w // 2  # level is not)
            if (int(page.imagelength), int(page.imagewidth)) != (h, w):
                return None
    return Pyramid(path, (H, W), levels, _resolution_mm(first.tags))
