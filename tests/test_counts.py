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

TINY = dict(kind="zoom_in", in_channels=3, num_classes=2, mpp=1.0, stage1_resolution=16.0, stage1_units="mpp", stage2_resolution=4.0, stage2_units="mpp", tile=64,
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


def test_a_streamed_histogram_and_count_map_equal_one_read(slides, monkeypatch):
    model = build_model(ModelConfig(**TINY))
    rows = sources(slides)
    trained_head(model, rows)
    src, _ = rows[1]
    src.piece = 32  # decoded in 32² pieces: eight bands below
    first = model.attend(src)
    whole, whole_tail = model.count_pass(src, first.threshold, first.view_hw)
    monkeypatch.setattr(counts, "BAND_PIXELS", 256 * 40)  # 32-row bands of the 256-wide view
    banded, banded_tail = model.count_pass(src, first.threshold, first.view_hw)
    assert whole.sum() > 0 and torch.equal(whole, banded)
    assert len(whole_tail) and torch.equal(whole_tail, banded_tail)


def test_the_count_map_weighs_every_tail_pixel_at_its_location(slides):
    """The map from the kept tail pixels equals each pixel of the count view weighed by its colour
    and summed over its stage-I location, computed pixel by pixel; a slide seen again is not read."""
    model = build_model(ModelConfig(**TINY))
    rows = sources(slides)
    trained_head(model, rows)
    src, _ = rows[3]
    first = model.attend(src)  # reads the count view once, keeps the slide's tails
    assert len(model.counts.memo.items) == 1
    view = src.raw_view(model.cfg.mpp / model.cfg.count_mpp)  # (1, 3, h, w) uint8
    index, keep = counts.bin_index(view)
    keep &= counts.tissue_bins(first.threshold, "otsu_dark").gather(1, index)
    weight = torch.zeros(2 ** (3 * counts.BITS))
    used = index[keep].unique()
    weight[used] = model.counts.pixel_weights(used)
    h, w = view.shape[-2:]
    want = torch.zeros(first.view_hw).flatten()
    cells = counts.grid_cells(0, h, (h, w), first.view_hw)
    want.index_add_(0, cells, (weight[index[0]] * keep[0]).float())
    torch.testing.assert_close(first.count_map[0], want)
    assert want.max() > 0
    reads = src.requests
    again = model.attend(src)
    assert src.requests == reads + (0 if src.has_view(first.scale) else 1)  # the stage-I view only, if that
    torch.testing.assert_close(again.count_map, first.count_map)
    torch.testing.assert_close(again.count_logits, first.count_logits)
    model.counts.fit([model.count_histogram(src, first.threshold).to_sparse()])
    assert not model.counts.memo.items  # refitted: nothing kept holds any longer


def test_the_memo_drops_the_least_recently_used_beyond_its_budget():
    memo = counts.CountMemo(mb=1)
    big = (torch.zeros(1, 192), torch.zeros(20_000, 3, dtype=torch.int64))  # about 0.48 MB
    memo.put("a", big)
    memo.put("b", big)
    assert memo.get("a") is not None  # a used last
    memo.put("c", big)
    assert set(memo.items) == {"a", "c"} and memo.bytes <= 2**20
    assert memo.get(None) is None and memo.get("b") is None


def test_tail_pixels_of_bands_merge_into_the_views():
    g = torch.Generator().manual_seed(0)
    index = torch.randint(0, 16, (2, 37 * 50), generator=g)  # 16 colour bins, two images
    counted = torch.rand(2, 37 * 50, generator=g) > 0.2
    in_tail = torch.zeros(16, dtype=torch.bool)
    in_tail[[3, 7, 11]] = True
    want = {}
    for b in range(2):
        for p in range(37 * 50):
            i, j = divmod(p, 50)
            if counted[b, p] and in_tail[index[b, p]]:
                key = (b * 35 + (i * 5 // 37) * 7 + j * 7 // 50, int(index[b, p]))
                want[key] = want.get(key, 0) + 1
    cells = lambda r0, r: counts.grid_cells(r0, r, (37, 50), (5, 7))  # noqa: E731
    whole = counts.merge_tails([counts.tail_pixels(index, counted, cells(0, 37), 35, in_tail)], 16)
    parts = [counts.tail_pixels(index[:, :1000], counted[:, :1000], cells(0, 20), 35, in_tail),
             counts.tail_pixels(index[:, 1000:], counted[:, 1000:], cells(20, 17), 35, in_tail)]
    assert {(int(a), int(b)): int(n) for a, b, n in whole} == want
    assert torch.equal(counts.merge_tails(parts, 16), whole)


def trained_head(model, rows, steps: int = 100) -> list[torch.Tensor]:
    """Fit ``model.counts`` on the training rows and train its linear layer on their labels (Adam)
    -> every row's histogram."""
    hists = [model.count_histogram(s, model.attend(s).threshold) for s, _ in rows]
    y = torch.tensor([e.label for _, e in rows])
    train = [i for i, (_, e) in enumerate(rows) if e.split == "train"]
    head = model.counts
    head.fit([hists[i].to_sparse() for i in train], y[train])
    feats = torch.cat([head.features(h) for h in hists])  # (20, F)
    opt = torch.optim.Adam(head.linear.parameters(), lr=0.01)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(head.logits(feats[train]), y[train])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return hists


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


def test_the_counts_answer_alone_and_the_stages_still_learn(slides):
    from zoomin.losses import classification_loss
    torch.manual_seed(0)
    model = build_model(ModelConfig(**TINY, count_answer=True))
    rows = sources(slides)
    model.counts.fit([model.count_histogram(s, model.attend(s).threshold).to_sparse() for s, e in rows
                      if e.split == "train"])
    torch.nn.init.normal_(model.counts.linear.weight)
    trace = model(rows[0][0], generator=torch.Generator().manual_seed(1))
    assert torch.equal(trace.logits, trace.count_logits)  # the answer is the counts'
    assert "the counts answer alone" in trace.contribution_name  # the explorer's gallery says whose shares
    torch.testing.assert_close(trace.stages_logits, model.classify(trace.z) + trace.evidence_logits + trace.evidence2_logits)
    y = torch.tensor([rows[0][1].label])
    loss = classification_loss(trace, y)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(trace.count_logits, y)
                               + torch.nn.functional.cross_entropy(trace.stages_logits, y))
    loss.backward()
    assert model.classifier.linear.weight.grad.abs().sum() > 0  # g still learns
    assert model.counts.linear.weight.grad.abs().sum() > 0
    plain = build_model(ModelConfig(**TINY))
    assert plain(rows[0][0]).stages_logits is None


def test_the_counts_answer_is_refused_with_the_places_readout():
    with pytest.raises(ValueError, match="model.count_answer: .* readout.method places"):
        Config.from_dict({"model": {**TINY, "count_answer": True}, "readout": {"method": "places", "mode": "sample"}})


@pytest.mark.parametrize("stage1_auc, answer", [(0.5, True), (0.9, False)])
def test_the_doctor_lets_the_counts_answer_alone_when_stage_one_sees_nothing(slides, monkeypatch, stage1_auc, answer):
    from zoomin import doctor
    monkeypatch.setattr(doctor, "probe", lambda *a, **k: stage1_auc)
    monkeypatch.setattr(doctor, "count_probe", lambda *a, **k: 0.9)
    cfg = Config.from_dict({"model": {**TINY, "count_mpp": 0.0}, "data": {"task": "manifest", "manifest": str(slides)}})
    out, rows = doctor.diagnose(cfg, candidates=(16.0,), log=lambda *a: None)
    assert out.model.count_mpp == 2.0 and out.model.count_answer is answer
    Config.from_dict(out.to_dict())  # a config train takes


def test_the_doctor_counts_inside_the_outline_where_that_separates_and_prefers_the_coarser_view(slides, monkeypatch):
    from zoomin import doctor
    auc = {("colour", 2.0): 0.6, ("filled", 2.0): 0.95, ("colour", 1.0): 0.7, ("filled", 1.0): 0.96}
    monkeypatch.setattr(doctor, "probe", lambda *a, **k: 0.5)
    monkeypatch.setattr(doctor, "histograms", lambda entries, cfg, mpp, filled=False: ("filled" if filled else "colour", mpp))
    monkeypatch.setattr(doctor, "count_probe", lambda hists, *a, **k: auc[hists])
    cfg = Config.from_dict({"model": {**TINY, "count_mpp": 0.0}, "data": {"task": "manifest", "manifest": str(slides)}})
    out, rows = doctor.diagnose(cfg, candidates=(16.0,), log=lambda *a: None)
    assert (out.model.count_mpp, out.model.count_filled, out.model.count_answer) == (2.0, True, True)
    assert {(r["count_mpp"], r["count_filled"]) for r in rows if "count_mpp" in r} == {(2.0, False), (2.0, True),
                                                                                     (1.0, False), (1.0, True)}
    auc[("filled", 2.0)] = 0.9  # now the finer view is better by more than the tolerance
    out, _ = doctor.diagnose(cfg, candidates=(16.0,), log=lambda *a: None)
    assert (out.model.count_mpp, out.model.count_filled) == (1.0, True)
    Config.from_dict(out.to_dict())  # a config train takes


FEATURES = {"tails": {}, "cells": {"count_directions": 0, "count_cells": 10}}


@pytest.mark.parametrize("features", FEATURES)
def test_the_counts_learn_brown_foci_on_real_tissue_from_slide_labels(slides, features):
    """The head fitted and trained on 16 slides' labels ranks the 4 held-out slides, by its tails or
    by colour cells alone."""
    model = build_model(ModelConfig(**TINY, **FEATURES[features]))
    rows = sources(slides)
    hists = trained_head(model, rows)
    y = torch.tensor([e.label for _, e in rows])
    held = [i for i, (_, e) in enumerate(rows) if e.split != "train"]
    with torch.no_grad():
        s = model.counts(torch.cat(hists))[:, 1]
    pos, neg = s[held][y[held] == 1], s[held][y[held] == 0]
    assert len(pos) and len(neg) and pos.min() > neg.max()


@pytest.mark.parametrize("features", FEATURES)
def test_alpha_turns_to_the_foci_the_counts_found(slides, features):
    """On every held-out positive slide the location the count map weighs most lies in a brown focus,
    and alpha there is larger than before the counts were trained (real CMU-1 tissue, slide labels)."""
    import json
    torch.manual_seed(0)
    model = build_model(ModelConfig(**TINY, **FEATURES[features])).eval()
    rows = sources(slides)
    with torch.no_grad():
        before = [model.attend(s).log_alpha for s, _ in rows]
    trained_head(model, rows)
    checked = 0
    for (src, e), la0 in zip(rows, before):
        if e.split == "train" or e.label == 0:
            continue
        with torch.no_grad():
            first = model.attend(src)
        h, w = first.view_hw
        top = int(first.count_map[0].argmax())
        cell = src.file_size[0] / h  # file pixels a stage-I location
        cy, cx = (top // w + 0.5) * cell, (top % w + 0.5) * cell  # the file's pixels, as the outlines
        foci = json.loads(e.path.with_suffix(".geojson").read_text())["features"]
        near = [np.hypot(*(np.array(f["geometry"]["coordinates"][0]).mean(0) - (cx, cy))) for f in foci]
        assert min(near) < 2 * cell, (e.slide_id, near)  # within two stage-I locations of a focus centre
        assert first.log_alpha[0, top] > la0[0, top] + 1
        checked += 1
    assert checked >= 2


@pytest.mark.parametrize("override, field", [
    ({"evidence": False, "evidence_answer": False}, "model.count_mpp needs model.evidence"),
    ({"count_mpp": 0.5}, "at most model.count_mpp"),
    ({"in_channels": 1}, "model.in_channels: 3"),
    ({"count_mpp": 0.0, "count_directions": 8}, "model.count_directions is a setting of model.count_mpp"),
    ({"count_mpp": 0.0, "count_cells": 10}, "model.count_cells is a setting of model.count_mpp"),
    ({"count_directions": 0}, "model.count_mpp counts nothing"),
    ({"count_cells": -1}, "model.count_cells"),
    ({"count_mpp": 0.0, "count_answer": True}, "model.count_answer is a setting of model.count_mpp"),
    ({"count_mpp": 0.0, "count_filled": True}, "model.count_filled is a setting of model.count_mpp"),
    ({"count_filled": True, "foreground": "none"}, "model.count_filled fills the holes"),
    ({"count_peaks": True}, "model.count_peaks .* needs model.count_cells > 0"),
    ({"count_mpp": 0.0, "count_peaks": True}, "model.count_peaks is a setting of model.count_mpp"),
])
def test_count_settings_are_checked_on_load(override, field):
    with pytest.raises(ValueError, match=field):
        Config.from_dict({"model": {**TINY, **override}})


def test_the_outline_fills_the_tissues_holes_and_leaves_the_glass():
    fg = torch.zeros(2, 12, 12, dtype=torch.bool)
    fg[0, 2:9, 2:9] = True
    fg[0, 4:7, 4:7] = False  # a hole in the tissue
    fg[1, 0:5, 0:12] = True  # tissue on the border, no hole
    out = counts.outline(fg.view(2, -1), (12, 12)).view(2, 12, 12)
    assert out[0, 4:7, 4:7].all() and out[0, 2:9, 2:9].all()
    assert not out[0, :2].any() and not out[0, 10:].any() and not out[0, :, 10:].any()  # the glass around
    assert torch.equal(out[1], fg[1])  # nothing to fill: the foreground as it was


@pytest.fixture(scope="module")
def pale(tmp_path_factory):
    """4 slides of 1,024² of real CMU-1 tissue at 0.5 µm/px; two carry washed-out patches."""
    return tissue_slides(tmp_path_factory.mktemp("pale"), 4, size=1024, mpp=0.5, background="cmu", classes=("pale",),
                         roi_ratio=0.01, distractors=0, seed=0, test_fraction=0.0)


def test_filled_counts_take_a_pale_patch_inside_the_tissue_and_not_the_glass(pale):
    """The pale patches are lighter than stage I's tissue threshold: the foreground's colours leave
    most of their pixels out; counted inside the tissue's filled outline (``model.count_filled``),
    they are in, and the glass around the tissue is still not."""
    import json
    colour, filled = (build_model(ModelConfig(**TINY, count_filled=f)) for f in (False, True))
    for src, e in sources(pale):
        first = colour.attend(src)
        a = colour.count_histogram(src, first.threshold, first.view_hw)[0]
        b = filled.count_histogram(src, first.threshold, first.view_hw, filled.outline(first))[0]
        view = src.raw_view(1 / 2)  # (1, 3, h, w) the count view at 2 µm/px
        assert (b >= a).all() and b.sum() < (view.amax(1) > 0).sum() * 0.9  # more counted, the glass not
        if e.label == 0:
            continue
        foci = json.loads(e.path.with_suffix(".geojson").read_text())["features"]
        yy, xx = torch.meshgrid(torch.arange(view.shape[-2]), torch.arange(view.shape[-1]), indexing="ij")
        inside = torch.zeros(view.shape[-2:], dtype=torch.bool)
        for f in foci:  # the patch's core, in count-view pixels (the file is at 0.5 µm/px: 4 file pixels a pixel)
            ring = np.array(f["geometry"]["coordinates"][0]) / 4
            (cx, cy), r = ring.mean(0), np.hypot(*(ring[0] - ring.mean(0)))
            inside |= (yy - cy) ** 2 + (xx - cx) ** 2 < (0.6 * r) ** 2
        index, _ = counts.bin_index(view)
        core = torch.bincount(index[0][inside.flatten()], minlength=len(a))  # the core's pixels by colour
        assert (torch.minimum(core, b).sum() > 0.9 * core.sum()) and (torch.minimum(core, a).sum() < 0.5 * core.sum())


@pytest.mark.slow
def test_training_fits_the_counts_and_the_doctor_probes_them(slides, tmp_path, capsys):
    out = tmp_path / "recommended.yaml"
    assert main(["doctor", str(slides), "--out", str(out), "--candidates", "16", "--steps", "2"]) == 0
    text = capsys.readouterr().out
    for where in ("2 µm/px", "2 µm/px, filled", "1 µm/px", "1 µm/px, filled"):
        assert f"stain counts at {where}: 16 slides read" in text
        for features in ("64 directions, 0 colour cells", "64 directions, 10 colour cells", "0 directions, 10 colour cells",
                         "0 directions, 10 colour cells and their peaks"):
            assert f"stain counts at {where} ({features}): out-of-fold AUC" in text
    cfg = Config.from_yaml(out)
    assert cfg.model.count_mpp in (0.0, 2.0, 1.0)
    run = tmp_path / "run"
    assert main(["train", "--config", str(out), "--manifest", str(slides), "--set", "model.count_mpp=2",
                 "--epochs", "1", "--out", str(run), "--quiet", "--set", "model.n_samples=2"]) == 0
    text = capsys.readouterr().out
    assert "stain counts fitted on 16 training images at 2 µm/px" in text
    assert "stain counts at 2 µm/px (a 256 x 256 view)" in text  # the line on what it reads
    state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]
    assert bool(state["counts.fitted"])
    if cfg.model.count_directions:  # the tails the doctor chose, or the cells, are fitted
        assert state["counts.thresholds"].abs().sum() > 0
    assert len(state["counts.cells"]) == cfg.model.count_cells and len(state["counts.cells"].unique()) == cfg.model.count_cells


def pale_tissue(n: int, lesion: int, seed: int) -> torch.Tensor:
    """Colour histograms (n, bins) of ``n`` images of 20,000 tissue pixels from two stains (pink and
    purple, each image's mixture and shade its own) with ``lesion`` pixels of a colour between them,
    inside the tissue's range along every direction."""
    g = torch.Generator().manual_seed(seed)
    pink, purple, inside = torch.tensor([230., 150, 190]), torch.tensor([120., 60, 150]), torch.tensor([180., 108, 172])
    out = []
    for _ in range(n):
        share = 0.3 + 0.4 * torch.rand((), generator=g)
        k = int(20000 * share)
        px = torch.cat([pink + 12 * torch.randn(k, 3, generator=g), purple + 12 * torch.randn(20000 - k, 3, generator=g)])
        px = torch.cat([px + 6 * torch.randn(1, 3, generator=g),  # the image's shade; the lesion's colour is fixed
                        inside + 2 * torch.randn(lesion, 3, generator=g)])
        out.append(counts.colour_histogram(px.clamp(1, 255).to(torch.uint8).T.reshape(1, 3, 1, -1)))
    return torch.cat(out)


def test_colour_cells_find_a_lesion_colour_inside_the_tissue_range_that_no_tail_reaches():
    """Lesion pixels of a colour between the two stains lie beyond no tail: the tails rank held-out
    images near chance, the chosen cells (``screen_cells``) hold the lesion's colour and rank them."""
    from zoomin.evaluate import auc
    y = torch.arange(48) % 2
    hists = torch.cat([pale_tissue(1, 60 * int(c), seed=i) for i, c in enumerate(y)])  # (48, bins)
    train, held = torch.arange(32), torch.arange(32, 48)
    scores = {}
    for name, (d, c) in {"tails": (64, 0), "cells": (0, 3)}.items():
        head = counts.CountHead(d, 1, c)
        head.fit([hists[i:i + 1].to_sparse() for i in train], y[train])
        feats = head.features(hists)
        opt = torch.optim.Adam(head.linear.parameters(), lr=0.01)
        for _ in range(200):
            loss = torch.nn.functional.cross_entropy(head.logits(feats[train]), y[train])
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            scores[name] = float(auc(head.logits(feats[held]).softmax(-1)[:, 1], y[held]))
    lesion_cell = counts.cell_of(torch.tensor([(180 >> 1 << 14) | (108 >> 1 << 7) | (172 >> 1)]))
    assert lesion_cell in head.cells  # the lesion's colour is among the chosen cells
    assert head.in_tail(torch.tensor([(180 >> 1 << 14) | (108 >> 1 << 7) | (172 >> 1)])).all()  # on the count map
    assert scores["cells"] >= 0.95 and scores["tails"] < 0.8, scores


def test_a_checkpoint_from_before_the_cells_loads():
    head = counts.CountHead(8, 1)
    state = {k: v for k, v in head.state_dict().items() if k != "cells"}
    counts.CountHead(8, 1).load_state_dict(state)  # strict: the missing cells are none
    with pytest.raises(RuntimeError, match="cells"):
        counts.CountHead(8, 1, 3).load_state_dict(state)


def test_peaks_are_each_class_cells_at_their_densest_location():
    """``CountHead.peaks``: per lesion class, log(1 + the most pixels of its chosen cells at one
    stage-I location); a compact patch raises it where the same pixels scattered do not, while the
    slide's totals of those cells are the same."""
    head = counts.CountHead(0, 2, n_cells=2, peaks=True)
    bins = torch.tensor([5, 77, 1000, 3000])  # colour bins; their cells:
    cells = counts.cell_of(bins)
    head.cells.copy_(torch.stack([cells[0], cells[1], cells[2], cells[3]]))  # class 0: bins 5, 77; class 1: 1000, 3000
    L = 10
    compact = torch.tensor([[3, 5, 6], [3, 77, 4], [4, 1000, 1], [12, 3000, 2], [12, 1000, 5]])  # (loc over 2 images, bin, n)
    got = head.peaks(compact, (2, L))
    want = torch.log1p(torch.tensor([[10.0, 1.0], [0.0, 7.0]]))
    torch.testing.assert_close(got, want)
    scattered = torch.tensor([[0, 5, 2], [1, 5, 2], [2, 5, 2], [3, 77, 2], [4, 77, 2]])  # 10 pixels of class 0, spread
    patch = torch.tensor([[7, 5, 6], [7, 77, 4]])  # the same 10 in one place
    spread, dense = head.peaks(scattered, (1, L)), head.peaks(patch, (1, L))
    assert dense[0, 0] > spread[0, 0] and dense[0, 1] == spread[0, 1] == 0
    assert head.beyond(bins)[:, -2:].tolist() == [[1, 0], [1, 0], [0, 1], [0, 1]]  # a pixel's peak group, for the map
    with pytest.raises(ValueError, match="model.count_peaks: the peaks are counted from the tail pixels"):
        head.tails(torch.zeros(1, 2 ** (3 * counts.BITS), dtype=torch.int64))


def test_training_fits_the_peaks_once_the_cells_are_chosen_and_keeps_the_reads(slides, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "--config", "zoomin/configs/slides.yaml", "--manifest", str(slides), "--epochs", "1",
                 "--out", str(run), "--quiet", "--set", "model.count_mpp=2", "--set", "model.count_directions=0",
                 "--set", "model.count_cells=10", "--set", "model.count_peaks=true", "--set", "model.n_samples=2"]) == 0
    state = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]
    mean, std = state["counts.feature_mean"], state["counts.feature_std"]
    assert mean.shape == (10 + 1,)  # 10 cells, then the peak of the one lesion class
    assert mean[-1] > 0 and std[-1] != 1.0  # fitted on the training slides' peaks
    from zoomin.checkpoint import load_model
    model = load_model(run / "checkpoint.pt")[0]
    tails = torch.cat([model.counted(src, model.stage1(src))[0] for src, _ in sources(slides)])
    assert tails.shape == (20, 11) and tails[:, -1].max() > 0
