"""holoviews elements for one image of a ``Trace`` and the ``Source`` it was computed from.

All views share level-0 pixel coordinates (x right, y down: ``invert_yaxis``), so the stage-I
attention, tile boxes, stage-II views and sub-tiles overlay and zoom together. Pixels are only
ever read through the source, at the scale a view needs.
"""
from __future__ import annotations

import math

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  (registers the bokeh backend the options below need)
import numpy as np
import torch
import torch.nn.functional as F
from bokeh.palettes import Viridis256

from ..sources import Source
from ..trace import Trace

if hv.Store.current_backend != "bokeh":
    hv.Store.set_current_backend("bokeh")

MAX_PIXELS = 768  # longest side of a zoomed read, in screen pixels
DISPLAY_PIXELS = 1200  # longest side of a whole-image view embedded in a page
AXES = dict(invert_yaxis=True, xlabel="x (level-0 px)", ylabel="y (level-0 px)", show_legend=False)
DECADES = 2  # an attention map shows its top two orders of magnitude; below that it is transparent
MARKER = 9  # screen pixels: the box markers that stay visible at every zoom


def _lbrt(box) -> tuple[float, float, float, float]:
    """Level-0 ``(x, y, w, h)`` -> holoviews bounds (left, bottom, right, top) with y down."""
    x, y, w, h = (float(v) for v in box)
    return (x, y, x + w, y + h)


def translucent(palette: list[str], lo: float = 0.05, hi: float = 0.5) -> list[str]:
    """``#rrggbb`` colours -> ``#rrggbbaa`` with opacity rising from ``lo`` to ``hi`` along the
    palette: a map drawn with it tints the image under it instead of hiding it."""
    a = np.linspace(lo, hi, len(palette))
    return [f"{c[:7]}{round(v * 255):02x}" for c, v in zip(palette, a)]


ATTENTION = translucent(list(Viridis256))  # faint purple (low) -> yellow (high): stands out on pink tissue
NEGATIVE = translucent(["#2166ac"] * 256)  # one blue, opacity alone: the negatives' tiles are drawn red on it
COUNTS = translucent(["#e66101"] * 256)  # one orange, opacity alone: the count map under alpha's palette


def _micron_ticks(mpp: float):
    """A plot hook: tick the axes at round micrometre values and label them in µm (the data stay
    in level-0 pixels, so every view still overlays; new bokeh models per plot, as bokeh needs)."""
    from bokeh.models import CustomJSTicker, CustomJSTickFormatter
    ticks = """const lo = Math.min(cb_data.start, cb_data.end) * mpp, hi = Math.max(cb_data.start, cb_data.end) * mpp;
const raw = (hi - lo) / 5, p = 10 ** Math.floor(Math.log10(raw));
const step = [1, 2, 5, 10].map(m => m * p).find(s => s >= raw), out = [];
for (let t = Math.ceil(lo / step) * step; t <= hi; t += step) out.push(t / mpp);
return out;"""
    label = "return (tick * mpp).toLocaleString('en-US', {maximumFractionDigits: 1});"

    def hook(plot, element):
        for axis in (*plot.state.xaxis, *plot.state.yaxis):
            axis.ticker = CustomJSTicker(major_code=ticks, args=dict(mpp=mpp))
            axis.formatter = CustomJSTickFormatter(code=label, args=dict(mpp=mpp))
    return hook


def canvas(plot, element) -> None:
    """A plot hook: draw the figure on a 2D canvas, not with WebGL (holoviews' default). A slide
    view's few images and boxes gain nothing from WebGL, and the page copies the WebGL canvas back
    onto its own on every paint (``drawImage``), slow without a GPU (headless, a remote desktop;
    docs/zoom_latency.md measures a zoom step)."""
    plot.state.output_backend = "canvas"


def axes(mpp: float | None = None) -> dict:
    """Plot options for level-0 axes: labelled in µm when the slide has a pixel size (``mpp``,
    micrometres per level-0 pixel), else in pixels; drawn on a 2D canvas (``canvas``)."""
    if not mpp:
        return dict(xlabel=AXES["xlabel"], ylabel=AXES["ylabel"], hooks=[canvas])
    return dict(xlabel="x (µm)", ylabel="y (µm)", hooks=[canvas, _micron_ticks(float(mpp))])


