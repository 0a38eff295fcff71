"""Variance of the two-stage estimate against N: stage II without replacement (eq 9, what
ZoomInNet does) versus with replacement (plain Monte Carlo of eq 6). Both are unbiased; the
figure is the total variance sum_d Var(z_d) over 20,000 draws of a random problem.

    python benchmarks/estimator_variance.py [--out docs]   # writes estimator_variance.{csv,md}
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

from zoomin.montecarlo import variance_against_n


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="docs")
    p.add_argument("--draws", type=int, default=20_000)
    args = p.parse_args(argv)
    L, S, D = 64, 16, 8  # the problem variance_against_n draws
    rows = [{"N": r["N"], "var_with_replacement": r["with_replacement"], "var_without_replacement": r["without_replacement"],
             "ratio": r["ratio"]} for r in variance_against_n((1, 2, 4, 8, 16, 32, 64, 128), args.draws)]
    for r in rows:
        print(r, flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "estimator_variance.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = ["# Estimator variance against N", "",
             f"Random problem: {L} tiles x {S} sub-tiles, D = {D}, attention logits ~ 2 N(0, 1); "
             f"{args.draws:,} draws per cell. Command: `python benchmarks/estimator_variance.py`.", "",
             "| N | total variance, stage II with replacement | without replacement (eq 9) | ratio |",
             "|---:|---:|---:|---:|"]
    lines += [f"| {r['N']} | {r['var_with_replacement']:.4f} | {r['var_without_replacement']:.4f} | {r['ratio']:.2f} |"
              for r in rows]
    (out / "estimator_variance.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
