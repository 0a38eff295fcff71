"""Slide manifests: CSV files with ``slide_id,path,label`` and optional ``split``, ``annotation``,
``mpp`` (other columns are ignored). Paths are relative to the manifest. Every problem is one line
naming the file (and line)."""
from __future__ import annotations

import csv
import os
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
    mpp: float | None = None  # microns per level-0 pixel, when the manifest gives it


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
            ann, mpp = (row.get("annotation") or "").strip(), (row.get("mpp") or "").strip()
            try:
                mpp = float(mpp) if mpp else None
            except ValueError:
                raise ValueError(f"{path}:{line}: mpp {mpp!r} is not a number") from None
            entries.append(Entry(sid, slide, label, (row.get("split") or "").strip(),
                                 (path.parent / ann).resolve() if ann else None, mpp))
    if not entries:
        raise ValueError(f"{path}: no slides listed")
    return entries


def write_manifest(entries: list[Entry], out_csv: str | Path, annotations: bool = True) -> Path:
    """``entries`` as a manifest CSV, paths relative to its folder, then read back to validate.
    Columns ``slide_id,path,label,split``, then ``annotation`` unless ``annotations=False``
    (a labels-only manifest), then ``mpp`` when any entry has one."""
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    base = out_csv.parent.resolve()

    def rel(p: Path | None) -> str:
        return "" if p is None else Path(os.path.relpath(Path(p).resolve(), base)).as_posix()

    mpp = any(e.mpp is not None for e in entries)
    with open(out_csv, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["slide_id", "path", "label", "split"] + ["annotation"] * annotations + ["mpp"] * mpp)
        w.writerows([e.slide_id, rel(e.path), e.label, e.split] + [rel(e.annotation)] * annotations
                    + [f"{e.mpp:g}" if e.mpp is not None else ""] * mpp for e in entries)
    read_manifest(out_csv)
    return out_csv


def annotation_path(out_dir: str | Path, slide_id: str) -> Path:
    """Where a manifest builder keeps a slide's outlines: ``out_dir/annotations/<slide_id>.geojson``
    (slashes in the id become ``__``)."""
    return Path(out_dir) / "annotations" / (slide_id.replace("/", "__") + ".geojson")
