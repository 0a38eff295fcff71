"""Samplers and estimators (method §3-4). Samplers draw locations; estimators turn drawn
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

A third reweighting is optional (method §10, "importance-weighted proposal"): stage I may draw from
``q = (1 - eps) alpha + eps u`` (``u`` uniform over the foreground), so a floor of draws explores
locations alpha has not found yet; each draw is then weighted by ``alpha_c / stopgrad(q_c)``
(value ``alpha/q <= 1/(1 - eps)``, gradient ``(alpha/q) grad log alpha``), which keeps eq 3
unbiased in value and gradients (tests/test_proposal.py).

Entry points: ``draw`` (both stages, ``mode`` "sample" or "topk"), ``two_stage_estimate`` (eq 3
composed with eq 9, or the top-k truncation; one stage is its ``K = 1`` case) and
``two_stage_weights`` (the value of each drawn feature's weight in that estimate, for display).
The functions they dispatch to stay importable for the experiments in ``zoomin.montecarlo``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import foreground

MODES = ("sample", "topk")  # Monte Carlo (eqs 3, 9) or deterministic truncation (top-k)


@dataclass
class Draws:
    """Drawn locations, padded to the largest count in the batch. Stage I (with replacement):
    distinct locations per image and how often each was drawn. Stage II (without replacement):
    each tile's sub-tiles in draw order, count 1 for a drawn slot."""

    index: torch.Tensor  # (..., P) int64 flat view locations; 0 in padding slots
    count: torch.Tensor  # (..., P) int64 draws that hit that location; 0 in padding
    log_q: torch.Tensor | None = None  # (B, P) log proposal probability of each location (``floor`` > 0); None: drawn from p

    @property
    def valid(self) -> torch.Tensor:  # (..., P) bool
        return self.count > 0


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be 'sample' or 'topk', got {mode!r}")


def draw(log_p: torch.Tensor, n, mode: str = "sample", generator: torch.Generator | None = None,
         replacement: bool = True, masses: torch.Tensor | None = None, floor: float = 0.0,
         fg: torch.Tensor | None = None) -> Draws:
    """The one public sampler, for both stages (method §3-4).

    * ``replacement=True`` (stage I, eq 3): ``n`` (int) i.i.d. draws per row of ``log_p`` (B, L),
      grouped into distinct locations with their counts -> (B, P). ``mode="topk"``: the
      ``min(n, L)`` most probable locations, each counted once.
    * ``replacement=False`` (stage II, eq 9): per row of ``log_p`` (..., S), an ordered sample of
      ``min(n, S)`` distinct locations, ``n`` an int or a (...) tensor of per-row counts ->
      (..., K) with ``K = max(1, min(max n, S))``, in draw order, count 1 on the drawn slots and 0
      after them. ``mode="topk"``: the ``min(n, S)`` most probable, in decreasing order.

    ``masses``: ``block_masses(log_p)`` when the caller keeps it (passes that redraw from one alpha).
    ``floor`` (stage I, ``mode="sample"``): draw from the proposal ``q = (1 - floor) p + floor u``,
    ``u`` uniform over the foreground ``fg`` (B, L) bool (None: every location); the result's
    ``log_q`` is what ``two_stage_estimate`` needs to weight the draws by ``p / q`` (method §10).
    """
    _check_mode(mode)
    if replacement:
        if mode == "topk":
            return top_locations(log_p, n)
        draws = iid_draws(log_p, n, generator, masses)  # (B, n)
        if not floor:
            return group_draws(draws, log_p.shape[-1])
        return proposal_draws(log_p, draws, floor, fg, generator)
    S = log_p.shape[-1]
    n = torch.as_tensor(n, device=log_p.device).expand(log_p.shape[:-1])  # (...)
    k = max(1, min(int(n.max()) if n.numel() else 1, S))
    index = gumbel_top_k(log_p, k, generator) if mode == "sample" else log_p.detach().topk(k, -1).indices  # (..., K)
    drawn = torch.arange(k, device=log_p.device) < n.clamp(max=S).unsqueeze(-1)  # (..., K)
    return Draws(index, drawn.long())


def complement_log_probs(log_p: torch.Tensor, fg: torch.Tensor | None = None) -> torch.Tensor:
    """Contrastive sampling distribution ``(1 - p)`` normalised, in log space (method §6),
    over the same foreground ``fg`` (..., L) as ``p``. log_p: (..., L) -> (..., L)."""
    if log_p.shape[-1] == 1:
        return log_p
    return foreground.apply(torch.log1p(-log_p.exp().clamp(max=1 - 1e-6)), fg)


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


