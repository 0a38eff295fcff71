"""Do colour counts of a pooled view see lesions that differ by shape only? An experiment for
lesions of the tissue's own colours (giant or crowded nuclei), not a part of the package.

The stain counts (``zoomin.counts``) bin each pixel of the count view by colour, so a giant
nucleus of the tissue's own nuclear colour adds pixels to bins that normal nuclei fill anyway.
Pooling the view before binning turns shape into colour:

* ``max``: each 4 x 4 block's lightest value per channel (a grey-level erosion of the darkness):
  a block stays dark only inside a dark blob larger than the block, so the dark tail counts blobs
  by size;
* ``mean``: each block's mean colour: crowded nuclei darken their blocks, scattered ones do not;
* ``texture``: no colour at all: each foreground pixel's darkness (the mean optical density of its
  channels, glass and background 0) described at three sizes, one per channel: its lightest value
  over 5 x 5 and over 9 x 9 pixels (grey-level erosions: 10 and 18 µm at 2 µm/px, dark only inside
  a blob that large) and its Gaussian mean with a 3-pixel sigma (crowding), each mapped to
  ``255 - 120 x darkness``. The counts' directions then count pixels beyond the training tails of
  blob size, crowding and their contrasts. The three sizes were chosen on the two tuning cells
  (``ihc-giant-own-0.5``, ``synthetic-nuclei-own-0.25``) among five triples of sizes, before the
  held-out cells were run.

For each cell (``weak_labels_matrix.CELLS``, seed 0, all 64 slides), the slides' foreground is
binned at ``--count-mpp`` as training bins it (``ZoomInNet.count_pass``, the packaged
``slides.yaml``) with each pooling, and the counts' class separation is scored two ways: the
doctor's out-of-fold probe (``zoomin.doctor.count_probe``, the learnt head as training has it) and a
4-fold L2 logistic regression (scikit-learn, ``C = 0.01``) on the same standardised tail counts.
The tail thresholds are fitted on all slides of a cell (no label is used for them).

    python benchmarks/shape_counts.py --cells ihc-giant-own-0.5,synthetic-nuclei-own-0.25,cmu-giant-0.5,cmu-nuclei-0.25
"""
from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent))
from weak_labels_matrix import CELLS, cell_data, slide_arguments  # noqa: E402

BLOCK = 4  # pooled blocks: BLOCK x BLOCK count-view pixels


class Pooled:
    """A slide source whose count view is pooled ``mode`` ('max', 'mean' or 'none') over blocks of
    ``BLOCK`` pixels; blocks reaching outside the slide are dropped (0, not counted)."""

    def __init__(self, src, mode: str, threshold=None, kind: str = "otsu"):
        self.src, self.mode, self.threshold, self.kind = src, mode, threshold, kind

    def __getattr__(self, name):
        return getattr(self.src, name)

    def view_rows(self, scale, r0, r1):
        import torch
        import torch.nn.functional as F
        px = self.src.view_rows(scale, r0, r1)  # (B, 3, rows, w) uint8
        if self.mode == "none":
            return px
        if self.mode == "texture":
            return texture(px, self.threshold, self.kind)
        inside = (px.amax(1, keepdim=True) > 0).float()
        whole = -F.max_pool2d(-inside, BLOCK, ceil_mode=True)  # 1 where the whole block is on the slide
        if self.mode == "max":
            out = F.max_pool2d(px.float(), BLOCK, ceil_mode=True)
        else:
            out = F.avg_pool2d(px.float() * inside, BLOCK, ceil_mode=True) / \
                F.avg_pool2d(inside, BLOCK, ceil_mode=True).clamp(min=1e-6)
        return (out.round().clamp(0, 255) * whole).to(torch.uint8)


def gaussian(x, sigma: float):
    """``x`` (B, 1, h, w) blurred by a Gaussian of ``sigma`` pixels (edges replicated)."""
    import torch
    import torch.nn.functional as F
    r = int(3 * sigma + 0.5)
    k = torch.exp(-torch.arange(-r, r + 1, dtype=torch.float32) ** 2 / (2 * sigma**2))
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1))


