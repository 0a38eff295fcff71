"""Synthetic whole-slide images: tissue-like texture with tiny lesions, written as real pyramidal
JPEG-tiled TIFFs tile by tile, so memory stays bounded whatever the size.

A slide is a small vector description (``SlideSpec``): tissue ellipses, lesion outlines, and the
cells drawn inside lesions or scattered as distractors, all in level-0 pixels. Every tile of
every pyramid level is rendered from it directly (``synth_render``), so the cost is one pass
over the tiles and background tiles cost almost nothing. Lesion outlines are saved as GeoJSON
polygons (level-0 pixels).

Appearances (``appearance=``): ``plain`` (the default: 1-3 purple ellipses on pink noise, an
easy task), and four that must be learnt from slide labels: ``nuclei`` (a cluster of dark,
crowded nuclei), ``colour`` (a stain shift, more purple or browner, texture unchanged),
``texture`` (fibrous stroma at the tissue's mean colour), ``giant_cells`` (a few cells 3-4x a
normal nucleus); ``mixed`` draws one of those four per lesion. Besides ``plain``, the tissue
has scattered normal nuclei, and ``distractors`` puts lesion-like cells (single giant cells,
dark spots, pairs of dark nuclei) on negative and positive slides alike, outside the lesions.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .geojson import feature_collection, polygon_feature, write_geojson
from .synth_render import APPEARANCES, CELL_GIANT, CELL_NUCLEUS, CELL_SPOT, STAINS, Renderer, outline_radius

CHOICES = APPEARANCES + ("mixed",)
NUCLEUS_UM = 3.5  # radius of a normal nucleus in microns
DEFAULT_ROI = 0.0005  # lesion area / slide area when ``roi_ratio`` is not given (other than plain)
HARMONICS = np.array([0.10, 0.07, 0.05, 0.03])  # largest outline wobble at m = 2, 3, 4, 5
MIN_AREA = {"plain": 50, "colour": 50, "texture": 50, "nuclei": 120, "giant_cells": 300}  # x nucleus radius²


def _empty(*shape: int):
    return field(default_factory=lambda: np.zeros(shape))


@dataclass
class SlideSpec:
    """The vector description of one synthetic slide (level-0 pixels throughout)."""

    size: int  # H = W
    tissue: np.ndarray  # (T, 5) ellipses: centre row, centre col, semi-axis r, semi-axis c, angle
    lesions: np.ndarray = _empty(0, 5)  # (lesions, 5) each lesion's ellipse frame, inside tissue
    kinds: np.ndarray = field(default_factory=lambda: np.zeros(0, int))  # (lesions,) index into APPEARANCES
    harmonics: np.ndarray = _empty(0, len(HARMONICS), 2)  # (lesions, harmonics, 2) outline wobble (a_m, phi_m), m = 2..
    stains: np.ndarray = _empty(0, 3)  # (lesions, 3) optical-density factors of "colour" lesions (1 for the others)
    cells: np.ndarray = _empty(0, 7)  # (C, 7) lesion cells: centre r, c, semi-axes r, c, angle, opacity, kind
    distractors: np.ndarray = _empty(0, 7)  # (D, 7) lesion-like cells outside every lesion, same columns
    texture: str = "noise"  # tissue texture: "noise" (plain pink) or "tissue" (eosin with normal nuclei)
    nucleus: float = NUCLEUS_UM / 0.25  # radius of a normal nucleus
    mpp: float = 0.25  # microns per level-0 pixel

    @property
    def label(self) -> int:
        return int(len(self.lesions) > 0)

    @property
    def areas(self) -> np.ndarray:
        """(lesions,) lesion areas: pi a b (1 + sum a_m^2 / 2) of each irregular outline."""
        return math.pi * self.lesions[:, 2] * self.lesions[:, 3] * (1 + 0.5 * (self.harmonics[..., 0] ** 2).sum(-1))

    @property
    def roi_ratio(self) -> float:
        """Total lesion area / slide area."""
        return float(self.areas.sum()) / self.size**2


def to_level0(ell: np.ndarray, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Points (u, v) of an ellipse's normalised frame (unit circle = the ellipse) -> level-0 (rows, cols)."""
    cr, cc, ar, ac, th = ell
    ct, st = np.cos(th), np.sin(th)
    return cr + ar * u * ct - ac * v * st, cc + ar * u * st + ac * v * ct


def _in_tissue(tissue: np.ndarray, rng, n: int, reach: float) -> np.ndarray:
    """``n`` random level-0 points (n, 2) inside tissue ellipses (normalised radius <= ``reach``)."""
    pick = tissue[rng.integers(0, len(tissue), n)]
    rho, phi = reach * np.sqrt(rng.uniform(0, 1, n)), rng.uniform(0, 2 * math.pi, n)
    return np.column_stack(to_level0(pick.T, rho * np.cos(phi), rho * np.sin(phi)))


