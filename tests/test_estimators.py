"""Monte-Carlo tests: the estimators' mean value and mean gradients match the exact eq-2 / eq-5
sums (features, stage-I logits, stage-II logits) within 0.01, including N = 1, N larger than the
number of tiles and sub-tiles (repeats, exhaustion) and near-one-hot attention. Biased variants
(an inclusive cumulative sum; no score weighting) are shown to fail the same check."""
import pytest
import torch

from zoomin.sampling import (draw, expected_with_replacement, exact_one_stage, exact_two_stage, gumbel_top_k,
                             group_draws, sample_with_replacement, two_stage_estimate)

DRAWS = 20_000  # Monte-Carlo draws per check (>= 2,000 as required; more keeps the check tight)
TOL = 0.01


def problem(L, S, D, seed, sharp=1.0):
    g = torch.Generator().manual_seed(seed)
    a = (torch.randn(L, generator=g) * sharp).requires_grad_()
    b = (torch.randn(L, S, generator=g) * sharp).requires_grad_()
    f = torch.randn(L, S, D, generator=g).mul(0.5).requires_grad_()
    w = torch.randn(D, generator=g)
    return a, b, f, w


def exact_grads(a, b, f, w, two_stage=True):
    z = exact_two_stage(a.softmax(-1)[None], b.softmax(-1)[None], f[None]) if two_stage else \
        exact_one_stage(a.softmax(-1)[None], f[None, :, 0])
    value = z[0].detach()
    grads = torch.autograd.grad(z[0] @ w, [a, b, f] if two_stage else [a, f])
    return value, grads


def mc_two_stage(a, b, f, w, n, seed, estimator=None):
    """Mean estimate and mean gradients of the composed two-stage estimator over DRAWS draws,
    with the model's stage-II estimator (eq 9) or ``estimator`` in its place."""
    gen = torch.Generator().manual_seed(seed)
    L, S, D = f.shape
    log_alpha = a.log_softmax(-1).expand(DRAWS, L)  # (B, L) one row per Monte-Carlo draw
    tiles = draw(log_alpha, n, "sample", gen)  # (B, P)
    log_beta = b.log_softmax(-1)[tiles.index]  # (B, P, S): beta computed once per distinct tile
    subs = draw(log_beta, tiles.count, "sample", gen, replacement=False)  # (B, P, K)
    feats = f[tiles.index[..., None], subs.index]  # (B, P, K, D)
    z = two_stage_estimate(log_alpha.gather(1, tiles.index), log_beta.gather(-1, subs.index), feats, tiles.count,
                           subs.valid, n, S, within=estimator)  # (B, D)
    value = z.mean(0).detach()
    grads = torch.autograd.grad((z @ w).mean(), [a, b, f])
    return value, grads


def assert_close(mc, exact):
    (v_mc, g_mc), (v_ex, g_ex) = mc, exact
    assert (v_mc - v_ex).abs().max() < TOL, f"value off by {(v_mc - v_ex).abs().max():.4f}"
    for name, gm, ge in zip(["alpha logits", "beta logits", "features"], g_mc, g_ex):
        err = (gm - ge).abs().max()
        assert err < TOL, f"gradient wrt {name} off by {err:.4f}"


@pytest.mark.parametrize("L,S,n,sharp", [
    (5, 4, 1, 1.0),     # a single draw
    (5, 4, 6, 1.0),     # typical: some tiles repeat
    (3, 2, 9, 1.0),     # N > number of tiles, and tiles drawn more often than they have sub-tiles
    (4, 3, 4, 6.0),     # near-one-hot attention in both stages
])
def test_two_stage_unbiased(L, S, n, sharp):
    a, b, f, w = problem(L, S, 3, seed=L * 100 + n, sharp=sharp)
    assert_close(mc_two_stage(a, b, f, w, n, seed=n), exact_grads(a, b, f, w))


@pytest.mark.parametrize("composed", [False, True])
@pytest.mark.parametrize("n", [1, 7, 25])
def test_one_stage_unbiased(n, composed):
    """Eq 3 alone, and as the model computes it: the two-stage estimate with K = S = 1, log beta = 0."""
    a, _, f, w = problem(6, 1, 3, seed=n)
    gen = torch.Generator().manual_seed(n)
    log_alpha = a.log_softmax(-1).expand(DRAWS, 6)
    draws = sample_with_replacement(log_alpha.exp(), n, gen)
    la = log_alpha.gather(1, draws.index)  # (B, P)
    if composed:
        z = two_stage_estimate(la, torch.zeros(*la.shape, 1), f[draws.index], draws.count, draws.valid[..., None],
                               n, 1)
    else:
        z = expected_with_replacement(la, draws.count[..., None] * f[draws.index, 0], n)  # features once per tile
    mc = (z.mean(0).detach(), torch.autograd.grad((z @ w).mean(), [a, f]))
    v_ex, g_ex = exact_grads(a, None, f, w, two_stage=False)
    assert (mc[0] - v_ex).abs().max() < TOL
    for gm, ge in zip(mc[1], g_ex):
        assert (gm - ge).abs().max() < TOL


