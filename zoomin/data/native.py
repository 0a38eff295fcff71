"""Manifests from the native downloads of the data sets the paper names.

``build_manifest(name, root, out_csv)`` walks a raw download (layouts in ``data_manifests/``),
writes ``slide_id,path,label,split,annotation`` with paths relative to the CSV, converts ROI
outlines to GeoJSON under ``<out_csv dir>/annotations/``, and reads the result back with
``read_manifest``. The loaders build ``manifest.Entry`` rows (paths as found) and write outlines
with ``zoomin.geojson``; they import nothing from here. Every problem is one line naming the file:
``f"{path}: problem"``. Nothing here downloads anything.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..manifest import Entry, write_manifest
from .camelyon16 import camelyon16_rows
from .colon_cancer import colon_cancer_rows
from .fmow import fmow_rows
from .needle_camelyon import needle_camelyon_rows
from .traffic_signs import traffic_sign_rows

BUILDERS: dict[str, Callable[[Path, Path], list[Entry]]] = {
    "camelyon16": camelyon16_rows, "colon_cancer": colon_cancer_rows, "fmow": fmow_rows,
    "needle_camelyon": needle_camelyon_rows, "traffic_signs": traffic_sign_rows}

DATASETS = tuple(BUILDERS)


def build_manifest(name: str, root: str | Path, out_csv: str | Path) -> Path:
    """Manifest CSV for data set ``name`` (one of ``DATASETS``) from its raw download at ``root``.
    ROI outlines, where the data set has them, are written next to the CSV under ``annotations/``."""
    key = name.strip().lower().replace("-", "_")
    if key not in BUILDERS:
        raise ValueError(f"unknown data set {name!r}; choose one of {', '.join(DATASETS)}")
    root, out_csv = Path(root), Path(out_csv)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: data set folder not found")
    rows = BUILDERS[key](root, out_csv.parent)
    if not rows:
        raise ValueError(f"{root}: no {key} images found (see data_manifests/{key}.md for the layout)")
    return write_manifest(rows, out_csv)
