"""Slides as sources (method §2, §5, §13): a whole-slide image read lazily through large-image.

``SlideSource`` answers the same two questions as ``ArraySource`` — ``view(scale)`` and
``read(batch_index, boxes, scale, size_hw)`` — so ``ZoomInNet`` runs on a slide unchanged. Every
read asks large-image for the region at the output size it needs, and large-image decodes the
pyramid level nearest to that scale: level 0 is only decoded for full-resolution reads (the
sub-tiles). A pyramid level small enough (``SlideSource.memo_pixels``) is decoded whole once and
each later request at that level is cut from it in memory, the same pixels large-image would
return (``_cut``). A plain tiled pyramidal TIFF (``zoomin.tiff_pyramid``) is opened and its kept
levels decoded by tifffile, and large-image is opened only for a request no kept level answers.
Needs the ``slides`` extra (``pip install zoomin[slides]``).
"""
from __future__ import annotations

import contextlib
import io
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .geometry import view_size
from .pyramid import write_pyramidal_tiff  # noqa: F401  (writing lives in pyramid.py; kept importable here)
from .slide_files import check_tiff_complete, undecodable, unreadable
from .slide_levels import KeptLevels, windows
from .sources import check_budget, pixel_budget, to_unit
from .tiff_pyramid import probe


