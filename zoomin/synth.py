"""Synthetic whole-slide images: tissue-like texture with tiny lesions, written as real pyramidal
JPEG-tiled TIFFs tile by tile, so memory stays bounded whatever the size.

A slide is a small vector description — tissue ellipses and lesion ellipses in level-0 pixels —
and every tile of every pyramid level is rendered from it directly (no level is computed by
downsampling another), so the cost is one pass over the tiles of each level and background
tiles cost almost nothing. Lesion outlines are saved as GeoJSON polygons (level-0 pixels).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

BACKGROUND = np.array([242, 242, 245], np.uint8)
TISSUE = np.array([214, 150, 190], np.float32)  # eosin pink
LESION = np.array([96, 50, 130], np.float32)  # dense haematoxylin purple


@dataclass
class SlideSpec:
    """The vector description of one synthetic slide."""

    size: int  # H = W in level-0 pixels
    tissue: np.ndarray  # (T, 5) ellipses: centre row, centre col, semi-axis r, semi-axis c, angle
    lesions: np.ndarray = field(default_factory=lambda: np.zeros((0, 5)))  # (K, 5), inside tissue

    @property
    def label(self) -> int:
        return int(len(self.lesions) > 0)


def make_spec(size: int, lesion: bool, rng: np.random.Generator, n_tissue: int = 4) -> SlideSpec:
    """Tissue covering roughly a third of the slide; with ``lesion``, 1-3 lesions of 0.02-0.04% of
    the slide's side in radius (ROI-to-image ratio well under 0.1%)."""
    c = rng.uniform(0.3, 0.7, size=(n_tissue, 2)) * size
    ax = rng.uniform(0.12, 0.25, size=(n_tissue, 2)) * size
    tissue = np.column_stack([c, ax, rng.uniform(0, math.pi, n_tissue)])
    lesions = np.zeros((0, 5))
    if lesion:
        k = int(rng.integers(1, 4))
        pick = rng.integers(0, n_tissue, k)
        off = rng.uniform(-0.5, 0.5, size=(k, 2)) * tissue[pick, 2:4]
        r = np.maximum(rng.uniform(0.002, 0.004, size=(k, 1)) * size, 12)
        lesions = np.column_stack([tissue[pick, :2] + off, r, r * rng.uniform(0.6, 1.0, (k, 1)),
                                   rng.uniform(0, math.pi, k)])
    return SlideSpec(size, tissue, lesions)


