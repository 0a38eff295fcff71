"""One deep-zoom view of a trace: the slide, re-read at the pyramid level that fits the visible
range, with the trace's layers laid over it, each with a toggle and an opacity.

``layers(state, annotation)`` builds the layers as holoviews elements (pure functions of the
explorer's state, like ``zoomin.viz.stages``); ``DeepZoom`` wires them to panel widgets: a
checkbox and an opacity slider per layer, a stage stepper that shows each stage's layers and moves
the view to what it concerns, and a gallery of the sub-tiles that moved the answer most (``go``
moves the view to one). Every pixel is read by the kernel (or ``zoomin explore``'s server) and
travels over its own connection: no tile server, no second port.

Layers (``LAYERS``: name -> (opacity, shown at first)):

* ``tissue``: the background that stage I masks out (``Trace.foreground``), shaded;
* ``alpha``: stage-I attention (eq 1); with evidence heads its logits are the evidence map's
  (method §10), so this layer is also where the evidence lies; with stain counts it is tilted
  toward the count map;
* ``counts``: the count map, what the counted pixels of each stage-I location weigh toward a
  lesion class (``model.count_mpp``, method §10.6; empty without stain counts);
* ``beta``: stage-II attention (eq 4) inside each drawn tile;
* ``tiles``: the distinct drawn tiles with their draw counts;
* ``sub-tiles``: the drawn sub-tiles with their weight in ``z``;
* ``negatives``: the contrastive negatives' attention (``1 - alpha`` renormalised, method §6) and tiles;
* ``annotations``: outlines read from a GeoJSON file (QuPath's export, a manifest's outline file).
"""
from __future__ import annotations

import operator
from functools import reduce
from pathlib import Path

import holoviews as hv
import numpy as np
import torch

from . import views
from .stages import STAGES, ExplorerState

LAYERS: dict[str, tuple[float, bool]] = {  # shown at first: the first stage's layers
    "tissue": (0.4, False), "alpha": (0.8, True), "counts": (0.8, False), "beta": (0.8, False), "tiles": (0.8, False),
    "sub-tiles": (0.8, False), "negatives": (0.6, False), "annotations": (1.0, True),
}
# what each stage of the stepper shows, and where it moves the view
STAGE_LAYERS: dict[str, tuple[str, ...]] = {
    "I: attention": ("alpha", "annotations"), "tiles": ("tiles", "sub-tiles", "annotations"),
    "II: attention": ("beta", "sub-tiles", "annotations"), "sub-tiles": ("sub-tiles", "annotations"),
    "negatives": ("negatives", "annotations"), "prediction": ("alpha", "sub-tiles", "annotations"),
}
GALLERY = 6  # sub-tiles in the gallery
RANGE_DEBOUNCE_MS = 0  # holoviews waits this long for more range events (its default: 100); bokeh already waited RANGE_SETTLE_MS
RANGE_SETTLE_MS = 50  # the page reports a pan or zoom once no wheel or drag event came for this long (bokeh: 500)
THUMB = 96  # screen pixels of a gallery image


def tissue(s: ExplorerState) -> hv.Image:
    """The background stage I masked out (``Trace.foreground``) as a grey shade; tissue is clear."""
    H, W = s.trace.image_size
    h, w = s.trace.view_hw
    fg = s.trace.foreground[s.b].reshape(1, h, w).float()
    shown = views.fit_display(fg, "area")[0]  # (h', w') share of tissue in each display pixel
    arr = (shown.numpy() <= 0.5).astype(np.float32)[::-1]  # 1: background
    return hv.Image(np.ascontiguousarray(arr), bounds=(0, 0, W, H), vdims=["background"], label="tissue").opts(
        cmap=["#00000000", "#404040"], clim=(0, 1), **views.AXES)


def counts(s: ExplorerState) -> hv.Image | hv.Overlay:
    """The count map (``Trace.count_map``) over the whole image; empty without stain counts."""
    tr = s.trace
    if tr.count_map is None or not bool((tr.count_map[s.b] > 0).any()):
        return hv.Overlay([])
    H, W = tr.image_size
    m = tr.count_map[s.b].view(1, *tr.view_hw)
    return views.heat(views.fit_display(m, "max")[0], (0, 0, W, H), "counts", views.COUNTS)


