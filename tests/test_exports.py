"""Every GeoJSON and DSA annotation zoomin writes, read back by the readers that will open it
(issue #15 item 4): GeoJSON through geojson, shapely and GDAL/OGR; DSA JSON through the upstream
girder-large-image-annotation schema. The real slides' exports are checked in test_real_data.py."""
import json

import numpy as np
import pytest

from export_readers import dsa_problems, dsa_schema, geojson_problems

pytest.importorskip("large_image")

from zoomin.cli import main  # noqa: E402
from zoomin.config import Config, ModelConfig  # noqa: E402
from zoomin.data.native import build_manifest  # noqa: E402
from zoomin.model import build_model  # noqa: E402
from zoomin.synth import lesion_geojson, make_spec, synth_slides  # noqa: E402

try:
    from zoomin.checkpoint import save_model
except ImportError:  # before save_model moved out of zoomin.train
    from zoomin.train import save_model


def feature_collection(*rings, typ="Polygon"):
    return {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": {"type": typ, "coordinates": [ring]}} for ring in rings]}


SQUARE = [[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]


@pytest.mark.parametrize("doc, reader, problem", [
    (feature_collection(SQUARE[:-1]), "geojson", "must end where it started"),  # shapely closes it silently
    (feature_collection(SQUARE[:-1]), "ogr", "Non closed ring"),
    (feature_collection([[0, 0], [10, 10], [10, 0], [0, 10], [0, 0]]), "shapely", "Self-intersection"),  # a bow tie
    (feature_collection([[0, 0], [10, 0], [0, 0]]), "geojson", "at least 4 positions"),
    (feature_collection(SQUARE[::-1]), "rfc7946", "right-hand rule"),  # clockwise: every reader takes it
    ({"type": "FeatureCollection", "features": [{"type": "Feature", "properties": {}}]}, "ogr", "no geometry"),
    (feature_collection(SQUARE, typ="Polgon"), "ogr", "no geometry"),
    (feature_collection([["0", "0"], ["10", "0"], ["10", "10"], ["0", "0"]]), "ogr", "no geometry"),  # shapely: valid
    (feature_collection([["0", "0"], ["10", "0"], ["10", "10"], ["0", "0"]]), "geojson", "JSON compliant number"),
])
def test_each_geojson_reader_catches_its_problem(tmp_path, doc, reader, problem):
    p = tmp_path / "bad.geojson"
    p.write_text(json.dumps(doc))
    found = geojson_problems(p)
    assert any(f.startswith(f"{reader}: ") and problem in f for f in found), found


def test_geojson_readers_accept_a_plain_square_and_reject_nan(tmp_path):
    p = tmp_path / "ok.geojson"
    p.write_text(json.dumps(feature_collection(SQUARE)))
    assert geojson_problems(p) == []
    p.write_text(json.dumps(feature_collection([[0, 0], [float("nan"), 0], [10, 10], [0, 0]])))
    assert geojson_problems(p) == ["json: NaN is not JSON"]


def test_the_upstream_dsa_schema_is_read_and_rejects_what_girder_rejects(tmp_path):
    schema = dsa_schema()
    assert schema["additionalProperties"] is False and "elements" in schema["properties"]
    good = {"name": "a", "elements": [
        {"type": "heatmap", "points": [[1, 2, 0, 0.5]], "radius": 4, "normalizeRange": True},
        {"type": "rectangle", "center": [5, 5, 0], "width": 2, "height": 2, "rotation": 0,
         "lineColor": "rgb(0,160,0)", "label": {"value": "x"}}]}
    p = tmp_path / "a.json"
    p.write_text(json.dumps(good))
    assert dsa_problems(p) == []
    for bad in ({**good, "name": ""},  # names must not be empty
                {**good, "colour": "red"},  # no extra top-level keys
                {"name": "a", "elements": [{**good["elements"][0], "points": [[1, 2, 0.5]]}]},  # (x, y, z, value)
                {"name": "a", "elements": [{**good["elements"][1], "lineColor": "green"}]},
                {"name": "a", "elements": [{**good["elements"][0], "radius": 0}]}):
        p.write_text(json.dumps(bad))
        assert dsa_problems(p) and all(f.startswith("schema: ") for f in dsa_problems(p)), bad
    p.write_text(json.dumps({"name": "a", "elements": [{**good["elements"][0], "radius": float("inf")}]}))
    assert dsa_problems(p) == ["json: Infinity is not JSON"]


@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    """``zoomin predict --heatmaps`` on three synthetic slides (their lesion GeoJSONs beside them)."""
    d = tmp_path_factory.mktemp("exports")
    manifest = synth_slides(d, 3, 1024, seed=3, tile=128, positive_fraction=0.67, progress=False)
    cfg = Config(model=ModelConfig(in_channels=3, num_classes=2, stage1_resolution=0.05, tile=128, stage2_resolution=0.25, subtile=32,
                                   n_samples=6, feature_dim=8, feature_width=8, foreground="otsu_dark"))
    ckpt = save_model(d / "model.pt", build_model(cfg.model), cfg)
    hm = d / "heatmaps"
    assert main(["predict", "--checkpoint", str(ckpt), "--out", str(d / "pred.csv"), "--heatmaps", str(hm),
                 "--quiet", "--passes", "1", str(manifest)]) == 0
    return d, hm


def test_predict_exports_pass_every_reader(predicted):
    _, hm = predicted
    geo, dsa = sorted(hm.glob("*.geojson")), sorted(hm.glob("*.dsa.json"))
    assert len(geo) == len(dsa) == 3
    for g, a in zip(geo, dsa):
        assert geojson_problems(g) == [], g
        assert dsa_problems(a) == [], a
        cells = [f for f in json.loads(g.read_text())["features"] if f["properties"]["name"] == "attention"]
        elements = json.loads(a.read_text())["elements"]
        assert len(elements[0]["points"]) == len(cells)  # the same attention cells in both exports
        assert len(elements) - 1 == len(json.loads(g.read_text())["features"]) - len(cells)  # and sub-tiles


def test_synthetic_lesion_outlines_pass_every_reader(predicted, tmp_path):
    d, _ = predicted
    written = sorted(d.glob("synth_*.geojson"))  # what synth_slides wrote for the positive slides
    assert written
    for p in written:
        assert geojson_problems(p) == [], p
    for seed in range(20):  # more shapes: rotated ellipses of every size synth draws, on a 100k slide
        spec = make_spec(100_000, True, np.random.default_rng(seed))
        p = tmp_path / f"lesions_{seed}.geojson"
        p.write_text(json.dumps(lesion_geojson(spec)))
        assert geojson_problems(p) == [], p


def asap_polygon(name: str, group: str, kind: str, points: list[tuple[float, float]]) -> str:
    coords = "".join(f'<Coordinate Order="{o}" X="{x}" Y="{y}" />' for o, (x, y) in enumerate(points))
    return (f'<Annotation Name="{name}" Type="{kind}" PartOfGroup="{group}">'
            f'<Coordinates>{coords}</Coordinates></Annotation>')


def test_native_builder_outlines_pass_every_reader(tmp_path):
    """``zoomin manifest``'s builders write GeoJSON from ASAP XML (CAMELYON16) and from boxes (fMoW)."""
    import tifffile
    from PIL import Image
    raw = tmp_path / "camelyon16"
    for tif in ("training/tumor/tumor_001.tif", "training/normal/normal_001.tif"):
        (raw / tif).parent.mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(raw / tif, np.full((8, 8, 3), 200, np.uint8), photometric="rgb")
    (raw / "training" / "lesion_annotations").mkdir()
    (raw / "training" / "lesion_annotations" / "tumor_001.xml").write_text(
        '<?xml version="1.0"?><ASAP_Annotations><Annotations>'
        + asap_polygon("a", "_0", "Polygon", [(100.0, 10.0), (120.5, 10.0), (120.5, 40.25), (100.0, 40.25)])
        + asap_polygon("b", "Tumor", "Spline", [(500.0, 600.0), (540.0, 600.0), (520.0, 650.0)])  # clockwise
        + asap_polygon("c", "_2", "Polygon", [(105.0, 15.0), (110.0, 15.0), (110.0, 20.0), (105.0, 15.0)])  # closed
        + "</Annotations></ASAP_Annotations>")
    fmow = tmp_path / "fmow" / "train" / "airport" / "airport_0"
    fmow.mkdir(parents=True)
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(fmow / "airport_0_0_rgb.jpg")
    boxes = [{"category": "airport", "box": box, "ID": i} for i, box in enumerate([[10, 5, 20, 8], [1, 2, 3, 4]])]
    meta = {"img_filename": "airport_0_0_rgb.jpg", "bounding_boxes": boxes}
    (fmow / "airport_0_0_rgb.json").write_text(json.dumps(meta))
    written = []
    for name, root in (("camelyon16", raw), ("fmow", tmp_path / "fmow")):
        out = build_manifest(name, root, tmp_path / name / "manifest.csv")
        written += sorted((out.parent / "annotations").glob("*.geojson"))
    assert [len(json.loads(p.read_text())["features"]) for p in written] == [3, 2]
    for p in written:
        assert geojson_problems(p) == [], p
