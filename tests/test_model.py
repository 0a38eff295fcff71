import pytest
import torch
from torch import nn

from zoomin.config import ModelConfig
from zoomin.model import AttentionSamplingNet, ZoomInNet, build_model
from zoomin.sources import ArraySource

TWO = dict(kind="zoom_in", stage1_resolution=0.1, tile=40, stage2_resolution=0.25, subtile=12, n_samples=8, feature_dim=16,
           feature_width=8)
ONE = dict(kind="one_stage", stage1_resolution=0.1, tile=12, n_samples=8, feature_dim=16, feature_width=8)


def images(B=3, C=1, H=97, W=130, seed=0):
    return torch.rand(B, C, H, W, generator=torch.Generator().manual_seed(seed))


class CountingSource(ArraySource):
    """Records every read: (scale, number of windows, window size)."""

    def __init__(self, x):
        super().__init__(x)
        self.reads = []

    def read(self, batch_index, boxes, scale, size_hw):
        self.reads.append((scale, boxes.shape[0], size_hw))
        return super().read(batch_index, boxes, scale, size_hw)


@pytest.mark.parametrize("cfg", [TWO, ONE])
def test_trace_shapes_and_weights(cfg):
    torch.manual_seed(0)
    model = build_model(ModelConfig(**cfg))
    tr = model(images())
    B, P = tr.tile_counts.shape
    assert tr.logits.shape == (3, 10) and tr.alpha.shape == (3, 9, 13)
    assert torch.allclose(tr.alpha.sum((1, 2)), torch.ones(3))
    assert (tr.tile_counts.sum(1) == 8).all()
    assert tr.subtile_boxes.shape[:3] == tr.subtile_index.shape == tr.weights.shape
    assert torch.allclose(tr.weights.sum((1, 2)), torch.ones(3), atol=1e-5)  # a weighted average of samples
    assert (tr.weights[~tr.subtile_valid] == 0).all()
    if cfg["kind"] == "zoom_in":
        assert tr.beta.shape == (3, P, 10, 10)
        t, s = tr.tile_boxes[:, :, None, :], tr.subtile_boxes
        centre_x, centre_y = s[..., 0] + 6, s[..., 1] + 6
        ok = (centre_x >= t[..., 0]) & (centre_x < t[..., 0] + 40) & (centre_y >= t[..., 1]) & (centre_y < t[..., 1] + 40)
        assert ok[tr.subtile_valid].all()  # sub-tiles lie in their tile


def test_beta_and_features_never_computed_twice():
    torch.manual_seed(1)
    model = ZoomInNet(ModelConfig(**{**TWO, "n_samples": 30}))  # many repeats of tiles
    calls = {"b": 0, "f": 0}
    model.attention2.register_forward_hook(lambda m, i, o: calls.__setitem__("b", calls["b"] + i[0].shape[0]))
    model.features.register_forward_hook(lambda m, i, o: calls.__setitem__("f", calls["f"] + i[0].shape[0]))
    tr = model(images(H=60, W=60))
    distinct_tiles = int((tr.tile_counts > 0).sum())
    assert distinct_tiles < 3 * 30  # there were repeats to exploit
    assert calls["b"] == distinct_tiles  # beta once per distinct tile
    assert calls["f"] == int(tr.subtile_valid.sum())  # f once per drawn sub-tile
    # and the drawn (image, tile, sub-tile) triples are all distinct
    b, p, k = torch.nonzero(tr.subtile_valid, as_tuple=True)
    keys = torch.stack([b, tr.tile_index[b, p], tr.subtile_index[b, p, k]], 1)
    assert torch.unique(keys, dim=0).shape[0] == keys.shape[0]


def test_only_subtiles_read_at_full_resolution():
    model = ZoomInNet(ModelConfig(**TWO))
    src = CountingSource(images())
    tr = model(src)
    full = [r for r in src.reads if r[0] >= 1.0]
    assert full == [(1.0, int(tr.subtile_valid.sum()), (12, 12))]
    assert [r for r in src.reads if r[0] < 1.0] == [(0.25, int((tr.tile_counts > 0).sum()), (10, 10))]


