"""The Monte-Carlo experiment helper used by the variance benchmark and the method notebook."""
import torch

from zoomin.montecarlo import two_stage_estimates
from zoomin.sampling import exact_two_stage


def problem(L=12, S=9, D=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(L, generator=g) * 1.5, torch.randn(L, S, generator=g) * 1.5, torch.randn(L, S, D, generator=g)


def test_both_stage_two_variants_are_unbiased_and_without_replacement_varies_less():
    a, b, f = problem()
    exact = exact_two_stage(a.softmax(-1)[None], b.softmax(-1)[None], f[None])[0]
    var = {}
    for without in (True, False):
        z = two_stage_estimates(a, b, f, 8, 20_000, without, torch.Generator().manual_seed(1))
        assert z.shape == (20_000, 3)
        stderr = z.std(0) / 20_000 ** 0.5
        assert ((z.mean(0) - exact).abs() < 4 * stderr + 1e-4).all()
        var[without] = float(z.var(0).sum())
    assert var[True] < var[False]
