"""Samplers and estimators (METHOD §3-4). Samplers draw locations; estimators turn drawn
features into unbiased estimates of the attention-weighted sums of eq 2 and eq 5.

Unbiasedness, for the value *and* for the gradients with respect to the features, the
stage-I logits and the stage-II logits, comes from two reweightings whose value is 1 (or a
constant) and whose gradient is a score:

* stage I (with replacement, eq 3): each draw is weighted by ``alpha_c / stopgrad(alpha_c)``,
  written ``exp(log_alpha - stopgrad(log_alpha))`` so that tiny probabilities cannot overflow;
* stage II (without replacement, eq 9): the m-th draw's own term ``(1 - sum_{l<m} beta_l) f_m``
  keeps ``R_m = 1 - sum_{l<m} beta_l`` (an *exclusive* cumulative sum) in value but takes its
  gradient through ``beta_m / stopgrad(beta_m)``. Conditioned on the earlier draws, ``c'_m`` has
  probability ``beta_{c'_m} / R_m``, so the expected gradient of that term is
  ``sum_{j not drawn} grad(beta_j) f_j``; the prefix terms give the drawn ones: the total is the
  exact ``grad sum_j beta_j f_j`` for every prefix, hence unbiased. Using the inclusive sum, or
  letting the gradient flow through ``R_m`` instead, is biased (tests/test_estimators.py shows both).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Draws:
    """Distinct locations drawn per image, padded to the largest count in the batch."""

    index: torch.Tensor  # (B, P) int64 flat view locations; 0 in padding slots
    count: torch.Tensor  # (B, P) int64 how many of the N draws hit that location; 0 in padding

    @property
    def valid(self) -> torch.Tensor:  # (B, P) bool
        return self.count > 0


def group_draws(draws: torch.Tensor, num_locations: int) -> Draws:
    """Distinct locations and their counts, per row of ``draws`` (B, N), without a Python loop.

    This is the paper's "ordering the samples in Q" (§2.2): every distinct tile gets one slot, so
    its view and ``beta`` are computed once however often it was drawn.
    """
    B = draws.shape[0]
    gid = draws + num_locations * torch.arange(B, device=draws.device)[:, None]  # (B, N) global ids
    uniq, counts = torch.unique(gid, return_counts=True)  # sorted, so grouped by row
    row = uniq // num_locations
    per_row = torch.bincount(row, minlength=B)  # (B,) N' per image
    start = torch.cumsum(per_row, 0) - per_row
    slot = torch.arange(uniq.numel(), device=draws.device) - start[row]
    P = int(per_row.max()) if B else 0
    index = torch.zeros(B, P, dtype=torch.long, device=draws.device)
    count = torch.zeros(B, P, dtype=torch.long, device=draws.device)
    index[row, slot] = uniq % num_locations
    count[row, slot] = counts
    return Draws(index, count)


def sample_with_replacement(probs: torch.Tensor, n: int, generator: torch.Generator | None = None) -> Draws:
    """Stage I (METHOD §3-4): ``n`` i.i.d. locations per row of ``probs`` (B, L), grouped."""
    probs = probs.detach().float()
    if not torch.isfinite(probs).all() or (probs < 0).any():
        raise ValueError("attention probabilities must be finite and non-negative to sample from")
    if probs.shape[-1] <= MULTINOMIAL_MAX:
        draws = torch.multinomial(probs, n, replacement=True, generator=generator)  # (B, n)
    else:
        draws = inverse_cdf_draws(probs, n, generator)
    return group_draws(draws, probs.shape[-1])


MULTINOMIAL_MAX = 2**24  # torch.multinomial's limit on the number of categories


def inverse_cdf_draws(probs: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` i.i.d. draws per row of ``probs`` (B, L) by inverting the float64 CDF: any L (a
    one-stage view of a 100,000² slide has more locations than ``torch.multinomial`` allows)."""
    cdf = probs.double().cumsum(-1)  # (B, L)
    u = torch.rand(probs.shape[0], n, dtype=torch.float64, device=probs.device, generator=generator)
    idx = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)  # first location whose CDF exceeds u
    return idx.clamp(max=probs.shape[-1] - 1)


def top_locations(scores: torch.Tensor, n: int) -> Draws:
    """Deterministic stage I: the ``min(n, L)`` highest-scoring locations, each counted once."""
    k = min(n, scores.shape[-1])
    index = scores.detach().topk(k, dim=-1).indices  # (B, k)
    return Draws(index, torch.ones_like(index))