def test_topk_is_deterministic_and_sampling_follows_the_generator():
    model = ZoomInNet(ModelConfig(**TWO)).eval()
    x = images()
    a, b = model(x, mode="topk"), model(x, mode="topk")
    assert torch.equal(a.logits, b.logits) and (a.tile_counts == 1).all()
    s1 = model(x, generator=torch.Generator().manual_seed(5))
    s2 = model(x, generator=torch.Generator().manual_seed(5))
    assert torch.equal(s1.subtile_boxes, s2.subtile_boxes) and torch.equal(s1.logits, s2.logits)


@pytest.mark.parametrize("cfg", [TWO, ONE])
def test_negatives_trace(cfg):
    model = build_model(ModelConfig(**cfg))
    tr = model(images(), negatives=True)
    neg = tr.negatives
    assert neg is not None and neg.logits.shape == tr.logits.shape and neg.negatives is None
    assert (neg.tile_counts.sum(1) == 8).all()
    L = tr.alpha[0].numel()  # tiles drawn from the complement (1 - alpha) normalised (method §6)
    assert torch.allclose(neg.alpha, (1 - tr.alpha) / (L - 1), atol=1e-6)


@pytest.mark.parametrize("H,W", [(1, 1), (7, 5), (39, 3), (41, 200)])
@pytest.mark.parametrize("cfg", [TWO, ONE])
def test_odd_tiny_and_non_square_images(H, W, cfg):
    model = build_model(ModelConfig(**cfg))
    tr = model(images(B=2, H=H, W=W))
    assert torch.isfinite(tr.logits).all() and tr.logits.shape == (2, 10)
    t = tr.tile_boxes[tr.tile_counts > 0]  # (M, 4) level-0 (x, y, w, h), partly in the zero padding
    cx, cy = t[:, 0] + t[:, 2] // 2, t[:, 1] + t[:, 3] // 2
    assert ((cx >= 0) & (cx < W) & (cy >= 0) & (cy < H)).all()  # every drawn tile is centred on a pixel
    assert torch.allclose(tr.weights.sum((1, 2)), torch.ones(2), atol=1e-5)  # still an average of the draws


def test_rgb_backward_reaches_every_part():
    model = ZoomInNet(ModelConfig(**{**TWO, "in_channels": 3}))
    tr = model(images(C=3), negatives=True)
    (tr.logits.logsumexp(-1).sum() + tr.negatives.logits.sum()).backward()
    for name in ("attention1", "attention2", "features", "classifier"):
        grads = [p.grad for p in getattr(model, name).parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads), name
        assert any(g.abs().sum() > 0 for g in grads), name


def test_foreground_mask_keeps_samples_on_content():
    x = torch.zeros(2, 1, 120, 120)
    x[0, :, 10:30, 80:100] = 1.0  # one bright object per image
    x[1, :, 90:110, 5:25] = 1.0
    model = ZoomInNet(ModelConfig(**{**TWO, "foreground": "otsu_bright", "n_samples": 16}))
    tr = model(x)
    cx = tr.subtile_boxes[..., 0] + 6
    cy = tr.subtile_boxes[..., 1] + 6
    v = tr.subtile_valid
    assert ((cx[0][v[0]] >= 70) & (cy[0][v[0]] < 40)).all()
    assert ((cx[1][v[1]] < 35) & (cy[1][v[1]] >= 80)).all()
    assert (tr.alpha[0].flatten() > 0).sum() < 0.1 * tr.alpha[0].numel()


def test_wrong_channels_is_a_clear_error():
    with pytest.raises(ValueError, match="channel"):
        ZoomInNet(ModelConfig(**TWO))(images(C=3))


def test_config_validation():
    with pytest.raises(ValueError, match="subtile"):
        ModelConfig(kind="zoom_in", tile=20, subtile=30)
    with pytest.raises(ValueError, match="kind"):
        ModelConfig(kind="three_stage")
    assert isinstance(build_model(ModelConfig(**ONE)), AttentionSamplingNet)


@pytest.mark.parametrize("mode", ["sample", "topk"])
@pytest.mark.parametrize("cfg", [TWO, ONE])
def test_trace_weights_reproduce_the_aggregated_feature(cfg, mode):
    """The per-sample weights are exactly the coefficients of the features in z."""
    model = build_model(ModelConfig(**{**cfg, "n_samples": 20}))
    tr = model(images(H=60, W=70), mode=mode)
    assert torch.allclose((tr.weights.unsqueeze(-1) * tr.features).sum((1, 2)), tr.z, atol=1e-5)


