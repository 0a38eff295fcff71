"""Slide files before large-image reads them: a TIFF whose data runs past the end of the file is an
error (not black tiles), and a file large-image cannot open is one line naming it (with a hint for
an untiled TIFF). Only tags are parsed; nothing is decoded."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np


@contextlib.contextmanager
def quiet_tifffile():
    """tifffile's log muted while a TIFF is parsed: it logs pages past the end, which the caller
    reports once (a truncated file) or leaves to large-image."""
    log = logging.getLogger("tifffile")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def data_end(pages) -> int:
    """Where the image data of tifffile ``pages`` ends in the file (bytes)."""
    return max((int(np.add(p.dataoffsets, p.databytecounts).max(initial=0)) for p in pages), default=0)


def undecodable(path: Path, e: Exception) -> ValueError:
    """The one-line error for pixels a reader could not decode (truncated or corrupt tiles)."""
    return ValueError(f"{path}: cannot decode pixels ({type(e).__name__}: "
                      f"{str(e).splitlines()[0][:120] if str(e) else 'no detail'})")


def tiff_layout(path: Path) -> dict | None:
    """For a TIFF: where its image data ends, whether level 0 is tiled, and level 0's shape
    (tags only, nothing decoded); None for other files or TIFFs tifffile cannot parse."""
    with open(path, "rb") as fh:
        if fh.read(2) not in (b"II", b"MM"):
            return None
    import tifffile
    try:
        with quiet_tifffile(), tifffile.TiffFile(path) as tf:
            first = tf.pages.first
            return {"end": data_end(tf.pages), "tiled": bool(first.is_tiled), "shape": tuple(first.shape)}
    except Exception:  # not a TIFF tifffile can parse: large-image decides
        return None


def check_tiff_complete(path: Path) -> None:
    """A TIFF whose image data runs past the end of the file (a truncated copy or download) is an
    error: large-image would otherwise return the missing tiles as black. Other files pass."""
    layout = tiff_layout(path)
    if layout and layout["end"] > path.stat().st_size:
        raise ValueError(truncated(path, layout["end"]))


def truncated(path: Path, end: int) -> str:
    """The one-line error for a TIFF whose image data runs to byte ``end``, past the end of the file."""
    return f"{path}: truncated TIFF (image data runs to byte {end:,}, the file has {path.stat().st_size:,})"


def unreadable(path: Path, e: Exception) -> ValueError:
    """The one-line error for a file large-image cannot open (untiled TIFFs get a hint)."""
    layout = tiff_layout(path)
    if layout and not layout["tiled"]:
        h, w = layout["shape"][:2]
        return ValueError(f"{path}: not a readable image (an untiled {w}x{h} TIFF; convert it to a tiled "
                          f"pyramid, e.g. vips tiffsave --tile --pyramid)")
    return ValueError(f"{path}: not a readable image ({type(e).__name__})")