def gumbel_top_k(log_probs: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Ordered sample of ``k`` distinct locations without replacement (eqs 7-9, Gumbel-top-k).

    The indices of the ``k`` largest ``log p + Gumbel`` values, in decreasing order, have the
    law of sequential sampling without replacement from ``p``. log_probs: (..., S) -> (..., k).
    """
    dtype = torch.float32 if log_probs.device.type == "mps" else torch.float64  # mps has no float64
    u = torch.rand(log_probs.shape, generator=generator, device=log_probs.device, dtype=dtype)
    tiny = torch.finfo(dtype).tiny
    gumbel = -torch.log(-torch.log(u.clamp(tiny, 1.0 - torch.finfo(dtype).eps)))
    keys = log_probs.detach().to(dtype) + gumbel
    return keys.topk(k, dim=-1).indices


def _unit_with_score(log_p: torch.Tensor) -> torch.Tensor:
    """``p / stopgrad(p)``: value 1, gradient ``grad log p``."""
    return torch.exp(log_p - log_p.detach())


def expected_with_replacement(log_alpha: torch.Tensor, tile_sums: torch.Tensor, n: int) -> torch.Tensor:
    """Eq 3: ``(1/N) sum_{i<N} f(T(x, c_i))`` with ``c_i ~ alpha`` i.i.d., unbiased in value and gradient.

    Draws of one location are grouped (``Draws``), so the caller passes per distinct location
    the sum of what its draws contribute: ``count * f_c`` for one stage, or the sum of the
    stage-II estimates ``F_m`` for two stages (eq 9).

    log_alpha: (B, P) log attention of the drawn locations; tile_sums: (B, P, K) -> (B, K).
    """
    weight = _unit_with_score(log_alpha)  # (B, P)
    return (weight.unsqueeze(-1) * tile_sums).sum(1) / n


def _ordered_draws(log_beta: torch.Tensor, count: torch.Tensor, num_locations: int):
    """For ``Kmax`` ordered draws per tile: which are used (the first ``min(k, S)``), their
    ``beta`` (0 where unused) and the remaining mass ``R_m = 1 - sum_{l<m} beta_l`` (exclusive)."""
    Kmax = log_beta.shape[-1]
    used = torch.arange(Kmax, device=log_beta.device) < count.clamp(max=num_locations).unsqueeze(-1)  # (..., Kmax)
    beta = log_beta.exp() * used
    remaining = (1.0 - (torch.cumsum(beta, -1) - beta)).clamp(min=0.0)  # (..., Kmax)
    return used, beta, remaining


def expected_without_replacement(log_beta: torch.Tensor, feats: torch.Tensor, count: torch.Tensor,
                                 num_locations: int) -> torch.Tensor:
    """Eq 9 inside one tile: ``sum_{m<k} F_m`` for the ``k`` stage-I draws of that tile, where
    ``F_m = sum_{l<m} beta_l f_l + (1 - sum_{l<m} beta_l) f_m`` over the ordered sample without
    replacement (eq 8) — each ``F_m`` is unbiased for ``sum_{c'} beta_{c'} f_{c'}`` (eq 7).

    When a tile is drawn more often than it has sub-tiles (``k > S``), every sub-tile is in the
    sample and the extra draws get the exact sum. Gradients: see the module docstring.

    log_beta: (..., Kmax) log beta of the drawn sub-tiles in draw order; feats: (..., Kmax, D)
    (anything in unused slots, typically 0); count: (...) draws per tile; -> (..., D).
    """
    used, beta, remaining = _ordered_draws(log_beta, count, num_locations)
    feats = feats * used.unsqueeze(-1)
    remaining = remaining.detach()
    weighted = beta.unsqueeze(-1) * feats  # (..., Kmax, D) beta_l f_l
    prefix = torch.cumsum(weighted, -2) - weighted  # (..., Kmax, D) sum_{l<m} beta_l f_l, exclusive
    own = (remaining * _unit_with_score(log_beta)).unsqueeze(-1) * feats  # (..., Kmax, D) R_m f_m
    estimates = (prefix + own) * used.unsqueeze(-1)  # (..., Kmax, D) F_m
    extra = (count - num_locations).clamp(min=0).unsqueeze(-1)  # (..., 1) draws past exhaustion
    return estimates.sum(-2) + extra * weighted.sum(-2)


def subtile_weights(log_beta: torch.Tensor, count: torch.Tensor, num_locations: int) -> torch.Tensor:
    """The value of the weight each drawn sub-tile's feature carries in ``sum_m F_m`` (eq 9):
    ``R_m`` for its own draw plus ``beta_m`` for every later draw of the same tile.

    log_beta: (..., Kmax); count: (...) -> (..., Kmax) (0 in unused slots).
    """
    used, beta, remaining = _ordered_draws(log_beta.detach(), count, num_locations)
    m = torch.arange(log_beta.shape[-1], device=log_beta.device)
    later = (used.sum(-1, keepdim=True) - 1 - m).clamp(min=0) + (count - num_locations).clamp(min=0).unsqueeze(-1)
    return (remaining + beta * later) * used


def expected_topk(log_weights: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    """Deterministic inference: attention renormalised over the kept locations (a truncated eq 2/5).

    log_weights: (..., K) log attention of the kept locations; feats: (..., K, D) -> (..., D).
    """
    return (torch.softmax(log_weights, -1).unsqueeze(-1) * feats).sum(-2)


def exact_one_stage(alpha: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    """Eq 2's inner sum ``sum_c alpha_c f_c``. alpha: (B, L); feats: (B, L, D) -> (B, D)."""
    return torch.einsum("bl,bld->bd", alpha, feats)


def exact_two_stage(alpha: torch.Tensor, beta: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    """Eq 5's inner sum ``sum_c alpha_c sum_c' beta^c_c' f_cc'``.
    alpha: (B, L); beta: (B, L, S); feats: (B, L, S, D) -> (B, D)."""
    return torch.einsum("bl,bls,blsd->bd", alpha, beta, feats)
