"""The dense learning signal from image labels (method §10, zoomin/evidence.py): pooling, input
standardisation, the diagnostics, and the mechanism itself — on a tiny problem the evidence heads
put the ROI at rank 1 in alpha after a few label-only steps, where the plain model does not."""
import pytest
import torch

from zoomin.config import ModelConfig
from zoomin.evidence import (attention_logits, evidence_channels, evidence_class_logits, mil_pool, roi_attention,
                             standardise)
from zoomin.losses import evidence_loss, instance_loss, total_loss
from zoomin.model import ZoomInNet, build_model
from zoomin.sources import ArraySource


def test_mil_pool_is_the_mean_of_the_k_largest_valid_values():
    v = torch.tensor([[5.0, 1.0, 4.0, 3.0, 9.0]])
    valid = torch.tensor([[True, True, True, True, False]])  # the 9 is background
    assert mil_pool(v, valid, 2).item() == pytest.approx(4.5)
    assert mil_pool(v, None, 1).item() == 9.0
    few = torch.tensor([[True, False, False, False, False]])
    assert mil_pool(v, few, 3).item() == 5.0  # fewer valid locations than k: their mean
    g = torch.zeros(1, 5, requires_grad=True)
    mil_pool(g + v, valid, 2).backward()
    assert g.grad.tolist() == [[0.5, 0, 0.5, 0, 0]]  # only the pooled locations learn, undiluted


def test_standardise_uses_the_foreground_and_reuses_stats():
    view = torch.zeros(1, 1, 2, 2)
    view[0, 0, 0] = torch.tensor([1.0, 3.0])  # foreground row: mean 2, std 1
    fg = torch.tensor([[True, True, False, False]])
    out, (mean, std) = standardise(view, fg)
    assert mean.item() == pytest.approx(2.0) and std.item() == pytest.approx(1.0)
    assert out[0, 0, 0].tolist() == pytest.approx([-1.0, 1.0])
    tile = torch.full((1, 1, 2, 2), 3.0)  # a tile that is all "lesion" stays distinct under the image's stats
    assert standardise(tile, None, (mean, std))[0].mean().item() == pytest.approx(1.0)


def test_evidence_channels_and_logits():
    assert evidence_channels(2) == 1 and evidence_channels(10) == 10
    e = torch.randn(3, 1, 4)
    assert torch.equal(attention_logits(e), e[:, 0])
    e10 = torch.randn(3, 10, 4)
    assert torch.allclose(attention_logits(e10), e10.logsumexp(1))
    assert evidence_class_logits(torch.tensor([[2.0]])).tolist() == [[0.0, 2.0]]


def test_roi_attention_mass_and_rank():
    alpha = torch.tensor([[0.5, 0.3, 0.15, 0.05], [0.25, 0.25, 0.25, 0.25]])
    roi = torch.tensor([[False, False, True, True], [False, False, False, False]])
    mass, rank = roi_attention(alpha, roi)
    assert mass.tolist() == pytest.approx([0.2, 0.0])
    assert rank.tolist() == [3, 0]  # the ROI's best location is third; no ROI: 0


def blobs(n, gen, size=96, blob=8):
    """Noise images, each with a bright 4 x 4 distractor; the positive half also has a dark blob
    (the ROI), so neither brightness nor contrast alone gives the label."""
    x = 0.5 + 0.08 * torch.randn(n, 1, size, size, generator=gen)
    y = torch.arange(n) % 2
    roi = torch.zeros(n, 1, size, size, dtype=torch.bool)
    corners = torch.randint(0, size - blob, (n, 4), generator=gen)
    for i in range(n):  # test data only
        r, c = corners[i, 2:].tolist()
        x[i, :, r:r + 4, c:c + 4] = 1.0
        if y[i]:
            r, c = corners[i, :2].tolist()
            x[i, :, r:r + blob, c:c + blob] = 0.2
            roi[i, :, r:r + blob, c:c + blob] = True
    return x.clamp(0, 1), y, roi