def beta(s: ExplorerState) -> hv.Overlay:
    """Eq 4's ``beta`` of every drawn tile, on the tile (empty for a one-stage trace)."""
    tr, b = s.trace, s.b
    if tr.beta is None:
        return hv.Overlay([])
    return hv.Overlay([views.heat(tr.beta[b, p], tr.tile_boxes[b, p].tolist(), "beta")
                       for p in (tr.tile_counts[b] > 0).nonzero().flatten().tolist()])


def negatives(s: ExplorerState) -> hv.Overlay:
    """The contrastive negatives' attention and tiles (empty when the trace has none)."""
    neg = s.trace.negatives
    if neg is None:
        return hv.Overlay([])
    H, W = s.trace.image_size
    heat = views.heat(views.fit_display(neg.alpha[s.b][None], "max")[0], (0, 0, W, H), "1 - alpha", views.NEGATIVE)
    return heat * views.tiles(neg, s.b, "red", "Reds")


def annotations(geojson: dict | None) -> hv.Path:
    """The outlines of a GeoJSON's polygons (outer rings; holes and ``Exclusion`` cuts in grey)."""
    from ..annotations import polygons
    keep, cut = polygons(geojson) if geojson else ([], [])
    rings = [r for poly in keep for r in poly[:1]]
    out = hv.Path(rings, label="annotations").opts(color="yellow", line_width=2, **views.AXES)
    if cut:
        out = out * hv.Path([r for poly in cut for r in poly[:1]], label="excluded").opts(color="grey", line_width=2)
    return out


def read_annotation(path: str | Path | dict | None) -> dict | None:
    """The GeoJSON at ``path`` (a dict is already one; None: none); a bad file is a one-line
    ``ValueError`` naming it."""
    if path is None or isinstance(path, dict):
        return path
    from ..annotations import read_geojson
    return read_geojson(path)


def layers(s: ExplorerState, annotation: dict | None = None) -> dict[str, hv.Element | hv.Overlay]:
    """Every layer of ``LAYERS`` for the state's image (``annotation``: a GeoJSON dict or None)."""
    return {"tissue": tissue(s), "alpha": views.attention(s.trace, s.b), "counts": counts(s), "beta": beta(s),
            "tiles": views.tiles(s.trace, s.b), "sub-tiles": views.subtiles(s.trace, s.b),
            "negatives": negatives(s), "annotations": annotations(annotation)}


STATIC_NOTE = ("layers embedded at display resolution (the image at most {px} px a side; zooming does not "
               "re-read it): click a legend entry to hide or show a layer")


def static_layers(s: ExplorerState, annotation: dict | None = None) -> hv.Overlay:
    """Every layer over the whole image at display resolution, for a page with no kernel (the
    saved HTML): all shown, each a legend entry that a click hides or shows; nothing re-reads."""
    parts = [views.overview(s.source, s.trace, s.b)]
    for name, element in layers(s, annotation).items():
        if isinstance(element, hv.Overlay) and not len(element):
            continue  # nothing to draw (no beta in a one-stage trace, no negatives, no outlines)
        parts += [look(e.relabel(name), LAYERS[name][0], True).opts(show_legend=True) for e in
                  (element.values() if isinstance(element, hv.Overlay) else [element])]
    return hv.Overlay(parts).opts(
        title=STATIC_NOTE.format(px=views.DISPLAY_PIXELS), show_legend=True, legend_position="right",
        legend_opts={"click_policy": "hide"}, width=760, height=640, **views.axes(s.mpp))


def look(element, opacity: float, visible: bool):
    """``element`` (or every element of an overlay) drawn with ``opacity``, or hidden."""
    def one(e):
        if isinstance(e, hv.Labels):
            return e.opts(text_alpha=opacity, visible=visible, clone=True)
        style = hv.Store.lookup_options("bokeh", e, "style").kwargs  # the layer's own look, scaled
        scaled = {k: style[k] * opacity for k in ("fill_alpha", "line_alpha") if k in style}
        return e.opts(alpha=opacity, visible=visible, clone=True, **scaled)  # a clone: the layer keeps its look
    return element.map(one, hv.Element)


def top_subtiles(s: ExplorerState, n: int = GALLERY) -> list[tuple[int, int, float]]:
    """The gallery: ``views.top_contributions`` of the state's image for its predicted class."""
    return views.top_contributions(s.trace, top=n, b=s.b)