def _legacy_lesions(tissue: np.ndarray, size: int, rng) -> np.ndarray:
    """The original draw: 1-3 ellipses of 0.2-0.4% of the side in radius (at least 12 px)."""
    k = int(rng.integers(1, 4))
    pick = rng.integers(0, len(tissue), k)
    off = rng.uniform(-0.5, 0.5, size=(k, 2)) * tissue[pick, 2:4]
    r = np.maximum(rng.uniform(0.002, 0.004, size=(k, 1)) * size, 12)
    return np.column_stack([tissue[pick, :2] + off, r, r * rng.uniform(0.6, 1.0, (k, 1)), rng.uniform(0, math.pi, k)])


def _place(tissue: np.ndarray, rng, radii: np.ndarray) -> np.ndarray:
    """Centres (lesions, 2) for lesions of bounding radii (lesions,): inside tissue, apart from each other."""
    out: list[np.ndarray] = []
    for r in radii:
        cand = _in_tissue(tissue, rng, 64, 0.6)
        ok = np.ones(len(cand), bool)
        for c, rc in zip(out, radii):
            ok &= np.hypot(*(cand - c).T) > 1.2 * (r + rc)
        out.append(cand[ok.argmax()] if ok.any() else cand[0])
    return np.array(out).reshape(-1, 2)


def _nuclei_cells(ell, harm, r0: float, rng) -> np.ndarray:
    """Crowded dark nuclei filling one lesion: a jittered grid, centres a radius inside the outline."""
    rn = 1.35 * r0
    sp = 2.3 * rn
    ext = max(ell[2], ell[3]) * (1 + HARMONICS.sum())
    g = np.arange(-ext, ext + sp, sp)
    pts = np.stack(np.meshgrid(g, g), -1).reshape(-1, 2) + rng.uniform(-0.35, 0.35, (g.size**2, 2)) * sp
    cr, cc, ar, ac, th = ell
    u = (pts[:, 0] * math.cos(th) + pts[:, 1] * math.sin(th)) / ar  # (P,) normalised frame
    v = (pts[:, 1] * math.cos(th) - pts[:, 0] * math.sin(th)) / ac
    keep = np.hypot(u, v) <= outline_radius(harm, np.arctan2(v, u)) - rn / math.sqrt(ar * ac)
    pts = pts[keep] if keep.any() else np.zeros((1, 2))
    n = len(pts)
    r = np.minimum(rn * rng.uniform(0.85, 1.2, n), 0.8 * min(ar, ac) if not keep.any() else np.inf)
    return np.column_stack([pts + (cr, cc), r, r * rng.uniform(0.65, 1.0, n), rng.uniform(0, math.pi, n),
                            rng.uniform(0.82, 0.95, n), np.full(n, CELL_NUCLEUS)])


def _giant_cells(ell, harm, r0: float, area: float, rng) -> np.ndarray:
    """A few cells 3-4x a normal nucleus inside one lesion (smaller, down to 2x, if it is tiny)."""
    n = int(np.clip(0.35 * area / (math.pi * (1.8 * 3.5 * r0) ** 2), 2, 6))
    rg = float(np.clip(math.sqrt(0.35 * area / (n * math.pi)) / 1.8, 2 * r0, 3.5 * r0))
    rho, phi = 0.7 * np.sqrt(rng.uniform(0, 1, 200)), rng.uniform(0, 2 * math.pi, 200)
    rho *= outline_radius(harm, phi)
    rows, cols = to_level0(ell, rho * np.cos(phi), rho * np.sin(phi))
    chosen: list[int] = []
    for i in range(200):  # greedy: far enough from the cells already chosen
        if len(chosen) == n:
            break
        if all(math.hypot(rows[i] - rows[j], cols[i] - cols[j]) > 2.4 * rg for j in chosen):
            chosen.append(i)
    m = len(chosen)
    r = rg * rng.uniform(0.9, 1.15, m)
    return np.column_stack([rows[chosen], cols[chosen], r, r * rng.uniform(0.7, 1.0, m), rng.uniform(0, math.pi, m),
                            rng.uniform(0.9, 0.97, m), np.full(m, CELL_GIANT)])


