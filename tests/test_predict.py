"""Manifests and ``zoomin predict`` on synthetic slides: predictions CSV, heatmaps, bad inputs."""
import csv
import json

import pytest
import torch

pytest.importorskip("large_image")

from PIL import Image  # noqa: E402  (large-image's dependency)

from zoomin.checkpoint import load_model, save_model  # noqa: E402
from zoomin.cli import main  # noqa: E402
from zoomin.config import Config, ModelConfig  # noqa: E402
from zoomin.geometry import view_size  # noqa: E402
from zoomin.manifest import read_manifest  # noqa: E402
from zoomin.model import build_model  # noqa: E402
from zoomin.slides import SlideSource  # noqa: E402
from zoomin.synth import synth_slides  # noqa: E402


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    d = tmp_path_factory.mktemp("slides")
    manifest = synth_slides(d, 3, 1024, seed=1, tile=128, progress=False)
    cfg = Config(model=ModelConfig(in_channels=3, num_classes=2, scale1=0.05, tile=128, scale2=0.25, subtile=32,
                                   n_samples=6, feature_dim=8, feature_width=8, foreground="otsu_dark"))
    ckpt = save_model(d / "model.pt", build_model(cfg.model), cfg)
    return d, manifest, ckpt


def test_manifest_reads_and_resolves(slides):
    d, manifest, _ = slides
    entries = read_manifest(manifest)
    assert len(entries) == 3 and all(e.path.is_file() for e in entries)
    assert {e.label for e in entries} <= {0, 1}


@pytest.mark.parametrize("text,message", [
    ("slide_id,path\na,x.tif\n", "missing column(s) label"),
    ("slide_id,path,label\na,synth_0000.tif,1\na,synth_0001.tif,0\n", ":3: duplicate slide_id 'a'"),
    ("slide_id,path,label\na,synth_0000.tif,tumour\n", ":2: label 'tumour' is not a class index"),
    ("slide_id,path,label\na,missing.tif,1\n", ":2: slide file not found: missing.tif"),
    ("slide_id,path,label\n", "no slides listed"),
])
def test_bad_manifests_are_one_line(slides, text, message):
    d, _, _ = slides
    bad = d / "bad.csv"
    bad.write_text(text)
    with pytest.raises(ValueError) as e:
        read_manifest(bad)
    assert message in str(e.value) and "bad.csv" in str(e.value) and "\n" not in str(e.value)


def test_predict_writes_csv_and_heatmaps_and_skips_bad_slides(slides, tmp_path, capsys):
    d, manifest, ckpt = slides
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"\x00" * 10)
    out = tmp_path / "pred.csv"
    rc = main(["predict", "--checkpoint", str(ckpt), "--out", str(out), "--heatmaps", str(tmp_path / "hm"),
               "--quiet", "--passes", "2", str(manifest), str(junk)])
    assert rc == 0
    err = capsys.readouterr().err
    assert "skipped" in err and "junk.tif" in err and err.count("\n") == 1
    rows = list(csv.DictReader(open(out)))
    assert [r["slide_id"] for r in rows] == ["synth_0000", "synth_0001", "synth_0002"]
    for r in rows:
        assert abs(float(r["p_0"]) + float(r["p_1"]) - 1) < 1e-4 and r["prediction"] in ("0", "1")
        with Image.open(tmp_path / "hm" / f"{r['slide_id']}.png") as png:  # the stage-I attention map
            assert png.size[::-1] == view_size(1024, 1024, 0.05)
        gj = json.loads((tmp_path / "hm" / f"{r['slide_id']}.geojson").read_text())
        assert gj["type"] == "FeatureCollection" and gj["features"]
        dsa = json.loads((tmp_path / "hm" / f"{r['slide_id']}.dsa.json").read_text())
        assert dsa["elements"][0]["type"] == "heatmap" and dsa["elements"][0]["points"]


def test_predict_with_only_bad_inputs_fails(slides, tmp_path):
    _, _, ckpt = slides
    rc = main(["predict", "--checkpoint", str(ckpt), "--out", str(tmp_path / "p.csv"), "--quiet",
               str(tmp_path / "nothing.tif")])
    assert rc == 1


def test_train_on_a_manifest_then_predict(slides, tmp_path):
    d, manifest, _ = slides
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {kind: zoom_in, in_channels: 3, num_classes: 2, scale1: 0.05, tile: 128, scale2: 0.25,"
                   " subtile: 32, n_samples: 4, feature_dim: 8, feature_width: 8, foreground: otsu_dark}\n"
                   "train: {epochs: 1, batch_size: 2, contrastive_weight: 0.5, eval_mode: topk, threads: 1}\n")
    rows = list(csv.DictReader(open(manifest)))
    for i, r in enumerate(rows):  # make sure both splits exist
        r["split"] = "test" if i == 0 else "train"
    m2 = d / "m2.csv"
    with open(m2, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    out = tmp_path / "run"
    assert main(["train", "--manifest", str(m2), "--config", str(cfg), "--out", str(out), "--quiet"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    model, _ = load_model(out / "checkpoint.pt")
    with torch.no_grad():  # the one test slide, as the trainer scored it (deterministic top-k)
        logits = model.eval()(SlideSource(d / rows[0]["path"], channels=3), mode="topk").logits
    assert m["epochs"] == 1 and m["test_accuracy"] == float(int(logits.argmax()) == int(rows[0]["label"]))
    assert main(["predict", "--checkpoint", str(out / "checkpoint.pt"), "--out", str(tmp_path / "p.csv"),
                 "--quiet", str(m2)]) == 0


def test_auc():
    from zoomin.evaluate import auc
    assert auc(torch.tensor([0.9, 0.8, 0.3, 0.1]), torch.tensor([1, 1, 0, 0])) == 1.0
    assert auc(torch.tensor([0.5, 0.5]), torch.tensor([1, 0])) == 0.5
    assert auc(torch.tensor([0.2, 0.9]), torch.tensor([1, 0])) == 0.0
    assert auc(torch.tensor([0.2]), torch.tensor([1])) is None


@pytest.mark.slow
def test_predict_explore_writes_one_offline_html_per_slide(slides, tmp_path):
    pytest.importorskip("holoviews")
    _, manifest, ckpt = slides
    out = tmp_path / "p.csv"
    base = tmp_path / "base.csv"
    assert main(["predict", "--checkpoint", str(ckpt), "--out", str(base), "--quiet", str(manifest)]) == 0
    assert main(["predict", "--checkpoint", str(ckpt), "--out", str(out), "--explore", str(tmp_path / "ex"),
                 "--quiet", str(manifest)]) == 0
    assert out.read_text() == base.read_text()  # exploring does not change the predictions
    pages = sorted(p.name for p in (tmp_path / "ex").iterdir())
    assert pages == ["synth_0000.html", "synth_0001.html", "synth_0002.html"]
    html = (tmp_path / "ex" / "synth_0001.html").read_text()
    assert "synth_0001" in html and "cdn.bokeh.org" not in html
