"""Paired comparison of two trained Megapixel MNIST runs on the same test images.

Each run predicts every test image from P sampled passes, read out as its ``readout.method``
says (``zoomin.readout.read_passes``: the mean class probability, or the vote of ``places``),
with one seeded generator, so the first P passes are shared by every P asked for. Only the images that exactly one run gets right carry information about which
is more accurate: the exact McNemar test (``scipy.stats.binomtest`` on those discordant images)
asks whether they split evenly, and the paired difference gets a 95% normal interval.

One sampled pass is noisy, so "P = 1" from the first pass alone can swing by a few points with
the seed. ``single`` scores each image by the share of all the sampled passes it got right: the
expected one-pass accuracy, compared by a paired normal test on those shares.

A run can also be scored deterministically (``topk``): stage I keeps the N most attended tiles
and, for a two-stage run, stage II the single most attended sub-tile of each, so both kinds read
exactly N full-resolution patches, the equal detail they were trained at.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from scipy import stats

from zoomin.checkpoint import load_model
from zoomin.readout import PASS_ESTIMATE, answer, iter_passes, read_passes


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value: ``b`` images only the first run gets right, ``c`` only
    the second. Under "equally accurate" each discordant image is a fair coin: the two-sided
    binomial test of ``b`` successes in ``b + c`` at 1/2 (1 without discordant images)."""
    return 1.0 if b + c == 0 else float(stats.binomtest(b, b + c, 0.5).pvalue)


def compare(a: torch.Tensor, b: torch.Tensor) -> dict:
    """Per-image correctness (n,) bool, or per-image share right in [0, 1], of two runs on the
    same images -> accuracies, the paired difference A - B with its 95% normal interval, the
    images where A (B) does better, and a p-value: exact McNemar for correctness (bool), else the
    two-sided normal test of the paired difference (shares)."""
    d = (a.double() - b.double()).numpy()  # (n,) in [-1, 1]
    only_a, only_b = int((d > 0).sum()), int((d < 0).sum())
    diff = float(d.mean())
    se = float(stats.sem(d)) if d.size > 1 else float("nan")  # sample std (ddof 1) / sqrt(n)
    lo, hi = (diff, diff) if se == 0 else stats.norm.interval(0.95, loc=diff, scale=se)
    if a.dtype == torch.bool and b.dtype == torch.bool:
        p = mcnemar_exact(only_a, only_b)
    else:
        p = 1.0 if diff == 0 else float(2 * stats.norm.sf(abs(diff) / se)) if se > 0 else 0.0
    return dict(accuracy_a=float(a.double().mean()), accuracy_b=float(b.double().mean()), difference=diff,
                ci_low=float(lo), ci_high=float(hi), only_a=only_a, only_b=only_b, p_value=p)


SEEN_SEED_OFFSET = 1000  # data seed offset of the seen-digits images: new records, none of them trained on


def load_run(run: str | Path, test_size: int = 0, method: str = "", seen_digits: bool = False,
             data: dict | None = None):
    """A run's checkpoint ready to score and its Megapixel MNIST test set -> (model, cfg, data).
    ``seen_digits``: instead of the test set, as many images drawn from the *training* digit pool
    under data seed ``seed + SEEN_SEED_OFFSET``: the digits the run trained on, in new places and
    combinations (what the reader has memorised against what generalises).
    In top-k mode the model (in eval mode, as ``load_model`` gives it) keeps one sub-tile per
    stage-I tile (``readout.subtiles`` 1 in the ``cfg`` returned), so both kinds read N patches in all, as in training.
    ``method`` (when set) replaces the run's ``readout.method`` in the ``cfg`` returned: how the same
    weights are read out (``zoomin.readout``). ``data``: ``DataConfig`` fields to change
    for the images scored (e.g. ``{"n_noise": 100}``: the same weights on busier canvases)."""
    from zoomin.config import ReadoutConfig
    from zoomin.data.megapixel_mnist import MegapixelMNIST
    model, cfg = load_model(Path(run) / "checkpoint.pt")
    method = {"method": method} if method else {}
    cfg.readout = ReadoutConfig(**{**vars(cfg.readout), "subtiles": 1, **method})  # checked as a config's
    cfg.data = replace(cfg.data, **(data or {}))  # an unknown field is a TypeError naming it
    cfg.data.test_size = test_size or cfg.data.test_size
    if seen_digits:
        seen = replace(cfg.data, seed=cfg.data.seed + SEEN_SEED_OFFSET, train_size=cfg.data.test_size, fresh_train=False)
        return model, cfg, MegapixelMNIST(seen, "train")
    return model, cfg, MegapixelMNIST(cfg.data, "test")


def batches(data, batch: int):
    """A dataset's items in order, ``batch`` at a time -> (x (B, C, H, W), y (B,))."""
    for start in range(0, len(data), batch):
        items = [data[i] for i in range(start, min(start + batch, len(data)))]
        yield torch.stack([it[0] for it in items]), torch.tensor([it[1] for it in items])


@torch.no_grad()
def correctness(run: str | Path, passes: list[int], test_size: int = 0, batch: int = 50,
                seed: int = 0, topk: bool = False, single: bool = False,
                method: str = "", seen_digits: bool = False) -> dict[int | str, torch.Tensor]:
    """Per-image correctness of a run's checkpoint on its Megapixel MNIST test set, for each P in
    ``passes`` -> {P: (n,) bool}: the run's answer (``zoomin.readout.answer``) with P passes, the first P
    of the same max(passes) sampled passes for every P; with ``single`` also {"single": (n,)
    float}, the share of those passes each image got right on its own; with ``topk`` also
    {"topk": (n,) bool}, the deterministic prediction at N patches (module doc). ``method``,
    ``seen_digits``: see ``load_run``."""
    if not passes or min(passes) < 1:
        raise ValueError(f"passes must be >= 1, got {list(passes)}")
    model, cfg, data = load_run(run, test_size, method, seen_digits)
    readout = cfg.readout
    gen = torch.Generator().manual_seed(seed)
    out: dict[int | str, list] = {p: [] for p in passes}
    out |= {key: [] for key, on in (("single", single), ("topk", topk)) if on}
    for x, y in batches(data, batch):
        traces = [t for t, in iter_passes(model, x, passes=max(passes), generator=gen,
                                          estimate=PASS_ESTIMATE[readout.method])]  # one per pass
        probs = torch.stack([read_passes([t], readout) for t in traces])  # (P, B, K) each pass on its own
        for p in passes:  # answer(passes=p) from the same generator state, without redrawing
            out[p].append(read_passes(traces[:p], readout).argmax(-1) == y)
        if single:
            out["single"].append((probs.argmax(-1) == y).double().mean(0))  # (B,) share of passes right
        if topk:
            out["topk"].append(answer(model, x, replace(readout, mode="topk", passes=1))[0].argmax(-1) == y)
    return {p: torch.cat(v) for p, v in out.items()}
