"""Synthetic slides: real pyramidal TIFFs, lesions where the GeoJSON says, a valid manifest."""
import csv
import json

import numpy as np
import pytest
import torch

pytest.importorskip("large_image")

from zoomin.cli import main  # noqa: E402
from zoomin.slides import SlideSource  # noqa: E402
from zoomin.synth import lesion_geojson, make_spec, write_slide  # noqa: E402


def test_slide_is_a_pyramid_with_lesions_where_the_geojson_says(tmp_path):
    spec = make_spec(3000, True, np.random.default_rng(3))
    path = write_slide(tmp_path / "s.tif", spec, tile=128)
    src = SlideSource(path)
    assert src.size == (3000, 3000) and src.levels >= 5
    ring = np.array(lesion_geojson(spec)["features"][0]["geometry"]["coordinates"][0])  # (x, y)
    cx, cy = ring[:-1].mean(0)
    centre = src.read(torch.zeros(1, dtype=torch.long), torch.tensor([[int(cx) - 4, int(cy) - 4, 8, 8]]), 1.0, (8, 8))
    far = src.read(torch.zeros(1, dtype=torch.long), torch.tensor([[0, 0, 8, 8]]), 1.0, (8, 8))
    assert centre.mean() < 0.45 < far.mean()  # dark lesion vs bright background
    area = np.pi * spec.lesions[:, 2] * spec.lesions[:, 3]
    assert area.sum() / 3000**2 < 1e-3  # ROI-to-image ratio under 0.1%


def test_negative_slide_has_no_lesion():
    spec = make_spec(2000, False, np.random.default_rng(0))
    assert spec.label == 0 and lesion_geojson(spec)["features"] == []


def test_cli_writes_slides_and_manifest(tmp_path):
    assert main(["synth-slides", "--n", "4", "--size", "1024", "--out", str(tmp_path), "--quiet", "--svs"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "manifest.csv")))
    assert [r["slide_id"] for r in rows] == [f"synth_{i:04d}" for i in range(4)]
    assert {r["label"] for r in rows} == {"0", "1"} and {r["split"] for r in rows} <= {"train", "test"}
    for r in rows:
        src = SlideSource(tmp_path / r["path"])
        assert src.size == (1024, 1024) and type(src._ts).__name__.lower().startswith("openslide")
        if r["label"] == "1":
            assert json.loads((tmp_path / r["annotation"]).read_text())["features"]
        else:
            assert r["annotation"] == ""
