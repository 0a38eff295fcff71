"""The readers that check zoomin's exports: problems as lines, ``[]`` for a file they all accept.

* DSA / large-image annotation JSON: the ``AnnotationSchema`` class of girder-large-image-annotation,
  applied with ``jsonschema.Draft6Validator`` as girder applies it. Its module imports girder's
  server, so the class is cut out of the installed source with ``ast`` and run alone (it is plain
  dicts and one helper, ``extendSchema``).
* GeoJSON: ``geojson`` (RFC 7946 structure: closed rings, four positions), ``shapely`` (each
  geometry valid: no self-intersection) and GDAL/OGR's GeoJSON driver through ``pyogrio`` (every
  feature read back with a geometry; its warnings, e.g. unclosed rings, count as problems).
  Each catches what the others let through. Shapely also checks RFC 7946's right-hand rule
  (outer rings counter-clockwise in the numbers as written), which all three readers accept broken.
* Both: strict JSON (no ``NaN``/``Infinity``, which Python writes and browsers reject).
"""
from __future__ import annotations

import ast
import functools
import json
import warnings
from pathlib import Path

from realdata import annotation_model_file, module


def strict_json(text: str):
    """``json.loads`` that rejects NaN and infinities."""
    def reject(token):
        raise ValueError(f"{token} is not JSON")
    return json.loads(text, parse_constant=reject)


@functools.lru_cache(maxsize=None)
def dsa_schema() -> dict:
    """``AnnotationSchema.annotationSchema`` from the installed girder-large-image-annotation."""
    path = annotation_model_file()
    tree = ast.parse(path.read_text())
    keep = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))
            and n.name in ("extendSchema", "AnnotationSchema")]
    assert len(keep) == 2, f"{path}: extendSchema or AnnotationSchema not found (upstream layout changed)"
    code = ast.fix_missing_locations(ast.Module(body=[ast.Import([ast.alias("copy")]), *keep], type_ignores=[]))
    namespace: dict = {}
    exec(compile(code, str(path), "exec"), namespace)
    return namespace["AnnotationSchema"].annotationSchema


def dsa_problems(path: str | Path) -> list[str]:
    """Why the DSA annotation JSON at ``path`` would not load in girder."""
    jsonschema = module("jsonschema")
    try:
        doc = strict_json(Path(path).read_text())
    except ValueError as e:
        return [f"json: {e}"]
    validator = jsonschema.Draft6Validator(dsa_schema())
    return [f"schema: /{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in validator.iter_errors(doc)]


def _geojson_lib(text: str) -> list[str]:
    geojson = module("geojson")
    try:
        obj = geojson.loads(text)
        return [] if obj.is_valid else [f"geojson: {e}" for e in _flat(obj.errors())]
    except (ValueError, TypeError, AttributeError, KeyError) as e:
        return [f"geojson: {type(e).__name__}: {str(e)[:200]}"]


def _flat(errors) -> list:
    if isinstance(errors, (list, tuple)):
        return [x for e in errors for x in _flat(e)]
    if isinstance(errors, dict):
        return [f"{k}: {x}" for k, e in errors.items() for x in _flat(e)]
    return [errors] if errors else []


def _shapely(features: list) -> list[str]:
    shapely = module("shapely")
    from shapely.geometry import shape
    out = []
    for i, f in enumerate(features):
        try:
            g = shape(f["geometry"])
        except Exception as e:  # any failure to build the geometry is the finding
            out.append(f"shapely: feature {i}: {type(e).__name__}: {str(e)[:200]}")
            continue
        if not g.is_valid:
            out.append(f"shapely: feature {i}: {shapely.is_valid_reason(g)}")
        for poly in getattr(g, "geoms", [g]) if g.geom_type in ("Polygon", "MultiPolygon") else []:
            if not poly.exterior.is_ccw or any(ring.is_ccw for ring in poly.interiors):
                out.append(f"rfc7946: feature {i}: rings break the right-hand rule (outer ring clockwise, "
                           f"or a hole counter-clockwise)")
    return out


def _ogr(path: Path, n_features: int) -> list[str]:
    raw = module("pyogrio.raw")
    out = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            _, _, geometry, _ = raw.read(path)
        except Exception as e:  # the driver's refusal is the finding
            return [f"ogr: {type(e).__name__}: {str(e)[:200]}"]
    out += [f"ogr: {w.message}" for w in caught]
    if len(geometry) != n_features:
        out.append(f"ogr: read {len(geometry)} feature(s), the file lists {n_features}")
    nulls = [i for i, g in enumerate(geometry) if g is None]
    if nulls:
        out.append(f"ogr: no geometry in feature(s) {nulls[:10]}")
    return out


def geojson_problems(path: str | Path) -> list[str]:
    """Why the GeoJSON at ``path`` would be refused or misread by QuPath-like readers."""
    path = Path(path)
    text = path.read_text()
    try:
        doc = strict_json(text)
    except ValueError as e:
        return [f"json: {e}"]
    features = doc.get("features") if isinstance(doc, dict) else None
    if not isinstance(features, list):
        return ["json: not a FeatureCollection with a list of features"]
    return _geojson_lib(text) + _shapely(features) + _ogr(path, len(features))
