"""Patch augmentation (zoomin.augment): the eight symmetries of the square, in training only."""
import torch

from zoomin.augment import affine, dihedral
from zoomin.config import ModelConfig
from zoomin.model import build_model


def _symmetries(x):
    out = []
    for t in (x, x.transpose(-1, -2)):
        out += [t, t.flip(-1), t.flip(-2), t.flip(-1).flip(-2)]
    return out


def test_dihedral_draws_each_of_the_eight_symmetries():
    x = torch.arange(12.0).view(1, 3, 2, 2).expand(4000, 3, 2, 2)
    y = dihedral(x, torch.Generator().manual_seed(0))
    group = [s[0] for s in _symmetries(x[:1])]
    which = torch.stack([torch.stack([(yi == g).all() for g in group]) for yi in y[:400]])  # (400, 8)
    assert (which.sum(1) == 1).all()  # every output is exactly one symmetry of its input
    counts = which.sum(0)
    assert (counts > 25).all(), counts  # all eight occur (expected 50 each)


def test_dihedral_keeps_non_square_patches_unrotated():
    x = torch.rand(64, 2, 3, 5)
    y = dihedral(x, torch.Generator().manual_seed(1))
    assert y.shape == x.shape
    for a, b in zip(x, y):
        assert any(torch.equal(b, t) for t in (a, a.flip(-1), a.flip(-2), a.flip(-1).flip(-2)))


def test_augment_changes_only_training_forward():
    cfg = ModelConfig(kind="zoom_in", in_channels=1, stage1_resolution=0.25, tile=16, stage2_resolution=0.5, subtile=8, n_samples=4,
                      feature_norm="none", augment=True)
    torch.manual_seed(0)
    model = build_model(cfg)
    x = torch.rand(2, 1, 64, 64)
    model.eval()
    a = model(x, generator=torch.Generator().manual_seed(3)).logits
    plain = build_model(ModelConfig(**{**cfg.__dict__, "augment": False}))
    plain.load_state_dict(model.state_dict())
    plain.eval()
    assert torch.equal(a, plain(x, generator=torch.Generator().manual_seed(3)).logits)  # eval: no augmentation
    model.train(), plain.train()
    t1 = model(x, generator=torch.Generator().manual_seed(3))
    t2 = plain(x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(t1.tile_index, t2.tile_index) and torch.equal(t1.subtile_index, t2.subtile_index)  # same draws
    assert not torch.allclose(t1.features, t2.features)  # f saw rotated / mirrored patches


def test_affine_strength_zero_is_the_identity_and_small_maps_keep_an_object_near_its_place():
    x = torch.zeros(2000, 1, 50, 50)
    x[:, :, 24:26, 39:41] = 1.0  # a dot 15 px right of the centre (24.5, 24.5)
    assert affine(x, 0.0) is x
    y = affine(x, 1.0, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    rows, cols = torch.arange(50.0).view(1, 1, 50, 1), torch.arange(50.0).view(1, 1, 1, 50)
    mass = y.sum((1, 2, 3))
    dy = (y * rows).sum((1, 2, 3)) / mass - 24.5
    dx = (y * cols).sum((1, 2, 3)) / mass - 24.5
    radius, angle = torch.hypot(dx, dy), torch.rad2deg(torch.atan2(dy, dx))
    assert radius.min() > 15 / 1.15 and radius.max() < 15 * 1.15  # scaled by at most ~10% (+ bilinear blur)
    assert angle.abs().max() < 15 + 8  # rotated by at most 15 degrees (+ shear)
    assert angle.min() < -10 and angle.max() > 10  # both ways
    assert (mass / 4 - 1).abs().mean() < 0.25  # the object is kept, not cut or blown up


def test_affine_augment_changes_only_training_forward():
    cfg = ModelConfig(kind="one_stage", in_channels=1, stage1_resolution=0.25, tile=16, n_samples=4, feature_norm="none",
                      augment_affine=1.0)
    torch.manual_seed(0)
    model = build_model(cfg)
    plain = build_model(ModelConfig(**{**cfg.__dict__, "augment_affine": 0.0}))
    plain.load_state_dict(model.state_dict())
    x = torch.rand(2, 1, 64, 64)
    model.eval(), plain.eval()
    assert torch.equal(model(x, generator=torch.Generator().manual_seed(3)).logits,
                       plain(x, generator=torch.Generator().manual_seed(3)).logits)
    model.train(), plain.train()
    t1 = model(x, generator=torch.Generator().manual_seed(3))
    t2 = plain(x, generator=torch.Generator().manual_seed(3))
    assert torch.equal(t1.tile_index, t2.tile_index)  # same draws
    assert not torch.allclose(t1.features, t2.features)  # f saw warped patches
