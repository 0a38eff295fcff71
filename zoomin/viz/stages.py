"""The explorer's state in one object, and one pure renderer per stage (state -> holoviews).

``ExplorerState`` holds everything a view depends on: the trace, the source it was read from,
which image of the batch, and what is picked (stage, tile, sub-tile, negatives). ``RENDERERS``
maps each stage to a function of the state alone; ``render`` adds what every stage shares (title,
size, axes in µm or pixels, the negatives overlay). The ``Explorer`` and the ipywidgets panel
both read and write the same state object and call these functions; neither keeps a copy.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import holoviews as hv

from ..sources import Source
from ..trace import Trace
from . import views


@dataclass
class ExplorerState:
    trace: Trace  # detached, on the CPU
    source: Source  # what the trace was computed from
    b: int = 0  # which image of the batch
    class_names: list[str] | None = None
    title: str = ""
    name: str | None = None  # the session's name for the image
    session: Any = None  # a ``viz.Session``: only resampling / other images / checkpoints need it
    stage: str = "I: attention"
    tile: int | None = None  # the picked tile slot; None: the most drawn
    subtile: int | None = None  # the picked draw of that tile; None: its heaviest
    negatives: bool = False  # overlay the contrastive negatives' tiles
    answer: Any = None  # (classes,) the model's answer for the image (zoomin.readout.answer), if known
    readout: Any = None  # the ReadoutConfig that answer came from
    cache: dict = field(default_factory=dict, repr=False)  # pixels read for display, per image (kept by ``replace``)

    @property
    def mpp(self) -> float | None:
        """Micrometres per level-0 pixel, when the source knows it (slides do, arrays do not)."""
        return getattr(self.source, "mpp", None)

    def tile_order(self) -> list[int]:
        """Distinct tiles, most drawn first."""
        counts = self.trace.tile_counts[self.b]
        return [int(p) for p in counts.argsort(descending=True, stable=True) if counts[p] > 0]

    def top_subtile(self, tile: int) -> int:
        """The heaviest drawn sub-tile of ``tile``."""
        w = self.trace.weights[self.b, tile].masked_fill(~self.trace.subtile_valid[self.b, tile], -1)
        return int(w.argmax())

    def picked_tile(self) -> int:
        return self.tile_order()[0] if self.tile is None else self.tile

    def picked_subtile(self) -> int:
        return self.top_subtile(self.picked_tile()) if self.subtile is None else self.subtile

    def retrace(self, name: str, n: int | None = None, seed: int = 0) -> None:
        """Run the session's model on image ``name`` and show that trace (the picks reset). On
        failure the exception propagates and the state is left as it was."""
        if self.session is None:
            raise ValueError("resampling needs a Session (Explorer.from_session)")
        source = self.session.source(name)
        trace = self.session.trace(name, n=n, seed=seed)
        answer = self.session.answer(name, seed=seed)
        self.name, self.source, self.trace, self.b, self.tile, self.subtile = name, source, trace, 0, None, None
        self.answer, self.readout = answer, self.session.readout
        self.cache = {}


def _overview(s: ExplorerState) -> hv.RGB:
    """The whole image at display resolution, read once per image (every overview stage shows it)."""
    if ("overview", s.b) not in s.cache:
        s.cache["overview", s.b] = views.overview(s.source, s.trace, s.b)
    return s.cache["overview", s.b]


def attention(s: ExplorerState):
    """Stage I: eq 1's ``alpha`` as a translucent overlay on the stage-I view."""
    return _overview(s) * views.attention(s.trace, s.b)


def tiles(s: ExplorerState):
    """The distinct tiles drawn (with their counts) and every drawn sub-tile."""
    return _overview(s) * views.tiles(s.trace, s.b) * views.subtiles(s.trace, s.b)


def tile_attention(s: ExplorerState):
    """Stage II of the picked tile: its view at ``s2``, ``beta`` and its drawn sub-tiles."""
    return views.stage2(s.source, s.trace, s.picked_tile(), s.b)


