"""Do a weak-label cell's lesions carry a colour of their own, where the stain counts miss them?
A hand-made colour count, no learning: it knows the colour the generator paints a lesion kind with
(``zoomin.tissue_slides.LESIONS``), which no model is told.

The slides of each ``benchmarks/weak_labels_matrix.py`` cell are read as training reads them
(``zoomin.doctor.views``: the packaged ``model.mpp``, each row's ``mpp``) at each resolution asked
for, and a slide's score is how many of its view pixels lie within ``radius`` (RGB, 8-bit) of the
painted colour, ranked against the labels (ROC AUC). With ``--core K`` also the pixels whose whole
K x K neighbourhood is that close (a blob at least K pixels across).

What it says: whether a cell the counts do not learn (``docs/weak_labels_doctor.md``) is out of
reach of colour (the count is at chance too) or only of the counts' tails (the count separates:
the lesion colour lies inside the tissue's own range, where no tail reaches). Writes
``docs/weak_labels_colour_oracle.md``.

    python benchmarks/colour_oracle.py --cells cmu-giant-0.5,cmu-nuclei-0.25 --view-mpp 2,1
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from weak_labels_matrix import CELLS, cell_data, slide_arguments  # noqa: E402


def painted(kind: str) -> np.ndarray:
    """The RGB (3,) the generator paints lesions of ``kind`` with (a kind with a colour of its own)."""
    from zoomin.tissue_slides import LESIONS
    colour = LESIONS[kind][2]
    if colour is None:
        raise SystemExit(f"lesions {kind!r} are painted in each slide's own colour: no colour of their own to count")
    return np.asarray(colour, np.float32)


def counts(views, colour: np.ndarray, radii: list[float], cores: list[int]) -> dict[tuple[float, int], list[float]]:
    """Each view's pixels within each radius of ``radii`` of ``colour``, for each ``core`` of ``cores``
    the pixels whose whole ``core`` x ``core`` neighbourhood is (1: each pixel alone) -> {(radius,
    core): one count a view}; each view's distances to the colour computed once."""
    import torch
    import torch.nn.functional as F
    out: dict[tuple[float, int], list[float]] = {(r, k): [] for r in radii for k in cores}
    for v in views:
        distance = (v.float() - torch.as_tensor(colour).view(1, 3, 1, 1)).norm(dim=1, keepdim=True)  # (1, 1, h, w)
        for r in radii:
            near = (distance < r).float()
            for k in cores:
                out[(r, k)].append(float((-F.max_pool2d(-near, k, 1, k // 2) if k > 1 else near).sum()))
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", default="cmu-giant-0.5,cmu-nuclei-0.25")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--view-mpp", default="2,1", help="view resolutions to try, µm/px, comma-separated")
    p.add_argument("--radius", default="20,30", help="RGB distances to the painted colour, comma-separated")
    p.add_argument("--core", type=int, default=3, help="also count blob cores this many pixels across (1: not)")
    slide_arguments(p)
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "weak_labels_colour_oracle.md"))
    args = p.parse_args(argv)
    from sklearn.metrics import roc_auc_score

    from zoomin.doctor import views
    radii = [float(r) for r in args.radius.split(",")]
    cores = [1] + ([args.core] if args.core > 1 else [])
    rows = []
    for name in args.cells.split(","):
        background, kinds, mpp, roi, distractors, role = CELLS[name]
        if len(kinds) != 1 or kinds[0] == "pale":  # pale: a wash over the tissue, no cells
            raise SystemExit(f"--cells {name}: the colour count is for one kind of painted cells against negatives")
        cfg, entries, y = cell_data(args, name, args.seed)
        for view_mpp in (float(a) for a in args.view_mpp.split(",")):
            t0 = time.perf_counter()
            vs = views(entries, cfg, view_mpp)
            aucs = {key: roc_auc_score(y, c) for key, c in counts(vs, painted(kinds[0]), radii, cores).items()}
            rows.append((name, role, view_mpp, aucs, time.perf_counter() - t0))
            print(f"{name} {view_mpp:g} µm/px: " + ", ".join(f"r{r:g} core{k} {a:.3f}" for (r, k), a in aucs.items()),
                  flush=True)
    command = "python benchmarks/colour_oracle.py " + " ".join(argv if argv is not None else sys.argv[1:])
    keys = list(rows[0][3])
    lines = ["# Weak labels: do the lesions carry a colour of their own?", "",
             f"Written by `{command}`: seed {args.seed}, all {args.n} slides of {args.size:,}² of each cell, read as "
             "`zoomin train` reads them. No learning: a slide's count of view pixels within an RGB distance of the "
             "colour the generator paints its lesions with (which no model is told), ranked against the labels "
             "(ROC AUC); core K: only pixels whose whole K x K neighbourhood is that close.", "",
             "| cell | role | view µm/px | " + " | ".join(f"AUC, within {r:g}" + (f", core {k}" if k > 1 else "")
                                                     for r, k in keys) + " | seconds |",
             "|---|---|---:|" + "---:|" * len(keys) + "---:|"]
    for name, role, view_mpp, aucs, sec in rows:
        lines.append(f"| {name} | {role} | {view_mpp:g} | " + " | ".join(f"{aucs[k]:.3f}" for k in keys) + f" | {sec:.0f} |")
    lines += ["", "What the counts and the learnt probes reach on the same cells: "
              "[weak_labels_real_tissue.md](weak_labels_real_tissue.md)."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
