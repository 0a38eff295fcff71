"""Is one trained Megapixel MNIST model more accurate than another, or is the gap noise?

Both runs predict the *same* test images (the mean class probability of ``--passes`` sampled
passes, from a seeded generator), so the comparison is paired: only the images that exactly one
of the two gets right carry information. The script reports each run's accuracy, the paired
difference with a 95% confidence interval, and the exact two-sided McNemar test on the
discordant images.

    python benchmarks/paired_test.py runs/acc20/zoom_in runs/acc20/one_stage --passes 4 16 \
        --out docs/paired_test.md
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

import torch

from zoomin.data.megapixel_mnist import MegapixelMNIST
from zoomin.train import load_model


def mcnemar_exact(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value: ``b`` images only the first run gets right, ``c`` only
    the second. Under "equally accurate" each discordant image is a fair coin, so the p-value is
    ``P(Binomial(b + c, 1/2) <= min(b, c))``, doubled and capped at 1."""
    n, k = b + c, min(b, c)
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired_difference(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float, float]:
    """Accuracy of ``a`` minus accuracy of ``b`` (boolean per-image correctness, same images)
    -> (difference, 95% CI low, high), normal approximation on the per-image differences."""
    d = a.double() - b.double()  # (n,) in {-1, 0, 1}
    n = d.numel()
    se = float(d.std(unbiased=True)) / math.sqrt(n) if n > 1 else float("nan")
    mean = float(d.mean())
    return mean, mean - 1.96 * se, mean + 1.96 * se


@torch.no_grad()
def correctness(run: Path, passes: list[int], test_size: int, batch: int, seed: int) -> dict[int, torch.Tensor]:
    """Per-image correctness of ``run``'s checkpoint for each number of passes (the first p of the
    same sampled passes) -> {p: (n,) bool}."""
    model, cfg = load_model(run / "checkpoint.pt")
    model.eval()
    cfg.data.test_size = test_size or cfg.data.test_size
    data = MegapixelMNIST(cfg.data, "test")
    gen = torch.Generator().manual_seed(seed)
    most = max(passes)
    out = {p: [] for p in passes}
    for start in range(0, len(data), batch):
        items = [data[i] for i in range(start, min(start + batch, len(data)))]
        x = torch.stack([it[0] for it in items])  # (B, C, H, W)
        y = torch.tensor([int(it[1]) for it in items])
        probs = torch.stack([model(x, generator=gen).logits.float().softmax(-1) for _ in range(most)])  # (P, B, K)
        running = probs.cumsum(0)  # mean of the first p passes has the same argmax as their sum
        for p in passes:
            out[p].append(running[p - 1].argmax(-1) == y)
    return {p: torch.cat(v) for p, v in out.items()}


def compare(a: torch.Tensor, b: torch.Tensor) -> dict:
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    diff, lo, hi = paired_difference(a, b)
    return dict(acc_a=float(a.double().mean()), acc_b=float(b.double().mean()), diff=diff, ci_low=lo,
                ci_high=hi, only_a=only_a, only_b=only_b, p_value=mcnemar_exact(only_a, only_b))


def markdown(run_a: Path, run_b: Path, rows: dict[int, dict], images: int, seed: int) -> str:
    lines = ["# Paired comparison on the same test images", "",
             f"`python benchmarks/paired_test.py {run_a} {run_b} --passes {' '.join(map(str, rows))} --seed {seed}`", "",
             f"A = `{run_a}`, B = `{run_b}`; {images} test images, each predicted by the mean class "
             "probability of *passes* sampled passes. Difference A − B with a 95% interval (normal "
             "approximation on per-image differences); exact two-sided McNemar test on the images "
             "only one model gets right.", "",
             "| passes | accuracy A | accuracy B | A − B [95% CI] | only A right | only B right | McNemar p |",
             "|---:|---:|---:|---|---:|---:|---:|"]
    for p, r in rows.items():
        lines.append(f"| {p} | {r['acc_a']:.3f} | {r['acc_b']:.3f} | {r['diff']:+.3f} [{r['ci_low']:+.3f}, "
                     f"{r['ci_high']:+.3f}] | {r['only_a']} | {r['only_b']} | {r['p_value']:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_a", type=Path, help="training output folder (with checkpoint.pt)")
    p.add_argument("run_b", type=Path)
    p.add_argument("--passes", type=int, nargs="+", default=[4], help="sampled passes averaged per image")
    p.add_argument("--test-size", type=int, default=0, help="test images (0: the runs' own test set)")
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="write the markdown table here")
    a = p.parse_args()
    if min(a.passes) < 1:
        p.error("--passes must be >= 1")
    torch.set_num_threads(a.threads)
    passes = sorted(set(a.passes))
    ca = correctness(a.run_a, passes, a.test_size, a.batch, a.seed)
    cb = correctness(a.run_b, passes, a.test_size, a.batch, a.seed)
    rows = {q: compare(ca[q], cb[q]) for q in passes}
    text = markdown(a.run_a, a.run_b, rows, len(ca[passes[0]]), a.seed)
    if a.out:
        a.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
