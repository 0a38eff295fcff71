"""Checkpoints written before the readout section (tests/data/legacy_*.pt, made by
tests/data/make_legacy_checkpoints.py with that code) load, and answer with the probabilities
that code gave (``zoomin.readout.answer`` with the readout their old keys map onto)."""
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
