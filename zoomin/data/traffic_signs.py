"""Swedish traffic signs (Larsson & Felsberg 2011) as ATS's speed-limit task.

``SetK/annotations.txt``: one image per line, ``image.jpg:SIGN;SIGN;...`` where a sign is
``VISIBILITY, x_lower_right, y_lower_right, x_upper_left, y_upper_left, TYPE, NAME`` (pixels)
or the bare token ``MISC_SIGNS``. ATS's rule (``scripts/speed_limits.py``): MISC_SIGNS entries
are ignored; an image without signs is class 0 (EMPTY); otherwise only 50/70/80 signs count, the
most visible (VISIBLE < BLURRED < SIDE_ROAD < OCCLUDED), then largest, decides the class (1/2/3);
images with signs but no speed limit, or whose best speed limit is not VISIBLE, are dropped.
Set1 is the training set, Set2 the test set (ATS with seed 0).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..geojson import boxes_geojson, write_geojson
from ..manifest import Entry, annotation_path

VISIBILITY = ("VISIBLE", "BLURRED", "SIDE_ROAD", "OCCLUDED")  # best first
SIGN_NAMES = frozenset({
    "30_SIGN", "50_SIGN", "60_SIGN", "70_SIGN", "80_SIGN", "90_SIGN", "100_SIGN", "110_SIGN", "120_SIGN",
    "GIVE_WAY", "NO_PARKING", "NO_STOPPING_NO_STANDING", "OTHER", "PASS_EITHER_SIDE", "PASS_LEFT_SIDE",
    "PASS_RIGHT_SIDE", "PEDESTRIAN_CROSSING", "PRIORITY_ROAD", "STOP", "URDBL"})
CLASSES = ("EMPTY", "50_SIGN", "70_SIGN", "80_SIGN")  # class index = position
LIMITS = CLASSES[1:]  # the signs that decide the class
SPLITS = {"Set1": "train", "Set2": "test"}
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)")


@dataclass
class Sign:
    """One annotated sign."""

    visibility: str  # one of VISIBILITY
    box: tuple[float, float, float, float]  # (x0, y0, x1, y1) pixels, x0 <= x1, y0 <= y1
    type: str  # e.g. PROHIBITORY, MANDATORY, WARNING, OTHER
    name: str  # one of SIGN_NAMES

    @property
    def area(self) -> float:
        return (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])


def _number(s: str, where: str) -> float:
    """A coordinate; like ATS, trailing junk after the number (``'512.3l'``) is ignored."""
    m = _NUMBER.match(s)
    if not m:
        raise ValueError(f"{where}: coordinate {s!r} is not a number")
    return float(m.group())


def read_sign_annotations(path: str | Path) -> dict[str, list[Sign]]:
    """``annotations.txt`` -> {image file name: signs}, in file order; MISC_SIGNS dropped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: annotations not found")
    out: dict[str, list[Sign]] = {}
    for line, text in enumerate(path.read_text().splitlines(), start=1):
        text, where = text.strip(), f"{path}:{line}"
        if not text:
            continue
        if ":" not in text:
            raise ValueError(f"{where}: expected 'image.jpg:signs', got {text[:40]!r}")
        image, rest = (s.strip() for s in text.split(":", 1))
        if image in out:
            raise ValueError(f"{where}: image {image!r} annotated twice")
        signs = []
        for entry in filter(None, (e.strip() for e in rest.split(";"))):
            parts = [p.strip() for p in entry.split(",")]
            if parts[0] == "MISC_SIGNS":
                continue
            if len(parts) != 7:
                raise ValueError(f"{where}: sign {entry!r} has {len(parts)} fields, expected 7")
            vis, name = parts[0], parts[6]
            if vis not in VISIBILITY:
                raise ValueError(f"{where}: unknown visibility {vis!r}")
            if name not in SIGN_NAMES:
                raise ValueError(f"{where}: unknown sign name {name!r}")
            x1, y1, x0, y0 = (_number(p, where) for p in parts[1:5])
            signs.append(Sign(vis, (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), parts[5], name))
        out[image] = signs
    return out


def speed_limit_class(signs: list[Sign]) -> int | None:
    """ATS's label: 0 without signs, else the class of the best speed-limit sign; ``None``
    (drop the image) if there is no speed limit or the best one is not VISIBLE."""
    if not signs:
        return 0
    limits = sorted((s for s in signs if s.name in LIMITS), key=lambda s: (VISIBILITY.index(s.visibility), -s.area))
    if not limits or limits[0].visibility != "VISIBLE":
        return None
    return CLASSES.index(limits[0].name)


def traffic_sign_rows(root: Path, out_dir: Path) -> list[Entry]:
    """Rows for ``Set1`` (train) and ``Set2`` (test); the speed-limit boxes of each kept image
    become its GeoJSON annotation."""
    rows = []
    for folder, split in SPLITS.items():
        ann = root / folder / "annotations.txt"
        if not (root / folder).is_dir():
            continue
        for image, signs in read_sign_annotations(ann).items():
            label = speed_limit_class(signs)
            if label is None:
                continue
            img = root / folder / image
            if not img.is_file():
                raise FileNotFoundError(f"{ann}: image {image} not found in {img.parent}")
            sid = f"{folder.lower()}_{Path(image).stem}"
            limits = [s for s in signs if s.name in LIMITS]
            geo = None
            if limits:
                boxes = np.array([s.box for s in limits])  # (signs, 4)
                geo = write_geojson(boxes_geojson(boxes, [s.name for s in limits]), annotation_path(out_dir, sid))
            rows.append(Entry(sid, img, label, split, geo))
    return rows
