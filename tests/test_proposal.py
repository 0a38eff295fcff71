"""Stage I drawn from a proposal (method §10): ``q = (1 - eps) alpha + eps u`` with ``u`` uniform
over the foreground, each draw weighted by ``alpha / q``. Monte-Carlo tests in the manner of
tests/test_estimators.py: the mean value and mean gradients (features, stage-I logits, stage-II
logits) match the exact eq-5 sums within 0.01, with and without a foreground mask, at a sharp
alpha that a plain draw would rarely leave; the weights are bounded by the mixing; dropping the
weights is biased; and the model draws from the proposal only while training."""
import math

import pytest
import torch

from zoomin import ModelConfig, ZoomInNet
from zoomin.foreground import MASKED
from zoomin.sampling import draw, exact_two_stage, proposal_draws, two_stage_estimate, uniform_draws

DRAWS = 20_000
TOL = 0.01


def problem(L, S, D, seed, sharp, background=()):
    g = torch.Generator().manual_seed(seed)
    a = (torch.randn(L, generator=g) * sharp).requires_grad_()
    b = (torch.randn(L, S, generator=g)).requires_grad_()
    f = torch.randn(L, S, D, generator=g).mul(0.5).requires_grad_()
    w = torch.randn(D, generator=g)
    fg = torch.ones(L, dtype=torch.bool)
    fg[list(background)] = False
    return a, b, f, w, fg


def log_alpha_of(a, fg):
    return (a + (~fg) * MASKED).log_softmax(-1)  # background at MASKED, as foreground.apply does


def exact(a, b, f, w, fg):
    z = exact_two_stage(log_alpha_of(a, fg).exp()[None], b.softmax(-1)[None], f[None])[0]
    return z.detach(), torch.autograd.grad(z @ w, [a, b, f])


def monte_carlo(a, b, f, w, fg, n, floor, seed, weighted=True):
    gen = torch.Generator().manual_seed(seed)
    L, S, _ = f.shape
    log_alpha = log_alpha_of(a, fg).expand(DRAWS, L)  # (B, L) one row per Monte-Carlo draw
    tiles = draw(log_alpha, n, "sample", gen, floor=floor, fg=fg.expand(DRAWS, L))  # (B, P)
    log_beta = b.log_softmax(-1)[tiles.index]  # (B, P, S)
    subs = draw(log_beta, tiles.count, "sample", gen, replacement=False)  # (B, P, K)
    feats = f[tiles.index[..., None], subs.index]  # (B, P, K, D)
    z = two_stage_estimate(log_alpha.gather(1, tiles.index), log_beta.gather(-1, subs.index), feats, tiles.count,
                           subs.valid, n, S, log_q=tiles.log_q if weighted else None)  # (B, D)
    return z.mean(0).detach(), torch.autograd.grad((z @ w).mean(), [a, b, f]), tiles


def max_error(mc, ex):
    (v_mc, g_mc), (v_ex, g_ex) = mc, ex
    return max([(v_mc - v_ex).abs().max()] + [(gm - ge).abs().max() for gm, ge in zip(g_mc, g_ex)])


@pytest.mark.parametrize("L,S,n,floor,sharp,background", [
    (6, 4, 5, 0.2, 1.0, ()),           # everything foreground
    (6, 3, 8, 0.5, 1.0, (1, 4)),       # a masked background: u spreads over the foreground only
    (5, 4, 3, 0.1, 5.0, (0,)),         # near-one-hot alpha: most of q's draws off alpha's peak come from the floor
    (4, 2, 1, 0.3, 1.0, ()),           # a single draw
])
def test_proposal_is_unbiased(L, S, n, floor, sharp, background):
    a, b, f, w, fg = problem(L, S, 3, seed=L * 10 + n, sharp=sharp, background=background)
    v, g, tiles = monte_carlo(a, b, f, w, fg, n, floor, seed=n)
    assert max_error((v, g), exact(a, b, f, w, fg)) < TOL
    assert not set(background) & set(tiles.index[tiles.valid].tolist())  # never a background tile
    ratio = (log_alpha_of(a, fg).detach().gather(0, tiles.index.flatten()).view_as(tiles.index) - tiles.log_q).exp()
    assert float(ratio[tiles.valid].max()) <= 1 / (1 - floor) + 1e-5  # alpha / q bounded by the mixing


