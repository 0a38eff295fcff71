"""The deep-zoom view with layers (``zoomin.viz.layers``, issue #32): every layer is drawn and can
be hidden or faded, the stepper shows a stage's layers and moves the view to what it concerns, the
gallery holds the sub-tiles with the largest share of the answer and moves the view to one, and the
slide is re-read at the pyramid level of the visible range."""
import dataclasses
import json

import numpy as np
import pytest
import torch

pytest.importorskip("large_image")
pytest.importorskip("panel")
hv = pytest.importorskip("holoviews")

from zoomin.config import ModelConfig  # noqa: E402
from zoomin.foreground import MASKED  # noqa: E402
from zoomin.model import build_model  # noqa: E402
from zoomin.synth import synth_slides  # noqa: E402
from zoomin.viz import views  # noqa: E402
from zoomin.viz.explorer import Explorer  # noqa: E402
from zoomin.viz.layers import LAYERS, STAGE_LAYERS, focus, layers, read_annotation, tissue, top_subtiles  # noqa: E402
from zoomin.viz.session import Session  # noqa: E402


@pytest.fixture(scope="module")
def explorer(tmp_path_factory):
    """A positive synthetic 2,048² slide with its outline file, and a tiny untrained model's pass."""
    d = tmp_path_factory.mktemp("layers")
    synth_slides(d, 1, 2048, seed=1, tile=128, progress=False, positive_fraction=1.0)
    cfg = ModelConfig(in_channels=3, num_classes=2, stage1_resolution=0.05, tile=256, stage2_resolution=0.25, subtile=32, n_samples=6,
                      feature_dim=8, feature_width=8, foreground="otsu_dark")
    torch.manual_seed(0)
    session = Session(build_model(cfg), {"slide": d / "synth_0000.tif"})
    return Explorer.from_session(session, "slide", title="slide"), d / "synth_0000.geojson"


def glyphs(fig, kind: str) -> list:
    return [r for r in fig.renderers if type(r.glyph).__name__ == kind]


def test_every_layer_is_drawn_and_can_be_hidden_or_faded(explorer):
    ex, outline = explorer
    zoom = ex.deep_zoom(outline)
    assert zoom.annotation_count == len(json.loads(outline.read_text())["features"]) > 0
    fig = hv.render(zoom.plot)
    lines = glyphs(fig, "MultiLine")  # the outlines
    assert len(lines) == 1 and lines[0].visible and len(lines[0].data_source.data["xs"]) == zoom.annotation_count
    quads = glyphs(fig, "Quad")  # tiles, sub-tiles, the negatives' tiles
    assert not any(q.visible for q in quads)  # at first: the first stage's layers, alpha and the outlines
    assert {n for n, box in zoom.visible.items() if box.value} == set(STAGE_LAYERS["I: attention"])
    zoom.show("tiles")
    fig = hv.render(zoom.plot)
    assert [q.visible for q in glyphs(fig, "Quad")] == [True, False, False]  # tiles, sub-tiles, the negatives' tiles
    zoom.show("tiles", visible=False)
    zoom.show("sub-tiles", opacity=0.25)
    fig = hv.render(zoom.plot)
    quads = glyphs(fig, "Quad")
    assert not quads[0].visible and quads[1].visible
    assert quads[1].glyph.fill_alpha == pytest.approx(0.3 * 0.25) and quads[1].glyph.line_alpha == 0.25  # scaled
    with pytest.raises(ValueError, match="unknown layer 'evidence'"):
        zoom.show("evidence")


