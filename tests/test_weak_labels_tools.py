"""Weak labels on slides zoomin did not shape: real-tissue slides (``zoomin.tissue_slides``), the
answer that follows the evidence (``model.evidence_answer``), several classes, ``zoomin doctor``
and the resolution line at the start of ``zoomin train``."""
import csv
import json

import numpy as np
import pytest
import torch
import yaml

from zoomin.cli import main
from zoomin.config import Config, ModelConfig
from zoomin.model import build_model
from zoomin.tissue_slides import LESIONS, make_slide, tissue_slides

MODEL = dict(in_channels=3, num_classes=3, mpp=1.0, stage1_resolution=16.0, stage1_units="mpp", tile=128, stage2_resolution=4.0, stage2_units="mpp", subtile=32, n_samples=4,
             feature_dim=8, feature_width=8, feature_norm="none", foreground="otsu_dark", evidence=True,
             evidence_answer=True, attention_hidden=4, attention_depth=2)


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    """12 synthetic-tissue slides of 1,024² at 1 µm/px: negatives, dab foci and nuclei foci."""
    d = tmp_path_factory.mktemp("tissue")
    return tissue_slides(d, 12, size=1024, mpp=1.0, background="synthetic", classes=("dab", "nuclei"),
                         roi_ratio=0.002, distractors=2, seed=0, test_fraction=0.25)


def rows(manifest):
    with open(manifest, newline="") as fh:
        return list(csv.DictReader(fh))


def test_tissue_slides_balance_classes_and_splits(slides):
    r = rows(slides)
    labels = [int(x["label"]) for x in r]
    assert sorted(set(labels)) == [0, 1, 2] and np.bincount(labels).tolist() == [4, 4, 4]
    test = [int(x["label"]) for x in r if x["split"] == "test"]
    assert sorted(test) == [0, 1, 2]  # one of each class held out
    assert all(x["mpp"] == "1" for x in r) and "annotation" not in r[0]  # labels only
    assert (slides.parent / "tissue_0001.geojson").exists() and not (slides.parent / "tissue_0000.geojson").exists()


def test_a_focus_changes_only_its_place():
    rng = lambda: np.random.default_rng(7)  # noqa: E731  the same background and islands
    plain, none = make_slide(512, 1.0, "synthetic", None, rng(), distractors=0)
    lesion, circles = make_slide(512, 1.0, "synthetic", "dab", rng(), roi_ratio=0.003, foci=1, distractors=0)
    assert none.shape == (0, 3) and circles.shape == (1, 3)
    y, x, r = circles[0]
    diff = np.abs(lesion.astype(int) - plain.astype(int)).sum(-1) > 30  # (H, W) changed pixels
    yy, xx = np.nonzero(diff)
    assert diff.sum() > 20 and np.hypot(yy - y, xx - x).max() <= r + 3 * 3.5 + 2  # within the focus (+ a cell)


@pytest.mark.parametrize("kind", ["giant-own", "nuclei-own"])
def test_own_colour_lesions_are_painted_in_the_tissues_darkest_colour(kind):
    """The shape-only lesion kinds take the slide's own nuclear colour (the darkest 2 % of its
    tissue), so only their size or crowding tells them from the tissue around."""
    rng = lambda: np.random.default_rng(3)  # noqa: E731
    plain, _ = make_slide(512, 1.0, "ihc", None, rng(), distractors=0)
    lesion, circles = make_slide(512, 1.0, "ihc", kind, rng(), roi_ratio=0.01, foci=1, distractors=0)
    tissue = plain[::4, ::4].reshape(-1, 3).astype(float)
    tissue = tissue[tissue.sum(1) < 3 * 230]  # not glass
    darkest = tissue[tissue.sum(1) <= np.quantile(tissue.sum(1), 0.02)].mean(0)
    changed = np.abs(lesion.astype(int) - plain.astype(int)).sum(-1) > 60  # (H, W) painted pixels
    assert changed.sum() > 50
    painted = lesion[changed].astype(float)
    core = painted[painted.sum(1) <= np.quantile(painted.sum(1), 0.5)].mean(0)  # the cells' cores, not their rims
    assert np.abs(core - darkest).max() < 40, (core, darkest)
    assert np.abs(core - np.array(LESIONS[kind.removesuffix("-own")][2])).max() > 40  # not the fixed colour


