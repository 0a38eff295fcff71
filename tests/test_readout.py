"""Reading passes out (zoomin.readout): places are connected components, each confident place
votes once, unsure places are silent, and the model reads out through it when asked."""
import numpy as np
import pytest
import torch
from scipy.sparse.csgraph import connected_components
from scipy.spatial.distance import cdist

from zoomin.readout import connected_places, place_vote, read_out


@pytest.mark.parametrize("seed", range(5))
def test_places_are_the_connected_components_of_near_draws(seed):
    g = torch.Generator().manual_seed(seed)
    centres = torch.rand(3, 40, 2, generator=g) * 200  # (B, M, 2)
    valid = torch.rand(3, 40, generator=g) > 0.2
    labels = connected_places(centres, valid, radius=25.0)
    for b in range(3):
        v = valid[b].numpy()
        c = centres[b].numpy()[v]
        n, ref = connected_components(cdist(c, c) < 25.0, directed=False)
        got = labels[b].numpy()[v]
        assert len(np.unique(got)) == n
        same_ref, same_got = ref[:, None] == ref[None], got[:, None] == got[None]
        assert (same_ref == same_got).all()
        assert (labels[b].numpy()[~v] == 40).all()


def _draws(spots):
    """[(x, y, class, confidence, times drawn)] -> centres (1, M, 2), probs (1, M, 10), valid."""
    centres, probs = [], []
    for x, y, cls, conf, times in spots:
        p = torch.full((10,), (1 - conf) / 9)
        p[cls] = conf
        for k in range(times):
            centres.append(torch.tensor([x + k % 3, y + k % 2], dtype=torch.float))
            probs.append(p)
    return torch.stack(centres)[None], torch.stack(probs)[None], torch.ones(1, len(centres), dtype=torch.bool)


def test_each_confident_place_votes_once_where_the_mixture_follows_the_most_drawn():
    # three faint label digits (class 2) drawn once each, one salient distractor (7) drawn 12
    # times, and background places the reader is unsure of, drawn often
    spots = [(100, 100, 2, 0.9, 1), (400, 120, 2, 0.8, 1), (300, 700, 2, 0.95, 1),
             (900, 900, 7, 0.99, 12)] + [(50 + 100 * i, 1200, 5, 0.4, 3) for i in range(8)]
    centres, probs, valid = _draws(spots)
    assert probs[0].mean(0).argmax() == 7  # the mixture of all draws
    vote = place_vote(centres, probs, valid, radius=25.0, min_confidence=0.5)
    assert vote.argmax(-1).item() == 2
    assert torch.allclose(vote.sum(-1), torch.ones(1))
    # the unsure places, leaning one way, would outvote the label digits if they voted
    assert place_vote(centres, probs, valid, radius=25.0, min_confidence=0.0).argmax(-1).item() != 2


def test_no_confident_place_reads_the_mixture():
    centres, probs, valid = _draws([(100, 100, 3, 0.3, 2), (500, 500, 4, 0.35, 5)])
    valid[0, -1] = False  # an invalid draw counts nowhere
    vote = place_vote(centres, probs, valid, radius=25.0, min_confidence=0.5)
    assert torch.allclose(vote[0], probs[0, :-1].mean(0))


def test_a_model_reads_its_passes_out_as_places():
    from zoomin.config import ModelConfig, ReadoutConfig
    from zoomin.model import build_model
    from zoomin.readout import answer
    cfg = ModelConfig(kind="zoom_in", stage1_resolution=0.25, tile=32, stage2_resolution=0.5, subtile=16, n_samples=4, num_classes=3)
    readout = ReadoutConfig(method="places", passes=3, place_confidence=0.0)
    model = build_model(cfg).eval()
    x = torch.rand(2, 1, 128, 128)
    probs, first = answer(model, x, readout, generator=torch.Generator().manual_seed(0))
    assert probs.shape == (2, 3) and torch.allclose(probs.sum(-1), torch.ones(2))
    g = torch.Generator().manual_seed(0)  # the same draws again, pass by pass
    with torch.no_grad():
        traces = [model(x, generator=g, estimate="probabilities") for _ in range(3)]
    assert torch.allclose(probs, read_out(traces, "places", 0.0, 0.0, 0.5))
    assert torch.allclose(probs, read_out(traces, "places", 8.0, 0.0, 0.5))  # radius 0: half the 16-px patch
    top = answer(model, x, ReadoutConfig(method="places", mode="topk", place_confidence=0.0))[0]  # one deterministic pass
    assert torch.allclose(top, read_out([model(x, mode="topk", estimate="probabilities")], "places", 0.0, 0.0, 0.5))
    with pytest.raises(ValueError, match="readout.place_confidence"):
        ReadoutConfig(method="places", place_confidence=1.5)
    with pytest.raises(ValueError, match="readout.method"):
        ReadoutConfig(method="vote")


