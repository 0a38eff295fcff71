"""Tiles of a synthetic slide rendered from its vector description (``synth.SlideSpec``).

Textures come from small periodic banks, one per pyramid level and drawn at that level's scale
(nuclei of radius ``r0 / 2**level``, cached per process), so a tile costs a crop, the tissue
mask, and work only where a lesion or a cell reaches it. Lesion regions have soft, irregular
outlines; cells (lesion nuclei, giant cells, distractors) are splatted as anti-aliased ellipses
whose ink is kept when they are smaller than a pixel, so every level shows the same picture.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

BACKGROUND = np.array([242, 242, 245], np.uint8)
TISSUE = np.array([214, 150, 190], np.float32)  # eosin pink
LESION = np.array([96, 50, 130], np.float32)  # the "plain" lesion: dense haematoxylin purple
NUCLEUS = np.array([92, 58, 136], np.float32)  # normal nuclei of the background tissue
NUCLEUS_DARK = np.array([58, 32, 100], np.float32)  # lesion nuclei and giant cells
SPOT = np.array([50, 34, 44], np.float32)  # pigment / debris (distractor)
CYTOPLASM = np.array([176, 104, 168], np.float32)  # the body of a giant cell
GAP = np.array([238, 228, 238], np.float32)  # clefts in the tissue
STAINS = np.array([[1.35, 1.3, 1.05], [1.2, 1.4, 1.9]], np.float32)  # "colour" lesions' optical-density
# factors per channel: more purple, browner (white stays white)
PERIOD = 1200  # side of a texture bank (level pixels): not a multiple of a tile side, so tiles differ
FIBRE_ANGLE = math.radians(35)  # direction of the "texture" lesions' fibres
CELL_NUCLEUS, CELL_GIANT, CELL_SPOT = 0, 1, 2  # cell kinds (column 6 of a cell row)
APPEARANCES = ("plain", "nuclei", "colour", "texture", "giant_cells")  # lesion kinds (SlideSpec.kinds)


def splat(shape: tuple[int, int], yx: np.ndarray, radii: np.ndarray, angle: np.ndarray, value: np.ndarray,
          wrap: bool = False) -> np.ndarray:
    """Max-composite anti-aliased ellipses into an (h, w) coverage map in [0, 1].

    yx (n, 2): centres in pixel units (pixel i spans [i, i + 1)); radii (n, 2): semi-axes along
    the rows / columns before rotating by ``angle`` (n,); value (n,): peak opacity. Ellipses
    under 0.6 px are drawn at 0.6 px with their opacity scaled to keep their area. ``wrap``
    tiles the plane periodically (texture banks); otherwise pixels outside are dropped."""
    h, w = shape
    out = np.zeros(shape, np.float32)
    reff = np.maximum(radii, 0.6)
    gain = (value * radii.prod(1) / reff.prod(1)).astype(np.float32)
    half = np.floor(reff.max(1) + 1).astype(int)  # pixel centres within reff + 0.5 of the centre
    bucket = 2 ** np.ceil(np.log2(half)).astype(int)  # a few stencil sizes
    for b in np.unique(bucket):
        group = np.flatnonzero(bucket == b)
        for sel in np.array_split(group, max(1, len(group) * (2 * b + 1) ** 2 // 4_000_000)):  # bounded memory
            off = np.arange(-b, b + 1)
            base = np.floor(yx[sel]).astype(int)  # (m, 2)
            py, px = base[:, 0, None, None] + off[None, :, None], base[:, 1, None, None] + off[None, None, :]
            dy = (py + 0.5 - yx[sel, 0, None, None]).astype(np.float32)  # (m, S, 1)
            dx = (px + 0.5 - yx[sel, 1, None, None]).astype(np.float32)  # (m, 1, S)
            c, s = np.cos(angle[sel])[:, None, None], np.sin(angle[sel])[:, None, None]
            ra, rb = reff[sel, 0, None, None], reff[sel, 1, None, None]
            rho = np.sqrt(((dy * c + dx * s) / ra) ** 2 + ((dx * c - dy * s) / rb) ** 2)  # (m, S, S)
            cov = np.clip(0.5 + (1 - rho) * np.sqrt(ra * rb), 0, 1).astype(np.float32) * gain[sel, None, None]
            py, px = np.broadcast_arrays(py, px)
            if wrap:
                idx = (py % h) * w + px % w
            else:
                keep = (py >= 0) & (py < h) & (px >= 0) & (px < w) & (cov > 0)
                idx, cov = py[keep] * w + px[keep], cov[keep]
            np.maximum.at(out.reshape(-1), idx.reshape(-1), cov.reshape(-1))
    return out


def ink(rgb: np.ndarray, cover: np.ndarray, colour: np.ndarray, grain: float = 0.6) -> np.ndarray:
    """Lay ``colour`` over float ``rgb`` (h, w, 3) with opacity ``cover`` (h, w), keeping
    ``grain`` of the texture's deviation from eosin pink (chromatin)."""
    a = cover[..., None]
    return rgb + a * (colour + grain * (rgb - TISSUE) - rgb)