@pytest.mark.parametrize("mode", ["sample", "topk"])
@pytest.mark.parametrize("cfg", [TWO, ONE])
def test_feature_output_bounds_every_patch_in_z(cfg, mode):
    """``feature_output``: l2 gives unit-length patch features, so z (a weighted average of them) has
    norm <= 1; linear leaves them as they are."""
    x = images(H=60, W=70)
    traces = {}
    for kind in ("linear", "l2"):
        torch.manual_seed(0)
        model = build_model(ModelConfig(**{**cfg, "n_samples": 20, "feature_output": kind}))
        traces[kind] = tr = model(x, mode=mode, generator=torch.Generator().manual_seed(1))
    valid = traces["l2"].subtile_valid
    assert torch.allclose(traces["l2"].features[valid].norm(dim=-1), torch.ones(int(valid.sum())), atol=1e-5)
    assert (traces["l2"].z.norm(dim=-1) <= 1 + 1e-5).all()
    assert torch.allclose(traces["l2"].features[valid], nn.functional.normalize(traces["linear"].features[valid], dim=-1),
                          atol=1e-5)  # the same patches, the same f: only its last step differs
    assert not torch.allclose(traces["linear"].features[valid].norm(dim=-1), torch.ones(int(valid.sum())), atol=1e-2)
    with pytest.raises(ValueError, match="feature_output"):
        ModelConfig(**{**cfg, "feature_output": "softmax"})


@pytest.mark.parametrize("cfg", [TWO, ONE])
def test_contributions_add_up_to_the_logits(cfg):
    """What the explorer shows per sample: the logits are the bias plus every sample's share."""
    model = build_model(ModelConfig(**{**cfg, "n_samples": 20, "num_classes": 3})).eval()
    tr = model(images(H=60, W=70))
    assert tr.contributions.shape == (*tr.weights.shape, 3)
    bias = model.classifier.body[-1].bias
    assert torch.allclose(bias + tr.contributions.sum((1, 2)), tr.logits, atol=1e-5)
    assert (tr.contributions[~tr.subtile_valid] == 0).all()


def test_trace_item_and_detach():
    model = ZoomInNet(ModelConfig(**TWO))
    tr = model(images(), negatives=True)
    one = tr.item(1)
    assert torch.equal(one.logits, tr.logits[1:2]) and one.negatives.logits.shape == (1, 10)
    d = tr.detach()
    assert not d.logits.requires_grad and not d.negatives.logits.requires_grad
    assert d.probs.shape == (3, 10) and d.distinct_tiles.shape == (3,)
    # what is derived on demand (beta, weights, contributions) is the same from a copy or a slice
    assert torch.allclose(one.contributions[0], tr.contributions[1]) and torch.equal(one.weights[0], tr.weights[1])
    assert torch.equal(d.beta, tr.beta.detach()) and tr.beta.shape == (*tr.tile_counts.shape, *tr.subview_hw)
    assert (tr.scale2, tr.subview_hw) == (0.25, model.subview_hw)


def test_stage_one_result_and_the_scale_function():
    from zoomin.model import Stage1, stage1_scale_for
    cfg = ModelConfig(**{**TWO, "stage1_resolution": 16, "stage1_units": "px"})
    model = ZoomInNet(cfg)
    s1 = model.attend(ArraySource(images(B=2, H=64, W=48)))
    assert isinstance(s1, Stage1) and s1.view.shape == (2, 1, 16, 12) and s1.view_hw == (16, 12)
    assert s1.log_alpha.shape == (2, 16 * 12) and s1.scale == stage1_scale_for(cfg, (64, 48)) == 0.25
    assert stage1_scale_for(ModelConfig(**TWO), (64, 48)) == 0.1


def test_unknown_mode_is_a_clear_error():
    with pytest.raises(ValueError, match="mode"):
        ZoomInNet(ModelConfig(**TWO))(images(), mode="mean")


def test_view_size_fixes_the_stage_one_view_whatever_the_image_size():
    model = ZoomInNet(ModelConfig(**{**TWO, "stage1_resolution": 16, "stage1_units": "px"}))
    for H, W in [(64, 48), (200, 300), (500, 90)]:
        tr = model(images(B=1, H=H, W=W))
        assert max(tr.alpha.shape[-2:]) == 16 and abs(tr.scale1 - 16 / max(H, W)) < 1e-12
