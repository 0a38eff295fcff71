"""End to end: the model's Monte-Carlo aggregate (geometry, reads, both samplers, eq 9) is an
unbiased estimate of the exact eq-5 sum over every (tile, sub-tile) pair of the image, in value
and in the gradient with respect to both attention nets' parameters."""
import pytest
import torch

import zoomin.sampling
from zoomin.config import ModelConfig
from zoomin.geometry import subtile_boxes, tile_boxes
from zoomin.model import ZoomInNet
from zoomin.nets import register_backbone
from zoomin.sampling import expected_without_replacement
from zoomin.sources import ArraySource

DRAWS = 6000


@register_backbone("test_pixels")
class PixelFeatures(torch.nn.Module):
    """f = a fixed random linear map of the patch's pixels: features that vary with content."""

    def __init__(self, in_channels, out_dim, width, depth, norm):
        super().__init__()
        self.proj = torch.nn.LazyLinear(out_dim)

    def forward(self, patches):
        return self.proj(patches.flatten(1))


def setup():
    torch.manual_seed(0)
    cfg = ModelConfig(stage1_resolution=0.2, tile=10, stage2_resolution=0.3, subtile=4, n_samples=5, feature_dim=4, feature_width=4,
                      attention_hidden=4, backbone="test_pixels")  # the backbone registry at work
    model = ZoomInNet(cfg)
    model.features(torch.zeros(1, 1, 4, 4))  # materialise the lazy layer
    with torch.no_grad():  # sharper attention than at initialisation
        for p in list(model.attention1.parameters()) + list(model.attention2.parameters()):
            p.mul_(3.0)
    x = torch.zeros(1, 1, 20, 20)  # objects of different sizes and brightness on a dark background
    x[..., 2:6, 3:7] = 1.0
    x[..., 12:18, 10:13] = 0.7
    x[..., 15:17, 1:5] = torch.linspace(0.2, 0.6, 4)
    w = torch.randn(cfg.feature_dim, generator=torch.Generator().manual_seed(2))
    params = list(model.attention1.parameters()) + list(model.attention2.parameters())
    return model, x, w, params


def exact(model, x, w, params):
    """Eq 5 with every tile and every sub-tile, and its gradient."""
    src = ArraySource(x)
    s1 = model.attend(src)
    log_alpha, view_hw = s1.log_alpha, s1.view_hw  # (1, L)
    L = log_alpha.shape[1]
    tiles = tile_boxes(torch.arange(L), view_hw, src.size, (10, 10))  # (L, 4)
    log_beta, _ = model.attend_tiles(src, torch.zeros(L, dtype=torch.long), tiles)  # (L, S)
    S = log_beta.shape[1]
    subs = subtile_boxes(tiles, torch.arange(S).expand(L, S), model.subview_hw, (10, 10), (4, 4))  # (L, S, 4)
    f = model.features(src.read(torch.zeros(L * S, dtype=torch.long), subs.reshape(-1, 4), 1.0, (4, 4)))
    z = torch.einsum("l,ls,lsd->d", log_alpha[0].exp(), log_beta.exp(), f.view(L, S, -1))
    return z.detach(), torch.autograd.grad(z @ w, params)


def monte_carlo(model, x, w, params):
    tr = model(x.expand(DRAWS, -1, -1, -1), generator=torch.Generator().manual_seed(3))
    z = tr.z.mean(0)
    grads = torch.autograd.grad(z @ w, params, allow_unused=True)
    return z.detach(), [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def close(mc, ex):
    (zm, gm), (ze, ge) = mc, ex
    if (zm - ze).abs().max() > 0.03 * ze.abs().max():
        return False
    gm, ge = torch.cat([g.flatten() for g in gm]), torch.cat([g.flatten() for g in ge])
    return bool((gm - ge).abs().max() < 0.1 * ge.abs().max())


def test_zoom_in_net_estimates_eq5():
    model, x, w, params = setup()
    assert close(monte_carlo(model, x, w, params), exact(model, x, w, params))


def test_the_check_has_power(monkeypatch):
    """Dropping the stage-II score term (beta logits get no gradient) must fail the same check."""
    model, x, w, params = setup()
    ex = exact(model, x, w, params)
    biased = lambda lb, f, k, s: expected_without_replacement(lb.detach(), f, k, s)  # noqa: E731
    monkeypatch.setattr(zoomin.sampling, "expected_without_replacement", biased)  # what the model runs
    assert not close(monte_carlo(model, x, w, params), ex)
