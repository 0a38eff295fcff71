"""Slides listed in a manifest as a data set: item -> (SlideSource, label), opened lazily."""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from ..manifest import Entry


class SlideDataset(Dataset):
    """``annotations=True`` sets each annotated row's outline mask as ``SlideSource.mask`` (parsed
    once per row, then kept with its rasterised views) for the annotation loss."""

    read_ahead = True  # zoomin.loader.batches opens the next batches' slides in threads

    def __init__(self, entries: list[Entry], channels: int = 3, max_pixels: int = 0, annotations: bool = False,
                 mpp: float = 0.0):
        self.entries, self.channels, self.max_pixels, self.mpp = entries, channels, max_pixels, mpp  # mpp: model.mpp
        self.annotations = annotations
        self._masks: dict = {}

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int):
        from ..slides import SlideSource
        e = self.entries[i]
        src = SlideSource(e.path, channels=self.channels, max_pixels=self.max_pixels, mpp=self.mpp, manifest_mpp=e.mpp)
        src.slide_id = e.slide_id  # names its draws in a seeded test (zoomin.evaluate.batch_generators)
        if self.annotations and getattr(e, "annotation", None):
            if i not in self._masks:
                from ..annotations import MaskSource
                self._masks[i] = MaskSource(e.annotation, src.size, 1 / src.k)
            src.mask = self._masks[i]  # the ROI, for the annotation loss
        return src, e.label

    @staticmethod
    def collate(items):
        """Slides differ in size: a batch is a list of sources and a label tensor."""
        return [s for s, _ in items], torch.tensor([y for _, y in items])