def _filtered(rng: np.random.Generator, n: int, gain) -> np.ndarray:
    """Periodic noise (n, n): white noise through the transfer function ``gain(fy, fx)`` (cycles
    per pixel) in Fourier space, so it wraps around; scaled to unit standard deviation."""
    fy, fx = np.fft.fftfreq(n)[:, None], np.fft.rfftfreq(n)[None, :]
    x = np.fft.irfft2(np.fft.rfft2(rng.standard_normal((n, n))) * gain(fy, fx), s=(n, n)).astype(np.float32)
    return x / max(float(x.std()), 1e-6)


def _blur(rng: np.random.Generator, n: int, sigma: float) -> np.ndarray:
    """Smooth periodic noise: a Gaussian of ``sigma`` px."""
    return _filtered(rng, n, lambda fy, fx: np.exp(-2 * (math.pi * sigma) ** 2 * (fy**2 + fx**2)))


def _fibres(rng: np.random.Generator, n: int, lam: float, angle: float) -> np.ndarray:
    """Wavy streaks along ``angle`` about ``lam`` px apart: noise band-passed across the fibres
    around 1/lam and low-passed (about 3 lam long) along them, then bent by a smooth periodic
    displacement of about 2 lam."""
    from scipy.ndimage import map_coordinates
    c, s = math.cos(angle), math.sin(angle)

    def gain(fy, fx):
        along, across = fx * c + fy * s, fy * c - fx * s  # frequency along / across the fibres
        return np.exp(-2 * (math.pi * 3 * lam * along) ** 2
                      - 2 * (math.pi * 0.4 * lam * (np.abs(across) - 1 / lam)) ** 2)
    field = _filtered(rng, n, gain)
    yy, xx = np.mgrid[0:n, 0:n].astype(np.float32)
    bend = 2 * lam * _blur(rng, n, 6 * lam)  # shift across the fibres, varying slowly
    return map_coordinates(field, [yy + bend * c, xx - bend * s], order=1, mode="grid-wrap")


def _scatter(rng, n: int, count: int, r: float, elong: tuple[float, float], opacity: tuple[float, float],
             angle: float | None = None) -> tuple:
    """``count`` random cells in an n x n periodic bank: (yx, radii, angle, value) for ``splat``."""
    yx = rng.uniform(0, n, (count, 2))
    ra = r * rng.uniform(0.75, 1.1, count)
    radii = np.column_stack([ra, ra * rng.uniform(*elong, count)])
    th = rng.uniform(0, math.pi, count) if angle is None else angle + rng.normal(0, 0.15, count)
    return yx, radii, th, rng.uniform(*opacity, count)


def bank(kind: str, level: int, r0: float, seed: int = 0) -> np.ndarray:
    """The (PERIOD, PERIOD, 3) uint8 periodic texture of ``kind`` at pyramid ``level``:
    ``noise`` (pink noise), ``lesion`` (the plain lesion), ``tissue`` (eosin with wisps, clefts
    and scattered normal nuclei of radius ``r0`` level-0 px), ``fibres`` (striped stroma with
    spindle nuclei, same mean colour as ``tissue``). ``noise`` and ``lesion`` look the same at
    every level; the others stop changing once a nucleus is ~1/3 px. Cached per process."""
    if kind in ("noise", "lesion"):
        return _bank(kind, 0, 0.0, seed)
    return _bank(kind, min(level, max(0, math.floor(math.log2(max(r0, 0.35) / 0.35)))), float(r0), seed)