def test_a_one_stage_patch_drawn_twice_counts_twice():
    from zoomin.config import ModelConfig
    from zoomin.model import build_model
    from zoomin.readout import _draws
    cfg = ModelConfig(kind="one_stage", stage1_resolution=0.125, tile=16, n_samples=12, num_classes=3)
    model = build_model(cfg).eval()
    x = torch.rand(2, 1, 32, 32)  # a 4 x 4 attention map: 12 draws must repeat patches
    with torch.no_grad():
        traces = [model(x, generator=torch.Generator().manual_seed(s), estimate="probabilities") for s in range(2)]
    _, _, draws = _draws(traces)
    assert (draws.sum(1) == 2 * 12).all() and (draws > 1).any()


def test_places_are_found_at_slide_coordinates():
    g = torch.Generator().manual_seed(0)
    centres = torch.rand(2, 60, 2, generator=g) * 300
    valid = torch.ones(2, 60, dtype=torch.bool)
    here = connected_places(centres, valid, 25.0)
    assert torch.equal(connected_places(centres + 123_456.0, valid, 25.0), here)  # far into a gigapixel slide


def test_an_image_with_no_draw_reads_uniform():
    vote = place_vote(torch.zeros(1, 3, 2), torch.rand(1, 3, 4), torch.zeros(1, 3), 25.0)
    assert torch.allclose(vote, torch.full((1, 4), 0.25))


def test_places_a_few_stray_draws_visit_do_not_outvote_objects_as_the_passes_grow():
    # 16 passes: three label digits (class 2) drawn 10 times each, a distractor (7) drawn 40 times,
    # and 16 places the reader is sure enough of (class 7 at 0.6), each drawn once
    spots = [(100, 100, 2, 0.9, 10), (400, 120, 2, 0.8, 10), (300, 700, 2, 0.95, 10), (900, 900, 7, 0.99, 40)]
    spots += [(60 * i, 1500 + 60 * (i % 2), 7, 0.6, 1) for i in range(16)]
    centres, probs, valid = _draws(spots)
    counted = place_vote(centres, probs, valid, radius=25.0, passes=16, full_rate=0.0)  # every place a whole vote
    assert counted.argmax(-1).item() == 7
    vote = place_vote(centres, probs, valid, radius=25.0, passes=16, full_rate=0.5)  # whole from 8 draws
    assert vote.argmax(-1).item() == 2
    # the stray places weigh 1/8 each, the objects 1: class 2 gets 0.9 + 0.8 + 0.95, class 7 0.99 + 16 / 8 x 0.6
    weights = torch.tensor([1.0] * 4 + [1 / 8] * 16)
    place_probs = torch.stack([probs[0, 0], probs[0, 10], probs[0, 20], probs[0, 30]] + [probs[0, 70 + i] for i in range(16)])
    expect = (weights[:, None] * place_probs).sum(0)
    assert torch.allclose(vote[0], expect / expect.sum(), atol=1e-6)


def test_read_out_drops_the_padding_of_the_traces_but_no_draw():
    from zoomin.config import ModelConfig
    from zoomin.model import build_model
    from zoomin.readout import _draws
    cfg = ModelConfig(kind="zoom_in", stage1_resolution=0.25, tile=32, stage2_resolution=0.5, subtile=16, n_samples=6, num_classes=3)
    model = build_model(cfg).eval()
    x = torch.rand(3, 1, 128, 128)
    with torch.no_grad():
        traces = [model(x, generator=torch.Generator().manual_seed(s), estimate="probabilities") for s in range(4)]
    centres, probs, draws = _draws(traces)
    valid = draws > 0
    drawn = sum(int(t.subtile_valid.sum()) for t in traces)
    assert int(draws.sum()) == drawn == 3 * 4 * 6  # two stages: one sub-tile per stage-I draw
    assert valid.shape[1] == max(sum(int(t.subtile_valid[b].sum()) for t in traces) for b in range(3))
    assert torch.allclose(probs[valid].sum(0), sum(t.draw_probs[t.subtile_valid].sum(0) for t in traces), atol=1e-5)