def _inclusive(log_beta, feats, count, S):
    """The published-port mistake: remaining mass from an inclusive cumulative sum, gradient through it."""
    Kmax = log_beta.shape[-1]
    used = torch.arange(Kmax) < count.clamp(max=S)[..., None]
    beta = log_beta.exp() * used
    remaining = 1.0 - torch.cumsum(beta, -1) + beta * 0  # inclusive
    weighted = beta[..., None] * feats * used[..., None]
    prefix = torch.cumsum(weighted, -2) - weighted
    return ((prefix + remaining[..., None] * feats) * used[..., None]).sum(-2)


def _no_score(log_beta, feats, count, S):
    """Right value, but the gradient flows through R_m instead of the score: biased for beta."""
    Kmax = log_beta.shape[-1]
    used = torch.arange(Kmax) < count.clamp(max=S)[..., None]
    beta = log_beta.exp() * used
    remaining = 1.0 - (torch.cumsum(beta, -1) - beta)
    weighted = beta[..., None] * feats * used[..., None]
    prefix = torch.cumsum(weighted, -2) - weighted
    return ((prefix + remaining[..., None] * feats) * used[..., None]).sum(-2)


@pytest.mark.parametrize("biased", [_inclusive, _no_score])
def test_biased_variants_fail(biased):
    a, b, f, w = problem(5, 4, 3, seed=3)
    with pytest.raises(AssertionError):
        assert_close(mc_two_stage(a, b, f, w, 6, seed=1, estimator=biased), exact_grads(a, b, f, w))


def test_gumbel_top_k_is_sampling_without_replacement():
    """First two Gumbel-top-k indices follow p(i) p(j) / (1 - p(i)) exactly (in distribution)."""
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    idx = gumbel_top_k(p.log().expand(200_000, 4), 2, torch.Generator().manual_seed(0))
    assert (idx[:, 0] != idx[:, 1]).all()
    pair = idx[:, 0] * 4 + idx[:, 1]
    freq = torch.bincount(pair, minlength=16).double() / idx.shape[0]
    expect = (p[:, None] * p[None, :] / (1 - p[:, None])).flatten().double()
    expect[torch.arange(4) * 5] = 0
    assert (freq - expect).abs().max() < 0.005


def test_draw_without_replacement_fills_the_first_slots_with_distinct_locations():
    log_p = torch.tensor([0.1, 0.2, 0.3, 0.4]).log().expand(3, 4)  # (3, S = 4)
    for mode in ("sample", "topk"):
        d = draw(log_p, torch.tensor([2, 0, 6]), mode, torch.Generator().manual_seed(0), replacement=False)
        assert d.index.shape == (3, 4) and d.count.tolist() == [[1, 1, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]]
        assert sorted(d.index[2].tolist()) == [0, 1, 2, 3]  # exhausted: every sub-tile once
    assert d.index[0, :2].tolist() == [3, 2]  # topk: most probable first
    with pytest.raises(ValueError, match="mode"):
        draw(log_p, 2, "mean")


def test_group_draws_counts_and_distinct():
    draws = torch.tensor([[3, 1, 3, 3, 0], [2, 2, 2, 2, 2]])
    g = group_draws(draws, 5)
    assert g.index.tolist() == [[0, 1, 3], [2, 0, 0]]
    assert g.count.tolist() == [[1, 1, 3], [5, 0, 0]]
    assert g.count.sum(1).tolist() == [5, 5]


def test_inverse_cdf_draws_follow_the_distribution_and_allow_any_size():
    from zoomin.sampling import MULTINOMIAL_MAX, inverse_cdf_draws, sample_with_replacement
    p = torch.tensor([[0.0, 0.5, 0.0, 0.3, 0.2], [1.0, 0.0, 0.0, 0.0, 0.0]])
    d = inverse_cdf_draws(p, 40_000, torch.Generator().manual_seed(0))
    freq = torch.stack([torch.bincount(r, minlength=5) for r in d]).float() / 40_000
    assert torch.allclose(freq, p, atol=0.01) and (freq[p == 0] == 0).all()
    big = torch.zeros(1, MULTINOMIAL_MAX + 10)  # more locations than torch.multinomial accepts
    big[0, [3, MULTINOMIAL_MAX + 7]] = torch.tensor([0.25, 0.75])
    draws = sample_with_replacement(big, 400, torch.Generator().manual_seed(1))
    assert set(draws.index[draws.valid].tolist()) == {3, MULTINOMIAL_MAX + 7}
    assert abs(int(draws.count[draws.index == MULTINOMIAL_MAX + 7].sum()) / 400 - 0.75) < 0.08