@lru_cache(maxsize=24)
def _bank(kind: str, level: int, r0: float, seed: int) -> np.ndarray:
    n = PERIOD
    if kind in ("noise", "lesion"):  # the original look
        noise = np.random.default_rng([seed, 7]).normal(0, 1, (n, n, 1)).astype(np.float32)
        rgb = TISSUE + noise * 14 if kind == "noise" else LESION + noise * 10 - (noise > 0.8) * 40
        return np.clip(rgb, 0, 255).astype(np.uint8)
    f, rng = 2.0**level, np.random.default_rng([seed, level, kind == "fibres"])
    r = r0 / f  # nucleus radius in this level's pixels
    white = rng.standard_normal((n, n, 1)).astype(np.float32)
    if kind == "tissue":
        wisp = _blur(rng, n, max(0.6, 1.0 * r))[..., None]
        gap = np.clip((_blur(rng, n, max(0.8, 4 * r)) - 2.0) * 2, 0, 1)[..., None]
        rgb = TISSUE + 6 * white + 9 * wisp * np.array([0.8, 1.2, 0.9], np.float32)
        rgb += gap * (GAP - rgb)
        cells = _scatter(rng, n, int(n * n / (7 * r) ** 2), r, (0.5, 1.0), (0.55, 0.8))
        return np.clip(ink(rgb, splat((n, n), *cells, wrap=True), NUCLEUS), 0, 255).astype(np.uint8)
    if kind != "fibres":
        raise ValueError(f"unknown texture {kind!r}")
    lam = 2.6 * r  # fibre spacing in this level's pixels
    amp = float(np.clip((lam - 1.5) / 2.5, 0, 1))  # fibres finer than ~2 px average out
    streaks = _fibres(rng, n, max(lam, 2.0), FIBRE_ANGLE)[..., None]
    rgb = TISSUE + 6 * white + 16 * amp * streaks * np.array([0.5, 1.0, 0.7], np.float32)
    cells = _scatter(rng, n, int(n * n / (12 * r) ** 2), 1.5 * r, (0.28, 0.4), (0.5, 0.7),
                     angle=math.pi / 2 - FIBRE_ANGLE)  # long axis along the fibres
    rgb = ink(rgb, splat((n, n), *cells, wrap=True), NUCLEUS)
    rgb += _bank("tissue", level, r0, seed).reshape(-1, 3).mean(0) - rgb.reshape(-1, 3).mean(0)  # normal colour
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _spans(start: int, length: int, n: int) -> list[tuple[int, int]]:
    """Source ranges covering ``length`` positions from ``start`` on an axis of period ``n``."""
    spans, pos = [], start % n
    while length > 0:
        take = min(length, n - pos)
        spans.append((pos, pos + take))
        length, pos = length - take, 0
    return spans


def wrap_crop(src: np.ndarray, r: int, c: int, h: int, w: int) -> np.ndarray:
    """The (h, w) window at (r, c) of the periodic ``src``: a few block copies."""
    out = np.empty((h, w) + src.shape[2:], src.dtype)
    i = 0
    for r0, r1 in _spans(r, h, src.shape[0]):
        j = 0
        for c0, c1 in _spans(c, w, src.shape[1]):
            out[i:i + r1 - r0, j:j + c1 - c0] = src[r0:r1, c0:c1]
            j += c1 - c0
        i += r1 - r0
    return out


