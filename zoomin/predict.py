"""``zoomin predict``: class probabilities for slides, and per-slide attention heatmaps as a PNG
overlay, GeoJSON that QuPath opens, and a large-image (DSA) annotation JSON."""
from __future__ import annotations

import csv
import json
import os
import sys
import zlib
from pathlib import Path

import numpy as np
import torch

from . import distributed
from .evaluate import average_passes
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
    from .geojson import box_rings, feature_collection, polygon_feature

    def rings(xywh) -> np.ndarray:  # (K, 4) level-0 (x, y, w, h) -> (K, 4, 2) corners
        b = np.asarray(xywh, float).reshape(-1, 4)
        return box_rings(np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], 1))
    cells, alphas = _cells(trace)
    feats = [polygon_feature(r, "Attention", name="attention", measurements={"alpha": v})
             for r, v in zip(rings(cells), alphas)]
    valid = trace.subtile_valid[0]
    feats += [polygon_feature(r, "Sampled", name="sub-tile", measurements={"weight": wt})
              for r, wt in zip(rings(trace.subtile_boxes[0][valid].tolist()), trace.weights[0][valid].tolist())]
    return feature_collection(feats, slide_id=slide_id)


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


def list_slides(inputs: list[str]) -> list[tuple[str, Path]]:
    """(slide_id, path) for every input: slide files, and the rows of manifests ending in .csv."""
    from .manifest import read_manifest
    slides: list[tuple[str, Path]] = []
    for item in inputs:
        if item.endswith(".csv"):
            slides += [(e.slide_id, e.path) for e in read_manifest(item, check_files=False)]
        else:
            slides.append((Path(item).stem, Path(item)))
    return slides


def slide_generator(seed: int, slide_id: str) -> torch.Generator:
    """The sampling generator of one slide: a function of (seed, slide_id) only, so a slide's
    prediction does not depend on the other slides, their order, or how they are sharded."""
    return torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(slide_id.encode()))


def predict_slide(model, cfg, path: Path, slide_id: str, passes: int, seed: int, max_pixels: int = 0):
    """-> (probabilities (classes,), the first pass's trace, the source); a problem with the slide
    is a one-line ``ValueError``/``OSError`` naming it."""
    from .slides import SlideSource
    src = SlideSource(path, channels=cfg.model.in_channels, max_pixels=max_pixels or cfg.data.max_pixels)
    probs, (tr,) = average_passes(model, src, passes=passes, generator=slide_generator(seed, slide_id))
    probs, tr = probs[0], tr.detach()  # (classes,); the first pass is also the one drawn
    if not torch.isfinite(probs).all():
        raise ValueError(f"{path}: the model's output is not finite")
    return probs, tr, src


def write_heatmaps(folder: Path, slide_id: str, src, tr: Trace) -> None:
    heatmap_png(src.view(tr.scale1)[0], tr.alpha[0], folder / f"{slide_id}.png")
    (folder / f"{slide_id}.geojson").write_text(json.dumps(heatmap_geojson(tr, slide_id)))
    (folder / f"{slide_id}.dsa.json").write_text(json.dumps(heatmap_dsa(tr, slide_id)))


def write_explorer(folder: Path, slide_id: str, model, src, seed: int) -> Path:
    """One offline explorer HTML for the slide: a pass with the contrastive negatives, drawn from
    the slide's own generator (so it does not change the predictions)."""
    from .viz import Explorer
    with torch.no_grad():
        tr = model(src, negatives=True, generator=slide_generator(seed, slide_id)).detach()
    return Explorer(tr, src, title=slide_id).save(folder / f"{slide_id}.html")


def predict(checkpoint: str | Path, inputs: list[str], out_csv: str | Path, heatmaps: str | Path | None = None,
            passes: int = 4, seed: int = 0, progress: bool = True, max_pixels: int = 0,
            explore: str | Path | None = None) -> tuple[int, int]:
    """Predict every slide (files, or manifests ending in .csv); a slide that fails is reported on
    stderr and skipped, the rest are still written. Under torchrun each rank predicts every
    ``world``-th slide and rank 0 merges the parts into ``out_csv`` in input order.
    Returns (written, failed) over all ranks."""
    from .checkpoint import load_model
    model, cfg = load_model(checkpoint)
    slides = list_slides(inputs)
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    if explore:
        try:
            import zoomin.viz.explorer  # noqa: F401  (fail before any slide is read, not on the first one)
        except ImportError as e:
            raise RuntimeError(f"--explore needs the 'viz' extra: pip install 'zoomin[viz]' ({e.name} is missing)") from None
    for folder in (heatmaps, explore):
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
    distributed.init("cpu")
    rank, world = distributed.rank_and_world()
    part = out_csv if world == 1 else out_csv.with_name(f"{out_csv.name}.part{rank}")
    mine = list(enumerate(slides))[rank::world]
    written, failed = _predict_into(model, cfg, mine, part, world > 1, heatmaps, passes, seed, max_pixels, progress,
                                    explore)
    if world > 1:
        written, failed = (int(v) for v in distributed.all_sum([written, failed]))
        distributed.barrier()
        if rank == 0:
            merge_parts(out_csv, world)
        distributed.barrier()
    return written, failed


def _predict_into(model, cfg, slides, out_csv: Path, index_column: bool, heatmaps, passes, seed, max_pixels,
                  progress, explore=None) -> tuple[int, int]:
    """Predict ``slides`` [(index, (slide_id, path))] into ``out_csv``, a row as soon as it is known."""
    from tqdm.auto import tqdm
    header = ["slide_id"] + [f"p_{c}" for c in range(cfg.model.num_classes)] + ["prediction"]
    written = failed = 0
    with open(out_csv, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow((["_index"] if index_column else []) + header)
        for i, (sid, path) in tqdm(slides, desc="slides", disable=not progress):
            try:
                probs, tr, src = predict_slide(model, cfg, path, sid, passes, seed, max_pixels)
            except (OSError, ValueError, RuntimeError) as e:
                print(f"zoomin: skipped {path}: {_one_line(e, path)}", file=sys.stderr)
                failed += 1
                continue
            w.writerow(([i] if index_column else []) + [sid] + [f"{p:.6f}" for p in probs.tolist()]
                       + [int(probs.argmax())])
            fh.flush()
            written += 1
            try:
                if heatmaps:
                    write_heatmaps(Path(heatmaps), sid, src, tr)
                if explore:
                    write_explorer(Path(explore), sid, model, src, seed)
            except (OSError, ValueError, RuntimeError) as e:  # the prediction row is written; go on
                print(f"zoomin: no heatmaps/explorer for {path}: {_one_line(e, path)}", file=sys.stderr)
    return written, failed


def _one_line(e: Exception, path: Path) -> str:
    """The problem without the path when the message already starts with it."""
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    return msg[len(str(path)) + 2:] if msg.startswith(f"{path}: ") else msg


def merge_parts(out_csv: Path, world: int) -> None:
    """Rank 0: the part files of all ranks -> one CSV in input order (atomically); parts removed."""
    parts = [out_csv.with_name(f"{out_csv.name}.part{r}") for r in range(world)]
    header, rows = None, []
    for part in parts:
        with open(part, newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader)[1:]
            rows += [(int(r[0]), r[1:]) for r in reader]
    tmp = out_csv.with_name(out_csv.name + ".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(r for _, r in sorted(rows, key=lambda ir: ir[0]))
    os.replace(tmp, out_csv)
    for part in parts:
        part.unlink()
