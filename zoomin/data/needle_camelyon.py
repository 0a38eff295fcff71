"""NeedleCamelyon: images cut from CAMELYON16 slides, listed in headerless ``path,label`` files.

This is the format of the Zoom-In authors' reader (``HistoPatchwiseReader``, "Reading NCAM
Images"): each line ``relative/image.png,label``. How the images themselves are cut from
CAMELYON16 is in ``data_manifests/needle_camelyon.md``. Every ``*.csv`` in ``root`` is read;
its stem is the split (``train.csv`` -> ``train``), except ``annotations.csv`` -> no split.
"""
from __future__ import annotations

import csv
from pathlib import Path

from ..manifest import Entry


def read_label_file(path: str | Path) -> list[tuple[Path, int]]:
    """Headerless ``relative/image,label`` lines -> [(image path, label)], paths resolved
    against the file's folder."""
    path = Path(path)
    out = []
    with open(path, newline="") as fh:
        for line, row in enumerate(csv.reader(fh), start=1):
            if not row or not "".join(row).strip():
                continue
            if len(row) != 2:
                raise ValueError(f"{path}:{line}: expected 'image,label', got {','.join(row)!r}")
            try:
                label = int(row[1])
            except ValueError:
                raise ValueError(f"{path}:{line}: label {row[1].strip()!r} is not a class index") from None
            img = path.parent / row[0].strip()
            if not img.is_file():
                raise FileNotFoundError(f"{path}:{line}: image {row[0].strip()} not found")
            out.append((img, label))
    return out


def needle_camelyon_rows(root: Path, out_dir: Path) -> list[Entry]:
    """Rows from every label file in ``root`` (zoomin manifests, headed ``slide_id``, are
    skipped); an image listed twice is an error."""
    rows, seen = [], {}
    for f in sorted(root.glob("*.csv")):
        with open(f) as fh:
            if fh.readline().startswith("slide_id,"):
                continue
        split = "" if f.stem == "annotations" else f.stem
        for img, label in read_label_file(f):
            sid = img.relative_to(root).with_suffix("").as_posix() if img.is_relative_to(root) else img.stem
            if sid in seen:
                raise ValueError(f"{f}: image {sid} already listed in {seen[sid]}")
            seen[sid] = f.name
            rows.append(Entry(sid, img, label, split))
    return rows
