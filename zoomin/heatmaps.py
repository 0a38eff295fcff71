"""Per-slide exports of a prediction's trace: the stage-I attention as a PNG overlay, attention cells
and sampled sub-tiles as GeoJSON that QuPath opens, and a large-image / Digital Slide Archive
annotation JSON, all in the file's level-0 pixels."""
from __future__ import annotations

import json
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


def _cells(trace: Trace, keep: float = 0.95, scale: float = 1.0):
    """Stage-I cells carrying ``keep`` of the attention mass: (x, y, w, h) level-0 boxes (times ``scale``)
    and values."""
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
    return (boxes * scale).tolist(), flat[idx].tolist()


def heatmap_geojson(trace: Trace, slide_id: str, scale: float = 1.0) -> dict:
    """Attention cells and the sampled sub-tiles as GeoJSON polygons in the file's level-0 pixels, for
    QuPath (``scale``: file pixels per pixel of the trace, ``SlideSource.k`` under physical units)."""
    from .geojson import box_rings, feature_collection, polygon_feature

    def rings(xywh) -> np.ndarray:  # (boxes, 4) level-0 (x, y, w, h) -> (boxes, 4, 2) corners
        b = np.asarray(xywh, float).reshape(-1, 4)
        return box_rings(np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], 1))
    cells, alphas = _cells(trace, scale=scale)
    feats = [polygon_feature(r, "Attention", name="attention", measurements={"alpha": v})
             for r, v in zip(rings(cells), alphas)]
    valid = trace.subtile_valid[0]
    feats += [polygon_feature(r, "Sampled", name="sub-tile", measurements={"weight": wt})
              for r, wt in zip(rings((trace.subtile_boxes[0][valid] * scale).tolist()), trace.weights[0][valid].tolist())]
    return feature_collection(feats, slide_id=slide_id)


def heatmap_dsa(trace: Trace, slide_id: str, scale: float = 1.0) -> dict:
    """A large-image / Digital Slide Archive annotation in the file's level-0 pixels: a heatmap of the
    attention and rectangles for the sampled sub-tiles (``scale`` as in ``heatmap_geojson``)."""
    (H, W), alpha = trace.image_size, trace.alpha[0]
    h, w = alpha.shape
    cells, values = _cells(trace, scale=scale)
    points = [[x + cw / 2, y + ch / 2, 0, v] for (x, y, cw, ch), v in zip(cells, values)]
    elements = [{"type": "heatmap", "points": points, "radius": max(H / h, W / w) * scale, "normalizeRange": True,
                 "label": {"value": "stage-I attention"}}]
    valid = trace.subtile_valid[0]
    for (x, y, bw, bh) in (trace.subtile_boxes[0][valid] * scale).tolist():
        elements.append({"type": "rectangle", "center": [x + bw / 2, y + bh / 2, 0], "width": bw, "height": bh,
                         "rotation": 0, "lineColor": "rgb(0,160,0)", "label": {"value": "sub-tile"}})
    return {"name": f"zoomin attention {slide_id}", "elements": elements}


def write_heatmaps(folder: Path, slide_id: str, src, tr: Trace) -> None:
    heatmap_png(src.view(tr.scale1)[0], tr.alpha[0], folder / f"{slide_id}.png")
    k = getattr(src, "k", 1.0)  # the file's pixels per source pixel: QuPath and DSA read the file
    (folder / f"{slide_id}.geojson").write_text(json.dumps(heatmap_geojson(tr, slide_id, k)))
    (folder / f"{slide_id}.dsa.json").write_text(json.dumps(heatmap_dsa(tr, slide_id, k)))