def outline_radius(harmonics: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """R(theta) = 1 + sum_m a_m cos(m theta + phi_m), m = 2, 3, ..: the irregular outline of a
    lesion in its normalised ellipse frame. harmonics (M, 2) rows (a_m, phi_m)."""
    m = np.arange(2, 2 + len(harmonics), dtype=np.float32)
    return 1 + np.tensordot(np.cos(theta[..., None] * m + harmonics[:, 1].astype(np.float32)),
                            harmonics[:, 0].astype(np.float32), axes=1)


def region_weight(ell: np.ndarray, harmonics: np.ndarray, rows: np.ndarray, cols: np.ndarray, f: float,
                  feather: float) -> np.ndarray:
    """Soft coverage (h, w) of one lesion region at level-0 pixel centres rows (h, 1), cols (1, w)
    of a level with ``f`` level-0 px per pixel: 1 inside, 0 outside, a ramp ``feather`` x the
    lesion's radius wide (at least 1 px) across the outline. A region under ~1 px is drawn at
    1 px with its weight scaled to keep its area."""
    cr, cc, ar, ac, th = ell
    rm = math.sqrt(ar * ac)
    grow = max(1.0, 0.6 * f / rm)  # tiny at this level: draw bigger, fainter
    ct, st = np.float32(math.cos(th)), np.float32(math.sin(th))
    dr, dc = (rows - cr).astype(np.float32), (cols - cc).astype(np.float32)
    u, v = (dr * ct + dc * st) / np.float32(ar * grow), (dc * ct - dr * st) / np.float32(ac * grow)
    d = (outline_radius(harmonics, np.arctan2(v, u)) - np.sqrt(u * u + v * v)) * np.float32(rm * grow / f)
    return np.clip(0.5 + d / max(1.0, feather * rm / f), 0, 1) / np.float32(grow * grow)


class Renderer:
    """Renders the tiles of a ``SlideSpec`` (``tile_at(level, ti, tj)``, the writer's tile source)."""

    def __init__(self, spec, tile: int, seed: int):
        self.spec, self.tile = spec, tile
        self.shift = np.random.default_rng([seed, 11]).integers(0, PERIOD, 2)  # this slide's place in the banks
        self.background = np.empty((tile, tile, 3), np.uint8)
        self.background[:] = BACKGROUND
        self.cells = np.concatenate([spec.cells, spec.distractors]).reshape(-1, 7)
        self.cell_reach = self.cells[:, 2:4].max(1, initial=0) * np.where(self.cells[:, 6] == CELL_GIANT, 1.8, 1) + 1
        wobble = 1 + np.abs(spec.harmonics[..., 0]).sum(-1)  # (K,) the outline's largest radius / ellipse
        self.lesion_reach = 1.15 * spec.lesions[:, 2:4].max(1, initial=0) * wobble + 1  # with the 0.25 ramp

    def texture(self, kind: str, level: int, ti: int, tj: int) -> np.ndarray:
        t = self.tile
        return wrap_crop(bank(kind, level, self.spec.nucleus), ti * t + self.shift[0], tj * t + self.shift[1], t, t)

    def tile_at(self, level: int, ti: int, tj: int) -> np.ndarray:
        t, f, spec = self.tile, 2**level, self.spec
        r0, c0 = ti * t * f, tj * t * f
        tissue = near(spec.tissue[:, :2], spec.tissue[:, 2:4].max(1), r0, c0, t * f)
        if not tissue.any():
            return self.background  # nothing to compute (the writer only reads it)
        tissue = spec.tissue[tissue]
        rows = r0 + (np.arange(t)[:, None] + 0.5) * f
        cols = c0 + (np.arange(t)[None, :] + 0.5) * f
        out = self.texture(spec.texture, level, ti, tj)
        cr, cc = rows[[0, -1]], cols[:, [0, -1]]
        if not any(inside(e[None], cr, cc).all() for e in tissue):  # no ellipse holds all 4 corners
            np.copyto(out, self.background, where=~inside(tissue, rows, cols)[..., None])
        reach = np.maximum(self.lesion_reach, f) + 2 * f  # with the ramp and sub-pixel growth at this level
        for k in np.flatnonzero(near(spec.lesions[:, :2], reach, r0, c0, t * f)):
            self._lesion(out, k, level, rows, cols, ti, tj, reach[k])
        cells = near(self.cells[:, :2], self.cell_reach + 2 * f, r0, c0, t * f)
        if cells.any():
            self._cells(out, self.cells[cells], f, r0, c0)
        return out

    def _lesion(self, out, k, level, rows, cols, ti, tj, reach) -> None:
        """Lesion ``k``'s region effect on the pixels of the tile within ``reach`` level-0 px of
        its centre (plain, colour, texture; cell lesions have none)."""
        spec = self.spec
        kind = APPEARANCES[int(spec.kinds[k])]
        if kind not in ("plain", "colour", "texture"):
            return
        f = 2**level
        ys = np.flatnonzero(np.abs(rows[:, 0] - spec.lesions[k, 0]) <= reach)
        xs = np.flatnonzero(np.abs(cols[0] - spec.lesions[k, 1]) <= reach)
        if not len(ys) or not len(xs):
            return
        box = np.s_[ys[0]:ys[-1] + 1, xs[0]:xs[-1] + 1]
        w = region_weight(spec.lesions[k], spec.harmonics[k], rows[box[0]], cols[:, box[1]], f,
                          0.0 if kind == "plain" else 0.25)[..., None]
        px = out[box].astype(np.float32)
        if kind == "colour":  # optical density scaled per channel: I' = 255 (I / 255) ** m
            px = 255 * (np.maximum(px, 1) / 255) ** (1 + w * (spec.stains[k] - 1))
        else:
            src = self.texture("lesion" if kind == "plain" else "fibres", level, ti, tj)[box]
            px += w * (src - px)
        out[box] = np.clip(px, 0, 255).astype(np.uint8)

    def _cells(self, out, cells, f, r0, c0) -> None:
        """Splat ``cells`` (C, 7) into the tile: giant cells' bodies, then dark nuclei and spots."""
        t = self.tile
        yx = (cells[:, :2] - (r0, c0)) / f  # level pixels in the tile
        lo = np.floor((yx - (cells[:, 2:4].max(1) * 1.8 / f + 2)[:, None]).min(0)).astype(int).clip(0, t)
        hi = np.ceil((yx + (cells[:, 2:4].max(1) * 1.8 / f + 2)[:, None]).max(0)).astype(int).clip(0, t)
        if (hi <= lo).any():
            return
        box, shape = np.s_[lo[0]:hi[0], lo[1]:hi[1]], tuple(hi - lo)
        yx, radii, th, kind = yx - lo, cells[:, 2:4] / f, cells[:, 4], cells[:, 6]
        px = out[box].astype(np.float32)
        for sel, scale, opacity, colour, grain in (
                (kind == CELL_GIANT, 1.8, 0.7, CYTOPLASM, 0.6),
                (kind != CELL_SPOT, 1.0, None, NUCLEUS_DARK, 0.6),
                (kind == CELL_SPOT, 1.0, None, SPOT, 0.2)):
            if sel.any():
                value = np.full(int(sel.sum()), opacity) if opacity else cells[sel, 5]
                px = ink(px, splat(shape, yx[sel], radii[sel] * scale, th[sel], value), colour, grain)
        out[box] = np.clip(px, 0, 255).astype(np.uint8)


def near(centres: np.ndarray, reach: np.ndarray, r0: float, c0: float, side: float) -> np.ndarray:
    """Which objects (centres (n, 2) level-0, reach (n,)) may touch the square tile at (r0, c0)."""
    if not len(centres):
        return np.zeros(0, bool)
    return ((centres[:, 0] + reach >= r0) & (centres[:, 0] - reach <= r0 + side)
            & (centres[:, 1] + reach >= c0) & (centres[:, 1] - reach <= c0 + side))


def inside(ell: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Which pixels (rows (h, 1), cols (1, w), level-0) fall in any ellipse (E, 5) -> (h, w) bool."""
    out = np.zeros((rows.shape[0], cols.shape[1]), bool)
    for cr, cc, ar, ac, th in ell:  # a handful of tissue ellipses per slide
        dr, dc = (rows - cr).astype(np.float32), (cols - cc).astype(np.float32)
        ct, st = np.float32(math.cos(th)), np.float32(math.sin(th))
        u, v = (dr * ct + dc * st) / np.float32(ar), (dc * ct - dr * st) / np.float32(ac)
        out |= u * u + v * v <= 1.0
    return out
