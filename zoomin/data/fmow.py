"""fMoW-rgb (Christie et al. 2018): satellite images with per-image JSON metadata.

``<split>/<category>/<category>_<n>/<category>_<n>_<k>_rgb.{jpg,json}``; the JSON's
``bounding_boxes`` list holds ``{"category": .., "box": [x, y, w, h]}`` in pixels. Label: index
of the first box's category in the 62 fMoW categories (alphabetical, as WILDS lists them); the
boxes of that category become the ROI annotation. ``train`` and ``val`` are walked (the
test labels were withheld at release).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..geojson import boxes_geojson, read_json, write_geojson
from ..manifest import Entry, annotation_path

CATEGORIES = (
    "airport", "airport_hangar", "airport_terminal", "amusement_park", "aquaculture", "archaeological_site",
    "barn", "border_checkpoint", "burial_site", "car_dealership", "construction_site", "crop_field", "dam",
    "debris_or_rubble", "educational_institution", "electric_substation", "factory_or_powerplant",
    "fire_station", "flooded_road", "fountain", "gas_station", "golf_course", "ground_transportation_station",
    "helipad", "hospital", "impoverished_settlement", "interchange", "lake_or_pond", "lighthouse",
    "military_facility", "multi-unit_residential", "nuclear_powerplant", "office_building",
    "oil_or_gas_facility", "park", "parking_lot_or_garage", "place_of_worship", "police_station", "port",
    "prison", "race_track", "railway_bridge", "recreational_facility", "road_bridge", "runway", "shipyard",
    "shopping_mall", "single-unit_residential", "smokestack", "solar_farm", "space_facility", "stadium",
    "storage_tank", "surface_mine", "swimming_pool", "toll_booth", "tower", "tunnel_opening",
    "waste_disposal", "water_treatment_facility", "wind_farm", "zoo")
SPLITS = ("train", "val")


@dataclass
class FmowImage:
    """One fMoW image's metadata."""

    image: Path  # the JPEG next to the JSON
    category: str  # one of CATEGORIES
    boxes: np.ndarray  # (boxes, 4) (x0, y0, x1, y1) pixels of the boxes of that category


def read_fmow_json(path: str | Path) -> FmowImage:
    """Parse one ``*_rgb.json``; the image is ``img_filename`` (or the JSON's name as .jpg)."""
    path = Path(path)
    meta = read_json(path, "metadata")
    bbs = meta.get("bounding_boxes") if isinstance(meta, dict) else None
    if not bbs:
        raise ValueError(f"{path}: no bounding_boxes")
    cat = bbs[0].get("category")
    if cat not in CATEGORIES:
        raise ValueError(f"{path}: unknown category {cat!r}")
    try:
        xywh = np.array([b["box"] for b in bbs if b.get("category") == cat], float).reshape(-1, 4)
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{path}: a bounding box has no [x, y, w, h] 'box'") from None
    image = path.with_name(meta.get("img_filename") or path.with_suffix(".jpg").name)
    if not image.is_file():
        raise FileNotFoundError(f"{path}: image {image.name} not found")
    return FmowImage(image, cat, np.column_stack([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]]))


def fmow_rows(root: Path, out_dir: Path) -> list[Entry]:
    """Rows for every ``*_rgb.json`` under ``root/train`` and ``root/val`` (split = folder)."""
    rows = []
    for split in SPLITS:
        for js in sorted((root / split).rglob("*_rgb.json")):
            im = read_fmow_json(js)
            sid = f"{split}_{js.stem}"
            geo = write_geojson(boxes_geojson(im.boxes, [im.category] * len(im.boxes)),
                                annotation_path(out_dir, sid))
            rows.append(Entry(sid, im.image, CATEGORIES.index(im.category), split, geo))
    return rows
