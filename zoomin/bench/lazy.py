"""A source that costs nothing to hold: pixels are generated for the region and scale asked for,
so a benchmark measures the model's memory, not an image's (the way a pyramidal slide would be
read, without the file)."""
from __future__ import annotations

import torch

from ..geometry import view_size


class NoiseSource:
    """A batch of (B, C, H, W) images of uniform noise, made on demand; reads are deterministic
    per call order (a seeded generator), never stored."""

    def __init__(self, size: tuple[int, int], channels: int = 1, seed: int = 0, batch_size: int = 1):
        self.size, self.channels, self.batch_size = tuple(size), channels, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.pixels_read = 0

    def view(self, scale: float) -> torch.Tensor:
        h, w = view_size(*self.size, scale)
        self.pixels_read += self.batch_size * h * w
        return torch.rand(self.batch_size, self.channels, h, w, generator=self.generator)

    def read(self, batch_index: torch.Tensor, boxes: torch.Tensor, scale: float,
             size_hw: tuple[int, int]) -> torch.Tensor:
        self.pixels_read += boxes.shape[0] * size_hw[0] * size_hw[1]
        return torch.rand(boxes.shape[0], self.channels, *size_hw, generator=self.generator)
