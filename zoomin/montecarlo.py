"""Monte-Carlo experiments on the estimators, outside any network: many independent draws of
the two-stage estimate of eq 5 on a fixed problem (attention logits and features given), for the
variance benchmark and the method notebook."""
from __future__ import annotations

import torch

from .sampling import Draws, draw, two_stage_estimate


def two_stage_estimates(alpha_logits: torch.Tensor, beta_logits: torch.Tensor, feats: torch.Tensor, n: int,
                        draws: int, without_replacement: bool = True,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """``draws`` independent estimates of ``sum_c alpha_c sum_d beta_cd f_cd`` with ``n`` samples.

    Stage I draws tiles with replacement (eq 3). Stage II draws each tile's ``k`` sub-tiles without
    replacement (eq 9, what ``ZoomInNet`` does) or, for comparison, ``k`` times with replacement
    (their features summed). Both go through ``two_stage_estimate``, as the model does.
    alpha_logits: (L,); beta_logits: (L, S); feats: (L, S, D) -> (draws, D).
    """
    L, S, _ = feats.shape
    log_alpha = alpha_logits.log_softmax(-1).expand(draws, L)  # (draws, L): one row per estimate
    tiles = draw(log_alpha, n, "sample", generator)  # index/count (draws, P)
    log_beta = beta_logits.log_softmax(-1)[tiles.index]  # (draws, P, S): beta once per distinct tile
    if without_replacement:
        subs, within = draw(log_beta, tiles.count, "sample", generator, replacement=False), None  # (draws, P, K)
    else:
        subs, within = _draw_with_replacement(log_beta, tiles.count, generator), _sum_of_draws
    picked = feats[tiles.index[..., None], subs.index]  # (draws, P, K, D)
    la, lb = log_alpha.gather(1, tiles.index), log_beta.gather(-1, subs.index)  # (draws, P), (draws, P, K)
    return two_stage_estimate(la, lb, picked, tiles.count, subs.valid, n, S, within=within)


def _draw_with_replacement(log_beta: torch.Tensor, count: torch.Tensor, generator=None) -> Draws:
    """``count`` i.i.d. sub-tiles per tile. log_beta: (..., S); count: (...) -> (..., K), K = max count."""
    k = int(count.max())
    index = torch.multinomial(log_beta.exp().flatten(0, -2), k, replacement=True,
                              generator=generator).view(*count.shape, k)  # (..., K)
    return Draws(index, (torch.arange(k, device=count.device) < count.unsqueeze(-1)).long())


def _sum_of_draws(log_beta, feats, count, num_subtiles):
    """Stage II with replacement: the plain sum of the drawn features (a ``within`` for
    ``two_stage_estimate``). feats: (..., K, D) -> (..., D)."""
    drawn = torch.arange(feats.shape[-2], device=feats.device) < count.unsqueeze(-1)  # (..., K)
    return (feats * drawn.unsqueeze(-1)).sum(-2)


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
