"""Checkpoints written before the readout section (tests/data/legacy_*.pt, made by
tests/data/make_legacy_checkpoints.py with that code) load, and answer with the probabilities
that code gave (``zoomin.readout.answer`` with the readout their old keys map onto); so do checkpoints
written before each stage's resolution became one (value, units) pair (tests/data/resolution_*.pt)."""
import warnings
from pathlib import Path

import pytest
import torch

from zoomin.checkpoint import load_model
from zoomin.readout import answer

DATA = Path(__file__).parent / "data"
READOUTS = {"legacy_features": ("auto", "sample", 3), "legacy_mixture": ("mixture", "sample", 4),
            "legacy_places": ("places", "sample", 5), "legacy_topk": ("auto", "topk", 1)}


@pytest.mark.parametrize("name", sorted(READOUTS))
def test_a_checkpoint_from_before_the_readout_section_answers_as_before(name):
    path = DATA / f"{name}.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # loading an old checkpoint warns about nothing: there is nothing to fix in it
        model, cfg = load_model(path)
    assert (cfg.readout.method, cfg.readout.mode, cfg.readout.passes) == READOUTS[name]
    if name == "legacy_places":
        assert (cfg.readout.place_confidence, cfg.readout.place_radius) == (0.3, 6.0)
    ck = torch.load(path, weights_only=True)
    x = ck["test_input"].float() / 255
    probs, _ = answer(model, x, cfg.readout, torch.Generator().manual_seed(7))
    assert torch.allclose(probs, ck["test_probs"], atol=1e-6), (probs, ck["test_probs"])


def test_a_checkpoint_whose_config_breaks_a_rule_its_trainer_ignored_still_loads(tmp_path):
    """Training now refuses ``train.instance_weight`` without an instance head; a checkpoint its
    trainer wrote that way (the weight silently dropped) still loads and predicts."""
    from zoomin.config import Config
    ck = torch.load(DATA / "legacy_features.pt", weights_only=True)
    d = ck["config"]
    d["train"]["instance_weight"] = 1.0  # no instance head: model.evidence false, instance_pool max
    path = tmp_path / "old.pt"
    torch.save({"model": ck["model"], "config": d}, path)
    model, cfg = load_model(path)
    assert cfg.train.instance_weight == 1.0 and cfg.readout.passes == 3
    with pytest.raises(ValueError, match="train.instance_weight needs an instance head"):
        cfg.check()  # what the trainer checks before training on it
    with pytest.raises(ValueError, match="train.instance_weight"):
        Config.from_dict(d, warn=False)  # a config file: every rule


@pytest.mark.parametrize("name,pair", [("resolution_physical", ((16.0, "mpp"), (4.0, "mpp"))),
                                       ("resolution_view_size", ((32, "px"), (0.5, "baseline")))])
def test_a_checkpoint_from_before_the_resolution_pair_answers_as_before(name, pair):
    """Checkpoints whose config sets the resolutions the earlier ways (``stage1_mpp``, ``view_size``;
    tests/data/make_resolution_checkpoints.py at commit b864867) load silently as today's (value,
    units) pairs, and answer as that code did (the physical one with its fitted stain counts)."""
    path = DATA / f"{name}.pt"
    ck = torch.load(path, weights_only=True)
    assert {"scale1", "view_size", "stage1_mpp"} <= set(ck["config"]["model"])  # the old layout
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model, cfg = load_model(path)
    m = cfg.model
    assert ((m.stage1_resolution, m.stage1_units), (m.stage2_resolution, m.stage2_units)) == pair
    x = ck["test_input"].float() / 255
    probs, _ = answer(model, x, cfg.readout, torch.Generator().manual_seed(7))
    assert torch.allclose(probs, ck["test_probs"], atol=1e-6), (probs, ck["test_probs"])
