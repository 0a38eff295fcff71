"""Dense colour cells: does counting where a lesion's colour cells fill most of a neighbourhood
tell pale patches on real H&E, where their totals do not? A probe for issue #30; nothing of it is in
the package.

A pale patch on CMU-1 (``cmu-pale-0.5`` of ``benchmarks/weak_labels_matrix.py``) is a disc of
washed-out pink some 36 µm across; the H&E image has the same pinks in thin clefts between its
collagen fibres, so a slide's count of those colours, or their densest stage-I location
(``model.count_peaks``), does not separate the classes (``docs/weak_labels_doctor.md``: 0.52 ± 0.20).
What the clefts lack is width. For each (cell, seed) here, every slide is read as the counts read it
(the packaged ``slides.yaml``'s stage I for the tissue's filled outline, ``zoomin.counts.outline``;
the pixels inside it at ``--count-mpp``), binned into colour cells (``zoomin.counts.CELL_BITS``);
the ``--cells-per-class`` cells raised most on the training slides' positives are chosen as the
doctor chooses them (``zoomin.counts.screen_cells``, Welch t on ``log(1 + count)``), and each slide
gets, for its pixels in the chosen cells, ``log(1 + count)`` of:

* ``total``: all of them (what the counts' cell features see);
* ``w × w``: those at least half of whose ``w × w`` neighbourhood is in the chosen cells (``dense``;
  ``--share 1``: the whole square, the mask eroded by it).

Scored as it would be used: each feature's AUC on the cell's held-out slides (the matrix's test
split; the cells chosen on its training slides only). The windows were fixed before any run: 3 and
5 pixels of 2 µm fit inside the issue's smallest focus (ROI 0.005 % of a 4,096² slide in two foci,
11.6 µm across), 9 is one larger. The erosion first tried (``--share 1 --cells-per-class 10``) left
5 × 5 empty on the tuning cell ``ihc-pale-0.5`` seed 0 (the ten cells hold about a fifth of a
patch's pixels, scattered), so the half share and 40 cells were chosen there, on that seed only;
nothing was chosen on ``cmu-pale-0.5``, run once with them.

    python benchmarks/compact_cells.py --cells ihc-pale-0.5,synthetic-pale-0.5,cmu-pale-0.5 --seeds 0,1,2
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from weak_labels_matrix import CELLS, cell_data, slide_arguments  # noqa: E402


def dense(mask, w: int, share: float = 0.5):
    """Where at least ``share`` of the ``w x w`` square around a pixel of ``mask`` (h, w) bool is in
    it (outside the image: not in it) -> (h, w) bool; ``share`` 1: ``mask`` eroded by the square."""
    import torch
    import torch.nn.functional as F
    m = torch.as_tensor(mask, dtype=torch.float32)[None, None]
    return F.avg_pool2d(F.pad(m, [w // 2, (w - 1) // 2, w // 2, (w - 1) // 2]), w, stride=1)[0, 0] >= share - 1e-6


def slide_cells(src, model, count_mpp: float):
    """A slide's colour cell (``counts.CELL_BITS`` a channel) of each pixel of its count view, -1
    outside the tissue's filled outline -> (h, w) int32."""
    import torch

    from zoomin import counts
    from zoomin.geometry import view_size
    first = model.stage1(src)
    inside = counts.outline(first.fg, first.view_hw)[0]  # (L,) on the stage-I grid
    scale = model.cfg.mpp / count_mpp
    h, w = view_size(*src.size, scale)
    index, counted = counts.bin_index(src.view_rows(scale, 0, h))  # (1, h*w) colour bins, not padding
    keep = counted[0] & inside[counts.grid_cells(0, h, (h, w), first.view_hw)]
    return torch.where(keep, counts.cell_of(index[0]), -1).view(h, w).int().numpy()


def main() -> None:
    import torch

    from zoomin.counts import CELL_BITS, screen_cells
    from zoomin.doctor import sources
    from zoomin.evaluate import auc
    from zoomin.model import build_model
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", required=True, help="comma-separated binary cells of benchmarks/weak_labels_matrix.py")
    p.add_argument("--seeds", default="0")
    p.add_argument("--count-mpp", type=float, default=2.0)
    p.add_argument("--windows", default="3,5,9", help="squares, in count-view pixels")
    p.add_argument("--cells-per-class", type=int, default=40)
    p.add_argument("--share", type=float, default=0.5, help="share of a window in the chosen cells (1: erosion)")
    p.add_argument("--out", default="docs/compact_cells.md")
    slide_arguments(p)
    p.set_defaults(work="runs/weak_labels_matrix")
    args = p.parse_args()
    torch.set_num_threads(1)
    windows = [int(w) for w in args.windows.split(",")]
    names = ["total"] + [f"{w} × {w}" for w in windows]
    lines = ["# Dense colour cells (issue #30 probe)", "",
             f"Written by `python benchmarks/compact_cells.py {' '.join(sys.argv[1:])}` (its docstring says "
             f"what it does). Counts at {args.count_mpp:g} µm/px, inside the tissue's filled outline; "
             f"{args.cells_per_class} colour cells chosen on each run's training slides; AUC of each feature on "
             "its held-out slides (16 of 64, 4,096²).", "",
             "| cell | role | seed | " + " | ".join(f"AUC {n}" for n in names)
             + " | median pixels, negatives / positives (" + ", ".join(names) + ") | read s |",
             "|---|---|---:|" + "---:|" * len(names) + "---|---:|"]
    for name in args.cells.split(","):
        if len(CELLS[name][1]) != 1:
            raise SystemExit(f"{name}: a binary cell is needed")
        for seed in (int(s) for s in args.seeds.split(",")):
            cfg, entries, y = cell_data(args, name, seed)
            model = build_model(cfg.model)
            t0 = time.perf_counter()
            with torch.no_grad():
                maps = [slide_cells(src, model, args.count_mpp) for src in sources(entries, cfg)()]
            read = time.perf_counter() - t0
            n_cells = 2 ** (3 * CELL_BITS)
            x = torch.stack([torch.log1p(torch.bincount(torch.as_tensor(m[m >= 0]).long(), minlength=n_cells).double())
                             for m in maps])  # (S, cells)
            train = np.array([e.split != cfg.data.test_split for e in entries])
            chosen = screen_cells(x[train], torch.as_tensor(y[train]), args.cells_per_class, 1).numpy()
            feats = np.zeros((len(maps), len(names)))
            for i, m in enumerate(maps):
                member = np.isin(m, chosen)
                feats[i] = [np.log1p(member.sum())] + [np.log1p(dense(member, w, args.share).sum().item()) for w in windows]
            held = ~train
            aucs = [auc(torch.as_tensor(feats[held, j]), torch.as_tensor(y[held])) for j in range(len(names))]
            pix = [f"{np.median(np.expm1(feats[y == 0, j])):,.0f} / {np.median(np.expm1(feats[y > 0, j])):,.0f}"
                   for j in range(len(names))]
            lines.append(f"| {name} | {CELLS[name][5]} | {seed} | " + " | ".join(f"{a:.2f}" for a in aucs)
                         + f" | {'; '.join(pix)} | {read:.0f} |")
            print(lines[-1], flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
