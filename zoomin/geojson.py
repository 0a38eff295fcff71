"""One way to write region outlines: GeoJSON polygons in the file's level-0 (x, y) pixels, as QuPath reads
them (``properties.classification.name`` is the class). Used by synthetic slides, native-format
manifests and ``zoomin predict``'s heatmaps.

Rings are closed (first position repeated last, so at least 4 positions) and oriented one way
throughout: positive shoelace area in the (x, y) numbers as written, i.e. counter-clockwise in
RFC 7946's y-up sense (clockwise on a y-down screen).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def read_json(path: str | Path, missing: str = "file", kind: str = "JSON"):
    """A JSON file's content; one-line errors naming the file: ``PATH: <missing> not found`` or
    ``PATH: not valid <kind> (what went wrong)``."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: {missing} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        why = f"{e.msg} at line {e.lineno}" if isinstance(e, json.JSONDecodeError) else type(e).__name__
        raise ValueError(f"{path}: not valid {kind} ({why})") from None


def closed_ring(points) -> np.ndarray:
    """(n, 2) (x, y) vertices, open or closed -> (m + 1, 2) closed ring with positive signed area."""
    ring = np.asarray(points, float).reshape(-1, 2)
    if len(ring) > 1 and np.array_equal(ring[0], ring[-1]):
        ring = ring[:-1]
    if len(ring) < 3:
        raise ValueError(f"a polygon needs at least 3 vertices, got {len(ring)}")
    x, y = ring[:, 0], ring[:, 1]
    if np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y) < 0:  # twice the signed area
        ring = np.vstack([ring[:1], ring[:0:-1]])  # the other way round, from the same first vertex
    return np.vstack([ring, ring[:1]])


def polygon_feature(ring, cls: str, **props) -> dict:
    """A Polygon Feature from (n, 2) (x, y) level-0 pixels; ``cls`` becomes
    ``properties.classification.name``; ``props`` are added to the properties."""
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [closed_ring(ring).tolist()]},
            "properties": {"objectType": "annotation", "classification": {"name": cls}, **props}}


def box_rings(boxes) -> np.ndarray:
    """Axis-aligned boxes (boxes, 4) ``(x0, y0, x1, y1)`` -> their corners (boxes, 4, 2), (x0, y0) first."""
    boxes = np.asarray(boxes, float).reshape(-1, 4)
    return boxes[:, [[0, 1], [2, 1], [2, 3], [0, 3]]]  # (boxes, 4, 2)


def feature_collection(features: list[dict], **props) -> dict:
    """Features as a FeatureCollection (``props``, if any, as its ``properties``)."""
    out = {"type": "FeatureCollection", "features": features}
    if props:
        out["properties"] = props
    return out


def boxes_geojson(boxes, names: list[str]) -> dict:
    """Boxes (boxes, 4) ``(x0, y0, x1, y1)`` pixels, one class name each -> FeatureCollection."""
    return feature_collection([polygon_feature(c, n) for c, n in zip(box_rings(boxes), names)])


def write_geojson(obj: dict, path: str | Path) -> Path:
    """``obj`` as a JSON file at ``path`` (folders made as needed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))
    return path
