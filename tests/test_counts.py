"""The stain counts (``zoomin.counts``, ``model.count_mpp``, method §10.6)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from zoomin import counts
from zoomin.cli import main
from zoomin.config import Config, ModelConfig
from zoomin.manifest import read_manifest
from zoomin.model import build_model
from zoomin.slides import SlideSource
from zoomin.tissue_slides import tissue_slides

TINY = dict(kind="zoom_in", in_channels=3, num_classes=2, mpp=1.0, stage1_mpp=16.0, stage2_mpp=4.0, tile=64,
            subtile=16, n_samples=4, feature_dim=8, feature_width=8, feature_norm="none", foreground="otsu_dark",
            evidence=True, evidence_answer=True, attention_hidden=4, attention_depth=2, count_mpp=2.0)


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    """20 slides of 1,024² cut from the real CMU-1 H&E region at 0.5 µm/px; half carry small foci of
    brown DAB cells, every slide two brown distractor cells."""
    d = tmp_path_factory.mktemp("dab")
    return tissue_slides(d, 20, size=1024, mpp=0.5, background="cmu", classes=("dab",), roi_ratio=0.003,
                         distractors=2, seed=0, test_fraction=0.25)


def sources(manifest):
    return [(SlideSource(e.path, channels=3, mpp=1.0, manifest_mpp=e.mpp), e) for e in read_manifest(manifest)]


def test_the_histogram_counts_every_pixel_but_the_padding():
    px = torch.randint(1, 256, (2, 3, 5, 7), dtype=torch.uint8)
    px[1, :, 0, :] = 0  # one row of padding
    h = counts.colour_histogram(px)
    assert h.shape == (2, 2 ** (3 * counts.BITS)) and h[0].sum() == 35 and h[1].sum() == 28
    q = (px[0, :, 2, 3].long() >> (8 - counts.BITS)).tolist()  # the bin of one pixel holds it
    assert h[0, (q[0] << 2 * counts.BITS) | (q[1] << counts.BITS) | q[2]] >= 1
    centre = counts.bin_colours()[(q[0] << 2 * counts.BITS) | (q[1] << counts.BITS) | q[2]]
    assert ((centre - px[0, :, 2, 3].float()).abs() <= 2 ** (8 - counts.BITS) / 2).all()


def test_weighted_quantiles_are_the_quantiles_of_the_repeated_values():
    g = torch.Generator().manual_seed(0)
    values = torch.randn(50, 3, generator=g)
    weights = torch.randint(1, 20, (50,), generator=g)
    got = counts.weighted_quantiles(values, weights, (0.1, 0.5, 0.9))
    for j in range(3):
        rep = np.repeat(values[:, j].numpy(), weights.numpy())
        want = np.quantile(rep, (0.1, 0.5, 0.9), method="inverted_cdf")
        np.testing.assert_allclose(got[j].numpy(), want, rtol=1e-6)


def test_directions_are_unit_and_spread():
    d = counts.directions(64)
    assert torch.allclose(d.norm(dim=1), torch.ones(64), atol=1e-5)
    assert (d @ d.T - 2 * torch.eye(64)).max() < 0.95  # no two directions nearly the same


def test_a_streamed_histogram_equals_one_read(slides, monkeypatch):
    model = build_model(ModelConfig(**TINY))
    src, _ = sources(slides)[1]
    src.piece = 32  # decoded in 32² pieces: eight bands below
    whole = model.count_histogram(src, model.attend(src).threshold)
    monkeypatch.setattr(counts, "BAND_PIXELS", 256 * 40)  # 32-row bands of the 256-wide view
    banded = model.count_histogram(src, model.attend(src).threshold)
    assert whole.sum() > 0 and torch.equal(whole, banded)


def test_the_counts_say_nothing_until_fitted_then_enter_the_answer(slides):
    torch.manual_seed(0)
    model = build_model(ModelConfig(**TINY))
    rows = sources(slides)
    trace = model(rows[0][0])
    assert torch.equal(trace.count_logits, torch.zeros(1, 2))
    model.counts.fit([model.count_histogram(s, model.attend(s).threshold).to_sparse() for s, e in rows
                      if e.split == "train"])
    torch.nn.init.normal_(model.counts.linear.weight)
    g = torch.Generator().manual_seed(1)
    trace = model(rows[0][0], generator=g)
    assert trace.count_logits.abs().sum() > 0
    torch.testing.assert_close(trace.answer_evidence, trace.evidence_logits + trace.evidence2_logits + trace.count_logits)


def test_the_counts_learn_brown_foci_on_real_tissue_from_slide_labels(slides):
    """The head fitted and trained on 16 slides' labels ranks the 4 held-out slides."""
    model = build_model(ModelConfig(**TINY))
    rows = sources(slides)
    hists = [model.count_histogram(s, model.attend(s).threshold) for s, _ in rows]
    y = torch.tensor([e.label for _, e in rows])
    train = [i for i, (_, e) in enumerate(rows) if e.split == "train"]
    held = [i for i, (_, e) in enumerate(rows) if e.split != "train"]
    head = model.counts
    head.fit([hists[i].to_sparse() for i in train])
    feats = torch.cat([head.features(h) for h in hists])  # (20, F)
    opt = torch.optim.Adam(head.linear.parameters(), lr=0.01)
    for _ in range(100):
        loss = torch.nn.functional.cross_entropy(head.logits(feats[train]), y[train])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        s = head(torch.cat(hists))[:, 1]
    pos, neg = s[held][y[held] == 1], s[held][y[held] == 0]
    assert len(pos) and len(neg) and pos.min() > neg.max()


@pytest.mark.parametrize("override, field", [
    ({"evidence": False, "evidence_answer": False}, "model.count_mpp needs model.evidence"),
    ({"count_mpp": 0.5}, "at most model.count_mpp"),
    ({"in_channels": 1}, "model.in_channels: 3"),
    ({"count_mpp": 0.0, "count_directions": 8}, "model.count_directions is a setting of model.count_mpp"),
])
def test_count_settings_are_checked_on_load(override, field):
    with pytest.raises(ValueError, match=field):
        Config.from_dict({"model": {**TINY, **override}})


@pytest.mark.slow
def test_training_fits_the_counts_and_the_doctor_probes_them(slides, tmp_path, capsys):
    out = tmp_path / "recommended.yaml"
    assert main(["doctor", str(slides), "--out", str(out), "--candidates", "16", "--steps", "2"]) == 0
    text = capsys.readouterr().out
    assert "stain counts at 2 µm/px: out-of-fold AUC" in text
    cfg = Config.from_yaml(out)
    assert cfg.model.count_mpp in (0.0, 2.0)
    run = tmp_path / "run"
    assert main(["train", "--config", str(out), "--manifest", str(slides), "--set", "model.count_mpp=2",
                 "--epochs", "1", "--out", str(run), "--quiet", "--set", "model.n_samples=2"]) == 0
    text = capsys.readouterr().out
    assert "stain counts fitted on 16 training images at 2 µm/px" in text
    assert "stain counts at 2 µm/px (a 256 x 256 view)" in text  # the line on what it reads
    state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]
    assert bool(state["counts.fitted"]) and state["counts.thresholds"].abs().sum() > 0