def test_the_answer_adds_the_evidence_and_follows_it():
    cfg = ModelConfig(**{**MODEL, "num_classes": 2})
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    x = torch.rand(2, 3, 512, 512)
    tr = model(x, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(tr.logits - tr.answer_evidence, model.classify(tr.z), atol=1e-5)
    stage2 = tr.evidence2_logits if tr.evidence2_logits is not None else 0
    assert torch.allclose(tr.answer_evidence, tr.evidence_logits + stage2)
    with torch.no_grad():  # a g that answers one constant: the answer is the evidence's
        model.classifier.linear.weight.zero_()
        model.classifier.linear.bias.zero_()
    tr = model(x, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(tr.probs, tr.answer_evidence.softmax(-1), atol=1e-6)
    plain = build_model(ModelConfig(**{**MODEL, "num_classes": 2, "evidence_answer": False})).eval()
    assert plain(x).answer_evidence is None


def test_evidence_answer_needs_evidence():
    with pytest.raises(ValueError, match="model.evidence_answer is a setting of model.evidence"):
        Config.from_dict({"model": {"evidence_answer": True}})


def test_three_classes_train_predict_and_report_a_macro_auc(slides, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"model": MODEL, "train": {
        "epochs": 1, "batch_size": 4, "threads": 1, "bn_recalibrate": 0, "contrastive_weight": 0.5,
        "evidence_weight": 1.0, "instance_weight": 1.0, "entropy_weight": 0.0}, "readout": {"passes": 1}}))
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--manifest", str(slides), "--out", str(out), "--quiet"]) == 0
    log = capsys.readouterr().out
    line = next(x for x in log.splitlines() if x.startswith("zoomin train:"))
    assert "9 training and 3 test slides" in line and "read at 1 µm/px" in line and "stage I at 16 µm/px" in line
    assert "64 x 64 view" in line and "stage II at 4 µm/px" in line
    m = json.loads((out / "metrics.json").read_text())
    last = m["history"][-1]
    assert 0 <= last["test_auc"] <= 1 and 0 <= last["test_evidence_auc"] <= 1  # macro one-vs-rest
    assert "train_evidence_accuracy" in last and last["chance"] == pytest.approx(3 / 9)
    csv_out = tmp_path / "p.csv"
    assert main(["predict", "--checkpoint", str(out / "checkpoint.pt"), "--out", str(csv_out), "--quiet",
                 str(slides)]) == 0
    got = rows(csv_out)
    assert len(got) == 12 and {"p_0", "p_1", "p_2"} <= set(got[0])
    assert all(abs(sum(float(r[f"p_{c}"]) for c in range(3)) - 1) < 1e-4 for r in got)
    capsys.readouterr()
    one = str(slides.parent / "tissue_0002.tif")
    assert main(["predict", "--checkpoint", str(out / "checkpoint.pt"), "--out", str(tmp_path / "one.csv"), one]) == 0
    err = capsys.readouterr().err
    assert "zoomin predict: 1 slide, read at 1 µm/px; stage I at 16 µm/px: a 64 x 64 view" in err


def test_doctor_probes_each_resolution_and_writes_a_config_train_takes(slides, tmp_path, capsys):
    out = tmp_path / "recommended.yaml"
    assert main(["doctor", str(slides), "--out", str(out), "--candidates", "32,16", "--steps", "2",
                 "--set", "model.num_classes=3"]) == 0
    text = capsys.readouterr().out
    assert "stage I at 32 µm/px" in text and "stage I at 16 µm/px" in text and "recommended: stage I at" in text
    cfg = Config.from_yaml(out)
    m = cfg.model
    assert (m.stage1_units, m.stage2_units) == ("mpp", "mpp") and m.stage1_resolution in (32.0, 16.0)
    assert cfg.data.task == "manifest" and m.num_classes == 3
    assert m.mpp <= m.stage2_resolution <= m.stage1_resolution / 2


