"""Counts of colour cells inside the tissue's range: can slide labels pick the colours a lesion adds
where the stain counts' tails do not reach? The experiment that chose the package's colour cells
(``model.count_cells``, ``zoomin.counts.screen_cells``), on slide-level features without training.

The stain counts (``zoomin.counts``) count pixels beyond tails along colour directions: the
extremes of the tissue's colours. A lesion painted in a colour inside that range (the crowded and
giant nuclei of ``docs/weak_labels_colour_oracle.md``) adds pixels to colour cells the tissue fills
too. Here each slide's foreground, read at ``--count-mpp`` as training reads it
(``zoomin.doctor.histograms``), is binned into colour cells of ``--bits`` bits a channel, and a
slide's features are ``log(1 + count)`` of each cell. Two ways to weigh them from slide labels, in
4-fold cross-validation repeated three times (the same folds for every method):

* ``screen top K``: on the training folds, the cells whose log-count is higher on lesion slides
  than on the others by the largest Welch t-statistic; a slide's score is the sum of its
  log-counts of the K cells (no fitted weights);
* ``L2 C``: an L2 logistic regression on the standardised log-counts of every cell (scikit-learn).

For comparison, the stain counts' own tails (``CountHead`` fitted on the training folds, the same
L2 logistic regression). Binary cells only. The settings (5 bits, the top 10) were chosen on the
tuning cell ``ihc-nuclei-inside-0.5`` (crowded nuclei of a colour inside the IHC image's range),
before the held-out cells were run. Writes ``docs/weak_labels_colour_cells.md``.

    python benchmarks/colour_cells.py --cells ihc-nuclei-inside-0.5,cmu-giant-0.5,cmu-nuclei-0.25
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from weak_labels_matrix import CELLS, cell_data, slide_arguments  # noqa: E402

TOPS = (1, 3, 10)
CS = (0.01, 0.1)


def cell_counts(hists, bits: int) -> np.ndarray:
    """``log(1 + count)`` of each used colour cell of ``bits`` bits a channel -> (S, used cells)."""
    import torch

    from zoomin import counts
    X = counts.cell_counts(torch.cat([h.to_dense() for h in hists]), bits)  # (S, 2^(3 bits))
    return X[:, X.sum(0) > 0].numpy()


def scores(X: np.ndarray, y: np.ndarray, tails, repeats: int = 3) -> dict[str, float]:
    """Out-of-fold AUC of each method, averaged over the folds of ``repeats`` 4-fold splits; ``tails``:
    the training rows of a fold -> every row's stain-count tails (S, F), fitted on those rows."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold
    out: dict[str, list[float]] = {}
    for rep in range(repeats):
        for tr, te in StratifiedKFold(4, shuffle=True, random_state=rep).split(X, y):
            T = tails(tr)
            p = LogisticRegression(C=0.01, max_iter=3000).fit(T[tr], y[tr]).predict_proba(T[te])[:, 1]
            out.setdefault("tails, L2 C=0.01", []).append(roc_auc_score(y[te], p))
            Z = (X - X[tr].mean(0)) / (X[tr].std(0) + 1e-6)
            for c in CS:
                p = LogisticRegression(C=c, max_iter=3000).fit(Z[tr], y[tr]).predict_proba(Z[te])[:, 1]
                out.setdefault(f"cells, L2 C={c}", []).append(roc_auc_score(y[te], p))
            a, n = X[tr][y[tr] > 0], X[tr][y[tr] == 0]
            t = (a.mean(0) - n.mean(0)) / np.sqrt(a.var(0) / len(a) + n.var(0) / len(n) + 1e-9)  # Welch t per cell
            for k in TOPS:
                out.setdefault(f"cells, screen top {k}", []).append(roc_auc_score(y[te], X[te][:, np.argsort(-t)[:k]].sum(1)))
    return {k: float(np.mean(v)) for k, v in out.items()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", default="ihc-nuclei-inside-0.5,cmu-giant-0.5,cmu-nuclei-0.25")
    p.add_argument("--bits", default="4,5", help="colour-cell sizes, bits a channel, comma-separated")
    p.add_argument("--count-mpp", type=float, default=2.0)
    slide_arguments(p)
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "weak_labels_colour_cells.md"))
    args = p.parse_args(argv)
    import torch

    from zoomin.counts import CountHead
    from zoomin.doctor import histograms
    rows = []
    for name in args.cells.split(","):
        background, kinds, mpp, roi, _, role = CELLS[name]
        if len(kinds) != 1:
            raise SystemExit(f"--cells {name}: binary cells only")
        cfg, entries, y = cell_data(args, name)
        t0 = time.perf_counter()
        hists = histograms(entries, cfg, args.count_mpp)
        read_s = time.perf_counter() - t0

        fitted: dict[tuple, np.ndarray] = {}  # a fold's tails, fitted once for every cell size

        def tails(train):
            if tuple(train) not in fitted:
                head = CountHead(cfg.model.count_directions, 1)
                head.fit([hists[i] for i in train])
                fitted[tuple(train)] = torch.cat([head.features(h.to_dense()) for h in hists]).numpy()
            return fitted[tuple(train)]
        for bits in (int(b) for b in args.bits.split(",")):
            X = cell_counts(hists, bits)
            rows.append((name, role, bits, X.shape[1], scores(X, y, tails), read_s))
            print(f"{name} {bits} bits: " + ", ".join(f"{k} {v:.3f}" for k, v in rows[-1][4].items()), flush=True)
    command = "python benchmarks/colour_cells.py " + " ".join(argv if argv is not None else sys.argv[1:])
    keys = list(rows[0][4])
    lines = ["# Weak labels: counts of colour cells inside the tissue's range", "",
             f"Written by `{command}` (see its docstring): seed 0's {args.n} slides of {args.size:,}² per cell, the "
             f"foreground read at {args.count_mpp:g} µm/px. Out-of-fold AUC over three repeats of 4-fold "
             "cross-validation, the same folds for every column; no training run, no stage I.", "",
             "| cell | role | bits | cells used | " + " | ".join(keys) + " | read s |",
             "|---|---|---:|---:|" + "---:|" * len(keys) + "---:|"]
    lines += [f"| {n} | {r} | {b} | {u} | " + " | ".join(f"{s[k]:.3f}" for k in keys) + f" | {sec:.0f} |"
              for n, r, b, u, s, sec in rows]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