def to_uint8(pixels: torch.Tensor) -> np.ndarray:
    """(C, h, w) pixels in [0, 1] -> (h, w, 3) uint8 RGB (one channel repeated as grey)."""
    img = pixels.detach().float().clamp(0, 1)
    img = img.expand(3, -1, -1) if img.shape[0] == 1 else img[:3]
    return (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)


def rgb(pixels: torch.Tensor, box, label: str = "") -> hv.RGB:
    """(C, h, w) pixels in [0, 1] covering level-0 ``box`` -> an RGB element placed on the slide."""
    return hv.RGB(np.ascontiguousarray(to_uint8(pixels)[::-1]), bounds=_lbrt(box), label=label).opts(**AXES)


def heat(values: torch.Tensor, box, label: str, palette: list[str] = ATTENTION) -> hv.Image:
    """An (h, w) map of probabilities over level-0 ``box`` as a translucent colour overlay on a
    log scale: the peak strongest, ``DECADES`` orders of magnitude below it faint, less than
    that (and the masked background) not drawn."""
    arr = values.detach().float().numpy()[::-1]
    top = float(arr.max()) or 1.0
    return hv.Image(np.ascontiguousarray(arr), bounds=_lbrt(box), vdims=[label], label=label).opts(
        cmap=palette, cnorm="log", clim=(top * 10.0 ** -DECADES, top), colorbar=True,
        clipping_colors={"min": "transparent", "NaN": "transparent"}, tools=["hover"], **AXES)


def fit_display(x: torch.Tensor, pool: str) -> torch.Tensor:
    """(C, h, w) shrunk to at most ``DISPLAY_PIXELS`` on its longer side, for display only:
    ``area`` averages pixels, ``max`` keeps the peak of each block (so a one-location attention
    spike stays visible)."""
    h, w = x.shape[-2:]
    if max(h, w) <= DISPLAY_PIXELS:
        return x
    size = (max(1, round(h * DISPLAY_PIXELS / max(h, w))), max(1, round(w * DISPLAY_PIXELS / max(h, w))))
    if pool == "max":
        return F.adaptive_max_pool2d(x.float()[None], size)[0]
    return F.interpolate(x.float()[None], size=size, mode="area")[0]


def overview(source: Source, trace: Trace, b: int = 0) -> hv.RGB:
    """The whole image as a person should see it: read at the power-of-two scale (pyramid level)
    that fits ``DISPLAY_PIXELS``, not at the model's coarse ``s1``, on level-0 axes."""
    H, W = trace.image_size
    view = source.view(zoom_scale(max(H, W), DISPLAY_PIXELS))[b]
    return rgb(fit_display(view, "area"), (0, 0, W, H), label="image")


def attention(trace: Trace, b: int = 0) -> hv.Image:
    """Eq 1's ``alpha`` over the whole image (block maxima when the map is larger than the screen)."""
    H, W = trace.image_size
    return heat(fit_display(trace.alpha[b][None], "max")[0], (0, 0, W, H), "alpha")


def boxes(box_list: torch.Tensor, values: torch.Tensor, label: str, color: str = "lime",
          cmap: str = "Greens") -> hv.Rectangles:
    """Level-0 boxes (M, 4) with one value each (a count, a weight) -> outlined rectangles."""
    b, v = box_list.detach().float().reshape(-1, 4), values.detach().float().reshape(-1)
    data = [(x, y, x + w, y + h, val) for (x, y, w, h), val in zip(b.tolist(), v.tolist())]
    return hv.Rectangles(data, vdims=[label], label=label).opts(
        color=label, cmap=cmap, fill_alpha=0.3, line_color=color, line_width=2, tools=["hover"], **AXES)


def markers(box_list: torch.Tensor, values: torch.Tensor, label: str, color: str = "cyan",
            cmap: str | None = None) -> hv.Points:
    """A fixed-size screen marker on the centre of each level-0 box, so boxes far smaller than a
    screen pixel (a 128-px sub-tile on a 100,000-px slide) stay visible at every zoom. With
    ``cmap`` the markers are filled by value; without, outlined in ``color``."""
    b, v = box_list.detach().float().reshape(-1, 4), values.detach().float().reshape(-1)
    centre = b[:, :2] + b[:, 2:] / 2  # (M, 2) level-0 (x, y)
    style = dict(color=label, cmap=cmap, line_color="black") if cmap else dict(fill_alpha=0, line_color=color)
    return hv.Points((centre[:, 0].numpy(), centre[:, 1].numpy(), v.numpy()), vdims=[label], label=label).opts(
        marker="square", size=MARKER, line_width=2, tools=["hover"], **style, **AXES)


