"""Where the stain counts count: at which µm/px, and over which pixels. The experiment behind the
doctor's count candidates (``zoomin.doctor.COUNT_CANDIDATES``: 2 and 1 µm/px) and
``model.count_filled`` (every pixel inside the tissue's filled outline, ``zoomin.counts.outline``).

For each cell (seed 0 of ``benchmarks/weak_labels_matrix.py``'s slides, its 48 training slides
only), the colour histograms are read as training reads them (``zoomin.doctor.histograms``) at each
``--count-mpp``, over the foreground's colours and over the filled outline, and the doctor's own
count probe (``zoomin.doctor.count_probe``: per fold, the count head fitted and trained on one
half, scored on the other) gives the out-of-fold AUC of each of the doctor's feature sets
(``zoomin.doctor.count_features``; the peaks read the slides again per fold), for two fold draws (``--fold-seeds``). Writes ``docs/count_where.md``.

    python benchmarks/count_where.py --cells ihc-pale-0.5,synthetic-pale-0.5,ihc-nuclei-inside-0.5,ihc-nuclei-inside-0.25
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from weak_labels_matrix import CELLS, cell_data, slide_arguments  # noqa: E402


def main() -> None:
    import torch

    from zoomin.doctor import count_features, count_probe, histograms, sources
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", required=True, help="comma-separated cell names of benchmarks/weak_labels_matrix.py")
    p.add_argument("--count-mpp", default="2,1", help="µm per pixel the counts are read at")
    p.add_argument("--fold-seeds", default="0,1")
    p.add_argument("--out", default="docs/count_where.md")
    slide_arguments(p)
    p.set_defaults(work="runs/wlm_tune")
    args = p.parse_args()
    torch.set_num_threads(1)
    seeds = [int(s) for s in args.fold_seeds.split(",")]
    sets = ["tails", "tails + 10 cells", "10 cells", "10 cells + peaks"]
    lines = ["# Where the stain counts count", "",
             f"Written by `python benchmarks/count_where.py {' '.join(sys.argv[1:])}`: seed 0's training slides of "
             "each cell (48 of 64, 4,096²), read as training reads them; out-of-fold AUC of the doctor's count probe "
             f"(`zoomin.doctor.count_probe`) for fold draws {', '.join(map(str, seeds))}; \"filled\": every pixel inside "
             "the tissue's filled outline is counted (`model.count_filled`), else the foreground's colours only.", "",
             "| cell | role | counts at µm/px | pixels counted | " + " | ".join(sets) + " | read s |",
             "|---|---|---:|---|" + "---|" * len(sets) + "---:|"]
    for name in args.cells.split(","):
        cfg, entries, y = cell_data(args, name)
        train = [e for e in entries if e.split != cfg.data.test_split]
        yt = np.array([e.label for e in train])
        for mpp in (float(c) for c in args.count_mpp.split(",")):
            for filled in (False, True):
                t0 = time.perf_counter()
                hists = histograms(train, cfg, mpp, filled)
                read = time.perf_counter() - t0
                aucs = []
                for d, c, peaks in count_features(cfg.model):
                    m = replace(cfg.model, count_mpp=mpp, count_filled=filled, count_directions=d, count_cells=c,
                                count_peaks=peaks)
                    aucs.append(" / ".join(f"{count_probe(hists, yt, replace(cfg, model=m), seed=s, reread=sources(train, cfg)):.2f}"
                                           for s in seeds))
                lines.append(f"| {name} | {CELLS[name][5]} | {mpp:g} | {'filled' if filled else 'colours'} | "
                             + " | ".join(aucs) + f" | {read:.0f} |")
                print(lines[-1], flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