@pytest.mark.parametrize("subtiles", [1, 3])
def test_a_topk_readout_keeps_readout_subtiles_per_kept_tile(subtiles):
    from zoomin.config import Config
    from zoomin.model import build_model
    from zoomin.readout import answer
    cfg = Config.from_dict({"model": {"in_channels": 1, "num_classes": 2, "stage1_resolution": 0.125, "tile": 32, "stage2_resolution": 0.5,
                                      "subtile": 8, "n_samples": 4},
                            "readout": {"mode": "topk", "subtiles": subtiles}})
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    _, traces = answer(model, torch.rand(2, 1, 128, 128), cfg.readout)
    kept = traces[0].subtile_valid.sum(-1)  # (B, P) sub-tiles per kept tile
    assert (kept[traces[0].tile_counts > 0] == subtiles).all()


def test_the_old_model_topk_subtiles_key_is_read_as_readout_subtiles():
    from zoomin.config import Config
    with pytest.warns(FutureWarning, match="readout.subtiles"):
        cfg = Config.from_dict({"model": {"topk_subtiles": 3}, "readout": {"mode": "topk"}})
    assert cfg.readout.subtiles == 3
    with pytest.raises(ValueError, match="readout.subtiles"):  # a readout setting without its readout
        Config.from_dict({"readout": {"subtiles": 3}})


@pytest.mark.parametrize("kind,evidence", [("zoom_in", False), ("zoom_in", True), ("one_stage", True)])
def test_the_passes_compute_each_tile_and_patch_once_and_answer_as_if_each_computed_afresh(monkeypatch, kind, evidence):
    """The passes of one answer share their Stage1: stage II of a tile drawn again, and ``f`` of a
    patch drawn again, are taken from the first time (``Stage1.once``), with the same answer."""
    from zoomin.config import ModelConfig, ReadoutConfig
    from zoomin.model import build_model
    from zoomin.readout import answer, iter_passes
    from zoomin.stage1 import Stage1
    cfg = ModelConfig(kind=kind, stage1_resolution=0.25, tile=32, stage2_resolution=0.5, subtile=16, n_samples=6,
                      evidence=evidence)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    x = torch.rand(2, 1, 128, 128)
    tiles, patches = [], []
    embed = model.embed
    if kind == "zoom_in":
        attend = model._attend_tiles
        monkeypatch.setattr(model, "_attend_tiles", lambda src, rows, boxes, first: tiles.append(len(rows)) or attend(src, rows, boxes, first))
    monkeypatch.setattr(model, "embed", lambda p, first, rows: patches.append(len(p)) or embed(p, first, rows))
    readout = ReadoutConfig(passes=5)
    kept = answer(model, x, readout, generator=torch.Generator().manual_seed(1))[0]
    drawn = [(tr.tile_index, tr.tile_counts, tr.subtile_index, tr.subtile_valid)
             for (tr,) in iter_passes(model, x, passes=5, generator=torch.Generator().manual_seed(1))]
    distinct_tiles = {(b, int(t)) for ti, c, _, _ in drawn for b in range(2) for t in ti[b][c[b] > 0]}
    distinct_patches = {(b, int(ti[b, p]), int(si[b, p, k])) for ti, _, si, v in drawn for b, p, k in v.nonzero().tolist()}
    assert sum(tiles) == (2 * len(distinct_tiles) if kind == "zoom_in" else 0)  # two answers, each tile once
    assert sum(patches) == 2 * len(distinct_patches)  # and each patch once
    assert sum(len(d[0][d[1] > 0]) for d in drawn) > len(distinct_tiles)  # some tile was drawn in more than one pass
    monkeypatch.setattr(Stage1, "once", lambda self, name, keys, compute, keep=True: compute(torch.ones_like(keys, dtype=torch.bool)))
    afresh = answer(model, x, readout, generator=torch.Generator().manual_seed(1))[0]
    torch.testing.assert_close(kept, afresh)