class SlideSource(KeptLevels):
    """One slide (batch of one) read through large-image; pixels become floats in [0, 1].

    With ``mpp`` (the model's working resolution, µm per pixel; ``zoomin.units``) the slide is read
    as if its level 0 were at ``mpp``: ``size``, the boxes and the scales are in pixels of that
    resolution, and each read asks large-image for the file region at the output size it needs, so
    a model sees tissue at the same physical resolution on slides of any size and scan resolution.
    The file's own pixel size, by who states it: ``manifest_mpp``, a manifest row (it wins over
    ``file_mpp``, what the file states); ``fallback_mpp``, the user, used only when neither states one
    (``zoomin predict --slide-mpp``).
    ``mask`` (None unless set): the slide's outline mask, a ``zoomin.annotations.MaskSource`` that
    ``zoomin.data.slides.SlideDataset`` sets for an annotated manifest row; ``slide_id``: its row's name.
    """

    batch_size = 1
    piece = 1024  # the stage-I view is read in pieces of at most this many pixels a side
    workers = 2  # threads decoding a call's region requests

    def __init__(self, path: str | Path, channels: int = 3, max_pixels: int | None = None, mpp: float = 0.0,
                 manifest_mpp: float | None = None, fallback_mpp: float | None = None):
        try:
            import large_image
        except ImportError:  # pragma: no cover - depends on the installed extras
            raise RuntimeError("reading slides needs the 'slides' extra: pip install 'zoomin[slides]'") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: file not found")
        if self.path.stat().st_size == 0:
            raise ValueError(f"{self.path}: not a readable image (empty file, 0 bytes)")
        from .slide_cache import configure
        configure()
        self._tile_source = None  # large-image's, opened on first use for a plain pyramid (``_ts``)
        self._plain = probe(self.path)  # a plain pyramid: opened and its kept levels decoded by tifffile
        if self._plain is not None:
            meta = {"sizeY": self._plain.size[0], "sizeX": self._plain.size[1], "levels": self._plain.levels,
                    "mm_x": self._plain.mm_x}
        else:
            check_tiff_complete(self.path)
            ts = self._ts  # opening it failed: its own one line
            try:
                meta = ts.getMetadata()
            except Exception as e:
                raise unreadable(self.path, e) from None
        self._numpy = large_image.constants.TILE_FORMAT_NUMPY
        self.file_size = (int(meta["sizeY"]), int(meta["sizeX"]))  # the file's level-0 (H, W)
        self.levels = int(meta.get("levels", 1))
        self.file_mpp = (meta.get("mm_x") or 0) * 1000 or None  # microns per file pixel at level 0, if stated
        level0 = manifest_mpp or self.file_mpp or fallback_mpp
        for given in (manifest_mpp, fallback_mpp):
            if given is not None and given <= 0:
                raise ValueError(f"{self.path}: the pixel size must be > 0 µm, got {given}")
        self.k = 1.0  # file pixels per source pixel
        if mpp:
            if not level0:
                raise ValueError(f"{self.path}: the file does not state its pixel size; give it in µm per pixel "
                                 f"(zoomin predict --slide-mpp, or an mpp column in the manifest)")
            self.k = mpp / level0
        H, W = self.file_size
        self.size = (max(1, math.floor(H / self.k + 1e-9)), max(1, math.floor(W / self.k + 1e-9)))  # (H, W) read at mpp
        self.mpp = mpp or level0  # microns per pixel of ``size`` (None: unknown)
        self.channels = channels
        self.pixels_read = 0  # pixels large-image returned, for the "decoded vs needed" accounting
        self.pixels_decoded = 0  # pixels large-image decoded for them (at the pyramid level it read)
        self.requests = 0  # region requests made to large-image
        self._views: dict[float, torch.Tensor] = {}
        self._levels: dict[int, np.ndarray | None] = {}  # pyramid level -> its pixels decoded whole (None: not kept)
        self._levels_lock = threading.Lock()
        self._level_pixels: dict[int, torch.Tensor] = {}  # the kept levels as (C, h, w) tensors (the same memory)
        self.max_pixels = pixel_budget(max_pixels)  # the memory guard: most pixels one read may decode
        self.mask = None  # the outline mask (annotation loss, ROI diagnostics), when a data set sets one
        self.slide_id: str | None = None  # the manifest row's slide_id, when a data set opened it

    @property
    def _ts(self):
        """large-image's tile source of the file, opened on first use (at once unless ``_plain``)."""
        if self._tile_source is None:
            import large_image

            from .slide_cache import uncycled
            try:
                # pylibtiff prints notes about some tags; sys.stdout is the process's, so threads opening
                # slides at once (read-ahead) take turns, or one could restore another's StringIO for good
                with _open_lock, contextlib.redirect_stdout(io.StringIO()):
                    if self._tile_source is None:  # freed with the source, not by the cycle collector
                        self._tile_source = uncycled(large_image.open(str(self.path)))
            except Exception as e:
                raise unreadable(self.path, e) from None
        return self._tile_source

    def _to_tensor(self, arr: np.ndarray, raw: bool = False) -> torch.Tensor:
        """(h, w[, c]) uint8/uint16/float -> (C, h, w) float in [0, 1]; with ``raw``, 8-bit pixels stay uint8."""
        if arr.ndim == 2:
            arr = arr[..., None]
        arr = arr[..., :3] if arr.shape[-1] >= 3 else arr[..., :1]
        self.pixels_read += arr.shape[0] * arr.shape[1]
        if raw and arr.dtype == np.uint8 and arr.shape[-1] == self.channels:
            # copy only when needed: a read-only buffer, or RGBA cut to RGB (OpenSlide) is not contiguous
            out = np.ascontiguousarray(arr) if arr.flags.writeable else np.array(arr, order="C")
            return torch.from_numpy(out).permute(2, 0, 1)
        t = torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1).float()
        if np.issubdtype(arr.dtype, np.integer):
            t = t / float(np.iinfo(arr.dtype).max)
        else:  # float images: NaN and infinities become 0 (background), values are kept as they are
            t = torch.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0)
        if t.shape[0] != self.channels:
            t = t.mean(0, keepdim=True).expand(self.channels, -1, -1) if self.channels in (1, 3) else t
        return t

    def decoded_pixels(self, width: int, height: int, out_hw: tuple[int, int]) -> int:
        """Pixels large-image decodes to return a ``width x height`` region of the file's level 0 at
        ``out_hw``: the region at the finest level it has to read (level 0 for a file without a pyramid)."""
        ratio = max(out_hw[1] / width, out_hw[0] / height)  # output pixels per pixel of the file's level 0
        down = max(0, math.floor(math.log2(1 / ratio) + 1e-9)) if ratio < 1 else 0
        level = self._data_level(max(0, self.levels - 1 - down))
        f = 2 ** (self.levels - 1 - level)
        return max(math.ceil(width / f) * math.ceil(height / f), out_hw[0] * out_hw[1])

    def _region(self, left: int, top: int, width: int, height: int, out_hw: tuple[int, int],
                raw: bool | str = False) -> torch.Tensor:
        """An in-file level-0 rectangle resampled to exactly ``out_hw`` -> (C, h, w) (uint8 with ``raw``
        for 8-bit files; with ``raw="exact"`` only where no resampling was needed, so that
        ``to_unit`` of it equals the float read)."""
        oh, ow = out_hw
        decoded = self.decoded_pixels(width, height, out_hw)
        check_budget(str(self.path), f"reading a {width}x{height} region at {ow}x{oh}", decoded, self.max_pixels)
        arr = self._cut(left, top, width, height, out_hw)
        if arr is None:
            arr = self._get_region(left, top, width, height, None if (oh, ow) == (height, width) else out_hw)
            self.requests += 1
            self.pixels_decoded += decoded
        t = self._to_tensor(arr, bool(raw))
        if t.shape[-2:] != (oh, ow):
            if raw == "exact" and t.dtype == torch.uint8:
                t = to_unit(t)  # resampled as floats, as a float read is
            r = F.interpolate(t[None].float(), size=(oh, ow), mode="bilinear", align_corners=False, antialias=True)[0]
            t = r.round().clamp(0, 255).to(torch.uint8) if t.dtype == torch.uint8 else r
        return t

    def _get_region(self, left: int, top: int, width: int, height: int, out_hw: tuple[int, int] | None) -> np.ndarray:
        """large-image's ``getRegion`` of an in-file level-0 rectangle, at most ``out_hw`` (None: as
        it is) -> (h, w, c) array; a tile it cannot decode is the usual one-line error."""
        kw = dict(region=dict(left=left, top=top, width=width, height=height, units="base_pixels"),
                  format=self._numpy)
        if out_hw is not None:
            kw["output"] = dict(maxWidth=out_hw[1], maxHeight=out_hw[0])
        ts = self._ts  # opened here first for a plain pyramid whose reads need it (its errors are its own)
        try:
            return ts.getRegion(**kw)[0]
        except Exception as e:  # truncated or corrupt tiles
            raise undecodable(self.path, e) from None

    def _file_rect(self, x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, int, int]:
        """Source pixels [x0, x1) x [y0, y1) -> the file's level-0 (left, top, width, height), in the file."""
        H, W = self.file_size
        left, top = min(W - 1, round(x0 * self.k)), min(H - 1, round(y0 * self.k))
        return left, top, max(1, min(W, round(x1 * self.k)) - left), max(1, min(H, round(y1 * self.k)) - top)

    @property
    def identity(self) -> tuple:
        """What the pixels this source gives are a function of: the file (its path, size and
        modification time), the µm/px it is read at and the channels. Two sources with the same
        identity read the same views (``CountMemo`` keeps a slide's counts by it)."""
        st = self.path.stat()
        return str(self.path.resolve()), st.st_size, st.st_mtime_ns, self.k, self.channels

    def check_view(self, scale: float) -> None:
        """The memory guard for ``view(scale)``, without reading anything."""
        h, w = view_size(*self.size, scale)
        H, W = self.file_size
        check_budget(str(self.path), f"reading a {W}x{H} region at {w}x{h}",
                     self.decoded_pixels(W, H, (h, w)), self.max_pixels)

    def raw_view(self, scale: float) -> torch.Tensor:
        """``V(x, s)`` as the file's pixels (uint8 for 8-bit slides) -> (1, C, h, w), read from the
        pyramid level nearest to ``s``; cached per scale."""
        if scale not in self._views:
            self.check_view(scale)
            self._views[scale] = self.view_rows(scale, 0, view_size(*self.size, scale)[0])
        return self._views[scale]

    def has_view(self, scale: float) -> bool:
        """Whether ``raw_view(scale)`` is already decoded (prefetched)."""
        return scale in self._views

    def view_rows(self, scale: float, r0: int, r1: int) -> torch.Tensor:
        """Rows ``r0:r1`` of ``V(x, s)`` as the file's pixels -> (1, C, r1 - r0, w), not cached: what a
        streamed stage I reads band by band (``zoomin.stage1``). Read in pieces of at most
        ``piece`` pixels a side, decoded by a thread pool (``_decoded``)."""
        h, w = view_size(*self.size, scale)
        (H, W), n = self.size, self.piece
        fy, fx = H / h, W / w  # source pixels per view pixel
        grid = [(r, min(r + n, r1), c, min(c + n, w)) for r in range(r0, r1, n) for c in range(0, w, n)]

        def piece(g):
            a, b, c, d = g
            return self._region(*self._file_rect(c * fx, a * fy, d * fx, b * fy), (b - a, d - c), raw=True)
        out = None
        for (a, b, c, d), p in zip(grid, self._decoded(piece, grid)):  # each piece dropped once copied
            if out is None:
                out = torch.empty(1, self.channels, r1 - r0, w, dtype=p.dtype)
            out[0, :, a - r0:b - r0, c:d] = p
        return out

    def prefetch(self, scale: float, later: tuple[float, ...] = ()) -> None:
        """Decode and cache the stage-I view ahead of the model (``zoomin predict`` overlaps this
        with the previous slide), then the pyramid levels that reads at the scales ``later`` (the
        model's stage-II reads, ``read_scales``) will be cut from, where they are small enough to
        keep (``memo_pixels``). A view larger than ``zoomin.stage1.STREAM_ABOVE`` locations is not
        held: stage I streams it from the file, band by band. Where some of those reads will need
        large-image (a level not kept), a plain pyramid's large-image source is opened here too."""
        from .stage1 import STREAM_ABOVE
        h, w = view_size(*self.size, scale)
        held = h * w <= STREAM_ABOVE
        self._keep({self._read_level(s) for s in ((scale,) if held else ()) + tuple(later)})
        if held:
            self.raw_view(scale)
        if any(self._levels.get(self._read_level(s)) is None for s in (scale, *later)):
            self._ts  # noqa: B018  (opened now, ahead of the reads that ask it)

    def view(self, scale: float) -> torch.Tensor:
        """``V(x, s)`` from the pyramid level nearest to ``s`` -> (1, C, h, w) floats in [0, 1]."""
        return to_unit(self.raw_view(scale))

    def read(self, batch_index: torch.Tensor, boxes: torch.Tensor, scale: float,
             size_hw: tuple[int, int]) -> torch.Tensor:
        """Boxes (M, 4) read at ``scale`` as ``size_hw`` windows, zero outside -> (M, C, h, w).

        Batched: boxes whose bounding box costs at most twice their own pixels (the sub-tiles of
        one tile, say) are one region request, cut with ``windows``; the requests are
        decoded by a thread pool, or cut in this thread from a level kept whole (``_level``)."""
        h, w = size_hw
        level = self._read_level(scale)
        cut = self._crops(boxes, scale, size_hw, level)
        if cut is not None:
            return to_unit(cut)
        groups = group_boxes(boxes.tolist(), self.size)
        if not groups:
            return torch.zeros(boxes.shape[0], self.channels, h, w)
        sizes = boxes[[g[0][0] for g in groups], 2:].tolist()  # (groups, 2) each group's box (w, h)

        def fetch(i):
            members, (gx0, gy0, gx1, gy1) = groups[i]
            bw, bh = sizes[i]
            oh, ow = max(1, round((gy1 - gy0) * h / bh)), max(1, round((gx1 - gx0) * w / bw))
            return self._region(*self._file_rect(gx0, gy0, gx1, gy1), (oh, ow), raw="exact")
        kept = self._levels.get(level) is not None  # cut from a kept level: no pool needed
        regions = list(map(fetch, range(len(groups))) if kept else self._decoded(fetch, range(len(groups))))  # (C, oh, ow) each
        raw = all(r.dtype == torch.uint8 for r in regions)  # cut the 8-bit pixels, convert only the windows
        out = torch.zeros(boxes.shape[0], self.channels, h, w, dtype=torch.uint8 if raw else torch.float32)
        b = boxes.double()  # (M, 4)
        for (members, (gx0, gy0, _, _)), region in zip(groups, regions):
            m = b[members]  # (m, 4)
            fy, fx = h / m[:, 3], w / m[:, 2]
            corners = torch.stack([((m[:, 1] - gy0) * fy).round(), ((m[:, 0] - gx0) * fx).round()], -1).long()
            region = region if raw else to_unit(region)
            out[members] = windows(region, corners, size_hw)
        return to_unit(out)

    def _decoded(self, fetch, items):
        """``fetch(item)`` for each item, in order, lazily: one request in this thread, several decoded
        by the process's pool of ``workers`` threads (``decode_pool``)."""
        if len(items) <= 1:
            yield from map(fetch, items)
            return
        yield from decode_pool(self.workers).map(fetch, items)

    def __repr__(self) -> str:
        return f"SlideSource({str(self.path)!r}, size={self.size}, levels={self.levels})"


