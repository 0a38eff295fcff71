"""The accuracy part of ``benchmarks/bench.py``: accuracy against memory on Megapixel MNIST (the
ATS protocol by default: 1500 x 1500, 5,000 training images), the one-stage and two-stage models
at equal full-resolution detail (``zoomin/configs/megapixel_mnist_{one_stage,zoom_in}.yaml``),
for a few N. Each run trains with the ordinary ``Trainer`` (resumable: a second call continues an
unfinished run) and its training-step memory is measured at the same settings by a fresh-process
probe. Finally every run predicts the same test images with P sampled passes for each P asked
for, by the expected one-pass accuracy (``single``: each image's share of those passes right)
and deterministically (``topk``: the N most attended patches), and at each N the two kinds are
compared image by image (``paired``: difference, 95% interval, McNemar test)."""
from __future__ import annotations

import dataclasses
from importlib import resources
from itertools import repeat
from pathlib import Path

import torch
from paired import compare, correctness
from probe import Probe, measure

from zoomin.config import Config
from zoomin.train import autocast_dtype


@dataclasses.dataclass
class AccuracyPlan:
    out: Path  # runs go to out/accuracy/<kind>_n<N>
    models: tuple[str, ...] = ("zoom_in", "one_stage")  # model kinds
    ns: tuple[int, ...] = (5, 10, 20)  # N (samples per image) for each kind
    epochs: int = 10  # training epochs per run
    train_size: int = 5000  # training images per epoch
    test_size: int = 1000  # test images
    canvas: int = 1500  # canvas side
    threads: int = 2  # torch CPU threads in all (split among the jobs)
    device: str = "cpu"  # training and probe device
    jobs: int = 1  # runs trained at once, each in its own process with threads // jobs threads
    eval_every: int = 0  # also test every this many epochs (0: after the last only); gives the curves
    passes: tuple[int, ...] = (4, 16)  # paired test: sampled passes averaged per test image (each P reported)
    seed: int = 0  # paired test: seed of the sampled passes (the same for every run)


def config_for(plan: AccuracyPlan, kind: str, n: int) -> Config:
    """The packaged full-protocol config of ``kind`` with N, the budget and the canvas set."""
    cfg = Config.from_yaml(resources.files("zoomin") / "configs" / f"megapixel_mnist_{kind}.yaml")
    cfg.model.n_samples = n
    cfg.train.epochs, cfg.train.device = plan.epochs, plan.device
    cfg.train.threads = max(1, plan.threads // max(1, plan.jobs))
    cfg.train.eval_every = plan.eval_every
    cfg.data.train_size, cfg.data.test_size, cfg.data.canvas = plan.train_size, plan.test_size, plan.canvas
    return cfg


def train_run(cfg_dict: dict, out: str, log: bool) -> dict:
    """One resumable training run (a top-level function, so a spawned process can run it)."""
    from zoomin.train import Trainer
    return Trainer(Config.from_dict(cfg_dict), out, progress=False, log=log).fit(resume=True)


def score_run(out: str, passes: tuple[int, ...], test_size: int, seed: int, threads: int,
              method: str = "") -> dict:
    """A finished run's per-image correctness at each number of passes (spawnable, like ``train_run``),
    read out as the packaged config says (``readout.method``; a readout, not a change of model)."""
    import torch
    torch.set_num_threads(threads)
    return correctness(out, list(passes), test_size, seed=seed, topk=True, single=True, method=method)


def column(key: int | str) -> str:
    """The accuracy.csv column of a scoring: P sampled passes, "single" or "topk"."""
    return {"single": "accuracy_single_pass", "topk": "accuracy_topk"}.get(key, f"accuracy_{key}_passes")


def curve_rows(kind: str, n: int, metrics: dict) -> list[dict]:
    """One row per epoch of a run's history: the training curve (test accuracy where tested)."""
    return [dict(model=kind, N=n, epoch=h["epoch"], train_accuracy=h["train_accuracy"], ce=h["ce"],
                 test_accuracy=h.get("test_accuracy", ""), seconds=h["seconds"]) for h in metrics["history"]]


def paired_rows(ns, correct: dict) -> list[dict]:
    """Two stages against one stage at each N and scoring (P passes, "single", "topk"), on the same
    test images. ``correct``: {(kind, N): {scoring: per-image correctness (n,) bool or share right}}."""
    rows = []
    for n in ns:
        a, b = correct.get(("zoom_in", n)), correct.get(("one_stage", n))
        if a is None or b is None:
            continue
        for p in a:
            r = compare(a[p], b[p])
            rows.append(dict(N=n, passes=p, zoom_in=r["accuracy_a"], one_stage=r["accuracy_b"],
                             difference=r["difference"], ci_low=r["ci_low"], ci_high=r["ci_high"],
                             only_zoom_in=r["only_a"], only_one_stage=r["only_b"], p_value=r["p_value"]))
    return rows


def accuracy_runs(plan: AccuracyPlan, progress=None) -> tuple[list[dict], list[dict], list[dict]]:
    """Train every (model, N) run (``plan.jobs`` at a time), test every run with ``plan.passes``
    sampled passes on the same images (as many at a time), then probe each one's training-step
    memory in a fresh process (a whole training batch of lazily generated images, so the images
    themselves are not counted) -> (one row per run, one row per run and epoch, paired rows)."""
    runs = [(kind, n, config_for(plan, kind, n)) for kind in plan.models for n in plan.ns]
    outs = [str(plan.out / "accuracy" / f"{kind}_n{n}") for kind, n, _ in runs]
    test_args = (repeat(plan.passes), repeat(plan.test_size), repeat(plan.seed))
    readouts = [c.readout.method for _, _, c in runs]
    if plan.jobs > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(plan.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(train_run, [c.to_dict() for _, _, c in runs], outs, [False] * len(runs)))
            tested = list(pool.map(score_run, outs, *test_args, repeat(runs[0][2].train.threads), readouts))
    else:
        results = [train_run(c.to_dict(), o, True) for (_, _, c), o in zip(runs, outs)]
        tested = list(map(score_run, outs, *test_args, repeat(plan.threads), readouts))
    rows, curves, correct = [], [], {}
    for (kind, n, cfg), metrics, corr in zip(runs, results, tested):
        model_fields = {k: v for k, v in dataclasses.asdict(cfg.model).items() if k not in ("kind", "in_channels")}
        amp = autocast_dtype(cfg.train, torch.device(plan.device)) is not None  # as the run trained
        probe = measure(Probe(model=kind, size=plan.canvas, phase="train", model_config=model_fields,
                              batch=cfg.train.batch_size, device=plan.device, threads=plan.threads, amp=amp))
        rows.append(dict(model=kind, N=n, epochs=metrics["epochs"], train_size=plan.train_size, batch=cfg.train.batch_size,
                         canvas=plan.canvas, test_accuracy=metrics["test_accuracy"],
                         seconds_per_epoch=metrics["seconds_per_epoch"], step_mb=probe.get("step_mb"),
                         error=probe.get("error", "")))
        correct[kind, n] = corr
        rows[-1].update({column(p): float(c.double().mean()) for p, c in corr.items()})
        curves += curve_rows(kind, n, metrics)
        if progress:
            progress.update(1)
    return rows, curves, paired_rows(plan.ns, correct)
