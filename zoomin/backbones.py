"""Backbones users bring for ``f`` (issue #13, item 8): any ``timm`` model by name, and starting
weights from a local file or from timm's own cache. zoomin never downloads.

* ``model.backbone: timm:NAME`` (e.g. ``timm:resnet18``, ``timm:resnet18.a1_in1k``) builds
  ``timm.create_model(NAME, pretrained=False, in_chans=C, num_classes=K)``: (M, C, h2, w2) patches
  -> (M, K) features, timm's pooling and a new linear head. Needs the optional ``timm`` extra.
* ``model.backbone_weights``: ``""`` (random initialisation), a file (``.pth``/``.pt``/``.bin`` or
  ``.safetensors``: a state dict, or a checkpoint holding one), or ``timm-cache`` (the weights of the
  model's pretrained tag, if timm already has them on this machine: the Hugging Face cache or
  torch hub's). For a timm model the weights go through timm's own loader, which drops a classifier
  of another size and adapts the first convolution to ``in_channels``; for a registered backbone
  (``small_cnn``) the file is a state dict of ``f``, loaded strictly.

Weights are loaded when training starts from scratch (``Trainer.fit``), never when a checkpoint
is read: a trained model's ``f`` is in its checkpoint, so the weights file is not needed to predict.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

PREFIX = "timm:"
CACHE = "timm-cache"


def is_timm(name: str) -> bool:
    return name.startswith(PREFIX)


def _timm():
    try:
        import timm
    except ImportError:
        raise ImportError("backbone 'timm:...' needs the timm package (pip install 'zoomin[timm]')") from None
    except Exception as e:  # e.g. a torchvision built for another torch: "operator torchvision::nms does not exist"
        raise ImportError(f"backbone 'timm:...': timm could not be imported ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''}); timm needs a torchvision built for this torch") from None
    return timm


def timm_backbone(name: str, in_channels: int, out_dim: int) -> nn.Module:
    """``f`` as the timm model ``name`` (without the ``timm:`` prefix), randomly initialised:
    (M, C, h2, w2) -> (M, out_dim)."""
    timm = _timm()
    try:
        net = timm.create_model(name, pretrained=False, in_chans=in_channels, num_classes=out_dim)
    except RuntimeError as e:  # timm's "Unknown model (...)"
        raise ValueError(f"backbone {PREFIX}{name}: {str(e).splitlines()[0]}") from None
    net.out_dim = out_dim
    return net


def _cached_file(net: nn.Module, name: str) -> Path:
    """The weights of the model's pretrained tag that timm has already saved on this machine."""
    cfg = getattr(net, "pretrained_cfg", None) or {}
    found = []
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # timm without the Hugging Face hub: torch hub's cache only
        try_to_load_from_cache = None
    if cfg.get("hf_hub_id") and try_to_load_from_cache is not None:
        names = [cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else ["model.safetensors", "pytorch_model.bin"]
        found += [try_to_load_from_cache(cfg["hf_hub_id"], f) for f in names]
    if cfg.get("url"):
        found.append(Path(torch.hub.get_dir()) / "checkpoints" / Path(cfg["url"]).name)
    for path in found:
        if isinstance(path, (str, Path)) and Path(path).is_file():
            return Path(path)
    raise FileNotFoundError(f"backbone {PREFIX}{name}: no pretrained weights in timm's cache on this machine "
                            f"(zoomin never downloads): give model.backbone_weights a weights file")


def load_backbone_weights(features: nn.Module, backbone: str, weights: str, in_channels: int, out_dim: int) -> Path:
    """Load ``weights`` (a file or ``timm-cache``) into ``features`` (the model's ``f``, built for
    ``backbone``); returns the file read. A missing or unreadable file, or weights of another
    architecture, is a one-line error naming the file."""
    if weights == CACHE:
        if not is_timm(backbone):
            raise ValueError(f"model.backbone_weights: {CACHE} is for timm backbones, not {backbone!r}")
        path = _cached_file(features, backbone[len(PREFIX):])
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{path}: backbone weights file not found")
    try:
        if is_timm(backbone):
            from timm.models import load_pretrained
            cfg = {**(getattr(features, "pretrained_cfg", None) or {}), "file": str(path), "source": ""}
            cfg.pop("state_dict", None)
            load_pretrained(features, pretrained_cfg=cfg, num_classes=out_dim, in_chans=in_channels)
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
            features.load_state_dict(state.get("state_dict", state) if isinstance(state, dict) else state)
    except Exception as e:  # a foreign or truncated file, another architecture: one line naming the file
        msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path}: not weights for backbone {backbone!r} ({msg})") from None
    return path