def focus(s: ExplorerState, stage: str) -> tuple[float, float, float, float]:
    """The level-0 ``(x, y, w, h)`` a stage concerns: the whole image, the picked tile (stage II)
    or the picked sub-tile with a margin of its own size."""
    H, W = s.trace.image_size
    if stage == "II: attention":
        return tuple(s.trace.tile_boxes[s.b, s.picked_tile()].tolist())
    if stage == "sub-tiles":
        x, y, w, h = s.trace.subtile_boxes[s.b, s.picked_tile(), s.picked_subtile()].tolist()
        return (x - w, y - h, 3 * w, 3 * h)
    return (0.0, 0.0, float(W), float(H))


class DeepZoom:
    """The deep-zoom view of ``state``'s image with its layers and their controls (``panel()``).

    ``show(name, visible, opacity)`` changes a layer, ``step(stage)`` runs the stepper,
    ``go_to(box)`` moves the view; each also works from code (tests, notebooks)."""

    def __init__(self, state: ExplorerState, annotation: dict | None = None, width: int = 760, height: int = 640):
        import panel as pn

        from ..annotations import polygons
        self.state, self.width, self.height = state, width, height
        self.annotation_count = len(polygons(annotation)[0]) if annotation else 0  # outlined polygons
        self.visible = {n: pn.widgets.Checkbox(label=n, value=v, width=110) for n, (_, v) in LAYERS.items()}
        self.opacity = {n: pn.widgets.FloatSlider(start=0, end=1, step=0.05, value=o, width=150, show_value=False)
                        for n, (o, _) in LAYERS.items()}
        self._figures: list = []  # the bokeh figures showing the view
        self._images: list = []  # (holoviews plot, ColumnDataSource of the slide's image) of each
        shown = [element.apply(look, opacity=self.opacity[name].param.value, visible=self.visible[name].param.value)
                 for name, element in layers(state, annotation).items()]
        plot = reduce(operator.mul, shown)
        hooks = views.axes(state.mpp).get("hooks", [])
        labels = {k: v for k, v in views.axes(state.mpp).items() if k != "hooks"}
        self.plot = plot.opts(width=width, height=height, hooks=[*hooks, self._keep_figure], active_tools=["wheel_zoom"],
                              title=state.title or (state.name or ""), **labels)
        # the visible level-0 range, re-read on every pan/zoom into the slide's own image glyph
        # (drawn beneath the layers): only that glyph's data changes, the layers are not redrawn
        H, W = state.trace.image_size
        # (linked to the first layer: holoviews links a range stream to a plotted layer, not to an overlay)
        self.range = hv.streams.RangeXY(source=shown[0], x_range=(0, W), y_range=(0, H))  # first display: all of it
        self.range.add_subscriber(self._reread)
        self.image = views.rgba_image(*views.visible_region(state.source, b=state.b))  # its glyph's columns now
        self.stepper = pn.widgets.RadioButtonGroup(options=list(STAGES), value=STAGES[0])
        self.stepper.param.watch(lambda event: self.step(event.new), "value")
        self.gallery = self._gallery()

    def _keep_figure(self, plot, element) -> None:
        """A plot hook: keep the bokeh figure(s) showing the view, so ``go_to`` can move them, and
        give each the slide's image glyph, beneath every layer."""
        if plot.state in self._figures:
            return
        from bokeh.models import ColumnDataSource
        fig, source = plot.state, ColumnDataSource(self.image)
        fig.lod_timeout = RANGE_SETTLE_MS  # bokeh says the ranges changed this long after the last wheel or drag event
        image = fig.image_rgba(image="image", x="x", y="y", dw="dw", dh="dh", source=source, name="slide")
        fig.renderers = [image] + [r for r in fig.renderers if r is not image]
        self._figures.append(fig)
        self._images.append((plot, source))
        from holoviews.plotting.bokeh.callbacks import RangeXYCallback
        for callback in (c for p in plot.traverse(lambda x: x) for c in getattr(p, "callbacks", [])):
            if isinstance(callback, RangeXYCallback):  # holoviews waits 100 ms for more range events
                callback.debounce = RANGE_DEBOUNCE_MS

    def _reread(self, x_range=None, y_range=None) -> None:
        """The slide re-read for the visible range into each figure's image glyph (a ``RangeXY``
        subscriber)."""
        from panel.io.state import state
        self.image = image = views.rgba_image(*views.visible_region(self.state.source, x_range, y_range, self.state.b))
        for plot, source in self._images:
            doc = plot.document
            if plot.renderer.mode == "server" and doc is not None and doc.session_context and not state._unblocked(doc):
                doc.add_next_tick_callback(lambda plot=plot, source=source: self._draw(plot, source, image))
            else:  # in a notebook, or already holding the page's document
                self._draw(plot, source, image)

    @staticmethod
    def _draw(plot, source, image: dict) -> None:
        """Replace the image glyph's columns and send the change to the page (a served page's
        websocket, or the kernel's comm in a notebook)."""
        from panel.io.document import unlocked
        with unlocked():
            source.data = image
        plot.push()

    def show(self, name: str, visible: bool = True, opacity: float | None = None) -> None:
        if name not in LAYERS:
            raise ValueError(f"unknown layer {name!r}; one of {tuple(LAYERS)}")
        self.visible[name].value = visible
        if opacity is not None:
            self.opacity[name].value = opacity

    def step(self, stage: str) -> None:
        """Show ``stage``'s layers only and move the view to what it concerns (``focus``)."""
        if stage not in STAGE_LAYERS:
            raise ValueError(f"unknown stage {stage!r}; one of {STAGES}")
        for name in LAYERS:
            self.visible[name].value = name in STAGE_LAYERS[stage]
        self.go_to(focus(self.state, stage))

    def go_to(self, box) -> None:
        """Move the view to the level-0 box ``(x, y, w, h)`` (clipped to the image) and re-read it."""
        H, W = self.state.trace.image_size
        x, y, w, h = (float(v) for v in box)
        x0, x1 = max(0.0, x), min(float(W), x + w)
        y0, y1 = max(0.0, y), min(float(H), y + h)
        for fig in self._figures:
            fig.x_range.update(start=x0, end=x1)
            if fig.y_range.start > fig.y_range.end:  # y drawn downwards: the range runs from the bottom (y1) up
                fig.y_range.update(start=y1, end=y0)
            else:
                fig.y_range.update(start=y0, end=y1)
        self.range.event(x_range=(x0, x1), y_range=(y0, y1))

    def _gallery(self):
        """The sub-tiles that moved the answer most, each at level 0 with its share and a ``go`` button."""
        import panel as pn
        s, items = self.state, []
        top = top_subtiles(s)
        if top:  # one read for all of them at level 0 (the sub-tiles of a trace share one size)
            boxes = s.trace.subtile_boxes[s.b][[p for p, _, _ in top], [k for _, k, _ in top]]  # (n, 4)
            pixels = s.source.read(torch.full((len(top),), s.b), boxes, 1.0, (int(boxes[0, 3]), int(boxes[0, 2])))
        for (p, k, share), tile_pixels in zip(top, pixels if top else []):
            button = pn.widgets.Button(label=f"go: tile {p}, draw {k} ({share:+.3g})", width=THUMB + 90)
            button.on_click(lambda event, p=p, k=k: self._go_subtile(p, k))
            items.append(pn.Column(pn.pane.PNG(png(tile_pixels), width=THUMB, height=THUMB), button))
        return pn.Column(f"**sub-tiles that moved the answer most** ({s.trace.contribution_name})", pn.FlexBox(*items),
                         width=2 * (THUMB + 110))

    def _go_subtile(self, p: int, k: int) -> None:
        self.state.tile, self.state.subtile = p, k
        if self.stepper.value == "sub-tiles":
            self.step("sub-tiles")
        else:
            self.stepper.value = "sub-tiles"  # its watcher steps there

    def controls(self):
        import panel as pn
        rows = [pn.Row(self.visible[n], self.opacity[n]) for n in LAYERS]
        return pn.Column("**layers** (shown, opacity)", *rows, width=290)

    def panel(self):
        """The view, the stepper above it, the layer controls and the gallery beside it."""
        import panel as pn
        return pn.Row(pn.Column(self.stepper, pn.pane.HoloViews(self.plot)), pn.Column(self.controls(), self.gallery))

    def _repr_mimebundle_(self, include=None, exclude=None):  # shown as its panel in a notebook
        return self.panel()._repr_mimebundle_(include, exclude)


def png(pixels: torch.Tensor) -> bytes:
    """(C, h, w) pixels in [0, 1] -> PNG bytes."""
    import io

    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(views.to_uint8(pixels)).save(buf, format="PNG")
    return buf.getvalue()
