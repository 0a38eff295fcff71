"""``Session``: a model and a set of named images -> traces. The one part of ``zoomin.viz`` that
calls a model; the views and widgets only render what it returns."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping

import torch

from ..sources import Source, as_source
from ..trace import Trace


def open_source(item, mpp: float = 0.0, fallback_mpp: float | None = None, manifest_mpp: float | None = None,
                channels: int = 3) -> Source:
    """A slide path (opened lazily through large-image with ``channels``, read at ``mpp`` µm/px when
    the model works in physical units; ``manifest_mpp``: its pixel size as its manifest row states it,
    ``fallback_mpp``: the file's pixel size when neither states it), a (C, H, W)/(1, C, H, W)
    tensor, or a Source."""
    if isinstance(item, (str, Path)):
        from ..slides import SlideSource
        return SlideSource(item, channels=channels, mpp=mpp, manifest_mpp=manifest_mpp, fallback_mpp=fallback_mpp)
    if isinstance(item, torch.Tensor) and item.dim() == 3:
        item = item.unsqueeze(0)
    return as_source(item)


class Session:
    """``model`` (eval mode) over ``images``: a mapping name -> slide path / tensor / Source, or a
    list (named by position or file name). Sources open on first use and stay open."""

    def __init__(self, model, images, class_names: list[str] | None = None, mode: str = "sample",
                 negatives: bool = True, checkpoint: str | None = None, fallback_mpp: float | None = None,
                 readout=None, manifest_mpps: Mapping[str, float | None] | None = None):
        if not isinstance(images, Mapping):
            images = {(Path(i).stem if isinstance(i, (str, Path)) else str(k)): i for k, i in enumerate(images)}
        if not images:
            raise ValueError("a Session needs at least one image")
        self.model, self.images, self.class_names = model.eval(), dict(images), class_names
        self.mode, self.negatives, self.checkpoint = mode, negatives, checkpoint
        self.fallback_mpp = fallback_mpp  # pixel size of slide files that do not state it (µm)
        self.manifest_mpps = dict(manifest_mpps or {})  # name -> its manifest row's pixel size (µm; wins over the file's)
        self.readout = readout  # the answer's ReadoutConfig (from_checkpoint: the checkpoint's; None: the defaults)
        self._sources: dict[str, Source] = {}

    @classmethod
    def from_checkpoint(cls, path: str | Path, images, **kw) -> "Session":
        from ..checkpoint import load_model
        model, cfg = load_model(path)
        return cls(model, images, checkpoint=str(path), **{"readout": cfg.readout, **kw})

    def load(self, path: str | Path) -> None:
        """Swap in the model of another checkpoint (same images)."""
        from ..checkpoint import load_model
        old = self._mpp
        self.model, cfg = load_model(path)
        self.checkpoint, self.readout = str(path), cfg.readout
        if self._mpp != old:  # slides are read at the model's resolution: reopen them at the new one
            self._sources.clear()

    @property
    def _mpp(self) -> float:
        """The model's working resolution in µm/px (0: it reads the files' own pixels)."""
        return getattr(getattr(self.model, "cfg", None), "mpp", 0.0) or 0.0

    @property
    def names(self) -> list[str]:
        return list(self.images)

    def source(self, name: str) -> Source:
        if name not in self.images:
            raise KeyError(f"no image named {name!r}; have {self.names}")
        if name not in self._sources:
            channels = getattr(getattr(self.model, "cfg", None), "in_channels", 3)  # as zoomin predict opens it
            self._sources[name] = open_source(self.images[name], self._mpp, self.fallback_mpp,
                                              self.manifest_mpps.get(name), channels)
        return self._sources[name]

    @torch.no_grad()
    def trace(self, name: str, n: int | None = None, seed: int = 0) -> Trace:
        """One forward pass on image ``name`` with ``n`` samples, reproducible from ``seed``."""
        device = next(self.model.parameters()).device
        generator = torch.Generator(device=device).manual_seed(seed)
        subtiles = self.readout.subtiles if self.readout is not None else 2  # topk: the answer's sub-tiles per tile
        return self.model(self.source(name), n=n, mode=self.mode, negatives=self.negatives,
                          generator=generator, subtiles=subtiles).detach()

    @torch.no_grad()
    def answer(self, name: str, seed: int = 0) -> torch.Tensor:
        """The model's answer for image ``name``: class probabilities (classes,), exactly what
        ``zoomin predict --seed`` gives for a slide of that id (``zoomin.readout.answer`` with the
        session's readout, drawn from ``zoomin.evaluate.image_generator(seed, name)``; a model on
        another device draws from a generator there with the same seed)."""
        from ..config import ReadoutConfig
        from ..evaluate import image_generator
        from ..readout import answer
        generator, device = image_generator(seed, name), next(self.model.parameters()).device
        if device.type != "cpu":
            generator = torch.Generator(device).manual_seed(generator.initial_seed())
        probs, _ = answer(self.model, self.source(name), self.readout or ReadoutConfig(), generator)
        return probs[0].cpu()
