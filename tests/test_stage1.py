"""Streamed stage I (zoomin.stage1): pieces with a halo give the one-piece result, in value and
gradient; background pieces are skipped; the piece-wise fit equals the whole-view fit."""
import pytest
import torch

from zoomin import foreground
from zoomin.config import ModelConfig
from zoomin.evidence import standardise
from zoomin.model import ZoomInNet
from zoomin.stage1 import attend, fit, pieces
from zoomin.sources import ArraySource

CFG = dict(kind="zoom_in", in_channels=3, num_classes=2, scale1=0.5, tile=16, scale2=0.5, subtile=8, n_samples=4,
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


def test_piecewise_fit_equals_the_whole_view_fit():
    view = ArraySource(tissue()).view(0.5)
    t, fg, (mean, std) = fit(view, "otsu_dark", True, chunk=9)
    assert torch.equal(t, foreground.fit(view, "otsu_dark"))
    assert torch.equal(fg, foreground.mask(view, t, "otsu_dark"))
    m2, s2 = standardise(view, fg)[1]
    assert torch.allclose(mean, m2, atol=1e-6) and torch.allclose(std, s2, atol=1e-5)
    u8 = (view * 255).round().to(torch.uint8)  # slides hand stage I uint8 pixels
    t8, fg8, _ = fit(u8, "otsu_dark", True, chunk=9)
    assert torch.allclose(t8, foreground.fit(u8.float() / 255, "otsu_dark"))


def test_without_evidence_heads_streaming_is_exact_too():
    _, one = stage1(3, 0, evidence=False)
    _, many = stage1(3, 16, evidence=False)
    assert one.evidence_logits is None and many.evidence_logits is None
    assert torch.allclose(one.log_alpha.exp(), many.log_alpha.exp(), atol=1e-7)
