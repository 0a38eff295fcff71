"""Accuracy against memory on Megapixel MNIST (the ATS protocol by default: 1500 x 1500, 5,000
training images): the one-stage and two-stage models at equal full-resolution detail
(``zoomin/configs/megapixel_mnist_{one_stage,zoom_in}.yaml``), for a few N. Each run trains
with the ordinary ``Trainer`` (resumable: a second call continues an unfinished run) and its
training-step memory is measured at the same settings by a fresh-process probe."""
from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path

from ..config import Config
from .probe import Probe, measure


@dataclasses.dataclass
class AccuracyPlan:
    out: Path  # runs go to out/accuracy/<kind>_n<N>
    models: tuple[str, ...] = ("zoom_in", "one_stage")  # model kinds
    ns: tuple[int, ...] = (5, 10, 20)  # N (samples per image) for each kind
    epochs: int = 10  # training epochs per run
    train_size: int = 5000  # training images per epoch
    test_size: int = 1000  # test images
    canvas: int = 1500  # canvas side
    threads: int = 2  # torch CPU threads
    device: str = "cpu"  # training and probe device


def config_for(plan: AccuracyPlan, kind: str, n: int) -> Config:
    """The packaged full-protocol config of ``kind`` with N, the budget and the canvas set."""
    cfg = Config.from_yaml(resources.files("zoomin") / "configs" / f"megapixel_mnist_{kind}.yaml")
    cfg.model.n_samples = n
    cfg.train.epochs, cfg.train.threads, cfg.train.device = plan.epochs, plan.threads, plan.device
    cfg.train.eval_every = 0
    cfg.data.train_size, cfg.data.test_size, cfg.data.canvas = plan.train_size, plan.test_size, plan.canvas
    return cfg


def accuracy_runs(plan: AccuracyPlan, progress=None) -> list[dict]:
    from ..train import Trainer
    rows = []
    for kind in plan.models:
        for n in plan.ns:
            cfg = config_for(plan, kind, n)
            trainer = Trainer(cfg, plan.out / "accuracy" / f"{kind}_n{n}", progress=False)
            metrics = trainer.fit(resume=True)
            model_fields = {k: v for k, v in dataclasses.asdict(cfg.model).items() if k not in ("kind", "in_channels")}
            probe = measure(Probe(model=kind, size=plan.canvas, phase="train", model_config=model_fields,
                                  device=plan.device, threads=plan.threads))
            rows.append(dict(model=kind, N=n, epochs=metrics["epochs"], train_size=plan.train_size,
                             canvas=plan.canvas, test_accuracy=metrics["test_accuracy"],
                             seconds_per_epoch=metrics["seconds_per_epoch"], step_mb=probe.get("step_mb"),
                             error=probe.get("error", "")))
            if progress:
                progress.update(1)
    return rows