def train_and_rank(evidence: bool, steps: int = 40, seed: int = 0) -> float:
    """Train on labels only; return the share of held-out positives whose ROI is rank 1 in alpha."""
    torch.manual_seed(seed)
    cfg = ModelConfig(in_channels=1, num_classes=2, stage1_resolution=0.25, tile=16, stage2_resolution=0.5, subtile=8, n_samples=4,
                      attention_hidden=16, evidence=evidence, evidence_topk=2)
    model = build_model(cfg)
    opt = torch.optim.Adam(model.parameters(), 5e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x, y, _ = blobs(16, gen)
        loss, _ = total_loss(model(x), y, evidence_weight=1.0, instance_weight=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y, roi = blobs(32, torch.Generator().manual_seed(seed + 1000))
    with torch.no_grad():
        tr = model(x)
    roi_view = torch.nn.functional.max_pool2d(roi.float(), 4).flatten(1).bool()  # view locations the ROI touches
    _, rank = roi_attention(tr.alpha.flatten(1), roi_view)
    return float((rank[y == 1] == 1).float().mean())


def test_evidence_puts_the_roi_first_from_labels_alone():
    """Three seeds of data and initialisation, 40 steps of 16 images each (measured: 1.0, 1.0 and
    0.69 of the held-out positives with the ROI at rank 1; the plain model 0.0 on each)."""
    with_evidence = [train_and_rank(True, seed=s) for s in range(3)]
    plain = [train_and_rank(False, seed=s) for s in range(3)]
    assert sum(with_evidence) / 3 >= 0.8, with_evidence
    assert max(plain) <= 0.1, plain


def test_evidence_losses_need_the_heads():
    cfg = ModelConfig(in_channels=1, num_classes=2, stage1_resolution=0.25, tile=16, stage2_resolution=0.5, subtile=8, n_samples=4)
    tr = build_model(cfg)(torch.rand(2, 1, 64, 64))
    assert tr.evidence_logits is None
    _, parts = total_loss(tr, torch.tensor([0, 1]), evidence_weight=1.0, instance_weight=1.0)
    assert set(parts) == {"ce"}  # a model without heads trains as before
    cfg.evidence = True
    tr = build_model(cfg)(torch.rand(2, 1, 64, 64))
    y = torch.tensor([0, 1])
    loss, parts = total_loss(tr, y, evidence_weight=1.0, instance_weight=0.5)
    assert set(parts) == {"ce", "evidence", "instance"}
    expected = parts["ce"] + parts["evidence"] + 0.5 * parts["instance"]
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    assert evidence_loss(tr, y).item() == pytest.approx(parts["evidence"], rel=1e-6)
    assert instance_loss(tr, y).item() == pytest.approx(parts["instance"], rel=1e-6)


def test_the_outlier_prior_ranks_the_odd_place_first_before_any_training():
    """``model.evidence_prior``: with the fixed outlier score added, an untrained stage I already puts
    a small blob that differs from the tissue (darker in one image, another hue in the other) first
    in alpha; without it, the untrained net does not."""
    from zoomin.evidence import outlier_score
    g = torch.Generator().manual_seed(0)
    x = 0.5 + 0.05 * torch.rand(2, 3, 96, 96, generator=g)
    x[..., :16] = 0.95  # glass: the tissue's edge must not stand out for it
    x[0, :, 60:64, 30:34] = 0.2  # darker
    x[1, 0, 30:34, 70:74] = 0.8  # a stain shift: one channel only
    roi = torch.zeros(2, 96, 96, dtype=torch.bool)
    roi[0, 60:64, 30:34] = roi[1, 30:34, 70:74] = True
    score = outlier_score(standardise(x, None)[0], 5)  # (2, 1, 96, 96)
    assert score.shape == (2, 1, 96, 96)
    for prior, expect in ((3.0, True), (0.0, False)):
        torch.manual_seed(1)
        cfg = ModelConfig(in_channels=3, num_classes=2, stage1_resolution=1.0, tile=8, stage2_resolution=0.5, subtile=4, n_samples=4,
                          evidence=True, evidence_sharpness=4.0, evidence_prior=prior, feature_norm="none",
                          foreground="otsu_dark")
        with torch.no_grad():
            s1 = ZoomInNet(cfg).attend(ArraySource(x))
        first = s1.log_alpha.argmax(-1)  # (2,)
        assert bool(roi.flatten(1).gather(1, first[:, None]).all()) == expect


def mean_pool_model(num_classes: int, **kw):
    cfg = ModelConfig(in_channels=1, num_classes=num_classes, stage1_resolution=0.25, tile=16, stage2_resolution=0.5, subtile=8,
                      n_samples=6, instance_pool="mean", **kw)
    return build_model(cfg)


@pytest.mark.parametrize("num_classes", [2, 10])
def test_mean_instance_loss_is_the_z_estimator_applied_to_each_draws_loss(num_classes):
    """instance_pool "mean": each drawn sub-tile labelled with its image's label, its cross-entropy
    weighted by its weight in z — so it is unbiased for E_{alpha, beta}[CE] exactly as z is for
    sum alpha beta f (the estimator tests), and needs no evidence heads."""
    torch.manual_seed(0)
    tr = mean_pool_model(num_classes)(torch.rand(3, 1, 64, 64), generator=torch.Generator().manual_seed(1))
    y = torch.tensor([1, 0, 1])
    assert tr.evidence_logits is None and tr.instance_logits is None
    drawn = tr.subtile_valid
    E = evidence_channels(num_classes)
    assert tr.instance_draw_logits.shape == (*drawn.shape, E)
    assert (tr.instance_draw_logits[~drawn] == 0).all()
    expected = 0.0
    for b in range(3):
        for p, k in drawn[b].nonzero().tolist():
            logits = evidence_class_logits(tr.instance_draw_logits[b, p, k])
            expected += float(tr.weights[b, p, k] * -logits.log_softmax(-1)[y[b]].detach())
    assert instance_loss(tr, y).item() == pytest.approx(float(expected) / 3, rel=1e-5)
    assert tr.weights.sum((1, 2)).tolist() == pytest.approx([1.0] * 3, rel=1e-5)  # a weighted mean per image
    _, parts = total_loss(tr, y, instance_weight=1.0)
    assert set(parts) == {"ce", "instance"}


def test_mean_instance_loss_trains_f_and_its_head_not_the_attention():
    torch.manual_seed(0)
    model = mean_pool_model(10)
    instance_loss(model(torch.rand(2, 1, 64, 64)), torch.tensor([3, 7])).backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert all(g is not None and g.abs().sum() > 0 for n, g in grads.items() if n.startswith(("features.", "instance_head.")))
    assert all(g is None or g.abs().sum() == 0 for n, g in grads.items() if n.startswith(("attention1.", "attention2.")))


def test_instance_pool_is_checked():
    with pytest.raises(ValueError, match="instance_pool"):
        ModelConfig(instance_pool="median")