def iid_draws(log_p: torch.Tensor, n: int, generator: torch.Generator | None = None,
              masses: torch.Tensor | None = None) -> torch.Tensor:
    """``n`` i.i.d. locations per row of ``log_p`` (B, L) -> (B, n), ungrouped: block by block on a
    gigapixel view (never a second map of its size), else from the probabilities."""
    if log_p.shape[-1] > BLOCKED_ABOVE:
        return blocked_draws(log_p, n, generator, masses)
    return _draws_from_probs(log_p.detach().exp(), n, generator)


def sample_with_replacement(probs: torch.Tensor, n: int, generator: torch.Generator | None = None) -> Draws:
    """Stage I (method §3-4): ``n`` i.i.d. locations per row of ``probs`` (B, L), grouped."""
    return group_draws(_draws_from_probs(probs, n, generator), probs.shape[-1])


def _draws_from_probs(probs: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` i.i.d. draws per row of ``probs`` (B, L) -> (B, n)."""
    probs = probs.detach().float()
    if not torch.isfinite(probs).all() or (probs < 0).any():
        raise ValueError("attention probabilities must be finite and non-negative to sample from")
    if probs.shape[-1] <= MULTINOMIAL_MAX:
        return torch.multinomial(probs, n, replacement=True, generator=generator)  # (B, n)
    return inverse_cdf_draws(probs, n, generator)


def proposal_draws(log_p: torch.Tensor, draws: torch.Tensor, floor: float, fg: torch.Tensor | None = None,
                   generator: torch.Generator | None = None) -> Draws:
    """Stage I from the proposal ``q = (1 - floor) p + floor u`` (method §10): each of the draws
    ``draws`` (B, n) from ``p`` is replaced, with probability ``floor``, by a location drawn
    uniformly from the foreground ``fg`` (B, L) bool (None, or an image with none: every location).
    -> grouped ``Draws`` with ``log_q`` (B, P) at the drawn locations (0 in padding)."""
    if not 0 < floor < 1:
        raise ValueError(f"the proposal's uniform floor must be in (0, 1), got {floor}")
    B, L = log_p.shape
    if fg is not None:
        fg = fg | ~fg.any(-1, keepdim=True)  # (B, L) an image with no foreground: every location
    explore = torch.rand(draws.shape, generator=generator, device=draws.device) < floor  # (B, n)
    grouped = group_draws(torch.where(explore, uniform_draws(fg, B, L, draws.shape[1], generator, draws.device), draws), L)
    n_fg = torch.full((B,), float(L), device=draws.device) if fg is None else fg.sum(-1).double()  # (B,)
    in_fg = torch.ones_like(grouped.valid) if fg is None else fg.gather(1, grouped.index)  # (B, P)
    log_u = torch.where(in_fg, -n_fg.log()[:, None], -math.inf).float()  # (B, P) log u at the drawn locations
    log_q = torch.logaddexp(math.log1p(-floor) + log_p.detach().gather(1, grouped.index).float(),
                            math.log(floor) + log_u)  # (B, P)
    grouped.log_q = log_q.masked_fill(~grouped.valid, 0.0)
    return grouped


def uniform_draws(fg: torch.Tensor | None, B: int, L: int, n: int, generator: torch.Generator | None = None,
                  device=None) -> torch.Tensor:
    """``n`` locations per image drawn uniformly from the foreground ``fg`` (B, L) bool (None: from
    all ``L``; every row must have one) -> (B, n): by ``torch.multinomial`` on the mask, or on a
    view with more locations than it allows by rejection (rounds over the whole batch at once)."""
    if fg is None:
        return torch.randint(L, (B, n), generator=generator, device=device)
    if L <= MULTINOMIAL_MAX:
        return torch.multinomial(fg.float(), n, replacement=True, generator=generator)
    out = torch.randint(L, (B, n), generator=generator, device=device)
    ok = fg.gather(1, out)  # (B, n)
    while not ok.all():
        cand = torch.randint(L, (B, n), generator=generator, device=device)
        take = ~ok & fg.gather(1, cand)
        out, ok = torch.where(take, cand, out), ok | take
    return out


MULTINOMIAL_MAX = 2**24  # torch.multinomial's limit on the number of categories


def inverse_cdf_draws(probs: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` i.i.d. draws per row of ``probs`` (B, L) by inverting the float64 CDF: any L (a
    one-stage view of a 100,000² slide has more locations than ``torch.multinomial`` allows)."""
    cdf = probs.double().cumsum(-1)  # (B, L)
    u = torch.rand(probs.shape[0], n, dtype=torch.float64, device=probs.device, generator=generator)
    idx = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)  # first location whose CDF exceeds u
    return idx.clamp(max=probs.shape[-1] - 1)


BLOCKED_ABOVE = 2**20  # stage-I views with more locations are sampled block by block (``blocked_draws``)
# so that alpha's probabilities are never a second map of the view's size; a "gigapixel" view. Its pixels
# have their own threshold, ``zoomin.stage1.STREAM_ABOVE``, derived from this one
BLOCK = 2**14  # locations per block


def block_masses(log_p: torch.Tensor, shift: torch.Tensor | None = None) -> torch.Tensor:
    """Probability mass of each ``BLOCK`` of consecutive locations, per row of ``log_p`` (B, L) ->
    (B, ceil(L / BLOCK)) float64, computed a few blocks at a time (memory: not a copy of ``log_p``).
    ``shift`` (B, 1): the sums of ``exp(log_p - shift)`` instead (unnormalised logits)."""
    B, L = log_p.shape
    step = 16 * BLOCK
    out = torch.zeros(B, math.ceil(L / BLOCK), dtype=torch.float64, device=log_p.device)  # before the temporaries
    for i in range(0, L, step):
        part = log_p[:, i:i + step].detach()
        p = F.pad((part if shift is None else part - shift).exp().double(), (0, -min(step, L - i) % BLOCK))
        out[:, i // BLOCK:i // BLOCK + p.shape[-1] // BLOCK] = p.view(B, -1, BLOCK).sum(-1)
    return out


def blocked_draws(log_p: torch.Tensor, n: int, generator: torch.Generator | None = None,
                  masses: torch.Tensor | None = None) -> torch.Tensor:
    """``n`` i.i.d. draws per row of ``log_p`` (B, L) (method §3), exact and two-level: a block by
    its mass (``block_masses``), then a location within it by inverting the block's own CDF. Only
    the drawn blocks are exponentiated in full -> (B, n) locations."""
    B, L = log_p.shape
    masses = block_masses(log_p) if masses is None else masses  # (B, nb)
    if not torch.isfinite(masses).all() or (masses.sum(-1) <= 0).any():
        raise ValueError("attention probabilities must be finite and non-negative to sample from")
    cm = masses.cumsum(-1)  # (B, nb)
    u = torch.rand(B, n, dtype=torch.float64, device=log_p.device, generator=generator) * cm[:, -1:]
    blk = torch.searchsorted(cm, u, right=True).clamp(max=masses.shape[-1] - 1)  # (B, n)
    frac = (u - (cm.gather(1, blk) - masses.gather(1, blk))) / masses.gather(1, blk)  # (B, n) position in the block
    loc = blk.unsqueeze(-1) * BLOCK + torch.arange(BLOCK, device=log_p.device)  # (B, n, BLOCK)
    inside = loc < L
    p = log_p.detach().gather(1, loc.clamp(max=L - 1).flatten(1)).view(B, n, BLOCK).exp().double() * inside
    cdf = p.cumsum(-1)  # (B, n, BLOCK)
    x = (frac.clamp(0, 1) * cdf[..., -1]).clamp(max=cdf[..., -1] * (1 - 1e-12))  # strictly inside the block's mass
    j = torch.searchsorted(cdf, x.unsqueeze(-1), right=True).squeeze(-1)  # first location whose CDF passes x
    return blk * BLOCK + j.clamp(max=BLOCK - 1)


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


def expected_with_replacement(log_alpha: torch.Tensor, tile_sums: torch.Tensor, n: int,
                              log_q: torch.Tensor | None = None) -> torch.Tensor:
    """Eq 3: ``(1/N) sum_{i<N} f(T(x, c_i))`` with ``c_i ~ alpha`` i.i.d., unbiased in value and gradient.
    With ``c_i ~ q`` (``log_q`` (B, P) of the drawn locations, method §10) each draw is weighted by
    ``alpha / stopgrad(q)``: value ``alpha / q``, gradient ``(alpha / q) grad log alpha`` — unbiased too.

    Draws of one location are grouped (``Draws``), so the caller passes per distinct location
    the sum of what its draws contribute: ``count * f_c`` for one stage, or the sum of the
    stage-II estimates ``F_m`` for two stages (eq 9).

    log_alpha: (B, P) log attention of the drawn locations; tile_sums: (B, P, K) -> (B, K).
    """
    weight = _unit_with_score(log_alpha) if log_q is None else torch.exp(log_alpha - log_q.detach())  # (B, P)
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

    log_weights: (..., k) log attention of the k kept locations; feats: (..., k, D) -> (..., D).
    """
    return (torch.softmax(log_weights, -1).unsqueeze(-1) * feats).sum(-2)


def two_stage_estimate(log_alpha: torch.Tensor, log_beta: torch.Tensor, feats: torch.Tensor, count: torch.Tensor,
                       drawn: torch.Tensor, n: int, num_subtiles: int, mode: str = "sample",
                       within=None, log_q: torch.Tensor | None = None) -> torch.Tensor:
    """Eq 5's inner sum ``sum_c alpha_c sum_c' beta_cc' f_cc'`` from the drawn (tile, sub-tile) pairs.

    ``mode="sample"``: eq 9 inside each tile (``within``, default ``expected_without_replacement``;
    tests pass biased variants with its signature), then eq 3 over the tiles: unbiased in value and
    gradient. ``mode="topk"``: both attentions renormalised over what was kept (a truncation).
    One stage is the special case ``K = num_subtiles = 1``, ``log_beta = 0``.

    log_alpha: (B, P) log alpha of the drawn tiles; log_beta: (B, P, K) log beta of the drawn
    sub-tiles in draw order; feats: (B, P, K, D) (0 where not drawn); count: (B, P) stage-I draws
    per tile (0: padding); drawn: (B, P, K) bool, the drawn slots (``draw(...).valid``); n: the
    stage-I draws N; num_subtiles: S, the locations of a tile's stage-II view; log_q: (B, P) the
    stage-I proposal at the drawn tiles when they were not drawn from alpha (``draw(floor=...)``) -> (B, D).
    """
    _check_mode(mode)
    if mode == "sample":
        within = within or expected_without_replacement  # looked up per call, so tests can patch it
        tile_sums = within(log_beta, feats, count, num_subtiles) * (count > 0).unsqueeze(-1)  # (B, P, D) eq 9
        return expected_with_replacement(log_alpha, tile_sums, n, log_q)  # (B, D) eq 3
    kept = log_beta.masked_fill(~drawn, -math.inf)  # (B, P, K)
    return expected_topk(log_alpha, expected_topk(kept, feats))


def two_stage_weights(log_alpha: torch.Tensor, log_beta: torch.Tensor, count: torch.Tensor, drawn: torch.Tensor,
                      num_subtiles: int, mode: str = "sample", log_q: torch.Tensor | None = None) -> torch.Tensor:
    """The value of each drawn feature's coefficient in ``two_stage_estimate`` (``z = sum w f``,
    summing to 1 per image, or to 1 in expectation when drawn from a proposal ``log_q``), for display:
    ``subtile_weights / N`` (eqs 3 + 9, times ``alpha / q``) or the renormalised ``alpha beta``
    (top-k). Shapes as ``two_stage_estimate`` -> (B, P, K), detached, 0 where not drawn."""
    _check_mode(mode)
    if mode == "sample":
        n = count.sum(-1)[..., None, None]  # (B, 1, 1): each image's counts add up to its N draws
        w = subtile_weights(log_beta, count, num_subtiles) / n
        return w if log_q is None else w * torch.exp(log_alpha.detach() - log_q.detach()).unsqueeze(-1)
    kept = log_beta.detach().masked_fill(~drawn, -math.inf)  # (B, P, K)
    return log_alpha.detach().softmax(-1).unsqueeze(-1) * kept.softmax(-1)


def exact_one_stage(alpha: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    """Eq 2's inner sum ``sum_c alpha_c f_c``. alpha: (B, L); feats: (B, L, D) -> (B, D)."""
    return torch.einsum("bl,bld->bd", alpha, feats)


def exact_two_stage(alpha: torch.Tensor, beta: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
    """Eq 5's inner sum ``sum_c alpha_c sum_c' beta^c_c' f_cc'``.
    alpha: (B, L); beta: (B, L, S); feats: (B, L, S, D) -> (B, D)."""
    return torch.einsum("bl,bls,blsd->bd", alpha, beta, feats)
