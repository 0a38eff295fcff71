"""The training and test sets a config names: built-in Megapixel MNIST, or the slides of a
manifest (unreadable slides reported on one line each and left out before training starts)."""
from __future__ import annotations

import dataclasses
import sys

from torch.utils.data import Dataset

from .. import distributed
from ..config import Config
from ..model import stage1_scale_for


def usable_slides(entries: list, cfg: Config, report: bool = True) -> list:
    """The manifest rows whose slide opens and whose stage-I view fits the pixel budget; each
    other one is reported on one line (``zoomin: skipped PATH: problem``) and left out. A row
    whose outlines cannot be read (and are not trained on) is kept as a copy without them;
    ``entries`` are not changed."""
    from ..slides import SlideSource
    kept = []
    for e in entries:
        try:
            src = SlideSource(e.path, channels=cfg.model.in_channels, max_pixels=cfg.data.max_pixels, mpp=cfg.model.mpp,
                              manifest_mpp=e.mpp)
            src.check_view(stage1_scale_for(cfg.model, src.size))
            if getattr(e, "annotation", None):
                from ..annotations import MaskSource
                try:
                    MaskSource(e.annotation, src.size, 1 / src.k)  # a bad outline file is found now, not mid-epoch
                except (OSError, ValueError) as err:
                    if cfg.train.annotation_weight:
                        raise
                    if report and distributed.is_main():  # outlines only feed the diagnostics: keep the slide
                        print(f"zoomin: outlines ignored: {err}", file=sys.stderr)
                    e = dataclasses.replace(e, annotation=None)
            kept.append(e)
        except (OSError, ValueError) as err:
            if report and distributed.is_main():
                print(f"zoomin: skipped {err}", file=sys.stderr)
    return kept


def make_datasets(cfg: Config) -> tuple[Dataset, Dataset]:
    """(training set, test set) for ``cfg.data.task``: ``megapixel_mnist`` or ``manifest`` (rows
    whose split is ``cfg.data.test_split`` are the test set, the others train)."""
    if cfg.data.task == "manifest":
        from ..manifest import read_manifest
        from .slides import SlideDataset
        entries = usable_slides(read_manifest(cfg.data.manifest, num_classes=cfg.model.num_classes), cfg)
        test = [e for e in entries if e.split == cfg.data.test_split]
        train = [e for e in entries if e.split != cfg.data.test_split]
        if not train or not test:
            raise ValueError(f"{cfg.data.manifest}: need both training rows and rows with split "
                             f"'{cfg.data.test_split}' (after skipping unreadable slides)")
        return (SlideDataset(train, cfg.model.in_channels, cfg.data.max_pixels, cfg.train.annotation_weight > 0,
                             cfg.model.mpp),
                SlideDataset(test, cfg.model.in_channels, cfg.data.max_pixels, True, cfg.model.mpp))  # diagnostics only
    if cfg.data.task != "megapixel_mnist":
        raise ValueError(f"unknown data.task {cfg.data.task!r}; use 'megapixel_mnist' or 'manifest'")
    from .megapixel_mnist import MegapixelMNIST
    return MegapixelMNIST(cfg.data, "train"), MegapixelMNIST(cfg.data, "test")