def test_the_layers_say_what_the_trace_says(explorer):
    ex, outline = explorer
    s = ex.state
    out = layers(s, read_annotation(outline))
    assert list(out) == list(LAYERS)
    h, w = s.trace.view_hw
    log_alpha = s.trace.log_alpha.clone().reshape(1, h, w)
    log_alpha[:, : h // 3, w // 2:] = MASKED - 3.0  # a background corner, as stage I marks it
    masked = dataclasses.replace(s, trace=dataclasses.replace(s.trace, log_alpha=log_alpha.reshape(1, -1)))
    background = tissue(masked).dimension_values(2, flat=False)  # (h, w), row 0 at the top of the image
    assert background.shape == (h, w) and np.array_equal(background == 1, (log_alpha[0] < MASKED / 2).numpy())
    assert (background == 1).any() and (background == 0).any()
    assert isinstance(out["counts"], hv.Overlay) and not len(out["counts"])  # no stain counts: nothing
    count_map = torch.zeros(1, h * w)
    count_map[0, (h // 2) * w + w // 3] = 7.0  # one counted location
    counted = layers(dataclasses.replace(s, trace=dataclasses.replace(s.trace, count_map=count_map)))["counts"]
    shown = counted.dimension_values(2, flat=False)  # (h', w'), row 0 at the top of the image
    row, col = np.unravel_index(shown.argmax(), shown.shape)
    assert shown.max() == 7.0 and (row, col) == ((h // 2) * shown.shape[0] // h, (w // 3) * shown.shape[1] // w)
    drawn = int((s.trace.tile_counts[0] > 0).sum())
    assert len(out["beta"]) == drawn  # one beta map per drawn tile
    assert len(out["tiles"].get(0)) == drawn and len(out["sub-tiles"].get(0)) == int(s.trace.subtile_valid[0].sum())


def test_the_stepper_shows_a_stages_layers_and_moves_the_view(explorer):
    ex, _ = explorer
    zoom = ex.deep_zoom()
    fig = hv.render(zoom.plot)
    H, W = ex.trace.image_size
    assert (fig.x_range.start, fig.x_range.end) == (0, W)  # first display fits the slide
    for stage in STAGE_LAYERS:
        zoom.stepper.value = stage  # as a click on the stepper sets it
        assert {n for n, box in zoom.visible.items() if box.value} == set(STAGE_LAYERS[stage])
        x, y, w, h = focus(ex.state, stage)
        x0, y0, x1, y1 = max(0, x), max(0, y), min(W, x + w), min(H, y + h)
        assert (fig.x_range.start, fig.x_range.end) == (x0, x1)
        assert sorted((fig.y_range.start, fig.y_range.end)) == [y0, y1]
        assert zoom.range.x_range == (x0, x1) and zoom.range.y_range == (y0, y1)
    sub = ex.trace.subtile_boxes[0, ex.state.picked_tile(), ex.state.picked_subtile()].tolist()
    assert focus(ex.state, "sub-tiles") == (sub[0] - sub[2], sub[1] - sub[3], 3 * sub[2], 3 * sub[3])
    assert focus(ex.state, "II: attention") == tuple(ex.trace.tile_boxes[0, ex.state.picked_tile()].tolist())


def test_the_view_is_reread_at_the_level_that_fits_the_range(explorer):
    ex, _ = explorer
    zoom = ex.deep_zoom()
    fig = hv.render(zoom.plot)
    glyph = fig.select_one({"name": "slide"})  # the slide's image, beneath every layer
    assert fig.renderers[0] is glyph
    zoom.go_to((100, 200, 300, 300))
    im = glyph.data_source.data
    assert (im["x"][0], im["y"][0], im["dw"][0], im["dh"][0]) == (100, 200, 300, 300) and im["image"][0].shape == (300, 300)
    zoom.go_to((0, 0, 2048, 2048))
    im = glyph.data_source.data
    assert views.zoom_scale(2048) == 0.25 and im["image"][0].shape == (512, 512)  # 2,048 px at 1/4
    pixels, _ = views.visible_region(ex.state.source, (0, 2048), (0, 2048))
    assert np.array_equal(im["image"][0].view(np.uint8).reshape(512, 512, 4)[..., :3], views.to_uint8(pixels))


def test_the_gallery_holds_the_subtiles_that_moved_the_answer_most(explorer):
    ex, _ = explorer
    zoom = ex.deep_zoom()
    tr = ex.trace
    cls = int(tr.probs[0].argmax())
    share = tr.contributions[0, ..., cls][tr.subtile_valid[0]].abs()
    top = top_subtiles(ex.state)
    assert [abs(v) for _, _, v in top] == pytest.approx(share.sort(descending=True).values[:len(top)].tolist())
    p, k, _ = top[1]
    buttons = [obj[1] for obj in zoom.gallery[1]]
    assert len(buttons) == len(top)
    buttons[1].clicks += 1  # a click on the second one's "go"
    assert (ex.state.tile, ex.state.subtile) == (p, k) and zoom.stepper.value == "sub-tiles"
    x, y, w, h = tr.subtile_boxes[0, p, k].tolist()
    assert zoom.range.x_range == (max(0, x - w), min(tr.image_size[1], x + 2 * w))


def test_every_slide_view_is_drawn_on_a_2d_canvas(explorer):
    """holoviews draws with WebGL by default; the explorer's slide views ask for a 2D canvas, for the
    page copies a WebGL canvas back on every paint, slow without a GPU (docs/zoom_latency.md)."""
    from bokeh.models import Plot
    ex, outline = explorer
    for view in (ex.deep_zoom(outline).plot, ex.stages(), ex.linked(), ex.zoom()):
        plots = list(hv.render(view).select({"type": Plot}))
        assert plots and {p.output_backend for p in plots} == {"canvas"}, view
    assert hv.render(hv.Image(np.eye(3))).output_backend == "webgl"  # holoviews' own default, left as it is