_open_lock = threading.Lock()
_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def decode_pool(workers: int) -> ThreadPoolExecutor:
    """The process's thread pool of ``workers`` region decoders, started once and shared by every
    slide (a pool per read spent more time starting threads than decoding small regions)."""
    with _pools_lock:
        if workers not in _pools:
            _pools[workers] = ThreadPoolExecutor(workers, thread_name_prefix="zoomin-decode")
        return _pools[workers]


def group_boxes(boxes: list, size: tuple[int, int], waste: float = 2.0) -> list[tuple[list[int], tuple]]:
    """Boxes ``[x, y, w, h]`` (clipped to an image of ``size`` (H, W); those outside it dropped) grouped
    so that one region request serves each group: a box joins a group of boxes of its size when the
    group's bounding box stays within ``waste`` times their own pixels.
    -> [(member indices, (x0, y0, x1, y1) of the group's bounding box in the image)]."""
    H, W = size
    groups: list[list] = []  # [members, x0, y0, x1, y1, own pixels, box size]
    for m, (x, y, bw, bh) in enumerate(boxes):
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + bw, W), min(y + bh, H)
        if x0 >= x1 or y0 >= y1:
            continue
        own = (x1 - x0) * (y1 - y0)
        for g in groups:
            u = (min(g[1], x0), min(g[2], y0), max(g[3], x1), max(g[4], y1))
            if g[6] == (bw, bh) and (u[2] - u[0]) * (u[3] - u[1]) <= waste * (g[5] + own):
                g[0].append(m)
                g[1:6] = [*u, g[5] + own]
                break
        else:
            groups.append([[m], x0, y0, x1, y1, own, (bw, bh)])
    return [(g[0], tuple(g[1:5])) for g in groups]
