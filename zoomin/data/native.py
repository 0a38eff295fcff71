"""Manifests from the native downloads of the data sets the paper names.

``build_manifest(name, root, out_csv)`` walks a raw download (layouts in ``data_manifests/``),
writes ``slide_id,path,label,split,annotation`` with paths relative to the CSV, converts ROI
outlines to GeoJSON under ``<out_csv dir>/annotations/``, and reads the result back with
``read_manifest``. Every problem is one line naming the file: ``f"{path}: problem"``.
Nothing here downloads anything.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..manifest import read_manifest


@dataclass
class Row:
    """One manifest row before paths are made relative to the CSV."""

    slide_id: str  # unique within the manifest
    path: Path  # the image or slide file
    label: int  # class index
    split: str = ""  # e.g. train / test / fold3
    annotation: Path | None = None  # ROI outlines (GeoJSON), if any


def polygon_feature(ring: np.ndarray, cls: str, **props) -> dict:
    """A GeoJSON polygon feature from an (n, 2) array of (x, y) level-0 pixels, closed if open;
    ``cls`` goes to ``properties.classification.name`` (QuPath's convention, as in synth)."""
    ring = np.asarray(ring, float)
    if len(ring) and not np.array_equal(ring[0], ring[-1]):
        ring = np.vstack([ring, ring[:1]])
    return {"type": "Feature", "properties": {"objectType": "annotation", "classification": {"name": cls}, **props},
            "geometry": {"type": "Polygon", "coordinates": [ring.tolist()]}}


def boxes_geojson(boxes: np.ndarray, names: list[str]) -> dict:
    """Axis-aligned boxes (K, 4) as ``(x0, y0, x1, y1)`` pixels -> FeatureCollection of rectangles."""
    boxes = np.asarray(boxes, float).reshape(-1, 4)
    corners = boxes[:, [[0, 1], [2, 1], [2, 3], [0, 3]]]  # (K, 4, 2) clockwise from top-left
    return {"type": "FeatureCollection", "features": [polygon_feature(c, n) for c, n in zip(corners, names)]}


def write_geojson(obj: dict, out_dir: Path, slide_id: str) -> Path:
    """``obj`` as ``out_dir/annotations/<slide_id>.geojson`` (slashes in the id become ``__``)."""
    path = out_dir / "annotations" / (slide_id.replace("/", "__") + ".geojson")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path


def write_manifest(rows: list[Row], out_csv: str | Path) -> Path:
    """Rows as a manifest CSV, paths relative to its folder, then read back to validate."""
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    base = out_csv.parent.resolve()

    def rel(p: Path | None) -> str:
        return "" if p is None else Path(os.path.relpath(Path(p).resolve(), base)).as_posix()

    with open(out_csv, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["slide_id", "path", "label", "split", "annotation"])
        w.writerows([r.slide_id, rel(r.path), r.label, r.split, rel(r.annotation)] for r in rows)
    read_manifest(out_csv)
    return out_csv


def _builders() -> dict[str, Callable[[Path, Path], list[Row]]]:
    from .camelyon16 import camelyon16_rows
    from .colon_cancer import colon_cancer_rows
    from .fmow import fmow_rows
    from .needle_camelyon import needle_camelyon_rows
    from .traffic_signs import traffic_sign_rows
    return {"camelyon16": camelyon16_rows, "colon_cancer": colon_cancer_rows, "fmow": fmow_rows,
            "needle_camelyon": needle_camelyon_rows, "traffic_signs": traffic_sign_rows}


DATASETS = ("camelyon16", "colon_cancer", "fmow", "needle_camelyon", "traffic_signs")


def build_manifest(name: str, root: str | Path, out_csv: str | Path) -> Path:
    """Manifest CSV for data set ``name`` (one of ``DATASETS``) from its raw download at ``root``.
    ROI outlines, where the data set has them, are written next to the CSV under ``annotations/``."""
    key = name.strip().lower().replace("-", "_")
    builders = _builders()
    if key not in builders:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    root, out_csv = Path(root), Path(out_csv)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data set folder not found")
    rows = builders[key](root, out_csv.parent)
    if not rows:
        raise ValueError(f"{root}: no {key} images found (see data_manifests/{key}.md for the layout)")
    return write_manifest(rows, out_csv)
