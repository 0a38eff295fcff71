"""How findable are a slide set's lesions in the stage-I view, before any learning?

    python benchmarks/lesion_salience.py runs/weak_labels/seed0/slides runs/weak_labels_8k/seed0/slides \\
        runs/weak_labels_16k/seed0/slides [--stage1-mpp 16] [--out docs]

For every positive slide with outlines in each folder's manifest, the stage-I view of the packaged
``slides.yaml`` (read at ``model.mpp``, viewed at ``--stage1-mpp``) is standardised over its tissue
as the model's attention nets see it, and two fixed scores rank every tissue location:

* ``dark``: minus the channel mean, averaged over a w x w window of view pixels;
* ``outlier``: ``zoomin.evidence.outlier_score``, what ``model.evidence_prior`` adds to the
  stage-I evidence: the norm over channels of the window-averaged standardised view (any
  appearance that differs from the slide's tissue: dark nuclei, a stain shift).

The lesion's best rank (``zoomin.evidence.roi_attention``; 1 = the top location is in a lesion)
says how far a lesion stands out of its slide's own tissue at stage I, the ceiling a
learning-free draw would have. It measures the data generator, not a model: it explains why the
weak-label benchmark passes at 4,096² / ROI 0.05% and fails at ROI 0.01% (docs/guide_slides.md, "Learning from
slide labels alone"). Writes ``docs/lesion_salience.md``.
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from report import table

WINDOWS = (1, 3, 5)


def scores(x: torch.Tensor, fg: torch.Tensor, window: int) -> dict[str, torch.Tensor]:
    """x: (C, h, w) standardised view; fg: (h, w) bool -> {score name: (h*w,)}."""
    from zoomin.evidence import outlier_score
    xs = F.avg_pool2d(x[None], window, 1, window // 2, count_include_pad=False)[0]  # (C, h, w)
    return {"dark": -xs.mean(0).flatten(), "outlier": outlier_score(x[None], window, fg[None]).flatten()}


def folder_rows(folder: Path, stage1_mpp: float) -> list[dict]:
    from zoomin import foreground
    from zoomin.annotations import MaskSource
    from zoomin.cli import _packaged_config
    from zoomin.evidence import roi_attention, standardise
    from zoomin.slides import SlideSource
    cfg = _packaged_config("slides.yaml").model
    scale = cfg.mpp / stage1_mpp
    ranks: dict[tuple[str, int], list[int]] = {}
    sizes, fg_locs, lesion_px = set(), [], []
    for row in csv.DictReader(open(folder / "manifest.csv")):
        if int(row["label"]) != 1 or not row.get("annotation"):
            continue
        src = SlideSource(folder / row["path"], mpp=cfg.mpp)
        view = src.view(scale)  # (1, C, h, w)
        fg = foreground.mask(view, foreground.fit(view, cfg.foreground), cfg.foreground)  # (1, L)
        x = standardise(view, fg)[0][0].float()  # (C, h, w)
        roi = MaskSource(folder / row["annotation"], src.size, 1 / src.k).view(scale).flatten(1) > 0  # (1, L)
        roi &= fg
        if not roi.any():
            continue
        sizes.add(src.size)
        fg_locs.append(int(fg.sum()))
        lesion_px.append(int(roi.sum()))
        for w in WINDOWS:
            for name, s in scores(x, fg[0].view(x.shape[1:]), w).items():
                s = s.masked_fill(~fg[0], -float("inf"))
                ranks.setdefault((name, w), []).append(int(roi_attention(s[None], roi)[1]))
    rows = []
    for (name, w), r in sorted(ranks.items()):
        r = np.array(r)
        rows.append({"slides": folder.as_posix(), "size": "/".join(f"{max(s):,}" for s in sorted(sizes)),
                     "positives": len(r), "tissue locations (median)": int(np.median(fg_locs)),
                     "lesion locations (median)": int(np.median(lesion_px)), "score": name,
                     "window (view px)": w, "median best rank": int(np.median(r)),
                     "rank <= 10": f"{np.mean(r <= 10):.0%}", "rank <= 100": f"{np.mean(r <= 100):.0%}"})
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", help="synth-slides output folders (manifest.csv with annotations)")
    p.add_argument("--stage1-mpp", type=float, default=0.0, help="stage-I view resolution (default: slides.yaml's)")
    p.add_argument("--out", default="docs")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    if not a.stage1_mpp:
        from zoomin.cli import _packaged_config
        a.stage1_mpp = _packaged_config("slides.yaml").model.view_mpp(1)
    rows = [r for f in a.folders for r in folder_rows(Path(f), a.stage1_mpp)]
    cmd = "python benchmarks/lesion_salience.py " + " ".join(a.folders) + f" --stage1-mpp {a.stage1_mpp:g}"
    text = "\n".join([f"# Lesion salience in the stage-I view ({a.stage1_mpp:g} µm/px)", "", f"`{cmd}`", "",
                      __doc__.split("\n\n", 2)[2].strip(), "", table(pd.DataFrame(rows)), ""])
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "lesion_salience.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
