"""Monte-Carlo experiments on the estimators, outside any network: many independent draws of
the two-stage estimate of eq 5 on a fixed problem (attention logits and features given), for the
variance benchmark and the method notebook."""
from __future__ import annotations

import torch

from .sampling import expected_with_replacement, expected_without_replacement, gumbel_top_k, sample_with_replacement


def two_stage_estimates(alpha_logits: torch.Tensor, beta_logits: torch.Tensor, feats: torch.Tensor, n: int,
                        draws: int, without_replacement: bool = True,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """``draws`` independent estimates of ``sum_c alpha_c sum_d beta_cd f_cd`` with ``n`` samples.

    Stage I draws tiles with replacement (eq 3). Stage II draws each tile's ``k`` sub-tiles without
    replacement (eq 9, what ``ZoomInNet`` does) or, for comparison, ``k`` times with replacement.
    alpha_logits: (L,); beta_logits: (L, S); feats: (L, S, D) -> (draws, D).
    """
    L, S, _ = feats.shape
    log_alpha = alpha_logits.log_softmax(-1).expand(draws, L)
    tiles = sample_with_replacement(log_alpha.exp(), n, generator)  # index/count (draws, P)
    log_beta = beta_logits.log_softmax(-1)[tiles.index]  # (draws, P, S)
    if without_replacement:
        kmax = min(int(tiles.count.max()), S)
        sub = gumbel_top_k(log_beta, kmax, generator)  # (draws, P, kmax)
        sums = expected_without_replacement(log_beta.gather(-1, sub), feats[tiles.index[..., None], sub],
                                            tiles.count, S)
    else:
        kmax = int(tiles.count.max())
        sub = torch.multinomial(log_beta.exp().flatten(0, 1), kmax, replacement=True,
                                generator=generator).view(*tiles.index.shape, kmax)
        used = torch.arange(kmax) < tiles.count[..., None]  # (draws, P, kmax)
        sums = (feats[tiles.index[..., None], sub] * used[..., None]).sum(-2)
    return expected_with_replacement(log_alpha.gather(1, tiles.index), sums * tiles.valid[..., None], n)


def variance_against_n(ns, draws: int) -> list[dict]:
    """Total variance ``sum_d Var(z_d)`` of the two-stage estimate against N on one fixed random
    problem (64 tiles x 16 sub-tiles, D = 8, attention logits ~ 2 N(0, 1)), stage II with and
    without replacement -> rows ``N, with_replacement, without_replacement, ratio``."""
    g = torch.Generator().manual_seed(0)
    L, S, D = 64, 16, 8
    a, b, f = torch.randn(L, generator=g) * 2, torch.randn(L, S, generator=g) * 2, torch.randn(L, S, D, generator=g)
    rows = []
    with torch.no_grad():
        for n in ns:
            v = {w: float(two_stage_estimates(a, b, f, n, draws, w, torch.Generator().manual_seed(n)).var(0).sum())
                 for w in (False, True)}
            rows.append({"N": n, "with_replacement": v[False], "without_replacement": v[True], "ratio": v[True] / v[False]})
    return rows
