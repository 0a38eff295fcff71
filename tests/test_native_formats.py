"""Native-format loaders on tiny fixtures written in the real formats (ASAP XML, CRCHistoPhenotypes
.mat, Swedish traffic-sign annotations.txt, fMoW JSON, NeedleCamelyon label files)."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from zoomin.config import Config
from zoomin.data.camelyon16 import read_asap_xml
from zoomin.data.colon_cancer import read_detections
from zoomin.data.fmow import CATEGORIES, read_fmow_json
from zoomin.data.native import DATASETS, build_manifest
from zoomin.data.traffic_signs import read_sign_annotations, speed_limit_class
from zoomin.manifest import read_manifest

CONFIGS = Path(__file__).resolve().parents[1] / "zoomin" / "configs"


def asap(annotations: list[tuple[str, str, str, list[tuple[int, float, float]]]]) -> str:
    """An ASAP XML document: [(name, type, group, [(order, x, y)])]."""
    body = "".join(
        f'<Annotation Name="{n}" Type="{t}" PartOfGroup="{g}" Color="#F4FA58"><Coordinates>'
        + "".join(f'<Coordinate Order="{o}" X="{x}" Y="{y}" />' for o, x, y in pts)
        + "</Coordinates></Annotation>" for n, t, g, pts in annotations)
    groups = "".join(f'<Group Name="{g}" PartOfGroup="None" Color="#ff0000"><Attributes /></Group>'
                     for g in ("_0", "_1", "_2"))
    return (f'<?xml version="1.0"?><ASAP_Annotations><Annotations>{body}</Annotations>'
            f"<AnnotationGroups>{groups}</AnnotationGroups></ASAP_Annotations>")


LESION_XML = asap([
    ("_0", "Polygon", "_0", [(1, 120.5, 10.0), (0, 100.0, 10.0), (2, 120.5, 40.25), (3, 100.0, 40.25)]),
    ("_1", "Spline", "_1", [(0, 500.0, 600.0), (1, 540.0, 600.0), (2, 520.0, 650.0)]),
    ("_2", "Polygon", "_2", [(0, 105.0, 15.0), (1, 110.0, 15.0), (2, 110.0, 20.0)]),
    ("Annotation 3", "Dot", "_0", [(0, 7.0, 8.0)]),
])


def tiny_tif(path: Path) -> Path:
    import tifffile
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, np.full((8, 8, 3), 200, np.uint8), photometric="rgb")
    return path


def tiny_image(path: Path, size=(12, 16)) -> Path:
    from PIL import Image
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((*size, 3), np.uint8)).save(path)
    return path


def rows_by_id(manifest: Path) -> dict[str, dict]:
    with open(manifest, newline="") as fh:
        return {r["slide_id"]: r for r in csv.DictReader(fh)}


# ---------------------------------------------------------------- CAMELYON16

def test_asap_xml_orders_vertices_closes_rings_and_keeps_exclusions(tmp_path):
    p = tmp_path / "tumor_001.xml"
    p.write_text(LESION_XML)
    feats = read_asap_xml(p)["features"]
    assert [f["properties"]["classification"]["name"] for f in feats] == ["Tumor", "Tumor", "Exclusion"]
    assert [f["properties"]["group"] for f in feats] == ["_0", "_1", "_2"]  # the Dot is not a region
    ring = feats[0]["geometry"]["coordinates"][0]
    assert ring == [[100.0, 10.0], [120.5, 10.0], [120.5, 40.25], [100.0, 40.25], [100.0, 10.0]]
    assert feats[1]["geometry"]["coordinates"][0][-1] == [500.0, 600.0]
    assert feats[2]["geometry"]["type"] == "Polygon"


@pytest.mark.parametrize("text, problem", [
    ("<ASAP_Annotations><Annotations>", "not valid XML"),
    ("<Annotations/>", "expected <ASAP_Annotations>"),
    (asap([("a", "Polygon", "Stroma", [(0, 1, 1), (1, 2, 1), (2, 2, 2)])]), "unknown PartOfGroup 'Stroma'"),
    (asap([("a", "Polygon", "_0", [(0, 1, 1), (1, 2, 1)])]), "2 coordinate(s)"),
    (asap([("a", "Polygon", "_0", [(0, 1, 1), (1, "x", 1), (2, 2, 2)])]), "without numeric"),
])
def test_asap_xml_errors_name_the_file(tmp_path, text, problem):
    p = tmp_path / "bad.xml"
    p.write_text(text)
    with pytest.raises(ValueError) as e:
        read_asap_xml(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: ") and problem in msg and "\n" not in msg


def camelyon_layout(root: Path, reference: bool = True) -> None:
    tiny_tif(root / "training" / "normal" / "normal_001.tif")
    tiny_tif(root / "training" / "tumor" / "tumor_001.tif")
    tiny_tif(root / "training" / "tumor" / "tumor_002.tif")  # positive without outlines
    tiny_tif(root / "testing" / "images" / "test_001.tif")
    tiny_tif(root / "testing" / "images" / "test_002.tif")
    (root / "training" / "lesion_annotations").mkdir(parents=True)
    (root / "training" / "lesion_annotations" / "tumor_001.xml").write_text(LESION_XML)
    (root / "testing" / "lesion_annotations").mkdir(parents=True)
    (root / "testing" / "lesion_annotations" / "test_001.xml").write_text(
        asap([("Annotation 0", "Polygon", "Tumor", [(0, 1, 2), (1, 3, 2), (2, 3, 4)])]))
    if reference:
        (root / "testing" / "reference.csv").write_text("Test_001,Tumor,Macro,Primary\ntest_002,Normal\n")


def test_camelyon16_manifest_labels_splits_and_annotations(tmp_path):
    camelyon_layout(tmp_path / "raw")
    out = build_manifest("camelyon16", tmp_path / "raw", tmp_path / "m" / "camelyon16.csv")
    entries = {e.slide_id: e for e in read_manifest(out)}
    assert {k: (e.label, e.split) for k, e in entries.items()} == {
        "normal_001": (0, "train"), "tumor_001": (1, "train"), "tumor_002": (1, "train"),
        "test_001": (1, "test"), "test_002": (0, "test")}
    assert entries["tumor_001"].path == (tmp_path / "raw/training/tumor/tumor_001.tif").resolve()
    assert entries["normal_001"].annotation is None and entries["tumor_002"].annotation is None
    gj = json.loads(entries["tumor_001"].annotation.read_text())
    assert gj == read_asap_xml(tmp_path / "raw/training/lesion_annotations/tumor_001.xml")
    assert rows_by_id(out)["tumor_001"]["annotation"] == "annotations/tumor_001.geojson"  # relative
    test_ring = json.loads(entries["test_001"].annotation.read_text())["features"][0]["geometry"]["coordinates"][0]
    assert test_ring == [[1, 2], [3, 2], [3, 4], [1, 2]]


def test_camelyon16_errors(tmp_path):
    camelyon_layout(tmp_path, reference=False)
    with pytest.raises(FileNotFoundError, match=r"reference\.csv: test labels not found"):
        build_manifest("camelyon16", tmp_path, tmp_path / "m.csv")
    (tmp_path / "testing" / "reference.csv").write_text("test_001,Tumor\ntest_002,Maybe\n")
    with pytest.raises(ValueError, match=r"reference\.csv:2: class 'Maybe'"):
        build_manifest("camelyon16", tmp_path, tmp_path / "m.csv")


# ---------------------------------------------------------------- colon cancer

def colon_image(base: Path, n: int, epithelial: np.ndarray) -> None:
    from scipy.io import savemat
    d = base / f"img{n}"
    tiny_image(d / f"img{n}.bmp", (500, 500))
    savemat(d / f"img{n}_epithelial.mat", {"detection": epithelial})
    savemat(d / f"img{n}_fibroblast.mat", {"detection": np.array([[10.5, 20.0]])})


def test_colon_cancer_labels_from_epithelial_nuclei_and_folds(tmp_path):
    base = tmp_path / "CRCHistoPhenotypes_2016_04_28" / "Classification"
    colon_image(base, 1, np.array([[250.2, 31.0], [12.0, 480.5]]))
    colon_image(base, 2, np.zeros((0, 0)))  # MATLAB's empty detection
    colon_image(base, 10, np.zeros((0, 2)))
    colon_image(base, 11, np.array([[1.0, 2.0]]))
    det = read_detections(base / "img1" / "img1_epithelial.mat")
    assert det.shape == (2, 2) and np.allclose(det, [[250.2, 31.0], [12.0, 480.5]])
    assert read_detections(base / "img2" / "img2_epithelial.mat").shape == (0, 2)
    out = build_manifest("colon_cancer", base.parent, tmp_path / "colon.csv")
    got = {e.slide_id: (e.label, e.split) for e in read_manifest(out)}
    assert got == {"img1": (1, "fold1"), "img2": (0, "fold1"), "img10": (0, "fold1"), "img11": (1, "fold2")}
    assert list(rows_by_id(out)) == ["img1", "img2", "img10", "img11"]  # numeric order


def test_colon_cancer_errors(tmp_path):
    from scipy.io import savemat
    colon_image(tmp_path, 1, np.array([[1.0, 2.0]]))
    bad = tmp_path / "img1" / "img1_epithelial.mat"
    savemat(bad, {"centroids": np.ones((2, 2))})
    with pytest.raises(ValueError, match=r"img1_epithelial\.mat: no 'detection' array \(found \['centroids'\]\)"):
        build_manifest("colon_cancer", tmp_path, tmp_path / "m.csv")
    bad.write_bytes(b"not a mat file at all")
    with pytest.raises(ValueError, match=r"img1_epithelial\.mat: not a MATLAB \.mat file"):
        read_detections(bad)
    bad.unlink()
    with pytest.raises(FileNotFoundError, match=r"img1_epithelial\.mat: nucleus file not found"):
        build_manifest("colon_cancer", tmp_path, tmp_path / "m.csv")


# ---------------------------------------------------------------- Swedish traffic signs

SET1 = """\
e0.jpg:
misc.jpg:MISC_SIGNS;
s50.jpg:VISIBLE, 620.5, 300.0, 600.0, 280.0, PROHIBITORY, 50_SIGN;
mixed.jpg:BLURRED, 900, 500, 800, 400, PROHIBITORY, 70_SIGN;VISIBLE, 110, 60, 100, 50, PROHIBITORY, 80_SIGN;MISC_SIGNS;

