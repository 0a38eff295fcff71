"""Training-time augmentation of the patches fed to ``f``: the eight symmetries of the square
(``dihedral``) and small random affine maps (``affine``).

Histology and overhead imagery have no preferred orientation, so a rotated or mirrored patch keeps
its label. With a few dozen slides, ``f`` otherwise learns the training slides' lesion patches by
heart (measured on the
weak-label benchmark: docs/benchmarks.md, "Figures that were in the package"). Objects with an orientation (digits: a 6 is not a 9) keep it under ``affine``
instead: a few degrees of rotation, a little scaling and shear make each training object look new
without changing what it is (Megapixel MNIST's reader memorises its 4,000 training digits: docs/benchmarks.md,
``benchmarks/paired_test.py --seen-digits``). Only what ``f`` sees changes; the
attention maps, the draws and the estimators (value and gradient) are untouched.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

AFFINE_ROTATION = 15.0  # degrees of rotation at strength 1 (uniform in +-)
AFFINE_SCALE = 0.1  # relative change of size at strength 1 (uniform in 1 +- it)
AFFINE_SHEAR = 0.1  # shear at strength 1 (uniform in +-)


def dihedral(patches: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each patch under one of the 8 symmetries of the square, drawn uniformly and independently
    (a transpose only when the patches are square). (M, C, h, w) -> (M, C, h, w)."""
    M = patches.shape[0]
    bits = torch.randint(0, 2, (3, M, 1, 1, 1), generator=generator,
                         device=generator.device if generator is not None else "cpu").bool().to(patches.device)
    out = torch.where(bits[0], patches.flip(-1), patches)
    out = torch.where(bits[1], out.flip(-2), out)
    if out.shape[-1] == out.shape[-2]:
        out = torch.where(bits[2], out.transpose(-1, -2), out)
    return out


def affine(patches: torch.Tensor, strength: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Each patch under its own random affine map about its centre: rotation uniform in
    ``+- strength x AFFINE_ROTATION`` degrees, scale in ``1 +- strength x AFFINE_SCALE``, shear in
    ``+- strength x AFFINE_SHEAR``, drawn independently; bilinear, zero outside the patch (as reads
    outside the image are). One ``grid_sample`` for all patches. (M, C, h, w) -> (M, C, h, w)."""
    if strength <= 0:
        return patches
    M = patches.shape[0]
    u = torch.rand(3, M, generator=generator, device=generator.device if generator is not None else "cpu")
    u = (2 * u - 1).to(patches.device) * strength  # (3, M) in [-strength, strength]
    angle = u[0] * math.radians(AFFINE_ROTATION)
    scale = 1 + u[1] * AFFINE_SCALE
    shear = u[2] * AFFINE_SHEAR
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale  # output -> input: the inverse scaling
    theta = torch.stack([torch.stack([cos, -sin + shear * cos, torch.zeros_like(cos)], -1),
                         torch.stack([sin, cos + shear * sin, torch.zeros_like(cos)], -1)], 1)  # (M, 2, 3)
    grid = F.affine_grid(theta.to(patches.dtype), list(patches.shape), align_corners=False)  # (M, h, w, 2)
    return F.grid_sample(patches, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