def box_labels(box_list: torch.Tensor, texts: list[str], color: str = "white") -> hv.Labels:
    """Text at the top-left corner of each level-0 box."""
    b = box_list.detach().float().reshape(-1, 4)
    data = [(x, y, t) for (x, y, _, _), t in zip(b.tolist(), texts)]
    return hv.Labels(data, vdims=["text"]).opts(text_color=color, text_align="left", text_baseline="bottom",
                                                text_font_size="9pt")


def tiles(trace: Trace, b: int = 0, color: str = "lime", cmap: str = "Greens") -> hv.Overlay:
    """The distinct stage-I tiles with their draw counts."""
    keep = trace.tile_counts[b] > 0
    tb, counts = trace.tile_boxes[b][keep], trace.tile_counts[b][keep]
    return boxes(tb, counts, "draws", color, cmap) * box_labels(tb, [f"x{int(c)}" for c in counts], color)


def subtiles(trace: Trace, b: int = 0, tile: int | None = None, color: str = "cyan",
             cmap: str = "Blues") -> hv.Overlay:
    """The drawn sub-tiles (all, or those of one tile) with their weight in ``z``: boxes, and a
    marker on each that stays visible when the boxes are too small to see."""
    valid = trace.subtile_valid[b].clone()
    if tile is not None:
        valid[torch.arange(valid.shape[0]) != tile] = False
    sb, w = trace.subtile_boxes[b][valid], trace.weights[b][valid]
    return boxes(sb, w, "weight", color, cmap) * markers(sb, w, "weight", color)


def stage2(source: Source, trace: Trace, tile: int, b: int = 0) -> hv.Overlay:
    """Tile ``tile``'s stage-II view ``V(x, s2, c)`` with eq 4's ``beta`` and its drawn sub-tiles.
    A one-stage trace has no stage II: the tile (the patch itself) at level 0."""
    box = trace.tile_boxes[b, tile]
    rows = torch.tensor([b])
    if trace.beta is None:
        t = int(box[3])
        return rgb(source.read(rows, box[None], 1.0, (t, t))[0], box.tolist(), label="patch")
    u, v = trace.beta.shape[-2:]
    view = source.read(rows, box[None], trace.scale2 or u / float(box[3]), (u, v))[0]  # (C, u, v) at s2
    return (rgb(view, box.tolist(), label="stage-II view") * heat(trace.beta[b, tile], box.tolist(), "beta")
            * subtiles(trace, b, tile))


def subtile(source: Source, trace: Trace, tile: int, k: int, b: int = 0) -> hv.RGB:
    """Sub-tile ``k`` of tile ``tile`` read at full resolution (level 0)."""
    box = trace.subtile_boxes[b, tile, k]
    h, w = int(box[3]), int(box[2])
    return rgb(source.read(torch.tensor([b]), box[None], 1.0, (h, w))[0], box.tolist(),
               label=f"sub-tile {k} of tile {tile} (level 0)")


def prediction(trace: Trace, class_names: list[str] | None = None, b: int = 0) -> hv.Bars:
    """This one drawn pass's class probabilities (``softmax`` of its logits), labelled as one pass."""
    return probability_bars(trace.probs[b], class_names, "one pass (drawn)")


def probability_bars(probs: torch.Tensor, class_names: list[str] | None = None, label: str = "answer") -> hv.Bars:
    """Class probabilities (classes,) as bars titled ``label: predicted class``."""
    p = probs.detach().float().flatten()
    names = class_names or [str(c) for c in range(p.numel())]
    return hv.Bars(list(zip(names, p.tolist())), "class", "probability").opts(
        ylim=(0, 1), title=f"{label}: {names[int(p.argmax())]}", tools=["hover"])


def readout_label(readout) -> str:
    """``answer (mixture, 24 passes)``: what the answer bars show, from a ``ReadoutConfig``."""
    if readout is None:
        return "answer"
    passes = "1 top-k pass" if readout.mode == "topk" else f"{readout.passes} pass{'es' * (readout.passes != 1)}"
    return f"answer ({readout.method}, {passes})"