def _distractors(spec: SlideSpec, n: int, rng) -> np.ndarray:
    """``n`` lesion-like objects in tissue, clear of every lesion: a single giant cell, a tiny dark
    spot, or a pair/triple of dark lesion-like nuclei."""
    r0 = spec.nucleus
    pts = _in_tissue(spec.tissue, rng, 20 * n, 0.85)
    clear = np.ones(len(pts), bool)
    reach = spec.lesions[:, 2:4].max(1, initial=0) * (1 + HARMONICS.sum()) + 9 * r0
    for (cr, cc), rr in zip(spec.lesions[:, :2], reach):
        clear &= np.hypot(pts[:, 0] - cr, pts[:, 1] - cc) > rr
    pts, out = pts[clear][:n], []
    for (r, c), kind in zip(pts, rng.integers(0, 3, len(pts))):
        if kind == 0:
            rad = r0 * rng.uniform(3.0, 3.8)
            out.append([r, c, rad, rad * rng.uniform(0.7, 1), rng.uniform(0, math.pi), rng.uniform(0.9, 0.97),
                        CELL_GIANT])
        elif kind == 1:
            rad = r0 * rng.uniform(0.5, 0.8)
            out.append([r, c, rad, rad, 0.0, 1.0, CELL_SPOT])
        else:
            k, rn = int(rng.integers(2, 4)), 1.35 * r0
            phi = rng.uniform(0, 2 * math.pi) + np.arange(k) * 2 * math.pi / k
            for p in phi:
                rad = rn * rng.uniform(0.9, 1.2)
                out.append([r + 1.2 * rn * math.sin(p), c + 1.2 * rn * math.cos(p), rad, rad * rng.uniform(0.65, 1),
                            rng.uniform(0, math.pi), rng.uniform(0.82, 0.95), CELL_NUCLEUS])
    return np.array(out, float).reshape(-1, 7)


def make_spec(size: int, lesion: bool, rng: np.random.Generator, n_tissue: int = 4, appearance: str = "plain",
              roi_ratio: float | None = None, distractors: int = 0, mpp: float | None = None) -> SlideSpec:
    """Tissue covering roughly a third of the slide and, with ``lesion``, 1-3 lesions.

    ``appearance``: one of ``CHOICES`` (``mixed`` draws per lesion). ``roi_ratio``: total lesion
    area / slide area (e.g. 0.001 to 0.00005); the lesion count (1-3, fewer when each would be
    too small for its appearance) and radii follow from it. ``None``: for ``plain`` the original
    draw (radii 0.2-0.4% of the side), otherwise ``DEFAULT_ROI``. ``distractors``: lesion-like
    objects per slide (negatives too). ``mpp``: microns per pixel (default 0.25 for ``plain``,
    1.0 otherwise); a normal nucleus is ``NUCLEUS_UM`` / mpp pixels in radius."""
    lesion_pool(appearance)  # a clear error for an unknown name
    if roi_ratio is not None and not 0 < roi_ratio < 0.1:
        raise ValueError(f"roi_ratio {roi_ratio} is not in (0, 0.1)")
    c = rng.uniform(0.3, 0.7, size=(n_tissue, 2)) * size
    ax = rng.uniform(0.12, 0.25, size=(n_tissue, 2)) * size
    tissue = np.column_stack([c, ax, rng.uniform(0, math.pi, n_tissue)])
    mpp = mpp or (0.25 if appearance == "plain" else 1.0)
    spec = SlideSpec(size, tissue, texture="noise" if appearance == "plain" else "tissue", nucleus=NUCLEUS_UM / mpp,
                     mpp=mpp)
    if lesion and appearance == "plain" and roi_ratio is None:
        spec.lesions = _legacy_lesions(tissue, size, rng)
        spec.kinds, spec.harmonics = np.zeros(len(spec.lesions), int), np.zeros((len(spec.lesions), len(HARMONICS), 2))
        spec.stains = np.ones((len(spec.lesions), 3))
    elif lesion:
        _add_lesions(spec, appearance, (roi_ratio or DEFAULT_ROI) * size**2, rng)
    if distractors:
        spec.distractors = _distractors(spec, distractors, rng)
    return spec


def lesion_pool(appearance: str) -> list[str]:
    """The appearances lesions are drawn from: one of ``CHOICES``, or a comma-separated subset of
    the learnable kinds (``"nuclei,colour"``: one of those two per lesion, as ``mixed`` does for all)."""
    if appearance == "mixed":
        return list(APPEARANCES[1:])
    names = appearance.split(",")
    bad = [a for a in names if a not in APPEARANCES or (len(names) > 1 and a == "plain")]
    if bad:
        raise ValueError(f"unknown appearance {appearance!r}; choose one of {', '.join(CHOICES)}, "
                         "or a comma-separated list of the kinds other than plain")
    return names


