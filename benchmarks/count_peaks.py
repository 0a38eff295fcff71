"""A probe, not in the package: would the stain counts rank held-out slides better with the count at
the densest place beside the slide's total?

The counts' features (``zoomin.counts``, method §10.6) are totals over the slide: ``log(1 + count)``
of its pixels beyond each tail and in each chosen colour cell. A lesion of a colour the tissue has
too (crowded nuclei) adds few pixels to a large total, but it adds them in one place. For each run
folder of ``benchmarks/weak_labels_matrix.py`` this reads every slide's tail pixels with the run's
fitted count head (``ZoomInNet.count_pass``: the count per stage-I location and colour bin), counts
each feature per stage-I location, and takes two sets of features:

* ``totals``: the head's own (``CountHead.tails``);
* ``peaks``: ``log(1 + count)`` at the location where each feature's count is largest;

then fits a logistic regression (scikit-learn, standardised features, C = 0.1) on the run's training
rows and reports the AUC on its held-out rows for the totals, the peaks and both, beside the run's
own count head (trained with the model) on the same rows.

    python benchmarks/count_peaks.py runs/wlm_tune/ihc-nuclei-inside-0.5/seed0 ... --out docs/count_peaks.md
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from weak_labels_matrix import runs_page  # noqa: E402

SETS = ("the run's head", "totals", "peaks", "totals + peaks")


def features(run: Path):
    """-> (totals (S, F), peaks (S, F), the run's head's logit differences (S,), labels, is-training) over
    the run's manifest."""
    from zoomin.checkpoint import load_model
    from zoomin.manifest import read_manifest
    from zoomin.predict import Slide, open_slide
    model, cfg = load_model(run / "run" / "checkpoint.pt")
    head = model.counts
    if head is None:
        raise ValueError(f"{run}: the model has no stain counts (model.count_mpp)")
    totals, peaks, own, y, train = [], [], [], [], []
    for e in read_manifest(run / "slides" / "manifest.csv", check_files=False):
        src = open_slide(model, cfg, Slide(e.slide_id, Path(e.path), e.mpp))
        with torch.no_grad():
            first = model.attend(src)
            hist, tail = model.count_pass(src, first.threshold, first.view_hw)  # tail: (T, 3) location, bin, count
            t = head.tails(hist)  # (1, F)
            lg = head.logits(head.standardise(t))[0]
        bins, inverse = torch.unique(tail[:, 1], return_inverse=True)
        per = torch.zeros(first.view_hw[0] * first.view_hw[1], t.shape[1])  # (L, F) each feature's count per location
        per.index_add_(0, tail[:, 0], head.beyond(bins)[inverse] * tail[:, 2:3].float())
        totals.append(t[0].numpy())
        peaks.append(torch.log1p(per.amax(0)).numpy())
        own.append(float(lg[1] - lg[0]) if len(lg) == 2 else float(lg[1:].max() - lg[0]))
        y.append(e.label)
        train.append(e.split != cfg.data.test_split)
    return np.array(totals), np.array(peaks), np.array(own), np.array(y), np.array(train)


def probe(run: Path) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    totals, peaks, own, y, train = features(run)
    y = (y > 0).astype(int)  # a lesion class against class 0
    out = {SETS[0]: roc_auc_score(y[~train], own[~train])}
    for name, x in zip(SETS[1:], (totals, peaks, np.concatenate([totals, peaks], 1))):
        mu, sd = x[train].mean(0), x[train].std(0) + 1e-3
        clf = LogisticRegression(C=0.1, max_iter=5000).fit((x[train] - mu) / sd, y[train])
        out[name] = roc_auc_score(y[~train], clf.predict_proba((x[~train] - mu) / sd)[:, 1])
    return out


def main(argv=None) -> int:
    return runs_page(argv, SETS, probe, "Stain counts at the densest place: a probe",
                     "held-out AUC of a logistic regression on each set of count features (the module's docstring "
                     "says which), fitted on the run's training rows; a lesion class against class 0.",
                     "docs/count_peaks.md")


if __name__ == "__main__":
    sys.exit(main())