big.jpg:VISIBLE, 210, 210, 200, 200, PROHIBITORY, 50_SIGN;VISIBLE, 340l, 240, 300, 200, PROHIBITORY, 70_SIGN;
other.jpg:VISIBLE, 10, 10, 0, 0, OTHER, PEDESTRIAN_CROSSING;
occl.jpg:OCCLUDED, 10, 10, 0, 0, PROHIBITORY, 50_SIGN;
"""


def test_sign_annotations_parse_fields_in_the_documented_order(tmp_path):
    p = tmp_path / "annotations.txt"
    p.write_text(SET1)
    signs = read_sign_annotations(p)
    assert list(signs) == ["e0.jpg", "misc.jpg", "s50.jpg", "mixed.jpg", "big.jpg", "other.jpg", "occl.jpg"]
    s = signs["s50.jpg"][0]
    assert (s.visibility, s.box, s.type, s.name) == ("VISIBLE", (600.0, 280.0, 620.5, 300.0), "PROHIBITORY", "50_SIGN")
    assert signs["misc.jpg"] == [] and len(signs["mixed.jpg"]) == 2
    assert signs["big.jpg"][1].box == (300.0, 200.0, 340.0, 240.0)  # trailing junk ignored, like ATS
    labels = {k: speed_limit_class(v) for k, v in signs.items()}
    assert labels == {"e0.jpg": 0, "misc.jpg": 0, "s50.jpg": 1, "mixed.jpg": 3,  # visible 80 beats blurred 70
                      "big.jpg": 2,  # both visible: the larger (70) wins
                      "other.jpg": None, "occl.jpg": None}  # no speed limit / not visible: dropped


@pytest.mark.parametrize("text, problem", [
    ("a.jpg:VISIBLE, 1, 1, 0, 0, PROHIBITORY, 40_SIGN;", ":1: unknown sign name '40_SIGN'"),
    ("a.jpg:\n\na.jpg:", ":3: image 'a.jpg' annotated twice"),
    ("a.jpg:HIDDEN, 1, 1, 0, 0, OTHER, STOP;", ":1: unknown visibility 'HIDDEN'"),
    ("a.jpg:VISIBLE, 1, 1, 0, PROHIBITORY, STOP;", "has 6 fields, expected 7"),
    ("a.jpg:VISIBLE, 1, x, 0, 0, OTHER, STOP;", "coordinate 'x' is not a number"),
    ("no colon here", "expected 'image.jpg:signs'"),
])
def test_sign_annotation_errors_name_file_and_line(tmp_path, text, problem):
    p = tmp_path / "annotations.txt"
    p.write_text(text)
    with pytest.raises(ValueError) as e:
        read_sign_annotations(p)
    assert str(e.value).startswith(f"{p}:") and problem in str(e.value)


def test_traffic_signs_manifest(tmp_path):
    raw = tmp_path / "sts"
    (raw / "Set1").mkdir(parents=True)
    (raw / "Set1" / "annotations.txt").write_text(SET1)
    for name in ("e0", "misc", "s50", "mixed", "big"):  # dropped images need no file
        tiny_image(raw / "Set1" / f"{name}.jpg")
    (raw / "Set2").mkdir()
    (raw / "Set2" / "annotations.txt").write_text("e0.jpg:\n")
    tiny_image(raw / "Set2" / "e0.jpg")
    out = build_manifest("traffic_signs", raw, tmp_path / "signs.csv")
    got = {e.slide_id: (e.label, e.split) for e in read_manifest(out)}
    assert got == {"set1_e0": (0, "train"), "set1_misc": (0, "train"), "set1_s50": (1, "train"),
                   "set1_mixed": (3, "train"), "set1_big": (2, "train"), "set2_e0": (0, "test")}
    entries = {e.slide_id: e for e in read_manifest(out)}
    assert entries["set1_e0"].annotation is None
    feats = json.loads(entries["set1_mixed"].annotation.read_text())["features"]
    assert [f["properties"]["classification"]["name"] for f in feats] == ["70_SIGN", "80_SIGN"]
    assert feats[1]["geometry"]["coordinates"][0] == [[100, 50], [110, 50], [110, 60], [100, 60], [100, 50]]
    (raw / "Set1" / "big.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"annotations\.txt: image big\.jpg not found"):
        build_manifest("traffic_signs", raw, tmp_path / "signs.csv")


# ---------------------------------------------------------------- fMoW

def fmow_image(root: Path, split: str, cat: str, n: int, boxes: list, other: str | None = None) -> Path:
    d = root / split / cat / f"{cat}_{n}"
    stem = f"{cat}_{n}_0_rgb"
    tiny_image(d / f"{stem}.jpg", (40, 60))
    bbs = [{"category": cat, "box": b, "ID": i} for i, b in enumerate(boxes)]
    if other:
        bbs.append({"category": other, "box": [0, 0, 1, 1], "ID": 99})
    meta = {"img_filename": f"{stem}.jpg", "gsd": 0.5, "img_width": 60, "img_height": 40, "bounding_boxes": bbs}
    (d / f"{stem}.json").write_text(json.dumps(meta))
    return d / f"{stem}.json"


def test_fmow_json_and_manifest(tmp_path):
    assert len(CATEGORIES) == 62 and list(CATEGORIES) == sorted(CATEGORIES)
    js = fmow_image(tmp_path, "train", "airport", 0, [[10, 5, 20, 8], [1, 2, 3, 4]], other="zoo")
    im = read_fmow_json(js)
    assert im.category == "airport" and im.image == js.with_suffix(".jpg")
    assert np.array_equal(im.boxes, [[10, 5, 30, 13], [1, 2, 4, 6]])  # xywh -> x0 y0 x1 y1; zoo box left out
    fmow_image(tmp_path, "val", "zoo", 3, [[0, 0, 5, 5]])
    out = build_manifest("fmow", tmp_path, tmp_path / "fmow.csv")
    got = {e.slide_id: (e.label, e.split) for e in read_manifest(out)}
    assert got == {"train_airport_0_0_rgb": (0, "train"), "val_zoo_3_0_rgb": (61, "val")}
    ring = json.loads(read_manifest(out)[0].annotation.read_text())["features"][0]["geometry"]["coordinates"][0]
    assert ring == [[10, 5], [30, 5], [30, 13], [10, 13], [10, 5]]


def test_fmow_errors(tmp_path):
    js = fmow_image(tmp_path, "train", "barn", 0, [[0, 0, 2, 2]])
    meta = json.loads(js.read_text())
    js.write_text(json.dumps({**meta, "bounding_boxes": [{"category": "castle", "box": [0, 0, 1, 1]}]}))
    with pytest.raises(ValueError, match=r"barn_0_0_rgb\.json: unknown category 'castle'"):
        read_fmow_json(js)
    js.write_text("{not json")
    with pytest.raises(ValueError, match=r"barn_0_0_rgb\.json: not valid JSON"):
        build_manifest("fmow", tmp_path, tmp_path / "m.csv")
    js.write_text(json.dumps(meta))
    js.with_suffix(".jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"barn_0_0_rgb\.json: image barn_0_0_rgb\.jpg not found"):
        read_fmow_json(js)


# ---------------------------------------------------------------- NeedleCamelyon, dispatch, configs

def test_needle_camelyon_label_files(tmp_path):
    for name in ("a", "b", "c"):
        tiny_image(tmp_path / "images" / f"{name}.png")
    (tmp_path / "train.csv").write_text("images/a.png,1\nimages/b.png,0\n")
    (tmp_path / "test.csv").write_text("images/c.png,1\n\n")
    out = build_manifest("needle-camelyon", tmp_path, tmp_path / "manifest.csv")
    got = {e.slide_id: (e.label, e.split) for e in read_manifest(out)}
    assert got == {"images/a": (1, "train"), "images/b": (0, "train"), "images/c": (1, "test")}
    assert build_manifest("needle_camelyon", tmp_path, tmp_path / "manifest.csv") == out  # rerun skips it
    (tmp_path / "val.csv").write_text("images/a.png,1\n")
    with pytest.raises(ValueError, match=r"val\.csv: image images/a already listed in train\.csv"):
        build_manifest("needle_camelyon", tmp_path, tmp_path / "manifest.csv")
    (tmp_path / "val.csv").write_text("images/z.png,1\n")
    with pytest.raises(FileNotFoundError, match=r"val\.csv:1: image images/z\.png not found"):
        build_manifest("needle_camelyon", tmp_path, tmp_path / "manifest.csv")


def test_build_manifest_rejects_unknown_names_missing_and_empty_roots(tmp_path):
    with pytest.raises(ValueError, match="unknown data set 'imagenet'"):
        build_manifest("imagenet", tmp_path, tmp_path / "m.csv")
    with pytest.raises(FileNotFoundError, match="nowhere: data set folder not found"):
        build_manifest("fmow", tmp_path / "nowhere", tmp_path / "m.csv")
    with pytest.raises(ValueError, match="no camelyon16 images found"):
        build_manifest("camelyon16", tmp_path, tmp_path / "m.csv")


@pytest.mark.parametrize("name, classes", [("camelyon16", 2), ("colon_cancer", 2), ("fmow", 62),
                                           ("needle_camelyon", 2), ("traffic_signs", 4)])
def test_dataset_configs_load(name, classes):
    assert name in DATASETS
    cfg = Config.from_yaml(CONFIGS / f"{name}.yaml")
    assert cfg.data.task == "manifest" and cfg.model.in_channels == 3 and cfg.model.num_classes == classes
    assert (Path(__file__).resolve().parents[1] / "data_manifests" / f"{name}.md").is_file()


def test_manifest_command_builds_from_a_raw_layout(tmp_path, capsys):
    from zoomin.cli import main
    camelyon_layout(tmp_path / "raw")
    out = tmp_path / "c16.csv"
    assert main(["manifest", "camelyon16", str(tmp_path / "raw"), str(out)]) == 0
    assert len(read_manifest(out)) == 5 and str(out) in capsys.readouterr().out
    assert main(["manifest", "imagenet", str(tmp_path / "raw"), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("zoomin: error:") and err.count("\n") == 1


# ---------------------------------------------------------------- one GeoJSON builder

def signed_area(ring) -> float:
    x, y = np.asarray(ring, float).T
    return 0.5 * float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))


def test_geojson_rings_are_closed_and_oriented_one_way():
    from zoomin.geojson import boxes_geojson, polygon_feature
    clockwise = [[0, 0], [0, 10], [10, 10], [10, 0]]  # negative shoelace area as written
    f = polygon_feature(clockwise, "Tumor", name="a")
    ring = f["geometry"]["coordinates"][0]
    assert ring == [[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]] and signed_area(ring) == 100
    assert f["properties"] == {"objectType": "annotation", "classification": {"name": "Tumor"}, "name": "a"}
    assert polygon_feature(ring, "Tumor")["geometry"]["coordinates"][0] == ring  # closed input kept as is
    with pytest.raises(ValueError, match="at least 3 vertices"):
        polygon_feature([[0, 0], [1, 1], [0, 0]], "Tumor")
    fc = boxes_geojson(np.array([[5, 6, 9, 8], [0, 0, 1, 1]]), ["x", "y"])
    assert [signed_area(f["geometry"]["coordinates"][0]) for f in fc["features"]] == [8, 1]
    assert all(len(f["geometry"]["coordinates"][0]) == 5 for f in fc["features"])


def test_heatmap_geojson_uses_the_same_builder():
    import torch
    from types import SimpleNamespace

    from zoomin.heatmaps import heatmap_geojson
    alpha = torch.zeros(1, 4, 4)
    alpha[0, 1, 2] = 1.0
    tr = SimpleNamespace(alpha=alpha, image_size=(400, 800), subtile_valid=torch.tensor([[True, False]]),
                         subtile_boxes=torch.tensor([[[10.0, 20.0, 30.0, 40.0], [0.0, 0.0, 1.0, 1.0]]]),
                         weights=torch.tensor([[0.75, 0.25]]))
    gj = heatmap_geojson(tr, "s1")
    assert gj["type"] == "FeatureCollection" and gj["properties"] == {"slide_id": "s1"}
    cell, sub = gj["features"]
    assert cell["geometry"]["coordinates"][0] == [[400, 100], [600, 100], [600, 200], [400, 200], [400, 100]]
    assert cell["properties"]["classification"] == {"name": "Attention"} and cell["properties"]["measurements"] == {"alpha": 1.0}
    assert sub["geometry"]["coordinates"][0][2] == [40, 60] and sub["properties"]["measurements"] == {"weight": 0.75}
    assert all(signed_area(f["geometry"]["coordinates"][0]) > 0 for f in gj["features"])
