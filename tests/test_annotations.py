"""Annotations as a lazy mask source, and the annotation loss wired into slide training."""
import json

import numpy as np
import pytest
import torch

from zoomin.annotations import MaskSource, read_geojson


def square(x, y, w, h, cls="Tumor"):
    ring = [[x, y], [x + w, y], [x + w, y + h], [x, y + h], [x, y]]
    return {"type": "Feature", "properties": {"classification": {"name": cls}},
            "geometry": {"type": "Polygon", "coordinates": [ring]}}


def collection(*feats):
    return {"type": "FeatureCollection", "features": list(feats)}


def test_views_and_reads_cover_the_polygons():
    m = MaskSource(collection(square(100, 200, 300, 100), square(150, 220, 50, 50, "Exclusion")), (1000, 800))
    v = m.view(0.1)  # (1, 1, 100, 80)
    assert v.shape == (1, 1, 100, 80)
    area = (300 * 100 - 50 * 50) * 0.01  # level-0 area in view pixels
    assert float(v.sum()) == pytest.approx(area, rel=0.005)
    assert float(v[0, 0, 28, 30]) == 1.0 and float(v[0, 0, 24, 17]) == 0.0  # inside / inside the exclusion
    boxes = torch.tensor([[90.0, 190.0, 40.0, 40.0], [600.0, 600.0, 50.0, 50.0]])
    r = m.read(torch.zeros(2, dtype=torch.long), boxes, 1.0, (40, 40))
    assert r.shape == (2, 1, 40, 40) and float(r[1].sum()) == 0
    assert float(r[0].sum()) == pytest.approx(30 * 30, rel=0.05)  # the corner of the square in the window


def test_holes_are_outside_and_edges_do_not_bleed():
    outer = [[0, 0], [64, 0], [64, 64], [0, 64], [0, 0]]
    hole = [[16, 16], [48, 16], [48, 48], [16, 48], [16, 16]]
    feat = {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [outer, hole]}}
    m = MaskSource(feat, (128, 128))
    v = m.view(1.0)[0, 0]
    assert float(v.sum()) == 64 * 64 - 32 * 32  # exact on a pixel-aligned square with a hole
    assert float(v[64:, :].sum()) == 0 and float(v[:, 64:].sum()) == 0  # nothing past the edge
    assert float(v[20, 20]) == 0 and float(v[5, 5]) == 1
    half = m.view(0.5)[0, 0]  # 64 x 64 grid, the square covers 32 x 32 view pixels
    assert float(half.sum()) == pytest.approx((64 * 64 - 32 * 32) / 4)


def test_a_lesion_smaller_than_a_view_pixel_still_counts():
    m = MaskSource(collection(square(500, 500, 6, 6)), (2000, 2000))
    v = m.view(0.05)  # 100 x 100, one view pixel = 20 level-0 pixels
    assert 0 < float(v.sum()) <= 1 and int(v.flatten().argmax()) == 25 * 100 + 25


def test_a_bad_outline_file_skips_its_slide_before_training(tmp_path, capsys):
    pytest.importorskip("large_image")
    from zoomin.config import Config
    from zoomin.data.factory import usable_slides
    from zoomin.manifest import read_manifest
    from zoomin.synth import synth_slides
    manifest = synth_slides(tmp_path / "s", 2, 512, seed=1, tile=256, positive_fraction=1.0, progress=False)
    entries = read_manifest(manifest)
    entries[0].annotation.write_text("{broken")
    cfg = Config.from_dict({"model": dict(kind="zoom_in", in_channels=3, num_classes=2, stage1_resolution=0.0625, tile=128,
                                          stage2_resolution=0.25, subtile=32), "train": dict(annotation_weight=1.0)})
    kept = usable_slides(entries, cfg)
    assert kept == entries[1:]
    err = capsys.readouterr().err
    assert "skipped" in err and "not valid GeoJSON" in err and err.count("\n") == 1
    cfg.train.annotation_weight = 0.0  # outlines that are not trained on: the slide is kept without them
    bad = entries[0].annotation
    kept = usable_slides(entries, cfg)
    assert kept[1:] == entries[1:] and kept[0].annotation is None and kept[0].path == entries[0].path
    assert entries[0].annotation == bad  # the caller's rows are not changed
    assert "outlines ignored" in capsys.readouterr().err
    from zoomin.data.slides import SlideDataset
    ds = SlideDataset(kept, annotations=True)
    assert ds[0][0].mask is None and ds[1][0].mask is not None and ds[1][0].slide_id == kept[1].slide_id
    assert SlideDataset(kept)[1][0].mask is None  # annotations=False: no outlines read


