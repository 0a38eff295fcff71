"""Backbones users bring for ``f`` (issue #13, item 8): any ``timm`` model by name, and starting
weights from a local file or from timm's own cache. zoomin never downloads.

* ``model.backbone: timm:NAME`` (e.g. ``timm:resnet18``, ``timm:resnet18.a1_in1k``) builds
  ``timm.create_model(NAME, pretrained=False, in_chans=C, num_classes=D)``: (M, C, h2, w2) patches
  -> (M, D) features, timm's pooling and a new linear head. Needs the optional ``timm`` extra.
* ``model.backbone_weights``: ``""`` (random initialisation), a file (``.pth``/``.pt``/``.bin`` or
  ``.safetensors``: a state dict, a checkpoint holding one, or a zoomin checkpoint, whose ``f`` is
  taken), or ``timm-cache`` (the weights of the model's pretrained tag, if timm already has them on
  this machine: the Hugging Face cache or torch hub's). Every entry of ``f`` must come from the
  file; for a timm model the first convolution is adapted to ``in_channels`` as timm does and a
  classifier of another size is left out (``f``'s head of ``feature_dim`` outputs stays as
  initialised).

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
    (M, C, h2, w2) -> (M, out_dim). Hub names (``hf-hub:...``, ``local-dir:...``) are refused:
    timm would fetch their config from the network at every build."""
    if ":" in name:
        raise ValueError(f"backbone {PREFIX}{name}: give a timm model name (timm.list_models), not a hub or "
                         "directory reference (zoomin never downloads; the weights go in model.backbone_weights)")
    timm = _timm()
    try:
        net = timm.create_model(name, pretrained=False, in_chans=in_channels, num_classes=out_dim)
    except (RuntimeError, ValueError) as e:  # timm's "Unknown model (...)"
        raise ValueError(f"backbone {PREFIX}{name}: {str(e).splitlines()[0]}") from None
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


def _names(value) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value or ())


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The state dict of ``f`` in a weights file: ``.safetensors``, or a torch file holding a state
    dict or a checkpoint with one under ``state_dict`` or ``model``; from a zoomin checkpoint (or any
    whole-model state dict) the ``features.`` entries, and ``module.`` prefixes (DDP) removed."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict):
        state = next((state[k] for k in ("state_dict", "model") if isinstance(state.get(k), dict)), state)
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError("no state dict of tensors in it")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if any(k.startswith("features.") for k in state):
        state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    return state


def _fit_timm(features: nn.Module, state: dict, in_channels: int) -> set[str]:
    """Adapt a timm model's weights the way timm does for pretrained ones: the first convolution to
    ``in_channels`` (timm's ``adapt_input_conv``: summed for one channel, repeated and scaled for
    more), and a classifier of another shape left out (``f``'s head keeps its initialisation).
    Returns the keys left out."""
    from timm.models import adapt_input_conv
    cfg, own, left_out = getattr(features, "pretrained_cfg", None) or {}, features.state_dict(), set()
    for conv in _names(cfg.get("first_conv")):
        k = f"{conv}.weight"
        if k in state and k in own and state[k].ndim == 4 and state[k].shape[1] != own[k].shape[1]:
            try:
                state[k] = adapt_input_conv(in_channels, state[k], base_chans=state[k].shape[1])
            except TypeError:  # timm before base_chans: the weights are taken as RGB
                state[k] = adapt_input_conv(in_channels, state[k])
    for head in _names(cfg.get("classifier")):
        for k in (f"{head}.weight", f"{head}.bias"):
            if k in state and k in own and state[k].shape != own[k].shape:
                del state[k]
                left_out.add(k)
    return left_out


def load_backbone_weights(features: nn.Module, backbone: str, weights: str, in_channels: int) -> Path:
    """Load ``weights`` (a file or ``timm-cache``) into ``features`` (the model's ``f``, built for
    ``backbone``); returns the file read. Every entry of ``f`` must come from the file, except a
    timm classifier of another size. A missing or unreadable file, or weights of another
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
        state = read_state(path)
        left_out = _fit_timm(features, state, in_channels) if is_timm(backbone) else set()
        missing, unexpected = features.load_state_dict(state, strict=False)  # shapes are still checked
        bad = sorted(set(missing) - left_out) + sorted(unexpected)
        if bad:
            raise ValueError(f"{len(bad)} entries do not match f's, e.g. {bad[0]!r}")
    except Exception as e:  # a foreign or truncated file, another architecture: one line naming the file
        msg = " ".join(str(e).split())[:300] or type(e).__name__
        raise ValueError(f"{path}: not weights for backbone {backbone!r} ({msg})") from None
    return path
