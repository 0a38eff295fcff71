"""The four networks of the method: attention ``a`` (stage I) and ``b`` (stage II), feature
extractor ``f`` and classifier ``g`` (method §3-4). Small CNNs in the spirit of ATS's defaults;
``f`` is pluggable through a registry of backbones, and any timm model (``zoomin.backbones``)."""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn


class AttentionNet(nn.Module):
    """``a`` / ``b``: a fully convolutional net giving ``out_channels`` maps per view location: the
    attention logit, or the evidence channels it is derived from (``zoomin.evidence``, method §10).

    (B, C, h, w) -> (B, out_channels, h, w). 'Same' padding and no striding keep the map aligned
    with the view, and no location's output is an average over an area (no pooling).
    """

    def __init__(self, in_channels: int, hidden: int = 8, depth: int = 3, kernel: int = 3, out_channels: int = 1):
        super().__init__()
        layers: list[nn.Module] = []
        ch = in_channels
        for _ in range(depth - 1):
            layers += [nn.Conv2d(ch, hidden, kernel, padding=kernel // 2), nn.ReLU(inplace=True)]
            ch = hidden
        layers.append(nn.Conv2d(ch, out_channels, kernel, padding=kernel // 2))
        self.body = nn.Sequential(*layers)
        self.out_channels = out_channels
        self.halo = depth * (kernel // 2)  # receptive-field radius: what a streamed piece needs around it

    def forward(self, view: torch.Tensor) -> torch.Tensor:
        return self.body(view)  # (B, out_channels, h, w)


def _norm(kind: str, width: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(width)
    if kind == "group":
        return nn.GroupNorm(min(8, width), width)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"feature norm must be 'batch', 'group' or 'none', got {kind!r}")


class SmallCNN(nn.Module):
    """``f``: stride-2 conv blocks, global average pooling, a linear map. (M, C, h, w) -> (M, out_dim).

    Batch norm by default: measured on bags of Megapixel-MNIST sub-tiles, it escapes the cold
    start several times faster than group norm or no norm (statistics are over the drawn sub-tiles).
    """

    def __init__(self, in_channels: int, out_dim: int = 64, width: int = 32, depth: int = 4, norm: str = "batch"):
        super().__init__()
        layers: list[nn.Module] = []
        ch = in_channels
        for i in range(depth):
            layers += [nn.Conv2d(ch, width, 3, stride=2 if i < depth - 1 else 1, padding=1),
                       _norm(norm, width), nn.ReLU(inplace=True)]
            ch = width
        self.body = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(width, out_dim)
        self.out_dim = out_dim

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(patches))


BACKBONES: dict[str, Callable[..., nn.Module]] = {"small_cnn": SmallCNN}


def register_backbone(name: str):
    """Decorator: make a feature extractor available as ``ModelConfig.backbone = name``.

    The factory is called as ``factory(in_channels=C, out_dim=D, width=width, depth=depth, norm=norm)`` and
    must map (M, C, h2, w2) patches to (M, D) features.
    """
    def wrap(factory):
        BACKBONES[name] = factory
        return factory
    return wrap


def build_backbone(name: str, **kwargs) -> nn.Module:
    """``f`` for ``ModelConfig.backbone``: a registered name, or ``timm:NAME`` for any timm model
    (``zoomin.backbones``; timm's own layers, so ``width``, ``depth`` and ``norm`` do not apply)."""
    from .backbones import PREFIX, is_timm, timm_backbone
    if is_timm(name):
        return timm_backbone(name[len(PREFIX):], kwargs["in_channels"], kwargs["out_dim"])
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; registered: {sorted(BACKBONES)}")
    return BACKBONES[name](**kwargs)


def feature_output(f: torch.Tensor, kind: str) -> torch.Tensor:
    """The last step of ``f`` (``ModelConfig.feature_output``), before eq 3 / eq 5 average the features.
    (M, D) -> (M, D).

    ``linear``: as the backbone gives them. ``l2``: unit length, as ATS normalises its features
    (Katharopoulos & Fleuret 2019: sampling from the attention is then the minimum-variance
    choice), so no single patch outweighs the others in ``z`` and ``g`` (linear) weighs the patches
    more like votes than like a sum of unbounded scores (benchmarks/megapixel_limits.py).
    """
    return nn.functional.normalize(f, dim=-1) if kind == "l2" else f


class Classifier(nn.Module):
    """``g``: aggregated feature (B, D) -> class logits (B, num_classes)."""

    def __init__(self, in_dim: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.body = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, num_classes))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.body(z)

    @property
    def linear(self) -> nn.Linear:
        """The linear map of ``g``: what ``Trace.contributions`` splits the logits with."""
        return self.body[-1]
