"""Region annotations (GeoJSON polygons in level-0 pixels, as QuPath, ``zoomin synth-slides`` and
``zoomin manifest`` write them) as a lazy one-channel ``Source`` for the annotation loss
(METHOD §7): any view or region is rasterised on demand, so a 100,000² slide's mask never exists
whole. Polygons classified ``Exclusion`` are cut out of the others (CAMELYON16's ``_2`` group)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from .geometry import view_size

EXCLUDE = "Exclusion"
SUPERSAMPLE = 4  # rasterise at 4x and average: a lesion smaller than a view pixel still counts


def read_geojson(path: str | Path) -> dict:
    """A GeoJSON file -> dict; one-line errors naming the file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: annotation file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not valid GeoJSON ({type(e).__name__})") from None
    if not isinstance(data, dict) or data.get("type") not in ("FeatureCollection", "Feature"):
        raise ValueError(f"{path}: not a GeoJSON Feature or FeatureCollection")
    return data


def polygons(geojson: dict, where: str = "annotation") -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Outer rings of every Polygon / MultiPolygon -> (included, excluded) lists of (K, 2) x, y arrays."""
    feats = geojson["features"] if geojson.get("type") == "FeatureCollection" else [geojson]
    keep, cut = [], []
    for f in feats:
        geom = (f or {}).get("geometry") or {}
        kind, coords = geom.get("type"), geom.get("coordinates")
        if kind not in ("Polygon", "MultiPolygon"):
            continue
        name = (((f.get("properties") or {}).get("classification") or {}).get("name"))
        for poly in ([coords] if kind == "Polygon" else coords):
            ring = np.asarray(poly[0], dtype=np.float64)
            if ring.ndim != 2 or ring.shape[0] < 3 or ring.shape[1] < 2:
                raise ValueError(f"{where}: a polygon needs at least 3 (x, y) points")
            (cut if name == EXCLUDE else keep).append(ring[:, :2])
    return keep, cut


class MaskSource:
    """The ROI of one image as a source of (1, 1, h, w) coverage in [0, 1] (``view``/``read``)."""

    batch_size = 1
    channels = 1

    def __init__(self, geojson: dict | str | Path, size: tuple[int, int]):
        where = str(geojson) if isinstance(geojson, (str, Path)) else "annotation"
        data = read_geojson(geojson) if isinstance(geojson, (str, Path)) else geojson
        self.include, self.exclude = polygons(data, where)
        self.size = tuple(size)  # level-0 (H, W) of the image it annotates
        self._views: dict[float, torch.Tensor] = {}

    def _raster(self, x0: float, y0: float, bw: float, bh: float, out_hw: tuple[int, int]) -> torch.Tensor:
        """Coverage of level-0 rectangle (x0, y0, bw, bh) on an ``out_hw`` grid -> (h, w)."""
        from PIL import Image, ImageDraw
        oh, ow = out_hw
        s = SUPERSAMPLE
        img = Image.new("L", (ow * s, oh * s), 0)
        draw = ImageDraw.Draw(img)
        fx, fy = ow * s / bw, oh * s / bh
        for rings, fill in ((self.include, 255), (self.exclude, 0)):
            for r in rings:
                pts = np.column_stack([(r[:, 0] - x0) * fx, (r[:, 1] - y0) * fy])
                draw.polygon([tuple(p) for p in pts.tolist()], fill=fill)
        cov = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0)
        return cov.view(oh, s, ow, s).mean((1, 3))

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
