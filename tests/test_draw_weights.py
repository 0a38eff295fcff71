"""Training reads the estimator's own weights: the instance loss ("mean") weighs each draw by the
weight the forward pass computed for it (``Trace.draw_weights``), not by a display property that
derives them again; display quantities stay derived when asked."""
import dataclasses

import pytest
import torch

from zoomin.config import ModelConfig
from zoomin.losses import instance_loss
from zoomin.model import build_model
from zoomin.sampling import two_stage_weights

CFG = dict(in_channels=1, num_classes=3, stage1_resolution=0.25, tile=16, stage2_resolution=0.5, subtile=8, n_samples=6)


@pytest.mark.parametrize("kind,floor", [("zoom_in", 0.0), ("zoom_in", 0.3), ("one_stage", 0.0)])
def test_the_forward_pass_hands_its_weights_to_the_instance_loss(kind, floor):
    torch.manual_seed(0)
    cfg = ModelConfig(**{**CFG, "kind": kind, "proposal_floor": floor, "instance_pool": "mean"})
    model = build_model(cfg).train()
    tr = model(torch.rand(2, 1, 64, 64), generator=torch.Generator().manual_seed(1))
    assert tr.draw_weights is not None and not tr.draw_weights.requires_grad
    la = tr.log_alpha.detach().gather(1, tr.tile_index)
    lb = (torch.zeros(tr.subtile_index.shape) if tr.log_beta is None
          else tr.log_beta.detach().gather(-1, tr.subtile_index))
    S = 1 if tr.log_beta is None else tr.log_beta.shape[-1]
    again = two_stage_weights(la, lb, tr.tile_counts, tr.subtile_valid, S, tr.mode, tr.tile_log_q)
    assert torch.allclose(tr.draw_weights, again, atol=1e-6)  # the same values the display derives
    assert torch.equal(tr.weights, tr.draw_weights)
    y = torch.tensor([0, 2])
    halved = dataclasses.replace(tr, draw_weights=tr.draw_weights / 2)
    assert instance_loss(halved, y).item() == pytest.approx(instance_loss(tr, y).item() / 2, rel=1e-5)  # read, not re-derived


def test_without_an_instance_loss_the_weights_are_derived_when_asked():
    torch.manual_seed(0)
    tr = build_model(ModelConfig(**CFG)).eval()(torch.rand(2, 1, 64, 64))
    assert tr.draw_weights is None  # not computed by the forward pass
    assert torch.allclose(tr.weights.sum((1, 2)), torch.ones(2), atol=1e-5)