def _inside(ell: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Which pixels (rows (h, 1), cols (1, w), level-0) fall in any ellipse (E, 5) -> (h, w) bool."""
    out = np.zeros((rows.shape[0], cols.shape[1]), bool)
    for cr, cc, ar, ac, th in ell:  # a handful of ellipses per slide
        dr, dc = (rows - cr).astype(np.float32), (cols - cc).astype(np.float32)
        ct, st = np.float32(math.cos(th)), np.float32(math.sin(th))
        u, v = (dr * ct + dc * st) / np.float32(ar), (dc * ct - dr * st) / np.float32(ac)
        out |= u * u + v * v <= 1.0
    return out


def _near(ell: np.ndarray, r0: float, c0: float, r1: float, c1: float) -> np.ndarray:
    """Ellipses whose bounding circle meets the level-0 rectangle."""
    if not len(ell):
        return ell
    rad = ell[:, 2:4].max(1)
    return ell[(ell[:, 0] + rad >= r0) & (ell[:, 0] - rad <= r1) & (ell[:, 1] + rad >= c0) & (ell[:, 1] - rad <= c1)]


class _Renderer:
    """Renders tiles from a ``SlideSpec``; textures come from small pre-coloured banks, so a tile
    costs one mask evaluation and two copies."""

    def __init__(self, spec: SlideSpec, tile: int, seed: int, bank: int = 8):
        self.spec, self.tile = spec, tile
        noise = np.random.default_rng(seed).normal(0, 1, size=(bank, tile * 2, tile * 2, 1)).astype(np.float32)
        self.tissue = np.clip(TISSUE + noise * 14.0, 0, 255).astype(np.uint8)  # (bank, 2t, 2t, 3)
        self.lesion = np.clip(LESION + noise * 10.0 - (noise > 0.8) * 40.0, 0, 255).astype(np.uint8)
        self.background = np.empty((tile, tile, 3), np.uint8)
        self.background[:] = BACKGROUND

    def tile_at(self, level: int, ti: int, tj: int) -> np.ndarray:
        t, f = self.tile, 2**level
        r0, c0 = ti * t * f, tj * t * f
        tissue = _near(self.spec.tissue, r0, c0, r0 + t * f, c0 + t * f)
        if not len(tissue):
            return self.background  # nothing to compute (the writer only reads it)
        rows = r0 + (np.arange(t)[:, None] + 0.5) * f
        cols = c0 + (np.arange(t)[None, :] + 0.5) * f
        k, dr, dc = (ti * 7919 + tj * 104729 + level) % len(self.tissue), (ti * 31) % t, (tj * 17) % t
        texture = self.tissue[k, dr:dr + t, dc:dc + t]
        cr, cc = rows[[0, -1]], cols[:, [0, -1]]
        if any(_inside(e[None], cr, cc).all() for e in tissue):  # one convex ellipse holds all 4 corners
            out = texture.copy()
        else:
            out = self.background.copy()
            np.copyto(out, texture, where=_inside(tissue, rows, cols)[..., None])
        lesions = _near(self.spec.lesions, r0, c0, r0 + t * f, c0 + t * f)
        if len(lesions):
            np.copyto(out, self.lesion[k, dr:dr + t, dc:dc + t], where=_inside(lesions, rows, cols)[..., None])
        return out


def write_slide(path: str | Path, spec: SlideSpec, tile: int = 512, mpp: float = 0.25, seed: int = 0,
                aperio: bool = False, quality: int = 85) -> Path:
    """Write ``spec`` as a pyramidal JPEG-tiled TIFF, levels halving until one tile covers the
    slide; tile by tile, so memory does not grow with the slide."""
    import tifffile
    path = Path(path)
    render = _Renderer(spec, tile, seed)
    levels = max(1, math.ceil(math.log2(max(spec.size / tile, 1))) + 1)
    res = 1e4 / mpp
    with tifffile.TiffWriter(path, bigtiff=spec.size * spec.size * 3 > 2**31) as tw:
        for k in range(levels):
            h = w = max(1, spec.size // 2**k)
            nt = math.ceil(h / tile), math.ceil(w / tile)
            tiles = (render.tile_at(k, i, j) for i in range(nt[0]) for j in range(nt[1]))
            extra = {}
            if aperio:
                head = f"Aperio Image Library v12.0.15 \n{w}x{h} [0,0 {w}x{h}] ({tile}x{tile}) JPEG/RGB Q={quality}"
                extra = dict(description=head + (f"|AppMag = {10 / mpp:g}|MPP = {mpp}" if k == 0 else ""),
                             metadata=None)
            tw.write(tiles, shape=(h, w, 3), dtype=np.uint8, tile=(tile, tile), photometric="rgb",
                     compression="jpeg", compressionargs={"level": quality}, subfiletype=1 if k else 0,
                     resolution=(res / 2**k, res / 2**k), resolutionunit="CENTIMETER", **extra)
    return path


def lesion_geojson(spec: SlideSpec, points: int = 32) -> dict:
    """Lesion outlines as a GeoJSON FeatureCollection of polygons in level-0 (x, y) pixels."""
    feats = []
    t = np.linspace(0, 2 * math.pi, points, endpoint=False)
    for cr, cc, ar, ac, th in spec.lesions:
        u, v = ar * np.cos(t), ac * np.sin(t)
        rows = cr + u * math.cos(th) - v * math.sin(th)
        cols = cc + u * math.sin(th) + v * math.cos(th)
        ring = [[float(x), float(y)] for x, y in zip(cols, rows)]
        feats.append({"type": "Feature", "properties": {"classification": {"name": "Tumor"}},
                      "geometry": {"type": "Polygon", "coordinates": [ring + ring[:1]]}})
    return {"type": "FeatureCollection", "features": feats}


def synth_slides(out: str | Path, n: int, size: int, seed: int = 0, tile: int = 512, positive_fraction: float = 0.5,
                 test_fraction: float = 0.25, aperio: bool = False, progress: bool = True) -> Path:
    """``n`` synthetic slides (about ``positive_fraction`` with lesions) and ``out/manifest.csv``
    with ``slide_id,path,label,split,annotation`` (paths relative to the manifest)."""
    import csv

    from tqdm.auto import tqdm
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = np.zeros(n, int)
    labels[rng.permutation(n)[: round(n * positive_fraction)]] = 1
    split = np.array(["train"] * n, dtype=object)
    split[rng.permutation(n)[: round(n * test_fraction)]] = "test"
    rows = []
    for i in tqdm(range(n), desc="slides", disable=not progress):
        sid = f"synth_{i:04d}"
        spec = make_spec(size, bool(labels[i]), np.random.default_rng([seed, i]))
        ext = "svs" if aperio else "tif"
        write_slide(out / f"{sid}.{ext}", spec, tile=tile, seed=seed * 100003 + i, aperio=aperio)
        ann = ""
        if spec.label:
            ann = f"{sid}.geojson"
            (out / ann).write_text(json.dumps(lesion_geojson(spec)))
        rows.append({"slide_id": sid, "path": f"{sid}.{ext}", "label": spec.label, "split": split[i], "annotation": ann})
    with open(out / "manifest.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["slide_id", "path", "label", "split", "annotation"])
        w.writeheader()
        w.writerows(rows)
    return out / "manifest.csv"