def test_bad_geojson_is_one_line(tmp_path):
    bad = tmp_path / "a.geojson"
    bad.write_text("{nope")
    with pytest.raises(ValueError, match=r"a\.geojson: not valid GeoJSON"):
        read_geojson(bad)
    with pytest.raises(FileNotFoundError, match="annotation file not found"):
        MaskSource(tmp_path / "missing.geojson", (10, 10))
    (tmp_path / "b.geojson").write_text(json.dumps(collection({"type": "Feature", "properties": {},
                                        "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 1]]]}})))
    with pytest.raises(ValueError, match="at least 3"):
        MaskSource(tmp_path / "b.geojson", (10, 10))


@pytest.mark.slow
def test_annotation_weight_pulls_slide_attention_onto_the_lesion(tmp_path):
    pytest.importorskip("large_image")
    from zoomin.config import Config
    from zoomin.data.slides import SlideDataset
    from zoomin.manifest import read_manifest
    from zoomin.synth import synth_slides
    from zoomin.train import Trainer
    manifest = synth_slides(tmp_path / "s", 4, 1024, seed=3, tile=256, positive_fraction=1.0, test_fraction=0.25,
                            progress=False)
    entries = read_manifest(manifest)
    assert all(e.annotation for e in entries)

    def mass_on_lesions(model):
        ds = SlideDataset(entries, annotations=True)
        out = []
        with torch.no_grad():
            for i in range(len(ds)):
                src, _ = ds[i]
                tr = model.eval()(src, generator=torch.Generator().manual_seed(0))
                q = src.mask.view(tr.scale1)[0, 0] > 0
                out.append(float(tr.alpha[0][q].sum()))
        return np.mean(out)

    def train(weight):
        cfg = Config.from_dict({
            "model": dict(kind="zoom_in", in_channels=3, num_classes=2, stage1_resolution=0.0625, tile=128, stage2_resolution=0.25,
                          subtile=32, n_samples=4, feature_dim=8, feature_width=8, foreground="otsu_dark"),
            "data": dict(task="manifest", manifest=str(manifest)),
            "train": dict(epochs=30, batch_size=2, lr=0.01, annotation_weight=weight, eval_every=0, threads=1,
                          bn_recalibrate=0)})
        tr = Trainer(cfg, tmp_path / f"run{weight}", progress=False)
        tr.fit()
        tr.model.history = tr.history
        return tr.model, tr.history

    def train_history_keys(model):
        return set().union(*model.history)

    plain, _ = train(0.0)
    supervised, history = train(1.0)
    assert "annotation" in history[0] and "annotation" not in train_history_keys(plain)
    before, after = mass_on_lesions(plain), mass_on_lesions(supervised)
    assert after > 0.5 and after > 10 * before  # measured: about 0.85 against 0.01


def test_outlines_never_train_without_annotation_weight(tmp_path):
    """With ``annotation_weight: 0`` a manifest's outlines feed only the test diagnostics: training
    on it ends bitwise equal to training on the same rows without the annotation column."""
    pytest.importorskip("large_image")
    from zoomin.config import Config
    from zoomin.manifest import read_manifest, write_manifest
    from zoomin.synth import synth_slides
    from zoomin.train import Trainer
    manifest = synth_slides(tmp_path / "s", 4, 512, seed=2, tile=256, positive_fraction=0.5, test_fraction=0.25,
                            progress=False)
    labels_only = write_manifest(read_manifest(manifest), tmp_path / "s" / "labels.csv", annotations=False)

    def train(path):
        cfg = Config.from_dict({
            "model": dict(kind="zoom_in", in_channels=3, num_classes=2, stage1_resolution=0.0625, tile=128, stage2_resolution=0.25,
                          subtile=32, n_samples=4, feature_dim=8, feature_width=8, foreground="otsu_dark",
                          evidence=True),
            "data": dict(task="manifest", manifest=str(path)),
            "train": dict(epochs=2, batch_size=2, lr=0.01, evidence_weight=1.0, instance_weight=1.0,
                          annotation_weight=0.0, threads=1, bn_recalibrate=0)})
        tr = Trainer(cfg, tmp_path / path.stem, progress=False, log=False)
        tr.fit()
        return tr.model.state_dict(), tr.history

    (with_outlines, h1), (without, h2) = train(manifest), train(labels_only)
    assert all(torch.equal(with_outlines[k], without[k]) for k in with_outlines)
    assert [r["ce"] for r in h1] == [r["ce"] for r in h2]
    has_positive_test = any(e.label == 1 and e.split == "test" for e in read_manifest(manifest))
    assert ("test_roi_rank" in h1[-1]) == has_positive_test and "test_roi_rank" not in h2[-1]  # diagnostics only
