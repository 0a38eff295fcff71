"""Paired comparison of two trained Megapixel MNIST runs on the same test images.

Each run predicts every test image as the mean class probability of P sampled passes (one seeded
generator, so the first P passes are shared by every P asked for). Only the images that exactly
one run gets right carry information about which is more accurate: the exact McNemar test asks
whether those split evenly, and the paired difference gets a 95% interval.

One sampled pass is noisy, so "P = 1" from the first pass alone can swing by a few points with
the seed. ``single`` scores each image by the share of all the sampled passes it got right: the
expected one-pass accuracy, compared by a paired normal test on those shares.

A run can also be scored deterministically (``topk``): stage I keeps the N most attended tiles
and, for a two-stage run, stage II the single most attended sub-tile of each, so both kinds read
exactly N full-resolution patches, the equal detail they were trained at.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value: ``b`` images only the first run gets right, ``c`` only
    the second. Under "equally accurate" each discordant image is a fair coin, so the p-value is
    ``2 P(Binomial(b + c, 1/2) <= min(b, c))``, capped at 1."""
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)


def paired_difference(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float, float]:
    """Accuracy of ``a`` minus that of ``b`` (per-image correctness (n,) bool, or per-image share
    right in [0, 1], the same images) -> (difference, 95% interval low, high), normal
    approximation on the per-image differences."""
    d = a.double() - b.double()  # (n,) in [-1, 1]
    mean = float(d.mean())
    se = float(d.std()) / math.sqrt(d.numel()) if d.numel() > 1 else float("nan")
    return mean, mean - 1.96 * se, mean + 1.96 * se


def compare(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Accuracies, paired difference A - B with its interval, the images where A (B) does better,
    and a p-value: exact McNemar for per-image correctness (bool), else the two-sided normal test
    of the paired difference (per-image shares right)."""
    only_a, only_b = int((a.double() > b.double()).sum()), int((a.double() < b.double()).sum())
    diff, lo, hi = paired_difference(a, b)
    if a.dtype == torch.bool and b.dtype == torch.bool:
        p = mcnemar_exact(only_a, only_b)
    else:
        se = (hi - diff) / 1.96
        p = 1.0 if diff == 0 else math.erfc(abs(diff) / se / math.sqrt(2)) if se > 0 else 0.0
    return dict(accuracy_a=float(a.double().mean()), accuracy_b=float(b.double().mean()), difference=diff,
                ci_low=lo, ci_high=hi, only_a=only_a, only_b=only_b, p_value=p)


def load_run(run: str | Path, test_size: int = 0):
    """A run's checkpoint ready to score and its Megapixel MNIST test set -> (model, cfg, data).
    In top-k mode the model (in eval mode, as ``load_model`` gives it) keeps one sub-tile per
    stage-I tile (this loaded copy only), so both kinds read N patches in all, as in training."""
    from ..data.megapixel_mnist import MegapixelMNIST
    from ..checkpoint import load_model
    model, cfg = load_model(Path(run) / "checkpoint.pt")
    model.cfg.topk_subtiles = 1
    cfg.data.test_size = test_size or cfg.data.test_size
    return model, cfg, MegapixelMNIST(cfg.data, "test")


@torch.no_grad()
def correctness(run: str | Path, passes: list[int], test_size: int = 0, batch: int = 50,
                seed: int = 0, topk: bool = False, single: bool = False) -> dict[int | str, torch.Tensor]:
    """Per-image correctness of a run's checkpoint on its Megapixel MNIST test set, for each P in
    ``passes`` (the mean of the first P of the same sampled passes) -> {P: (n,) bool}; with
    ``single`` also {"single": (n,) float}, the share of the max(passes) passes each image got
    right on its own; with ``topk`` also {"topk": (n,) bool}, the deterministic prediction at N
    patches (module doc)."""
    if not passes or min(passes) < 1:
        raise ValueError(f"passes must be >= 1, got {list(passes)}")
    model, _, data = load_run(run, test_size)
    gen = torch.Generator().manual_seed(seed)
    out: dict[int | str, list] = {p: [] for p in passes}
    out |= {key: [] for key, on in (("single", single), ("topk", topk)) if on}
    for start in range(0, len(data), batch):
        items = [data[i] for i in range(start, min(start + batch, len(data)))]
        x = torch.stack([it[0] for it in items])  # (B, C, H, W)
        y = torch.tensor([it[1] for it in items])  # (B,)
        probs = torch.stack([model(x, generator=gen).logits.float().softmax(-1) for _ in range(max(passes))])  # (P, B, K)
        running = probs.cumsum(0)  # the sum of the first p passes: the same argmax as their mean
        for p in passes:
            out[p].append(running[p - 1].argmax(-1) == y)
        if single:
            out["single"].append((probs.argmax(-1) == y).double().mean(0))  # (B,) share of passes right
        if topk:
            out["topk"].append(model(x, mode="topk").logits.argmax(-1) == y)
    return {p: torch.cat(v) for p, v in out.items()}
