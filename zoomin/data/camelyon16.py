"""CAMELYON16: ASAP lesion XML -> GeoJSON, and the standard download layout -> manifest rows.

ASAP XML: ``<ASAP_Annotations><Annotations><Annotation Name=.. Type="Polygon" PartOfGroup=..>
<Coordinates><Coordinate Order=.. X=.. Y=../>``, X/Y in level-0 pixels. Groups ``_0``, ``_1``
(and ``Tumor`` / ``metastases`` in some files) outline metastases; ``_2`` (``Exclusion``) marks
non-tumour regions drawn inside them. The ROI mask is union(Tumor) minus union(Exclusion).
"""
from __future__ import annotations

import csv
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from ..geojson import feature_collection, polygon_feature, write_geojson
from ..manifest import Entry, annotation_path

TUMOR_GROUPS = {"_0", "_1", "tumor", "metastases"}  # lower-cased PartOfGroup values
EXCLUSION_GROUPS = {"_2", "exclusion"}
REGION_TYPES = {"polygon", "spline", "rectangle"}  # closed outlines
POINT_TYPES = {"dot", "pointset"}  # markers, not regions: skipped


def read_asap_xml(path: str | Path) -> dict:
    """Lesion outlines of one ASAP XML as a GeoJSON FeatureCollection (level-0 (x, y) pixels):
    ``properties.classification.name`` is ``Tumor`` or ``Exclusion``; ``name`` and ``group``
    keep the XML's ``Name`` and ``PartOfGroup``. Vertices are ordered by ``Order``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: lesion XML not found")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise ValueError(f"{path}: not valid XML ({e})") from None
    if root.tag != "ASAP_Annotations":
        raise ValueError(f"{path}: root element is <{root.tag}>, expected <ASAP_Annotations>")
    feats = []
    for ann in root.iter("Annotation"):
        name, group = ann.get("Name", ""), ann.get("PartOfGroup", "")
        kind = ann.get("Type", "Polygon").lower()
        if kind in POINT_TYPES:
            continue
        if kind not in REGION_TYPES:
            raise ValueError(f"{path}: annotation {name!r} has unsupported Type {ann.get('Type')!r}")
        g = group.lower()
        if g not in TUMOR_GROUPS | EXCLUSION_GROUPS:
            raise ValueError(f"{path}: annotation {name!r} has unknown PartOfGroup {group!r} "
                             f"(expected _0, _1, _2, Tumor, Exclusion)")
        coords = ann.findall("./Coordinates/Coordinate")
        if len(coords) < 3:
            raise ValueError(f"{path}: annotation {name!r} has {len(coords)} coordinate(s), a polygon needs 3")
        try:
            table = np.array([[c.get("Order", i), c.get("X"), c.get("Y")] for i, c in enumerate(coords)],
                             dtype=object)
            num = np.char.replace(table.astype(str), ",", ".").astype(float)  # (n, 3) Order, X, Y
        except (TypeError, ValueError):
            raise ValueError(f"{path}: annotation {name!r} has a coordinate without numeric Order/X/Y") from None
        ring = num[np.argsort(num[:, 0], kind="stable"), 1:]  # (n, 2) x, y
        cls = "Exclusion" if g in EXCLUSION_GROUPS else "Tumor"
        feats.append(polygon_feature(ring, cls, name=name, group=group))
    return feature_collection(feats)


def _reference(path: Path) -> dict[str, int]:
    """testing/reference.csv: ``test_001,Tumor,...`` or ``test_002,Normal,...`` -> {id: label}."""
    labels = {}
    with open(path, newline="") as fh:
        for line, row in enumerate(csv.reader(fh), start=1):
            if not row or not row[0].strip():
                continue
            if len(row) < 2:
                raise ValueError(f"{path}:{line}: expected 'slide,Tumor|Normal,...', got {','.join(row)!r}")
            sid, cls = row[0].strip().lower(), row[1].strip().lower()
            if cls not in ("tumor", "normal"):
                raise ValueError(f"{path}:{line}: class {row[1].strip()!r} is neither Tumor nor Normal")
            labels[Path(sid).stem] = int(cls == "tumor")
    return labels


def camelyon16_rows(root: Path, out_dir: Path) -> list[Entry]:
    """Rows for ``training/normal/normal_*.tif`` (0), ``training/tumor/tumor_*.tif`` (1) and
    ``testing/images/test_*.tif`` (label from ``testing/reference.csv``); lesion XMLs found
    anywhere under ``root`` (``*/lesion_annotations/<slide>.xml``) become GeoJSON annotations
    of the positive slides."""
    xmls: dict[str, Path] = {}
    for x in sorted(root.rglob("*.xml")):
        sid = x.stem.lower()
        if sid in xmls:
            raise ValueError(f"{x}: second lesion XML for {sid} (first: {xmls[sid]})")
        xmls[sid] = x
    slides = [(p, 0, "train") for p in sorted((root / "training" / "normal").glob("normal_*.tif"))]
    slides += [(p, 1, "train") for p in sorted((root / "training" / "tumor").glob("tumor_*.tif"))]
    tests = sorted((root / "testing" / "images").glob("test_*.tif"))
    if tests:
        ref = root / "testing" / "reference.csv"
        if not ref.is_file():
            raise FileNotFoundError(f"{ref}: test labels not found ({len(tests)} test slides need them)")
        labels = _reference(ref)
        for p in tests:
            if p.stem.lower() not in labels:
                raise ValueError(f"{ref}: no label for {p.stem}")
            slides.append((p, labels[p.stem.lower()], "test"))
    rows = []
    for p, label, split in slides:
        ann = None
        if label and p.stem.lower() in xmls:
            ann = write_geojson(read_asap_xml(xmls[p.stem.lower()]), annotation_path(out_dir, p.stem))
        rows.append(Entry(p.stem, p, label, split, ann))
    return rows