def test_proposal_is_unbiased_on_a_gigapixel_sized_view(monkeypatch):
    """The same check through the paths a view too large for one map takes: alpha drawn block by
    block, the floor's uniform draws by rejection."""
    import zoomin.sampling as sampling
    monkeypatch.setattr(sampling, "BLOCKED_ABOVE", 2)
    monkeypatch.setattr(sampling, "BLOCK", 4)
    monkeypatch.setattr(sampling, "MULTINOMIAL_MAX", 2)
    a, b, f, w, fg = problem(7, 3, 3, seed=5, sharp=2.0, background=(2, 6))
    v, g, tiles = monte_carlo(a, b, f, w, fg, 4, 0.3, seed=2)
    assert max_error((v, g), exact(a, b, f, w, fg)) < TOL
    assert not {2, 6} & set(tiles.index[tiles.valid].tolist())


def test_dropping_the_weights_is_biased():
    """The same draws from q without the ``alpha / q`` weights estimate a different sum."""
    a, b, f, w, fg = problem(5, 4, 3, seed=3, sharp=5.0)
    v, g, _ = monte_carlo(a, b, f, w, fg, 3, 0.5, seed=1, weighted=False)
    assert max_error((v, g), exact(a, b, f, w, fg)) > 5 * TOL


def test_proposal_draws_explore_the_foreground():
    """With alpha one-hot on location 0, a fraction ``floor`` of the draws lands uniformly on the
    other foreground locations, and q there is ``floor / |fg|``."""
    L, n, floor = 10, 4000, 0.25
    log_p = torch.full((1, L), MASKED)
    log_p[0, 0] = 0.0
    fg = torch.ones(1, L, dtype=torch.bool)
    fg[0, 7:] = False
    d = proposal_draws(log_p, torch.zeros(1, n, dtype=torch.long), floor, fg, torch.Generator().manual_seed(0))
    counts = torch.zeros(L, dtype=torch.long).index_add_(0, d.index[0], d.count[0])
    assert counts[7:].sum() == 0
    assert abs(counts[1:7].sum() / n - floor * 6 / 7) < 0.03
    on = d.index[0][(d.index[0] > 0) & d.valid[0]]
    assert torch.allclose(d.log_q[0][(d.index[0] > 0) & d.valid[0]], torch.full(on.shape, math.log(floor / 7)))


def test_uniform_draws_by_rejection_match_the_mask(monkeypatch):
    """Views larger than torch.multinomial allows are drawn by rejection: only foreground, uniformly."""
    import zoomin.sampling as sampling
    monkeypatch.setattr(sampling, "MULTINOMIAL_MAX", 4)
    fg = torch.tensor([[False, True, False, True, True, False, False, False]])
    d = uniform_draws(fg, 1, 8, 6000, torch.Generator().manual_seed(0))
    counts = torch.bincount(d[0], minlength=8)
    assert counts[~fg[0]].sum() == 0
    assert (counts[fg[0]].float() / 6000 - 1 / 3).abs().max() < 0.03


def test_model_uses_the_proposal_only_while_training():
    cfg = ModelConfig(stage1_resolution=0.25, tile=16, stage2_resolution=0.5, subtile=8, n_samples=6, proposal_floor=0.3)
    model = ZoomInNet(cfg)
    x = torch.rand(2, 1, 64, 64)
    trace = model.train()(x, generator=torch.Generator().manual_seed(0))
    assert trace.tile_log_q is not None and trace.tile_log_q.shape == trace.tile_index.shape
    z = (trace.weights.unsqueeze(-1) * trace.features.detach()).sum((1, 2))  # what the explorer shows
    assert torch.allclose(z, trace.z.detach(), atol=1e-5)
    trace.logits.sum().backward()
    assert model.attention1.body[0].weight.grad is not None
    with torch.no_grad():
        assert model.eval()(x, generator=torch.Generator().manual_seed(0)).tile_log_q is None


def test_proposal_floor_is_checked():
    with pytest.raises(ValueError, match="proposal_floor"):
        ModelConfig(proposal_floor=1.0)


def test_zoom_in_net_with_a_proposal_estimates_eq5():
    """End to end, as tests/test_model_unbiased.py: the model drawing stage I from the proposal still
    estimates eq 5 in value and in both attention nets' gradients."""
    from test_model_unbiased import close, exact, monte_carlo, setup
    model, x, w, params = setup()
    model.cfg.proposal_floor = 0.4
    assert close(monte_carlo(model, x, w, params), exact(model, x, w, params))
