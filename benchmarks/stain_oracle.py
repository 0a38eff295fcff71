"""Are a weak-label cell's classes separable at all, and at what resolution? A hand-made stain
count, no learning: the slides of one ``benchmarks/weak_labels_matrix.py`` cell are read as
training reads them (``zoomin.doctor.views``: the packaged ``model.mpp``, each row's ``mpp``) at
each resolution asked for, each view pixel is unmixed into haematoxylin / eosin / DAB optical
densities (scikit-image's ``rgb2hed``), and two slide scores are ranked against the labels:

* count: how many of the slide's view pixels have a DAB density above a threshold shared by all
  slides (a quantile of every slide's pixels pooled, so the threshold is not fitted per label);
* max: the slide's largest DAB density.

What it says: the resolution (if any) at which the lesions of a cell are visible to a stain count,
the bar a learnt stage I should reach there. Writes ``docs/weak_labels_oracle.md``.

    python benchmarks/stain_oracle.py --cell cmu-dab-0.5 --seed 0 --view-mpp 4,2,1
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from weak_labels_matrix import CELLS, cell_data, slide_arguments  # noqa: E402

QUANTILES = (0.999, 0.9999)


def dab(view) -> np.ndarray:
    """DAB optical density (h, w) of a stage-I view (1, 3, h, w) uint8."""
    from skimage.color import rgb2hed
    rgb = view[0].permute(1, 2, 0).numpy().astype(np.float32) / 255.0
    return rgb2hed(rgb)[..., 2]


def scores(densities: list[np.ndarray]) -> dict[str, list[float]]:
    """Each slide's count above each pooled quantile, and its max."""
    pooled = np.concatenate([d.ravel() for d in densities])
    out = {f"count > q{q}": [float((d > t).sum()) for d in densities]
           for q, t in zip(QUANTILES, np.quantile(pooled, QUANTILES))}
    out["max"] = [float(d.max()) for d in densities]
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cell", default="cmu-dab-0.5", choices=sorted(CELLS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--view-mpp", default="4,2,1", help="view resolutions to try, µm/px, comma-separated")
    slide_arguments(p)
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "weak_labels_oracle.md"))
    args = p.parse_args(argv)
    from sklearn.metrics import roc_auc_score

    from zoomin.doctor import views
    background, kinds, mpp, roi, distractors, role = CELLS[args.cell]
    if len(kinds) != 1 or kinds[0] != "dab":
        raise SystemExit(f"--cell {args.cell}: the stain count is for DAB foci against negatives (a 'dab' cell)")
    cfg, entries, y = cell_data(args, args.cell, args.seed)
    rows = []
    for view_mpp in (float(a) for a in args.view_mpp.split(",")):
        t0 = time.perf_counter()
        vs = views(entries, cfg, view_mpp)
        s = scores([dab(v) for v in vs])
        rows.append((view_mpp, tuple(vs[0].shape[-2:]), {k: roc_auc_score(y, v) for k, v in s.items()},
                     time.perf_counter() - t0))
        print(f"{view_mpp:g} µm/px: " + ", ".join(f"{k} AUC {a:.3f}" for k, a in rows[-1][2].items()), flush=True)
    command = "python benchmarks/stain_oracle.py " + " ".join(argv if argv is not None else sys.argv[1:])
    keys = list(rows[0][2])
    lines = ["# Weak labels: is the cell separable by a stain count?", "",
             f"Written by `{command}`: cell `{args.cell}` ({role}; {background} background, {'+'.join(kinds)} foci, "
             f"{mpp:g} µm/px scans, ROI {roi * 100:.3g}%, {distractors} distractor cells a slide), seed {args.seed}, "
             f"all {len(y)} slides ({int((y > 0).sum())} with foci), read as `zoomin train` reads them. No learning: each "
             "view pixel's DAB optical density (scikit-image `rgb2hed`), then a count above a quantile of all slides' "
             "pixels pooled, or the slide's maximum, ranked against the labels (ROC AUC).", "",
             "| view µm/px | view (first slide) | " + " | ".join(f"AUC, {k}" for k in keys) + " | seconds |",
             "|---:|---|" + "---:|" * len(keys) + "---:|"]
    for view_mpp, hw, aucs, sec in rows:
        lines.append(f"| {view_mpp:g} | {hw[0]} x {hw[1]} | " + " | ".join(f"{aucs[k]:.3f}" for k in keys) + f" | {sec:.0f} |")
    lines += ["", "The learnt probes run on the same slides are in [weak_labels_real_tissue.md](weak_labels_real_tissue.md)."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
