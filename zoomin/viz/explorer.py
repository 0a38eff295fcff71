"""``Explorer``: one trace, stage by stage (I -> tiles -> II -> sub-tiles -> negatives ->
prediction), as holoviews views, an ipywidgets panel, or one offline HTML file.

The state lives in one ``ExplorerState`` (``zoomin.viz.stages``); the views are pure functions
of it, and the streams (tap, pan/zoom) and widgets are wired here, at the edge.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import holoviews as hv
import torch

from ..sources import Source, as_source
from ..trace import Trace
from . import stages as st
from . import views
from .offline import save_html

STAGES = st.STAGES


class Explorer:
    """Views of image ``b`` of ``trace`` read from ``source`` (a ``Source`` or a tensor).

    ``session`` (a ``viz.Session``) is only needed by the widget's resample / N / image /
    checkpoint controls; the views themselves never call a model. ``widget()`` binds to this
    explorer's ``state``: resampling there changes what every view here shows.
    """

    def __init__(self, trace: Trace, source: Source | torch.Tensor, class_names: list[str] | None = None,
                 title: str = "", b: int = 0, session=None, name: str | None = None,
                 answer: torch.Tensor | None = None, readout=None):
        self.state = st.ExplorerState(trace.detach(), as_source(source), b, class_names, title, name, session)
        self.state.answer = None if answer is None else answer.detach().cpu().float().reshape(-1)
        self.state.readout = readout  # answer: the model's answer for the image, shown beside the pass

    @classmethod
    def from_session(cls, session, name: str | None = None, n: int | None = None, seed: int = 0, **kw):
        """Run ``session``'s model on image ``name`` (default: the first): the answer ``zoomin
        predict --seed`` gives for it, and one pass to explore."""
        name = name or session.names[0]
        return cls(session.trace(name, n=n, seed=seed), session.source(name), session=session, name=name,
                   class_names=session.class_names, answer=session.answer(name, seed=seed),
                   readout=session.readout, **kw)

    # the state's fields, read-only here (the widget changes them through the state)
    trace = property(lambda self: self.state.trace)
    source = property(lambda self: self.state.source)
    b = property(lambda self: self.state.b)
    name = property(lambda self: self.state.name)
    session = property(lambda self: self.state.session)
    title = property(lambda self: self.state.title)

    def tile_order(self) -> list[int]:
        return self.state.tile_order()

    def top_subtile(self, tile: int) -> int:
        return self.state.top_subtile(tile)

    def stage(self, stage: str, tile: int | None = None, k: int | None = None, negatives: bool = False) -> hv.Overlay:
        """The main view of one stage. ``tile``/``k`` pick the tile (stage II) and sub-tile;
        ``negatives`` overlays the contrastive negatives' tiles in red."""
        return st.render(replace(self.state, stage=stage, tile=tile, subtile=k, negatives=negatives))

    def stages(self, negatives: bool = False) -> hv.HoloMap:
        """Every stage on one slider (what the HTML file shows); the slider sits beside the plot
        once ``zoomin.viz.extension()`` (or ``save``) has set that up."""
        frames = {i + 1: self.stage(s, negatives=negatives).opts(title=f"{self.title} {i + 1}/{len(STAGES)} {s}".strip())
                  for i, s in enumerate(STAGES)}
        step = hv.Dimension("step", label="stage", value_format=lambda i: f"{i} {STAGES[int(i) - 1]}")
        return hv.HoloMap(frames, kdims=[step])

    def prediction(self) -> hv.Layout:
        """The probabilities and the samples that moved the predicted logit most."""
        return st.prediction(self.state)

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
            return self.stage("II: attention", tile=slots[index[0]] if index else None)

        base = (views.overview(self.source, tr, b) * rects * views.subtiles(tr, b)).opts(
            width=560, height=500, title="tap a tile", **views.axes(self.state.mpp))
        return (base + hv.DynamicMap(stage2, streams=[picked])).opts(shared_axes=False)  # the right one: the tile's own range

    def zoom(self, max_pixels: int = views.MAX_PIXELS) -> hv.Overlay:
        """The image, re-read at the right pyramid level on every pan/zoom, with the tiles and
        sub-tiles on top (live in a notebook; needs a running kernel)."""
        return (views.zoomable(self.source, self.b, max_pixels) * views.tiles(self.trace, self.b)
                * views.subtiles(self.trace, self.b)).opts(width=700, height=600, **views.axes(self.state.mpp))

    def deep_zoom(self, annotation: str | Path | dict | None = None):
        """One deep-zoom view of the image with every layer (``zoomin.viz.layers``): a toggle and an
        opacity per layer, the stage stepper, the gallery of the sub-tiles that moved the answer
        most; ``annotation``: a GeoJSON file or dict of outlines to show. Live in a notebook (the
        pixels are re-read by the kernel on every pan/zoom) -> a ``DeepZoom`` (``.panel()`` shows it)."""
        from .layers import DeepZoom, read_annotation
        return DeepZoom(self.state, read_annotation(annotation))

    def save(self, path: str | Path, annotation: str | Path | dict | None = None) -> Path:
        """One offline HTML file (every script and stylesheet inline): the stages on a slider, every
        layer of ``deep_zoom`` over the whole image (embedded at display resolution, as the page
        says; a click on a legend entry hides or shows a layer) and the answer's bars."""
        from .layers import read_annotation, static_layers
        page = (self.stages() + static_layers(self.state, read_annotation(annotation)) + self.prediction()).cols(2)
        return save_html(page, path, self.title or "zoomin trace")

    def widget(self):
        """An ipywidgets panel bound to ``self.state``; see ``zoomin.viz.widgets.ExplorerWidget``."""
        from .widgets import ExplorerWidget  # widgets import the state module only: no cycle
        return ExplorerWidget(self.state)
