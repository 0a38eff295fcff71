"""Slides listed in a manifest as a data set: item -> (SlideSource, label), opened lazily."""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from ..manifest import Entry


class SlideDataset(Dataset):
    def __init__(self, entries: list[Entry], channels: int = 3, max_pixels: int = 0):
        self.entries, self.channels, self.max_pixels = entries, channels, max_pixels

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int):
        from ..slides import SlideSource
        e = self.entries[i]
        src = SlideSource(e.path, channels=self.channels, max_pixels=self.max_pixels)
        if getattr(e, "annotation", None):
            from ..annotations import MaskSource
            src.mask = MaskSource(e.annotation, src.size)  # the ROI, for the annotation loss
        return src, e.label

    @staticmethod
    def collate(items):
        """Slides differ in size: a batch is a list of sources and a label tensor."""
        return [s for s, _ in items], torch.tensor([y for _, y in items])
