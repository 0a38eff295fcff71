"""zoomin.viz: views sit in level-0 coordinates, zooming reads the right level, the explorer steps
through every stage from one state object, the widgets resample reproducibly, and the saved HTML
renders in (offline) Chromium without asking any CDN."""
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

hv = pytest.importorskip("holoviews")
pytest.importorskip("ipywidgets")

from zoomin.config import ModelConfig  # noqa: E402
from zoomin.model import build_model  # noqa: E402
from zoomin.sources import ArraySource  # noqa: E402
from zoomin.viz import STAGES, Explorer, Session, views  # noqa: E402
from zoomin.viz.layers import STATIC_NOTE  # noqa: E402

TWO = dict(kind="zoom_in", stage1_resolution=0.1, tile=40, stage2_resolution=0.25, subtile=12, n_samples=8, feature_dim=16,
           feature_width=8, num_classes=3)


class CountingSource(ArraySource):
    def __init__(self, x):
        super().__init__(x)
        self.reads = []  # (scale, boxes, size)

    def read(self, batch_index, boxes, scale, size_hw):
        self.reads.append((scale, boxes.clone(), size_hw))
        return super().read(batch_index, boxes, scale, size_hw)


def image(H=97, W=130, C=1, seed=0):
    return torch.rand(1, C, H, W, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def traced():
    torch.manual_seed(0)
    model = build_model(ModelConfig(**TWO)).eval()
    x = image()
    tr = model(x, negatives=True, generator=torch.Generator().manual_seed(1)).detach()
    return tr, x, model


def pixels(el):
    """An element's values in image row order (``dimension_values`` runs y upwards = level-0 rows
    downwards, since the views store rows flipped for the inverted y axis)."""
    if isinstance(el, hv.RGB):
        return np.stack([el.dimension_values(d, flat=False) for d in range(2, 5)], -1)
    return el.dimension_values(2, flat=False)


def test_overview_attention_and_boxes_share_level0_coordinates(traced):
    tr, x, _ = traced
    H, W = tr.image_size
    over, att = views.overview(ArraySource(x), tr), views.attention(tr)
    assert over.bounds.lbrt() == (0, 0, W, H) and att.bounds.lbrt() == (0, 0, W, H)
    assert np.allclose(pixels(att), tr.alpha[0].numpy())  # row 0 on top
    rect = views.tiles(tr).get(0)
    assert len(rect) == int(tr.distinct_tiles[0])
    keep = tr.tile_counts[0] > 0
    x0, y0 = rect.dimension_values("x0"), rect.dimension_values("y0")
    assert np.allclose(x0, tr.tile_boxes[0, keep, 0]) and np.allclose(y0, tr.tile_boxes[0, keep, 1])
    assert np.allclose(rect.dimension_values("draws"), tr.tile_counts[0, keep])


def test_stage2_and_subtile_read_what_the_model_read(traced):
    tr, x, _ = traced
    src = CountingSource(x)
    p = int(tr.tile_counts[0].argmax())
    st2 = views.stage2(src, tr, p)
    rgb_el, beta_el, subs, marks = st2.values()
    assert rgb_el.bounds.lbrt() == pytest.approx(views._lbrt(tr.tile_boxes[0, p]))
    assert src.reads[-1][0] == pytest.approx(0.25) and src.reads[-1][2] == tuple(tr.beta.shape[-2:])
    assert np.allclose(pixels(beta_el), tr.beta[0, p].numpy())
    assert len(subs) == len(marks) == int(tr.subtile_valid[0, p].sum())
    valid = tr.subtile_boxes[0, p][tr.subtile_valid[0, p]]
    assert np.allclose(marks.dimension_values("x"), valid[:, 0] + valid[:, 2] / 2)  # a marker on each centre
    assert np.allclose(marks.dimension_values("y"), valid[:, 1] + valid[:, 3] / 2)
    k = int(tr.weights[0, p].argmax())
    sub = views.subtile(src, tr, p, k)
    assert src.reads[-1][0] == 1.0
    bx, by, bw, bh = (int(v) for v in tr.subtile_boxes[0, p, k])
    expect = torch.zeros(bh, bw)  # zero padding outside the image, as the model sees it
    ys, xs = slice(max(by, 0), min(by + bh, 97)), slice(max(bx, 0), min(bx + bw, 130))
    expect[ys.start - by:ys.stop - by, xs.start - bx:xs.stop - bx] = x[0, 0, ys, xs]
    got = pixels(sub)[..., 0] / 255.0
    assert np.allclose(got, expect.numpy(), atol=1 / 255)


def test_zoom_scale_picks_power_of_two_levels():
    assert views.zoom_scale(500) == 1.0
    assert views.zoom_scale(768) == 1.0
    assert views.zoom_scale(1000) == 0.5
    assert views.zoom_scale(100_000) == 2.0 ** -8
    assert 100_000 * views.zoom_scale(100_000) <= views.MAX_PIXELS


def test_zoomable_stream_reads_the_visible_range_at_the_right_level():
    x = torch.rand(1, 3, 2048, 1536, generator=torch.Generator().manual_seed(3))
    src = CountingSource(x)
    dm = views.zoomable(src)
    full = dm[()]
    assert full.bounds.lbrt() == (0, 0, 1536, 2048) and src.reads[-1][0] == 0.25
    assert full.dimension_values(2, flat=False).shape == (512, 384)
    stream = dm.streams[0]
    stream.event(x_range=(100.4, 400.2), y_range=(900, 700))  # y down: ranges may come reversed
    near = dm[()]
    assert near.bounds.lbrt() == (100, 700, 401, 900)
    scale, boxes, size = src.reads[-1]
    assert scale == 1.0 and size == (200, 301)
    rgb = pixels(near)
    assert np.allclose(rgb / 255.0, x[0, :, 700:900, 100:401].permute(1, 2, 0).numpy(), atol=1 / 255)
    stream.event(x_range=(-50, 3000), y_range=(-10, 5000))  # beyond the image: clipped
    assert dm[()].bounds.lbrt() == (0, 0, 1536, 2048)


def test_zoom_on_a_slide_never_reads_level0_whole(tmp_path):
    pytest.importorskip("large_image")
    from zoomin.slides import SlideSource, write_pyramidal_tiff
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (4096, 4096, 3), dtype=np.uint8)
    src = SlideSource(write_pyramidal_tiff(tmp_path / "s.tif", img, tile=256, compression="zlib"))
    dm = views.zoomable(src, max_pixels=512)
    dm[()]
    assert src.pixels_read <= 512 * 512  # the overview came from a reduced level
    dm.streams[0].event(x_range=(1000, 1200), y_range=(3000, 3300))
    el = dm[()]
    assert el.dimension_values(2, flat=False).shape == (300, 200)
    assert src.pixels_read <= 512 * 512 + 300 * 200
    got = pixels(el)
    assert np.array_equal(got, img[3000:3300, 1000:1200])  # level-0 pixels, lossless file


