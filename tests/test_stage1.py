"""Streamed stage I (zoomin.stage1): pieces with a halo give the one-piece result, in value and
gradient; background pieces are skipped; the piece-wise fit equals the whole-view fit."""
import pytest
import torch

from zoomin import foreground
from zoomin.config import ModelConfig
from zoomin.evidence import standardise
from zoomin.model import ZoomInNet
import zoomin.stage1 as stage1_module
from zoomin.stage1 import fit, pieces
from zoomin.sources import ArraySource

CFG = dict(kind="zoom_in", in_channels=3, num_classes=2, stage1_resolution=0.5, tile=16, stage2_resolution=0.5, subtile=8, n_samples=4,
           foreground="otsu_dark", feature_norm="none", evidence=True, evidence_sharpness=3.0, attention_hidden=6)


def tissue(B=2, H=180, W=140, seed=0, blank_rows=0):
    """Dark textured 'tissue' on bright glass, a few darker blobs; the top ``blank_rows`` are glass."""
    g = torch.Generator().manual_seed(seed)
    x = 0.55 + 0.15 * torch.rand(B, 3, H, W, generator=g)
    x[:, :, :, : W // 5] = 0.95  # glass strip
    x[:, :, :blank_rows] = 0.95
    x[:, :, H // 2: H // 2 + 8, W // 2: W // 2 + 8] = 0.2  # a lesion
    return x


def stage1(depth=3, chunk=0, x=None, grad=False, evidence=True):
    torch.manual_seed(0)
    model = ZoomInNet(ModelConfig(**{**CFG, "attention_depth": depth, "stage1_chunk": chunk, "evidence": evidence}))
    with torch.set_grad_enabled(grad):
        return model, model.attend(ArraySource(tissue() if x is None else x))


@pytest.mark.parametrize("depth", [2, 3, 4])
@pytest.mark.parametrize("chunk", [7, 16, 64])
def test_streamed_equals_one_piece_in_value(depth, chunk):
    _, one = stage1(depth, 0)
    _, many = stage1(depth, chunk)
    assert len(pieces(*one.view_hw, chunk)) > 1
    assert torch.equal(one.fg, many.fg) and torch.equal(one.threshold, many.threshold)
    fg = one.fg
    assert torch.allclose(one.log_alpha[fg], many.log_alpha[fg], atol=1e-5)
    assert torch.allclose(one.log_alpha.exp(), many.log_alpha.exp(), atol=1e-7)
    assert torch.allclose(one.evidence_logits, many.evidence_logits, atol=1e-5)


def test_one_piece_is_the_direct_computation():
    """chunk 0 is eq 1 as written: Otsu mask, standardised view, a, masked log-softmax."""
    model, s1 = stage1(3, 0)
    view = ArraySource(tissue()).view(0.5)
    t = foreground.fit(view, "otsu_dark")
    fg = foreground.mask(view, t, "otsu_dark")
    out = model.attention1(standardise(view, fg)[0])  # (B, 1, h, w)
    ref = foreground.apply(3.0 * out[:, 0].flatten(1), fg)
    assert torch.equal(s1.fg, fg)
    assert torch.allclose(s1.log_alpha[fg], ref[fg], atol=1e-5)


def test_streamed_equals_one_piece_in_gradient():
    grads = []
    for chunk in (0, 16):
        model, s1 = stage1(3, chunk, grad=True)
        w = torch.linspace(0, 1, s1.log_alpha.shape[-1])
        loss = (s1.log_alpha.exp() * w).sum() + s1.evidence_logits[:, 1].sum()
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.attention1.parameters()]))
    assert grads[0].abs().sum() > 0
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_background_pieces_are_skipped_and_change_nothing():
    x = tissue(blank_rows=120)  # the top two thirds are glass
    calls = []
    _, one = stage1(3, 0, x)
    model, many = stage1(3, 10, x)
    model.attention1.register_forward_hook(lambda m, i, o: calls.append(i[0].shape))
    with torch.no_grad():
        many = model.attend(ArraySource(x))
    assert 0 < len(calls) < len(pieces(*many.view_hw, 10))
    fg = one.fg
    assert torch.allclose(one.log_alpha[fg], many.log_alpha[fg], atol=1e-5)
    assert torch.allclose(one.evidence_logits, many.evidence_logits, atol=1e-5)


def test_fit_is_the_whole_view_fit_up_to_its_budget_then_a_strided_sample(monkeypatch):
    view = ArraySource(tissue()).view(0.5)  # (2, 3, 90, 70)
    t, has_fg, (mean, std) = fit(view, "otsu_dark", True)
    assert torch.equal(t, foreground.fit(view, "otsu_dark")) and has_fg.all()
    m2, s2 = standardise(view, foreground.mask(view, t, "otsu_dark"))[1]
    assert torch.allclose(mean, m2, atol=1e-6) and torch.allclose(std, s2, atol=1e-5)
    u8 = (view * 255).round().to(torch.uint8)  # slides hand stage I uint8 pixels
    assert torch.allclose(fit(u8, "otsu_dark", False)[0], foreground.fit(u8.float() / 255, "otsu_dark"))
    monkeypatch.setattr(stage1_module, "FIT_LOCATIONS", 700)  # a 'large' view: 6300 locations
    k = stage1_module.fit_stride(90, 70)
    assert k == 3
    t3 = fit(view, "otsu_dark", False)[0]
    assert torch.equal(t3, foreground.fit(view[..., ::3, ::3], "otsu_dark"))
    _, one = stage1(3, 0)
    _, many = stage1(3, 16)  # streamed and one piece share the sample
    assert torch.allclose(one.log_alpha.exp(), many.log_alpha.exp(), atol=1e-7)


