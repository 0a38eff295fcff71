"""Variance of the two-stage estimate against N: stage II without replacement (eq 9, what
ZoomInNet does) versus with replacement (plain Monte Carlo of eq 6). Both are unbiased; the
figure is the total variance sum_d Var(z_d) over 20,000 draws of a random problem.

    python benchmarks/estimator_variance.py [--out docs]   # writes estimator_variance.{csv,md}
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from report import table

from zoomin.montecarlo import variance_against_n


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="docs")
    p.add_argument("--draws", type=int, default=20_000)
    args = p.parse_args(argv)
    L, S, D = 64, 16, 8  # the problem variance_against_n draws
    rows = pd.DataFrame(variance_against_n((1, 2, 4, 8, 16, 32, 64, 128), args.draws)).rename(
        columns={"with_replacement": "var_with_replacement", "without_replacement": "var_without_replacement"})
    rows = rows[["N", "var_with_replacement", "var_without_replacement", "ratio"]]
    print(rows.to_string(index=False), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows.to_csv(out / "estimator_variance.csv", index=False)
    cells = pd.DataFrame({"N": rows["N"].map(str),
                          "total variance, stage II with replacement": rows["var_with_replacement"].map("{:.4f}".format),
                          "without replacement (eq 9)": rows["var_without_replacement"].map("{:.4f}".format),
                          "ratio": rows["ratio"].map("{:.2f}".format)})
    lines = ["# Estimator variance against N", "",
             f"Random problem: {L} tiles x {S} sub-tiles, D = {D}, attention logits ~ 2 N(0, 1); "
             f"{args.draws:,} draws per cell. Command: `python benchmarks/estimator_variance.py`.", "", table(cells)]
    (out / "estimator_variance.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