def test_explorer_has_every_stage_on_one_slider(traced):
    tr, x, _ = traced
    ex = Explorer(tr, x, class_names=["a", "b", "c"], title="t")
    hm = ex.stages()
    assert list(hm.keys()) == list(range(1, len(STAGES) + 1))
    top = ex.tile_order()[0]
    extents = {s: ex.stage(s).get(0).bounds.lbrt() for s in STAGES}  # the image layer of each stage
    H, W = tr.image_size
    assert all(extents[s] == (0, 0, W, H) for s in ("I: attention", "tiles", "negatives", "prediction"))
    assert extents["II: attention"] == pytest.approx(views._lbrt(tr.tile_boxes[0, top]))
    assert extents["sub-tiles"] == pytest.approx(views._lbrt(tr.subtile_boxes[0, top, ex.top_subtile(top)]))
    neg = ex.stage("negatives")
    assert len(neg.get(2)) == int(tr.negatives.distinct_tiles[0])  # the negatives' tiles
    pred = ex.stage("prediction").get(1)
    assert np.allclose(np.sort(pred.dimension_values("logit share")),
                       np.sort(tr.contributions[0, ..., int(tr.probs[0].argmax())][tr.subtile_valid[0]].numpy()))
    bars = ex.prediction()[0]
    assert np.allclose(bars.dimension_values("probability"), tr.probs[0].numpy())
    with pytest.raises(ValueError, match="unknown stage"):
        ex.stage("nope")