def test_without_evidence_heads_streaming_is_exact_too():
    _, one = stage1(3, 0, evidence=False)
    _, many = stage1(3, 16, evidence=False)
    assert one.evidence_logits is None and many.evidence_logits is None
    assert torch.allclose(one.log_alpha.exp(), many.log_alpha.exp(), atol=1e-7)


class Spied:
    """A ``StreamedSource`` over in-memory images that records which of its methods stage I calls."""

    piece, identity = 1, None

    def __init__(self, x):
        self.src, self.calls = ArraySource(x), []

    def __getattr__(self, name):  # batch_size, channels, size, view, read
        return getattr(self.src, name)

    def raw_view(self, scale):
        self.calls.append("raw_view")
        return self.src.view(scale)

    def has_view(self, scale):
        return False

    def check_view(self, scale):
        self.calls.append("check_view")

    def view_rows(self, scale, r0, r1):
        self.calls.append("view_rows")
        return self.src.view(scale)[:, :, r0:r1]


def test_stage1_streams_a_streamed_source_only_above_stream_above(monkeypatch):
    from zoomin.sampling import BLOCKED_ABOVE
    from zoomin.sources import streamed
    assert stage1_module.STREAM_ABOVE == BLOCKED_ABOVE == 2**20  # pixels and draws: the same size of view
    forwarded = type("Forwarded", (), {"__init__": lambda self, s: setattr(self, "s", s),
                                       "__getattr__": lambda self, n: getattr(self.s, n)})
    x = tissue()
    assert streamed(Spied(x)) and streamed(forwarded(Spied(x))) and not streamed(ArraySource(x))
    model, ref = stage1()
    with torch.no_grad():
        held = Spied(x)
        a = model.attend(held)
        monkeypatch.setattr(stage1_module, "STREAM_ABOVE", 100)
        bands = Spied(x)
        b = model.attend(bands)
    assert held.calls == ["raw_view"] and bands.calls[0] == "check_view" and set(bands.calls[1:]) == {"view_rows"}
    assert a.view is not None and b.view is None
    assert torch.allclose(a.log_alpha, ref.log_alpha) and torch.allclose(b.log_alpha.exp(), ref.log_alpha.exp(), atol=1e-7)


def test_a_large_slide_view_is_streamed_from_the_file_band_by_band(tmp_path, monkeypatch):
    """Above STREAM_ABOVE locations stage I reads the slide's view band by band (never whole) and
    gets what it gets from the decoded view."""
    np = pytest.importorskip("numpy")
    pytest.importorskip("large_image")
    from zoomin.pyramid import write_pyramid
    from zoomin.slides import SlideSource

    def tile_at(level, ti, tj, tile=256):
        y = (ti * tile + np.arange(tile))[:, None] * 2.0**level
        x = (tj * tile + np.arange(tile))[None, :] * 2.0**level
        g = 150 + 50 * np.sin(x / 40.0) * np.cos(y / 55.0)
        g = np.where((y - 900) ** 2 + (x - 700) ** 2 < 50.0**2, 30.0, np.where(x > 1500, 240.0, g))
        return np.repeat(g[..., None], 3, -1).astype(np.uint8)
    path = write_pyramid(tmp_path / "s.tif", (2048, 2048), tile_at, tile=256, mpp=1.0, quality=95)
    model = ZoomInNet(ModelConfig(**{**CFG, "mpp": 1.0, "stage1_resolution": 8.0, "stage1_units": "mpp", "stage2_resolution": 2.0, "stage2_units": "mpp", "stage1_chunk": 40}))
    monkeypatch.setattr(stage1_module, "STREAM_ABOVE", 1000)  # the 256² view counts as gigapixel
    monkeypatch.setattr(stage1_module, "BAND", 50)
    monkeypatch.setattr(stage1_module, "FIT_LOCATIONS", 5000)  # the fit samples every 4th row and column
    streamed, held = SlideSource(path, mpp=1.0), SlideSource(path, mpp=1.0)
    held.raw_view(model.stage1_scale(held.size))
    streamed.prefetch(model.stage1_scale(streamed.size))  # a gigapixel view is not held ahead
    with torch.no_grad():
        a, b = model.attend(streamed), model.attend(held)
    assert not streamed.has_view(a.scale) and a.view is None and b.view is not None
    assert torch.equal(a.threshold, b.threshold) and torch.equal(a.fg, b.fg)
    assert torch.allclose(a.log_alpha.exp(), b.log_alpha.exp(), atol=1e-7)
    assert torch.allclose(a.evidence_logits, b.evidence_logits, atol=1e-5)


def test_in_place_normalisation_gives_log_softmax_and_block_masses():
    from zoomin.sampling import block_masses
    from zoomin.stage1 import _normalise_
    x = torch.randn(2, 100_003) * 4
    x[:, ::7] -= 1e4
    ref = x.log_softmax(-1)
    out, masses = _normalise_(x.clone())
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(masses, block_masses(ref), rtol=1e-4)


@pytest.mark.parametrize("chunk", [7, 16])
def test_streamed_equals_one_piece_with_the_outlier_prior(chunk):
    """The prior's window needs a halo too (depth 1: the net's own halo is smaller than it), and its
    average over the foreground sees the halo's foreground."""
    def run(c):
        torch.manual_seed(0)
        model = ZoomInNet(ModelConfig(**{**CFG, "attention_depth": 1, "stage1_chunk": c, "evidence_prior": 1.0}))
        assert model.attention1.halo < stage1_module.PRIOR_WINDOW // 2
        with torch.no_grad():
            return model.attend(ArraySource(tissue()))
    one, many = run(0), run(chunk)
    assert torch.allclose(one.log_alpha.exp(), many.log_alpha.exp(), atol=1e-7)
    assert torch.allclose(one.evidence_logits, many.evidence_logits, atol=1e-5)
