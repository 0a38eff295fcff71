"""Region annotations (GeoJSON polygons in the file's level-0 pixels, as QuPath, ``zoomin synth-slides`` and
``zoomin manifest`` write them) as a lazy one-channel ``Source`` for the annotation loss
(method §7): any view or region is rasterised on demand, so a 100,000² slide's mask never exists
whole. Polygons classified ``Exclusion`` are cut out of the others (CAMELYON16's ``_2`` group)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .geojson import read_json
from .geometry import view_size

EXCLUDE = "Exclusion"
SUPERSAMPLE = 4  # rasterise at 4x and average: a lesion smaller than a view pixel still counts


def read_geojson(path: str | Path) -> dict:
    """A GeoJSON file -> dict; one-line errors naming the file."""
    path = Path(path)
    data = read_json(path, "annotation file", "GeoJSON")
    if not isinstance(data, dict) or data.get("type") not in ("FeatureCollection", "Feature"):
        raise ValueError(f"{path}: not a GeoJSON Feature or FeatureCollection")
    return data


def polygons(geojson: dict, where: str = "annotation") -> tuple[list[list[np.ndarray]], list[list[np.ndarray]]]:
    """Every Polygon / MultiPolygon -> (included, excluded) lists of polygons, each a list of
    rings (outer ring first, then holes) as (points, 2) x, y arrays."""
    feats = geojson["features"] if geojson.get("type") == "FeatureCollection" else [geojson]
    keep, cut = [], []
    for f in feats:
        geom = (f or {}).get("geometry") or {}
        kind, coords = geom.get("type"), geom.get("coordinates")
        if kind not in ("Polygon", "MultiPolygon"):
            continue
        name = (((f.get("properties") or {}).get("classification") or {}).get("name"))
        for poly in ([coords] if kind == "Polygon" else coords):
            rings = [np.asarray(r, dtype=np.float64) for r in poly]
            if not rings or any(r.ndim != 2 or r.shape[0] < 3 or r.shape[1] < 2 for r in rings):
                raise ValueError(f"{where}: a polygon needs at least 3 (x, y) points")
            (cut if name == EXCLUDE else keep).append([r[:, :2] for r in rings])
    return keep, cut


def _inside(rings: list[np.ndarray], xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Even-odd test of the points (ys[:, None], xs[None, :]) against all rings of one polygon
    (so holes are outside) -> (len(ys), len(xs)) bool. One pass per polygon edge."""
    out = np.zeros((len(ys), len(xs)), dtype=bool)
    for r in rings:
        for (xa, ya), (xb, yb) in zip(r, np.roll(r, -1, axis=0)):
            if ya == yb:
                continue
            rows = (ys >= min(ya, yb)) & (ys < max(ya, yb))  # the edge spans these rows' centres
            if not rows.any():
                continue
            x_cross = xa + (ys[rows] - ya) * (xb - xa) / (yb - ya)  # (R,)
            out[rows] ^= xs[None, :] < x_cross[:, None]  # crossings to the right of each point
    return out


class MaskSource:
    """The ROI of one image as a source of (1, 1, h, w) coverage in [0, 1] (``view``/``read``)."""

    batch_size = 1
    channels = 1

    def __init__(self, geojson: dict | str | Path, size: tuple[int, int], scale: float = 1.0):
        """``scale``: image pixels per pixel of the outlines' coordinates (a slide read at another
        resolution than the file's, ``SlideSource.k``)."""
        where = str(geojson) if isinstance(geojson, (str, Path)) else "annotation"
        data = read_geojson(geojson) if isinstance(geojson, (str, Path)) else geojson
        self.include, self.exclude = ([[ring * scale for ring in poly] for poly in part] for part in polygons(data, where))
        self.size = tuple(size)  # level-0 (H, W) of the image it annotates
        self._views: dict[float, torch.Tensor] = {}

    def _raster(self, x0: float, y0: float, bw: float, bh: float, out_hw: tuple[int, int]) -> torch.Tensor:
        """Coverage of the level-0 rectangle (x0, y0, bw, bh) on an ``out_hw`` grid -> (h, w): the
        share of ``SUPERSAMPLE``² sub-pixel centres inside, each polygon worked out only over the
        output pixels its bounding box touches (memory: one output grid, not a supersampled one)."""
        oh, ow = out_hw
        out = np.zeros((oh, ow), dtype=np.float32)
        fx, fy, s = ow / bw, oh / bh, SUPERSAMPLE
        for polys, keep in ((self.include, True), (self.exclude, False)):
            for rings in polys:
                px = [np.column_stack([(r[:, 0] - x0) * fx, (r[:, 1] - y0) * fy]) for r in rings]  # output px
                lo, hi = np.min(px[0], 0), np.max(px[0], 0)
                c0, r0 = max(0, int(np.floor(lo[0]))), max(0, int(np.floor(lo[1])))
                c1, r1 = min(ow, int(np.ceil(hi[0]))), min(oh, int(np.ceil(hi[1])))
                if c0 >= c1 or r0 >= r1:
                    continue
                xs = c0 + (np.arange((c1 - c0) * s) + 0.5) / s  # sub-pixel centres
                ys = r0 + (np.arange((r1 - r0) * s) + 0.5) / s
                cov = _inside(px, xs, ys).reshape(r1 - r0, s, c1 - c0, s).mean((1, 3))
                block = out[r0:r1, c0:c1]
                out[r0:r1, c0:c1] = np.maximum(block, cov) if keep else block * (1 - cov)
        return torch.from_numpy(out)

    def view(self, scale: float) -> torch.Tensor:
        """The mask at ``scale`` on the same grid as the image's ``V(x, s)`` -> (1, 1, h, w)."""
        if scale not in self._views:
            h, w = view_size(*self.size, scale)
            self._views[scale] = self._raster(0, 0, self.size[1], self.size[0], (h, w))[None, None]
        return self._views[scale]

    def read(self, batch_index: torch.Tensor, boxes: torch.Tensor, scale: float,
             size_hw: tuple[int, int]) -> torch.Tensor:
        """Level-0 ``boxes`` (M, 4) as ``size_hw`` windows -> (M, 1, h, w) (zero outside the image
        is automatic: there are no polygons there)."""
        out = [self._raster(*b, size_hw) for b in boxes.tolist()]
        return torch.stack(out)[:, None] if out else torch.zeros(0, 1, *size_hw)
