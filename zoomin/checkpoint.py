"""Checkpoint files and random state, beside the models: an atomic write, a safe
(``weights_only``) read, a model with its config, and every random state training draws from.

A training checkpoint (``checkpoint.pt``, written by ``Trainer``) holds model, optimiser,
scheduler, AMP scaler, epoch, step, history, config and ``rng_state()``; ``load_model`` needs
only its ``model`` and ``config`` entries, which is all ``save_model`` writes."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from .config import Config
from .files import atomic_save  # noqa: F401  (the trainer and tests import it from here)
from .model import build_model

CHECKPOINT = "checkpoint.pt"  # the file name in a run's output folder


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a zoomin checkpoint safely (``weights_only=True``: tensors and plain containers only)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated or foreign file
        raise ValueError(f"{path}: not a readable zoomin checkpoint ({type(e).__name__})") from None


def save_model(path: str | Path, model, cfg: Config) -> Path:
    """A checkpoint with just the model and its config (what ``load_model`` and ``predict`` need)."""
    path = Path(path)
    atomic_save({"model": model.state_dict(), "config": cfg.to_dict()}, path)
    return path


def load_model(path: str | Path, map_location="cpu"):
    """The model stored in a checkpoint, in eval mode, and its ``Config`` (an earlier version's keys
    read as today's; each field checked, not the rules between them that training checks)."""
    ck = load_checkpoint(path, map_location)
    if not isinstance(ck, dict) or "model" not in ck or "config" not in ck:
        raise ValueError(f"{path}: not a zoomin checkpoint (no model and config in it)")
    cfg = Config.from_dict(ck["config"], source=str(path), warn=False, rules=False)  # as its trainer wrote it: nothing to fix
    model = build_model(cfg.model)
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError:
        raise ValueError(f"{path}: the weights do not match the model its config describes") from None
    return model.eval(), cfg


def rng_state() -> dict:
    """Every random state training draws from (torch, CUDA, Python, NumPy), as plain tensors and
    numbers so that a ``weights_only`` load restores it."""
    py, np_state = random.getstate(), np.random.get_state()
    return {"rng_torch": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "rng_python": list(py[1]), "rng_python_pos": py[2],
            "rng_numpy": torch.from_numpy(np_state[1].astype(np.int64)), "rng_numpy_pos": int(np_state[2]),
            "rng_numpy_gauss": [int(np_state[3]), float(np_state[4])]}


def set_rng_state(ck: dict) -> None:
    """Restore what ``rng_state`` saved (``ck``: a checkpoint holding its entries)."""
    torch.set_rng_state(ck["rng_torch"].cpu())
    if ck["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in ck["rng_cuda"]])
    random.setstate((3, tuple(ck["rng_python"]), ck["rng_python_pos"]))
    if "rng_numpy" in ck:  # checkpoints from before it was saved lack it
        keys = ck["rng_numpy"].numpy().astype(np.uint32)
        np.random.set_state(("MT19937", keys, ck["rng_numpy_pos"], *ck["rng_numpy_gauss"]))
