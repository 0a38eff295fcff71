"""``zoomin predict``: class probabilities for slides, and per-slide attention heatmaps as a PNG
overlay, GeoJSON that QuPath opens, and a large-image (DSA) annotation JSON."""
from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import torch

from .trace import Trace


def heatmap_png(view: torch.Tensor, alpha: torch.Tensor, path: Path) -> None:
    """The stage-I view with the attention overlaid in red. view: (C, h, w); alpha: (h, w)."""
    from PIL import Image
    rgb = view.expand(3, -1, -1) if view.shape[0] == 1 else view[:3]
    a = (alpha / alpha.max().clamp(min=1e-12)).clamp(0, 1)
    red = torch.stack([torch.ones_like(a), torch.zeros_like(a), torch.zeros_like(a)])
    out = rgb * (1 - 0.6 * a) + red * 0.6 * a
    Image.fromarray((out.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(path)


def _cells(trace: Trace, keep: float = 0.95):
    """Stage-I cells carrying ``keep`` of the attention mass: (x, y, w, h) level-0 boxes and values."""
    alpha = trace.alpha[0]
    h, w = alpha.shape
    H, W = trace.image_size
    flat = alpha.flatten()
    order = flat.argsort(descending=True)
    n = int((flat[order].cumsum(0) < keep).sum()) + 1
    idx = order[:n]
    i, j = idx // w, idx % w
    ch, cw = H / h, W / w
    boxes = torch.stack([j * cw, i * ch, torch.full_like(j, cw, dtype=torch.float), torch.full_like(i, ch, dtype=torch.float)], 1)
    return boxes.tolist(), flat[idx].tolist()


def heatmap_geojson(trace: Trace, slide_id: str) -> dict:
    """Attention cells and the sampled sub-tiles as GeoJSON polygons (level-0 pixels), for QuPath."""
    def poly(x, y, w, h):
        return {"type": "Polygon", "coordinates": [[[x, y], [x + w, y], [x + w, y + h], [x, y + h], [x, y]]]}
    feats = []
    for (x, y, w, h), v in zip(*_cells(trace)):
        feats.append({"type": "Feature", "geometry": poly(x, y, w, h),
                      "properties": {"objectType": "annotation", "name": "attention",
                                     "measurements": {"alpha": v}, "classification": {"name": "Attention"}}})
    valid = trace.subtile_valid[0]
    for (x, y, w, h), wt in zip(trace.subtile_boxes[0][valid].tolist(), trace.weights[0][valid].tolist()):
        feats.append({"type": "Feature", "geometry": poly(x, y, w, h),
                      "properties": {"objectType": "annotation", "name": "sub-tile",
                                     "measurements": {"weight": wt}, "classification": {"name": "Sampled"}}})
    return {"type": "FeatureCollection", "features": feats, "properties": {"slide_id": slide_id}}


def heatmap_dsa(trace: Trace, slide_id: str) -> dict:
    """A large-image / Digital Slide Archive annotation: a heatmap of the attention and rectangles
    for the sampled sub-tiles."""
    (H, W), alpha = trace.image_size, trace.alpha[0]
    h, w = alpha.shape
    cells, values = _cells(trace)
    points = [[x + cw / 2, y + ch / 2, 0, v] for (x, y, cw, ch), v in zip(cells, values)]
    elements = [{"type": "heatmap", "points": points, "radius": max(H / h, W / w), "normalizeRange": True,
                 "label": {"value": "stage-I attention"}}]
    valid = trace.subtile_valid[0]
    for (x, y, bw, bh) in trace.subtile_boxes[0][valid].tolist():
        elements.append({"type": "rectangle", "center": [x + bw / 2, y + bh / 2, 0], "width": bw, "height": bh,
                         "rotation": 0, "lineColor": "rgb(0,160,0)", "label": {"value": "sub-tile"}})
    return {"name": f"zoomin attention {slide_id}", "elements": elements}


def predict(checkpoint: str | Path, inputs: list[str], out_csv: str | Path, heatmaps: str | Path | None = None,
            passes: int = 4, seed: int = 0, progress: bool = True) -> tuple[int, int]:
    """Predict every slide (files, or manifests ending in .csv); a slide that fails is reported on
    stderr and skipped, the rest are still written. Returns (written, failed)."""
    from tqdm.auto import tqdm

    from .manifest import read_manifest
    from .slides import SlideSource
    from .train import load_model
    model, cfg = load_model(checkpoint)
    slides: list[tuple[str, Path]] = []
    for item in inputs:
        if item.endswith(".csv"):
            slides += [(e.slide_id, e.path) for e in read_manifest(item, check_files=False)]
        else:
            slides.append((Path(item).stem, Path(item)))
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    if heatmaps:
        Path(heatmaps).mkdir(parents=True, exist_ok=True)
    classes = cfg.model.num_classes
    written = failed = 0
    gen = torch.Generator().manual_seed(seed)
    with open(out_csv, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["slide_id"] + [f"p_{c}" for c in range(classes)] + ["prediction"])
        for sid, path in tqdm(slides, desc="slides", disable=not progress):
            try:
                src = SlideSource(path, channels=cfg.model.in_channels)
                with torch.no_grad():
                    tr = model(src, generator=gen).detach()  # the first pass is also the one drawn
                    probs = tr.probs[0] + sum(model(src, generator=gen).probs[0] for _ in range(max(1, passes) - 1))
                probs = probs / max(1, passes)
            except (OSError, ValueError, RuntimeError) as e:
                print(f"zoomin: skipped {path}: {e}", file=sys.stderr)
                failed += 1
                continue
            w.writerow([sid] + [f"{p:.6f}" for p in probs.tolist()] + [int(probs.argmax())])
            fh.flush()
            written += 1
            if heatmaps:
                hdir = Path(heatmaps)
                heatmap_png(src.view(tr.scale1)[0], tr.alpha[0], hdir / f"{sid}.png")
                (hdir / f"{sid}.geojson").write_text(json.dumps(heatmap_geojson(tr, sid)))
                (hdir / f"{sid}.dsa.json").write_text(json.dumps(heatmap_dsa(tr, sid)))
    return written, failed