def test_tapping_a_tile_shows_its_stage_two_view(traced):
    tr, x, _ = traced
    ex = Explorer(tr, x)
    layout = ex.linked()
    dm = layout[1]
    slots = (tr.tile_counts[0] > 0).nonzero().flatten().tolist()
    top = ex.tile_order()[0]
    assert dm[()].get(0).bounds.lbrt() == pytest.approx(views._lbrt(tr.tile_boxes[0, top]))  # nothing picked yet
    picked = dm.streams[0]
    picked.event(index=[len(slots) - 1])
    last = slots[-1]
    assert dm[()].get(0).bounds.lbrt() == pytest.approx(views._lbrt(tr.tile_boxes[0, last]))
    assert len(dm[()].get(2)) == int(tr.subtile_valid[0, last].sum())  # that tile's sub-tiles


def test_one_stage_trace_is_explorable():
    model = build_model(ModelConfig(kind="one_stage", stage1_resolution=0.1, tile=12, n_samples=6, feature_dim=8,
                                    feature_width=8)).eval()
    x = image()
    ex = Explorer(model(x), x)
    assert len(ex.stages()) == len(STAGES)
    assert ex.stage("II: attention").get(0).dimension_values(2, flat=False).shape == (12, 12)


def test_a_mixture_readout_shows_probability_shares():
    """``readout.method: mixture``: the prediction stage and the bars show each sample's
    share of the predicted class's probability, and the shares add up to it."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(**TWO)).eval()
    x = image()
    tr = model(x, negatives=True, generator=torch.Generator().manual_seed(1), estimate="probabilities").detach()
    ex = Explorer(tr, x)
    cls = int(tr.probs[0].argmax())
    share = tr.contributions[0, ..., cls][tr.subtile_valid[0]].numpy()
    pred = ex.stage("prediction").get(1)
    assert np.allclose(np.sort(pred.dimension_values("probability share")), np.sort(share))
    bars = views.contributions(tr)
    assert np.isclose(bars.dimension_values("probability share").sum(), share.sum())
    assert np.isclose(share.sum(), float(tr.logits[0, cls].exp()), atol=1e-5)


def test_save_writes_one_offline_html(traced, tmp_path):
    tr, x, _ = traced
    path = Explorer(tr, x, title="offline").save(tmp_path / "trace.html")
    html = path.read_text()
    assert "cdn.bokeh.org" not in html and "Bokeh" in html and len(html) > 500_000  # bokeh inlined
    assert "offline" in html
    assert STATIC_NOTE.format(px=views.DISPLAY_PIXELS) in html  # the layers, and what they are
    assert all(f'"label":{{"type":"value","value":"{name}"}}' in html for name in ("alpha", "tiles", "sub-tiles"))


def test_session_and_widget_resample_reproducibly(tmp_path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(**TWO))
    images = {"a": image(seed=1), "b": image(H=120, W=90, seed=2)}
    session = Session(model, images)
    w = Explorer.from_session(session, seed=5).widget()
    assert w.stage.value == STAGES[0] and w.slide.options == ("a", "b")
    w.next.click()
    assert w.stage.value == "tiles"
    for s in STAGES:
        w.stage.value = s
        assert w.current() is not None
    w.seed.value, w.n.value = 7, 20
    w.resample.click()
    first = w.state.trace.tile_index.clone()
    assert int(w.state.trace.tile_counts.sum()) == 20
    w.resample.click()
    assert torch.equal(w.state.trace.tile_index, first)  # same seed, same samples
    w.slide.value = "b"
    w.resample.click()
    assert w.state.trace.image_size == (120, 90) and w.state.name == "b"
    w.tile.value = w.tile.options[-1][1]
    assert all(w.state.trace.subtile_valid[0, w.tile.value, k] for _, k in w.subtile.options)
    w.checkpoint.value = str(tmp_path / "missing.pt")
    w.load.click()
    assert "could not load" in w.status.value
    w.stage.value = "II: attention"
    box = w.state.trace.tile_boxes[0, w.tile.value]
    assert w.current().get(0).bounds.lbrt() == pytest.approx(views._lbrt(box))  # the selected tile's view


def test_a_failed_resample_keeps_the_image_and_trace_and_says_why():
    torch.manual_seed(0)
    model = build_model(ModelConfig(**TWO))
    session = Session(model, {"a": image(seed=1), "rgb": image(C=3, seed=2)})  # the model wants 1 channel
    w = Explorer.from_session(session, seed=0).widget()
    before = w.state.trace
    w.slide.value = "rgb"  # choosing an image reruns the model on it
    assert "could not run rgb" in w.status.value and "channel" in w.status.value
    assert w.state.name == "a" and w.state.trace is before and w.state.source.size == (97, 130)
    w.n.value = 500  # N is not capped by the widget
    w.slide.value = "a"
    assert int(w.state.trace.tile_counts.sum()) == 500


def test_large_attention_maps_are_shown_by_block_maxima():
    alpha = torch.zeros(1, 3000, 2000)
    alpha[0, 1234, 567] = 1.0  # one hot location, far smaller than a screen pixel
    shown = views.fit_display(alpha, "max")[0]
    assert max(shown.shape) <= views.DISPLAY_PIXELS and float(shown.max()) == 1.0
    rgb = views.fit_display(torch.ones(3, 3000, 2000), "area")
    assert rgb.shape == (3, 1200, 800) and torch.allclose(rgb, torch.ones(1))


def test_attention_is_a_translucent_overlay_on_a_log_scale(traced):
    tr, _, _ = traced
    att = views.attention(tr)
    o = att.opts.get().kwargs
    alphas = [int(c[7:9], 16) for c in o["cmap"]]  # #rrggbbaa
    assert all(a < 255 for a in alphas) and alphas == sorted(alphas) and alphas[0] < alphas[-1]  # faint -> strong
    top = float(tr.alpha.max())
    assert o["cnorm"] == "log" and o["clim"] == pytest.approx((top * 10.0 ** -views.DECADES, top))
    assert o["clipping_colors"]["min"] == "transparent"  # below the scale: the image shows through


class MicronSource(ArraySource):
    mpp = 0.5


def test_axes_are_in_microns_where_the_slide_has_a_pixel_size(traced):
    from bokeh.document import Document
    from bokeh.models import CustomJSTicker
    tr, x, _ = traced
    for stage in ("I: attention", "II: attention"):
        fig = hv.render(Explorer(tr, MicronSource(x)).stage(stage))
        for _ in range(2):  # each render gets its own ticker: bokeh models live in one document
            Document().add_root(hv.render(Explorer(tr, MicronSource(x)).stage(stage)))
        axis = fig.xaxis[0]
        assert axis.axis_label == "x (µm)" and fig.yaxis[0].axis_label == "y (µm)"
        assert isinstance(axis.ticker, CustomJSTicker) and axis.ticker.args["mpp"] == 0.5
        assert axis.formatter.args["mpp"] == 0.5
    plain = hv.render(Explorer(tr, x).stage("tiles")).xaxis[0]
    assert plain.axis_label == "x (level-0 px)" and not isinstance(plain.ticker, CustomJSTicker)
    zoom = hv.render(Explorer(tr, MicronSource(x)).zoom()[()])
    assert zoom.xaxis[0].axis_label == "x (µm)"


def test_overview_is_read_at_display_resolution_not_at_s1(traced):
    tr, x, _ = traced

    class Views(ArraySource):
        scales = []

        def view(self, scale):
            self.scales.append(scale)
            return super().view(scale)
    src = Views(x)
    ex = Explorer(tr, src)
    ex.stage("I: attention"), ex.stage("tiles"), ex.stage("prediction")
    assert src.scales == [1.0]  # 130 px wide: level 0, read once for every stage on the overview
    assert views.zoom_scale(100_000, views.DISPLAY_PIXELS) == 2.0 ** -7  # a 100,000-px slide: 781 px


def test_widgets_bind_to_the_explorer_state_without_an_import_cycle(tmp_path):
    for first, never in (("widgets", "explorer"), ("explorer", "widgets")):  # widget() imports widgets lazily
        code = f"import sys, zoomin.viz.{first}; assert 'zoomin.viz.{never}' not in sys.modules"
        subprocess.run([sys.executable, "-c", code], check=True)
    torch.manual_seed(0)
    session = Session(build_model(ModelConfig(**TWO)), {"a": image(seed=1), "b": image(H=120, W=90, seed=2)})
    ex = Explorer.from_session(session, seed=0)
    w = ex.widget()
    assert w.state is ex.state  # one state object: no copies to drift apart
    w.stage.value = "tiles"
    assert ex.state.stage == "tiles"
    w.slide.value = "b"
    assert ex.trace is w.state.trace and ex.trace.image_size == (120, 90) and ex.name == "b"
    assert ex.stage("I: attention").get(0).bounds.lbrt() == (0, 0, 90, 120)  # the explorer shows the new image
    assert ex.state.stage == "tiles"  # Explorer.stage renders a copy: the widget's pick is kept


def test_linked_views_keep_their_own_ranges(traced):
    tr, x, _ = traced
    assert Explorer(tr, x).linked().opts.get("plot").kwargs["shared_axes"] is False


def test_offline_html_and_panel_models_ask_no_cdn(traced, tmp_path):
    import panel as pn
    from bokeh.document import Document
    from bokeh.models import ImportedStyleSheet, UIElement
    from zoomin.viz.offline import inline_resources
    tr, x, _ = traced
    inline_resources()
    root = pn.panel(Explorer(tr, x).stages()).get_root(Document())
    urls = [st.url for m in root.select({"type": UIElement}) for st in m.stylesheets if isinstance(st, ImportedStyleSheet)]
    assert not [u for u in urls if u.startswith("http")], urls  # panel's stylesheets inline
    html = Explorer(tr, x).save(tmp_path / "t.html").read_text()
    assert "cdn.holoviz.org" not in html and "cdn.bokeh.org" not in html
    assert not re.search(r"<link[^>]+href=\"https?://", html) and not re.search(r"<script[^>]+src=\"https?://", html)


@pytest.mark.browser
def test_saved_explorer_renders_offline_in_headless_chromium(traced, tmp_path):
    from browser import CANVAS_JS, errors, offsite, requested_urls, start
    tr, x, _ = traced
    page = Explorer(tr, x, title="browser").save(tmp_path / "trace.html")
    driver = start((1400, 1000))
    try:
        driver.get(page.as_uri())
        for _ in range(60):
            n = driver.execute_script(CANVAS_JS + "return deep(document, 'canvas').filter(drawn).length;")
            if n:
                break
            time.sleep(0.5)
        roots = driver.execute_script("return window.Bokeh ? Bokeh.documents.length : -1;")
        console, network = driver.get_log("browser"), driver.get_log("performance")
    finally:
        driver.quit()
    assert roots == 1 and n >= 4, f"bokeh documents {roots}, drawn canvases {n}"  # stages, layers, bars, contributions
    assert not errors(console), errors(console)
    assert not offsite(requested_urls(network))


def test_session_reads_slides_at_the_models_resolution(tmp_path):
    """A model that works at 1 µm/px sees a 0.5 µm/px slide at half its pixels in the explorer too,
    as zoomin predict does; a file without a pixel size takes the session's fallback_mpp."""
    pytest.importorskip("large_image")
    from PIL import Image

    from zoomin.slides import write_pyramidal_tiff
    img = np.random.default_rng(0).integers(0, 255, (512, 384, 3), dtype=np.uint8)
    tif = write_pyramidal_tiff(tmp_path / "s.tif", img, tile=128, mpp=0.5)
    Image.fromarray(img).save(tmp_path / "p.png")
    phys = build_model(ModelConfig(**{**TWO, "in_channels": 3, "mpp": 1.0, "stage1_resolution": 10.0, "stage1_units": "mpp"}))
    session = Session(phys, {"tif": tif, "png": tmp_path / "p.png"}, fallback_mpp=0.25)
    assert session.source("tif").size == (256, 192) and session.source("png").size == (128, 96)
    tr = session.trace("tif")
    assert tr.image_size == (256, 192) and tr.view_hw == (25, 19)
    assert Session(build_model(ModelConfig(**{**TWO, "in_channels": 3})), [tif]).source("s").size == (512, 384)
