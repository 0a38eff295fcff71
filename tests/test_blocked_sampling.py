"""Stage-I draws on gigapixel views (zoomin.sampling.blocked_draws): a block by its mass, then a
location inside it — the same distribution as drawing from alpha directly (Monte Carlo)."""
import pytest
import torch
from scipy.stats import chisquare

import zoomin.sampling as sampling


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(sampling, "BLOCK", 4)
    monkeypatch.setattr(sampling, "BLOCKED_ABOVE", 8)


def alpha(L=37, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, L, generator=g) * 1.5
    logits[:, ::5] -= 1e4  # background: never drawn
    return logits.log_softmax(-1)  # (2, L), L not a multiple of the block size


def test_blocked_draws_follow_alpha(small_blocks):
    log_p = alpha()
    n = 200_000
    draws = sampling.blocked_draws(log_p, n, torch.Generator().manual_seed(1))  # (2, n)
    assert draws.shape == (2, n) and draws.min() >= 0 and draws.max() < log_p.shape[-1]
    for b in range(2):
        counts = torch.bincount(draws[b], minlength=log_p.shape[-1]).double()
        p = log_p[b].exp().double()
        assert counts[p < 1e-30].sum() == 0  # a masked location is never drawn
        keep = p > 1e-30
        expected = p[keep] / p[keep].sum() * n
        assert chisquare(counts[keep].numpy(), expected.numpy()).pvalue > 1e-3


def test_draw_switches_to_blocks_on_large_views_with_the_same_distribution(small_blocks):
    log_p = alpha(L=23, seed=2)
    d = sampling.draw(log_p, 50_000, "sample", torch.Generator().manual_seed(3))
    freq = torch.zeros(2, 23)
    freq.scatter_add_(1, d.index, d.count.float())
    assert torch.allclose(freq / 50_000, log_p.exp(), atol=0.01)
    with pytest.raises(ValueError, match="finite"):
        sampling.blocked_draws(torch.full((1, 20), float("nan")), 3)


def test_a_biased_block_sampler_is_caught(small_blocks, monkeypatch):
    """The test above can fail: uniform within the block instead of by the block's CDF."""
    log_p = alpha()
    flat = log_p.clone()
    L, B = log_p.shape[-1], sampling.BLOCK
    for b in range(2):
        for s in range(0, L, B):
            m = log_p[b, s:s + B].exp()
            flat[b, s:s + B] = torch.where(m > 1e-30, (m.sum() / (m > 1e-30).sum()).log(), log_p[b, s:s + B])
    draws = sampling.blocked_draws(flat, 100_000, torch.Generator().manual_seed(1))
    counts = torch.bincount(draws[0], minlength=L).double()
    p = log_p[0].exp().double()
    keep = p > 1e-30
    assert chisquare(counts[keep].numpy(), (p[keep] / p[keep].sum() * 100_000).numpy()).pvalue < 1e-6