def test_doctor_refuses_a_manifest_without_two_classes(tmp_path, capsys):
    d = tmp_path / "one"
    m = tissue_slides(d, 3, size=512, mpp=1.0, background="synthetic", classes=("dab",), seed=0, test_fraction=0.0)
    text = m.read_text().replace(",1,train,", ",0,train,")
    m.write_text(text)
    assert main(["doctor", str(m), "--out", str(tmp_path / "c.yaml"), "--candidates", "16"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "at least two training slides of each of two classes" in err


@pytest.mark.slow
def test_the_matrix_benchmark_trains_reports_and_collects(tmp_path):
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parent.parent
    args = [sys.executable, str(root / "benchmarks" / "weak_labels_matrix.py"), "--cells", "synthetic-nuclei-1",
            "--seeds", "0", "--n", "6", "--size", "768", "--epochs", "1", "--work", str(tmp_path / "w")]
    subprocess.run(args + ["--out", str(tmp_path / "m.md")], check=True, cwd=root, capture_output=True)
    page = (tmp_path / "m.md").read_text()
    assert "| synthetic-nuclei-1 | tuning | synthetic | nuclei | 1 | 0.05% |" in page
    rows = json.loads((tmp_path / "m.json").read_text())
    assert len(rows) == 1 and rows[0]["finished"] and rows[0]["epochs"] == 1 and 0 <= rows[0]["auc"] <= 1
    assert 0 <= rows[0]["predict_auc"] <= 1  # zoomin predict on the held-out rows, as a user runs it
    subprocess.run(args + ["--collect", "--out", str(tmp_path / "c.md")], check=True, cwd=root, capture_output=True)
    assert "Collected from runs trained by" in (tmp_path / "c.md").read_text()
    assert json.loads((tmp_path / "c.json").read_text()) == rows
    # an earlier run made elsewhere (seed 1) and an older copy of this one: the first is reported beside
    # this work folder's run, the second is not (the work folder's own run wins)
    earlier = [{**rows[0], "seed": 1, "auc": 0.25}, {**rows[0], "auc": 0.125}]
    (tmp_path / "earlier.json").write_text(json.dumps(earlier))
    subprocess.run(args + ["--seeds", "0,1", "--collect", "--merge", str(tmp_path / "earlier.json"),
                           "--out", str(tmp_path / "merged.md")], check=True, cwd=root, capture_output=True)
    merged = json.loads((tmp_path / "merged.json").read_text())
    assert [(r["seed"], r["auc"]) for r in merged] == [(0, rows[0]["auc"]), (1, 0.25)]


def test_the_whitened_prior_singles_out_a_colour_off_the_slides_mix():
    from zoomin.evidence import moment_stats, moments, outlier_score, standardise, whitening
    g = torch.Generator().manual_seed(0)
    t = torch.rand(1, 1, 64, 64, generator=g)  # each pixel a mix of two stains, as H&E is
    pink, purple = torch.tensor([0.86, 0.55, 0.75]), torch.tensor([0.45, 0.25, 0.60])
    view = t * pink.view(1, 3, 1, 1) + (1 - t) * purple.view(1, 3, 1, 1) + 0.02 * torch.randn(1, 3, 64, 64, generator=g)
    view[..., 10:13, 10:13] = (purple * 0.55).view(1, 3, 1, 1)  # darker, on the stains' line
    view[..., 40:43, 40:43] = torch.tensor([0.55, 0.35, 0.20]).view(1, 3, 1, 1)  # brown, off it
    stats = moment_stats(*moments(view, None))
    x = standardise(view, None, stats)[0]
    plain, white = outlier_score(x, 3), outlier_score(x, 3, None, whitening(view, None, stats))
    ratio = lambda s: float(s[0, 0, 41, 41] / s[0, 0, 11, 11])  # noqa: E731  brown over dark
    assert ratio(white) > 1.5 and ratio(white) > 1.3 * ratio(plain)


def test_the_whitened_prior_streams_like_one_piece():
    from zoomin.nets import AttentionNet
    from zoomin.stage1 import attend
    torch.manual_seed(0)
    net = AttentionNet(3, 4, 2).eval()
    view = (torch.rand(1, 3, 96, 80) * 255).to(torch.uint8)
    with torch.no_grad():
        one = attend(net, view, 0.1, "otsu_dark", 2.0, True, 8, 0, prior=1.0, whiten=True)
        pieces = attend(net, view, 0.1, "otsu_dark", 2.0, True, 8, 32, prior=1.0, whiten=True)
        plain = attend(net, view, 0.1, "otsu_dark", 2.0, True, 8, 0, prior=1.0)
    assert torch.allclose(one.log_alpha, pieces.log_alpha, atol=1e-5)
    assert not torch.allclose(one.log_alpha, plain.log_alpha)


def test_the_doctor_recommends_the_coarsest_resolution_nearly_the_best_or_when_none_separates():
    from zoomin.doctor import first_nearly_best as pick_resolution
    rows = lambda *aucs: [{"stage1_mpp": m, "auc": a} for m, a in zip((16.0, 8.0, 4.0), aucs)]  # noqa: E731
    assert pick_resolution(rows(0.70, 0.95, 0.96), 0.02)["stage1_mpp"] == 8.0
    assert pick_resolution(rows(0.95, 0.90, 0.96), 0.02)["stage1_mpp"] == 16.0
    assert pick_resolution(rows(0.40, 0.35, 0.52), 0.02)["stage1_mpp"] == 16.0  # chance everywhere: the cheapest