def subtile(s: ExplorerState):
    """The picked sub-tile at full resolution."""
    return views.subtile(s.source, s.trace, s.picked_tile(), s.picked_subtile(), s.b)


def negatives(s: ExplorerState):
    """The contrastive negatives (method §6): ``1 - alpha`` renormalised, their tiles and sub-tiles."""
    neg = s.trace.negatives
    if neg is None:
        return hv.Overlay([_overview(s)]).opts(title="no negatives in this trace (forward with negatives=True)")
    H, W = s.trace.image_size
    heat = views.heat(views.fit_display(neg.alpha[s.b][None], "max")[0], (0, 0, W, H), "1 - alpha (renormalised)",
                      views.NEGATIVE)
    return (_overview(s) * heat * views.tiles(neg, s.b, "red", "Reds")
            * views.subtiles(neg, s.b, color="orange", cmap="Oranges"))


def contribution(s: ExplorerState):
    """Sub-tiles coloured by their share of the predicted class's logit (red +, blue -), or of its
    probability (``model.estimate: probabilities``)."""
    tr, b = s.trace, s.b
    cls = int(tr.probs[b].argmax())
    valid = tr.subtile_valid[b]
    sb, share = tr.subtile_boxes[b][valid], tr.contributions[b, ..., cls][valid]
    lim = float(share.abs().max()) or 1.0
    label = tr.contribution_name
    rects = views.boxes(sb, share, label, "black", "RdBu_r").opts(clim=(-lim, lim), fill_alpha=0.7, colorbar=True)
    return _overview(s) * rects * views.markers(sb, share, label, cmap="RdBu_r").opts(clim=(-lim, lim))


RENDERERS: dict[str, Callable[[ExplorerState], Any]] = {
    "I: attention": attention, "tiles": tiles, "II: attention": tile_attention, "sub-tiles": subtile,
    "negatives": negatives, "prediction": contribution,
}
STAGES = tuple(RENDERERS)
ON_OVERVIEW = ("I: attention", "tiles", "prediction")  # the stages the negatives' tiles can be laid over


def frame_size(w: float, h: float, longest: int = 560) -> tuple[int, int]:
    """Plot width and height (screen pixels, plus room for axes and colour bar) that keep a
    ``w x h`` region's aspect ratio."""
    r = w / max(h, 1e-9)
    pw, ph = (longest, longest / r) if r >= 1 else (longest * r, longest)
    return int(max(pw, 160)) + 170, int(max(ph, 160)) + 60


def render(s: ExplorerState) -> hv.Overlay:
    """The main view of ``s.stage``: its renderer, the negatives' tiles when asked for, a title,
    a size that keeps the aspect ratio, and axes in µm where the slide has a pixel size."""
    if s.stage not in RENDERERS:
        raise ValueError(f"unknown stage {s.stage!r}; one of {STAGES}")
    out = RENDERERS[s.stage](s)
    if s.negatives and s.trace.negatives is not None and s.stage in ON_OVERVIEW:
        out = out * views.tiles(s.trace.negatives, s.b, "red", "Reds")
    out = out if isinstance(out, hv.Overlay) else hv.Overlay([out])
    (x0, x1), (y0, y1) = out.range(0), out.range(1)
    width, height = frame_size(x1 - x0, y1 - y0)
    return out.opts(title=f"{s.title} {s.stage}".strip(), width=width, height=height, framewise=True,
                    **views.axes(s.mpp))


def prediction(s: ExplorerState) -> hv.Layout:
    """The model's answer (what ``zoomin predict`` gives, when known), the one pass drawn here, and
    the samples of that pass that moved its predicted logit most."""
    one = (views.prediction(s.trace, s.class_names, s.b).opts(width=300, height=300)
           + views.contributions(s.trace, b=s.b).opts(width=460, height=300))
    if s.answer is None:
        return one
    return views.probability_bars(s.answer, s.class_names, views.readout_label(s.readout)).opts(width=300, height=300) + one