def _add_lesions(spec: SlideSpec, appearance: str, total: float, rng) -> None:
    """1-3 lesions of ``total`` level-0 px² together, with their outlines, colours and cells."""
    r0 = spec.nucleus
    pool = lesion_pool(appearance)
    kinds = [appearance] * 3 if len(pool) == 1 else list(rng.choice(pool, 3))
    k = int(rng.integers(1, 4))
    while k > 1 and total / k < max(MIN_AREA[a] for a in kinds[:k]) * r0**2:
        k -= 1
    kinds, areas = kinds[:k], total * rng.dirichlet(np.full(k, 3.0))
    m = len(HARMONICS)
    harm = np.stack([rng.uniform(-1, 1, (k, m)) * HARMONICS, rng.uniform(0, 2 * math.pi, (k, m))], -1)  # (k, m, 2)
    harm[[a == "plain" for a in kinds]] = 0
    elong = rng.uniform(0.6, 1.0, k)
    ar = np.sqrt(areas / (math.pi * elong * (1 + 0.5 * (harm[..., 0] ** 2).sum(-1))))
    centres = _place(spec.tissue, rng, ar * (1 + np.abs(harm[..., 0]).sum(-1)))
    spec.lesions = np.column_stack([centres, ar, ar * elong, rng.uniform(0, math.pi, k)])
    spec.kinds, spec.harmonics = np.array([APPEARANCES.index(a) for a in kinds]), harm
    spec.stains = np.array([STAINS[rng.integers(len(STAINS))] if a == "colour" else np.ones(3) for a in kinds])
    cells = [_nuclei_cells(e, h, r0, rng) if a == "nuclei" else _giant_cells(e, h, r0, s, rng)
             for e, h, a, s in zip(spec.lesions, harm, kinds, areas) if a in ("nuclei", "giant_cells")]
    spec.cells = np.concatenate(cells) if cells else np.zeros((0, 7))


def write_slide(path: str | Path, spec: SlideSpec, tile: int = 512, mpp: float | None = None, seed: int = 0,
                aperio: bool = False, quality: int = 85) -> Path:
    """Write ``spec`` as a pyramidal JPEG-tiled TIFF (``mpp``: the spec's unless given), levels
    halving until one tile covers the slide; tile by tile, so memory does not grow with the slide."""
    from .pyramid import write_pyramid
    return write_pyramid(path, (spec.size, spec.size), Renderer(spec, tile, seed).tile_at, tile=tile,
                         mpp=mpp or spec.mpp, quality=quality, aperio=aperio)


def lesion_geojson(spec: SlideSpec, points: int = 64) -> dict:
    """Lesion outlines as a GeoJSON FeatureCollection of polygons in level-0 (x, y) pixels, class
    ``Tumor``, with the lesion's ``appearance``."""
    t = np.linspace(0, 2 * math.pi, points, endpoint=False)
    feats = []
    for ell, harm, kind in zip(spec.lesions, spec.harmonics, spec.kinds):
        rho = outline_radius(harm, t)
        rows, cols = to_level0(ell, rho * np.cos(t), rho * np.sin(t))
        feats.append(polygon_feature(np.column_stack([cols, rows]), "Tumor", appearance=APPEARANCES[int(kind)]))
    return feature_collection(feats)


def synth_slides(out: str | Path, n: int, size: int, seed: int = 0, tile: int = 512, positive_fraction: float = 0.5,
                 test_fraction: float = 0.25, aperio: bool = False, progress: bool = True, appearance: str = "plain",
                 roi_ratio: float | None = None, distractors: int = 0, annotations: bool = True,
                 mpp: float | None = None) -> Path:
    """``n`` synthetic slides (about ``positive_fraction`` with lesions; ``appearance``,
    ``roi_ratio``, ``distractors``, ``mpp`` as in ``make_spec``), each positive slide's outlines
    as ``<slide_id>.geojson`` beside it, and ``out/manifest.csv`` with
    ``slide_id,path,label,split,annotation,mpp`` (paths relative to the manifest).
    ``annotations=False`` leaves the ``annotation`` column out (a labels-only manifest; the
    GeoJSON files are still written, for diagnostics)."""
    from .progress import bar

    from .manifest import Entry, write_manifest
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = np.zeros(n, int)
    labels[rng.permutation(n)[: round(n * positive_fraction)]] = 1
    split = np.array(["train"] * n, dtype=object)
    split[rng.permutation(n)[: round(n * test_fraction)]] = "test"
    rows = []
    for i in bar(range(n), desc="slides", enabled=progress, every=max(1, n // 10)):
        sid = f"synth_{i:04d}"
        spec = make_spec(size, bool(labels[i]), np.random.default_rng([seed, i]), appearance=appearance,
                         roi_ratio=roi_ratio, distractors=distractors, mpp=mpp)
        path = write_slide(out / f"{sid}.{'svs' if aperio else 'tif'}", spec, tile=tile, seed=seed * 100003 + i,
                           aperio=aperio)
        ann = write_geojson(lesion_geojson(spec), out / f"{sid}.geojson") if spec.label else None
        rows.append(Entry(sid, path, spec.label, split[i], ann, spec.mpp))
    return write_manifest(rows, out / "manifest.csv", annotations=annotations)
