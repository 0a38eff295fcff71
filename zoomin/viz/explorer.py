"""``Explorer``: one trace, stage by stage (I -> tiles -> II -> sub-tiles -> negatives ->
prediction), as holoviews views, an ipywidgets panel, or one offline HTML file."""
from __future__ import annotations

from pathlib import Path

import holoviews as hv
import torch

from ..sources import Source, as_source
from ..trace import Trace
from . import views

STAGES = ("I: attention", "tiles", "II: zoom", "sub-tiles", "negatives", "prediction")


def frame_size(w: float, h: float, longest: int = 560) -> tuple[int, int]:
    """Plot width and height (screen pixels, plus room for axes and colour bar) that keep a
    ``w x h`` region's aspect ratio."""
    r = w / max(h, 1e-9)
    pw, ph = (longest, longest / r) if r >= 1 else (longest * r, longest)
    return int(max(pw, 160)) + 170, int(max(ph, 160)) + 60


class Explorer:
    """Views of image ``b`` of ``trace`` read from ``source`` (a ``Source`` or a tensor).

    ``session`` (a ``viz.Session``) is only needed by the widget's resample / N / slide /
    checkpoint controls; the views themselves never call a model.
    """

    def __init__(self, trace: Trace, source: Source | torch.Tensor, class_names: list[str] | None = None,
                 title: str = "", b: int = 0, session=None, name: str | None = None):
        self.trace, self.source, self.b = trace.detach(), as_source(source), b
        self.class_names, self.title, self.session, self.name = class_names, title, session, name

    @classmethod
    def from_session(cls, session, name: str | None = None, n: int | None = None, seed: int = 0, **kw):
        """Run ``session``'s model on slide ``name`` (default: the first) and explore the trace."""
        name = name or session.names[0]
        return cls(session.trace(name, n=n, seed=seed), session.source(name), session=session, name=name,
                   class_names=session.class_names, **kw)

    # --- what to look at -------------------------------------------------------------------
    def tile_order(self) -> list[int]:
        """Distinct tiles, most drawn first."""
        counts = self.trace.tile_counts[self.b]
        return [int(p) for p in counts.argsort(descending=True, stable=True) if counts[p] > 0]

    def top_subtile(self, tile: int) -> int:
        """The heaviest drawn sub-tile of ``tile``."""
        w = self.trace.weights[self.b, tile].masked_fill(~self.trace.subtile_valid[self.b, tile], -1)
        return int(w.argmax())

    # --- stages ------------------------------------------------------------------------------
    def stage(self, stage: str, tile: int | None = None, k: int | None = None, negatives: bool = False):
        """The main view of one stage. ``tile``/``k`` pick the tile (stage II) and sub-tile;
        ``negatives`` overlays the contrastive negatives' samples in red."""
        tr, src, b = self.trace, self.source, self.b
        tile = self.tile_order()[0] if tile is None else tile
        zoomed = stage in ("II: zoom", "sub-tiles")  # the other stages draw on the overview
        base = None if zoomed else views.overview(src, tr, b)
        if stage == "I: attention":
            out = base * views.attention(tr, b)
        elif stage == "tiles":
            out = base * views.tiles(tr, b) * views.subtiles(tr, b)
        elif stage == "II: zoom":
            out = views.stage2(src, tr, tile, b)
        elif stage == "sub-tiles":
            k = self.top_subtile(tile) if k is None else k
            out = views.subtile(src, tr, tile, k, b)
        elif stage == "negatives":
            if tr.negatives is None:
                return hv.Overlay([base]).opts(title="no negatives in this trace (forward with negatives=True)")
            neg = tr.negatives
            H, W = tr.image_size
            heat = views.heat(views.fit_display(neg.alpha[b][None], "max")[0], (0, 0, W, H),
                              "1 - alpha (renormalised)", "kbc")
            out = (base * heat
                   * views.tiles(neg, b, "red", "Reds") * views.subtiles(neg, b, color="orange", cmap="Oranges"))
        elif stage == "prediction":
            out = base * self._contribution_boxes()
        else:
            raise ValueError(f"unknown stage {stage!r}; one of {STAGES}")
        if negatives and tr.negatives is not None and stage in ("I: attention", "tiles", "prediction"):
            out = out * views.tiles(tr.negatives, b, "red", "Reds")
        out = out if isinstance(out, hv.Overlay) else hv.Overlay([out])
        (x0, x1), (y0, y1) = out.range(0), out.range(1)
        width, height = frame_size(x1 - x0, y1 - y0)
        return out.opts(title=f"{self.title} {stage}".strip(), width=width, height=height, framewise=True)

    def _contribution_boxes(self) -> hv.Rectangles:
        """Sub-tiles coloured by their share of the predicted class's logit (red +, blue -)."""
        tr, b = self.trace, self.b
        cls = int(tr.probs[b].argmax())
        valid = tr.subtile_valid[b]
        share = tr.contributions[b, ..., cls][valid]
        lim = float(share.abs().max()) or 1.0
        return views.boxes(tr.subtile_boxes[b][valid], share, "logit share", "black", "RdBu_r").opts(
            clim=(-lim, lim), fill_alpha=0.7, colorbar=True)

    def stages(self, negatives: bool = False) -> hv.HoloMap:
        """Every stage on one slider (what the HTML file shows)."""
        frames = {i + 1: self.stage(s, negatives=negatives).opts(
                      title=f"{self.title} {i + 1}/{len(STAGES)} {s}".strip())
                  for i, s in enumerate(STAGES)}
        return hv.HoloMap(frames, kdims=[hv.Dimension("step", label="stage")])

    def prediction(self) -> hv.Layout:
        """The probabilities and the samples that moved the predicted logit most."""
        return (views.prediction(self.trace, self.class_names, self.b).opts(width=300, height=300)
                + views.contributions(self.trace, b=self.b).opts(width=460, height=300))

    def layout(self) -> hv.Layout:
        return (self.stages() + self.prediction()).cols(2)

    def linked(self) -> hv.Layout:
        """The sampled tiles on the overview, and beside them the stage-II view of the tile you tap
        (or box-select) there: a ``Selection1D`` stream on the tile boxes drives a DynamicMap
        (live in a notebook; the most-drawn tile until something is selected)."""
        tr, b = self.trace, self.b
        slots = (tr.tile_counts[b] > 0).nonzero().flatten().tolist()  # rectangle i = tile slot slots[i]
        rects = views.tiles(tr, b).get(0).opts(tools=["tap", "box_select", "hover"])
        picked = hv.streams.Selection1D(source=rects)

        def stage2(index):
            tile = slots[index[0]] if index else self.tile_order()[0]
            return self.stage("II: zoom", tile=tile)

        base = (views.overview(self.source, tr, b) * rects).opts(width=560, height=500, title="tap a tile")
        return base + hv.DynamicMap(stage2, streams=[picked])

    def zoom(self, max_pixels: int = views.MAX_PIXELS) -> hv.Overlay:
        """The image, re-read at the right pyramid level on every pan/zoom, with the tiles and
        sub-tiles on top (live in a notebook; needs a running kernel)."""
        return (views.zoomable(self.source, self.b, max_pixels) * views.tiles(self.trace, self.b)
                * views.subtiles(self.trace, self.b)).opts(width=700, height=600)

    def save(self, path: str | Path) -> Path:
        """One offline HTML file (bokeh resources inline) with the stages on a slider."""
        from bokeh.resources import INLINE
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        hv.save(self.layout(), path, backend="bokeh", resources=INLINE, title=self.title or "zoomin trace")
        return path

    def widget(self):
        """An ipywidgets panel; see ``zoomin.viz.widgets.explorer_widget``."""
        from .widgets import explorer_widget
        return explorer_widget(self)