def contributions(trace: Trace, cls: int | None = None, top: int = 12, b: int = 0) -> hv.Bars:
    """Each sample's share of the logit of class ``cls`` (default: the predicted class), largest
    magnitudes first. Shares plus the bias add up to the logit exactly (``g`` is linear); with
    ``model.estimate: probabilities`` the shares add up to the class's probability before it is
    normalised (``Trace.contributions``)."""
    cls = int(trace.probs[b].argmax()) if cls is None else cls
    data = [(f"t{p}/s{k}", v) for p, k, v in top_contributions(trace, cls, top, b)]
    label = trace.contribution_name
    return hv.Bars(data, "sample", label).opts(
        title=f"contributions to class {cls}", xrotation=45, tools=["hover"], color=label, cmap="RdBu_r",
        symmetric=True)


def top_contributions(trace: Trace, cls: int | None = None, top: int = 12, b: int = 0) -> list[tuple[int, int, float]]:
    """The ``top`` drawn sub-tiles with the largest share of class ``cls`` (default: the predicted
    class) as ``(tile slot, draw, share)``, largest magnitude first."""
    cls = int(trace.probs[b].argmax()) if cls is None else cls
    share = trace.contributions[b, ..., cls].detach().float()  # (P, K)
    valid = trace.subtile_valid[b]
    order = share.abs().masked_fill(~valid, -1).flatten().argsort(descending=True)[:min(top, int(valid.sum()))]
    K = share.shape[-1]
    return [(int(i) // K, int(i) % K, float(share.flatten()[i])) for i in order]


def zoom_scale(extent: float, max_pixels: int = MAX_PIXELS) -> float:
    """The power-of-two scale at which ``extent`` level-0 pixels fit ``max_pixels`` (1 at most):
    the pyramid level a view of that range should come from."""
    if extent <= max_pixels:
        return 1.0
    return 2.0 ** math.floor(math.log2(max_pixels / extent))


def visible_region(source: Source, x_range=None, y_range=None, b: int = 0,
                   max_pixels: int = MAX_PIXELS) -> tuple[torch.Tensor, list[float]]:
    """The visible range (None: the whole image) read at ``zoom_scale`` -> ((C, h, w) pixels,
    its level-0 box ``[x, y, w, h]``)."""
    H, W = source.size
    x0, x1 = x_range if x_range else (0, W)
    y0, y1 = sorted(y_range) if y_range else (0, H)
    x0, y0 = max(0, math.floor(x0)), max(0, math.floor(y0))
    x1, y1 = min(W, max(x0 + 1, math.ceil(x1))), min(H, max(y0 + 1, math.ceil(y1)))
    s = zoom_scale(max(x1 - x0, y1 - y0), max_pixels)
    size = (max(1, round((y1 - y0) * s)), max(1, round((x1 - x0) * s)))
    box = torch.tensor([[x0, y0, x1 - x0, y1 - y0]], dtype=torch.float)
    return source.read(torch.tensor([b]), box, s, size)[0], box[0].tolist()


def zoomable(source: Source, b: int = 0, max_pixels: int = MAX_PIXELS) -> hv.DynamicMap:
    """The image as a DynamicMap on a ``RangeXY`` stream: every pan/zoom reads the visible range at
    ``zoom_scale`` (so a 100,000² slide zooms to sub-tile pixels without reading level 0 whole)."""
    def region(x_range=None, y_range=None):
        pixels, box = visible_region(source, x_range, y_range, b, max_pixels)
        return rgb(pixels, box, label="slide")  # one label: the same glyph is updated, not a new one added

    return hv.DynamicMap(region, streams=[hv.streams.RangeXY()])


def rgba_image(pixels: torch.Tensor, box) -> dict:
    """(C, h, w) pixels in [0, 1] covering level-0 ``box`` -> the columns of a bokeh ``image_rgba``
    glyph that draws them there (row 0 at the box's top, on an inverted y axis)."""
    u8 = to_uint8(pixels)  # (h, w, 3)
    rgba = np.full((*u8.shape[:2], 4), 255, dtype=np.uint8)
    rgba[..., :3] = u8
    x, y, w, h = (float(v) for v in box)
    return dict(image=[rgba.view(np.uint32)[..., 0]], x=[x], y=[y], dw=[w], dh=[h])
