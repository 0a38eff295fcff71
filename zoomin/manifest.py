"""Slide manifests: CSV files with ``slide_id,path,label`` and optional ``split``, ``annotation``.
Paths are relative to the manifest. Every problem is one line naming the file (and line)."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

REQUIRED = ("slide_id", "path", "label")


@dataclass
class Entry:
    slide_id: str  # unique within the manifest
    path: Path  # the slide file, resolved
    label: int  # class index
    split: str = ""  # e.g. train / test; empty when not given
    annotation: Path | None = None  # lesion outlines (GeoJSON), resolved, when given


def read_manifest(path: str | Path, check_files: bool = True, num_classes: int | None = None) -> list[Entry]:
    """The rows of a manifest (parsed as CSV, never evaluated). ``num_classes``: labels must be
    below it. A problem with the file or a row is a ``ValueError`` naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: manifest not found")
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        missing = [c for c in REQUIRED if c not in cols]
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(missing)} (need {', '.join(REQUIRED)})")
        entries, seen = [], {}
        for line, row in enumerate(reader, start=2):
            sid = (row["slide_id"] or "").strip()
            if not sid:
                raise ValueError(f"{path}:{line}: empty slide_id")
            if sid in seen:
                raise ValueError(f"{path}:{line}: duplicate slide_id {sid!r} (first on line {seen[sid]})")
            seen[sid] = line
            try:
                label = int(row["label"])
            except (TypeError, ValueError):
                raise ValueError(f"{path}:{line}: label {row['label']!r} is not a class index") from None
            if label < 0 or (num_classes is not None and label >= num_classes):
                known = f"0..{num_classes - 1}" if num_classes else "0 or more"
                raise ValueError(f"{path}:{line}: unknown label {label} (the model's classes are {known})")
            slide = (path.parent / (row["path"] or "").strip()).resolve()
            if check_files and not slide.is_file():
                raise ValueError(f"{path}:{line}: slide file not found: {row['path']}")
            ann = (row.get("annotation") or "").strip()
            entries.append(Entry(sid, slide, label, (row.get("split") or "").strip(),
                                 (path.parent / ann).resolve() if ann else None))
    if not entries:
        raise ValueError(f"{path}: no slides listed")
    return entries