def texture(px, threshold, kind: str):
    """The ``texture`` mode's image: uint8 (B, 3, h, w) -> uint8 (B, 3, h, w); pixels outside the
    foreground (stage I's ``threshold``) 0, so not counted."""
    import torch
    import torch.nn.functional as F

    from zoomin import counts, foreground
    B, _, h, w = px.shape
    fg = foreground.raw_mask(px.float() / 255, threshold, kind).view(B, 1, h, w)
    d = counts.optical_density(px.float().permute(0, 2, 3, 1)).mean(-1, keepdim=True).permute(0, 3, 1, 2) * fg
    smooth = gaussian(d, 0.7)
    erode = lambda n: -F.max_pool2d(-smooth, n, 1, n // 2)  # noqa: E731  lightest over n x n
    out = torch.cat([erode(5), erode(9), gaussian(d, 3)], 1)
    return ((255 - out * 120).round().clamp(1, 255) * fg).to(torch.uint8)


def histograms(entries, cfg, mode: str) -> list:
    """Each slide's foreground colour histogram (1, bins) of its count view pooled ``mode``."""
    from zoomin.model import build_model
    from zoomin.slides import SlideSource
    net = build_model(cfg.model)
    out = []
    for e in entries:
        src = SlideSource(e.path, channels=3, max_pixels=cfg.data.max_pixels, mpp=cfg.model.mpp, manifest_mpp=e.mpp)
        threshold = net.attend(src).threshold
        if mode == "texture":  # the foreground is cut in the image itself: its bins are no colours
            out.append(net.count_pass(Pooled(src, mode, threshold, cfg.model.foreground), None)[0].to_sparse())
        else:
            out.append(net.count_pass(Pooled(src, mode), threshold)[0].to_sparse())
    return out


def logistic_auc(hists, y, num_classes: int) -> float:
    """4-fold L2 logistic regression on the standardised tail counts -> out-of-fold AUC."""
    import torch
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from zoomin.counts import CountHead
    from zoomin.doctor import auc_of
    from zoomin.evidence import evidence_channels
    head = CountHead(64, evidence_channels(num_classes))
    head.fit(hists)
    X = torch.cat([head.features(h.to_dense()) for h in hists]).numpy()
    probs = cross_val_predict(LogisticRegression(C=0.01, max_iter=2000), X, y,
                              cv=StratifiedKFold(4, shuffle=True, random_state=0), method="predict_proba")
    return auc_of(probs, y)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cells", default="ihc-giant-own-0.5,synthetic-nuclei-own-0.25,cmu-giant-0.5,cmu-nuclei-0.25")
    p.add_argument("--modes", default="none,max,mean,texture")
    p.add_argument("--count-mpp", type=float, default=2.0)
    slide_arguments(p)
    p.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "weak_labels_shape.md"))
    args = p.parse_args(argv)
    from zoomin.doctor import count_probe
    rows = []
    for name in args.cells.split(","):
        background, kinds, mpp, roi, _, role = CELLS[name]
        cfg, entries, y = cell_data(args, name)
        cfg = replace(cfg, model=replace(cfg.model, count_mpp=args.count_mpp))
        for mode in args.modes.split(","):
            t0 = time.perf_counter()
            hists = histograms(entries, cfg, mode)
            rows.append((name, role, mode, count_probe(hists, y, cfg), logistic_auc(hists, y, len(kinds) + 1),
                         time.perf_counter() - t0))
            print(f"{name} {mode}: probe AUC {rows[-1][3]:.3f}, logistic AUC {rows[-1][4]:.3f}", flush=True)
    command = "python benchmarks/shape_counts.py " + " ".join(argv if argv is not None else sys.argv[1:])
    lines = ["# Weak labels: colour counts of a pooled view against shape-only lesions", "",
             f"Written by `{command}` (see its docstring): seed 0's {args.n} slides of {args.size:,}² per cell, "
             f"counted at {args.count_mpp:g} µm/px, pooled over {BLOCK} x {BLOCK} blocks before binning (`texture`: "
             "binned by darkness at three sizes instead of colour). Out-of-fold "
             "AUC of the doctor's count probe and of a 4-fold L2 logistic regression on the same counts.", "",
             "| cell | role | pooling | probe AUC | logistic AUC | seconds |", "|---|---|---|---:|---:|---:|"]
    lines += [f"| {n} | {r} | {m} | {a:.3f} | {b:.3f} | {s:.0f} |" for n, r, m, a, b, s in rows]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
