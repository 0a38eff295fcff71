"""Weak labels end to end (issue #13's acceptance): synthetic slides with tiny lesions of several
appearances and lesion-like distractors, trained from the slide labels alone with the packaged
``slides.yaml``, one fresh ``zoomin train`` process per seed of data and initialisation; writes
the held-out curves and ``docs/weak_labels.md``.

    python benchmarks/weak_labels.py                                   # 3 seeds, 4,096², ROI 0.05%
    python benchmarks/weak_labels.py --appearance mixed --tag mixed    # four appearances
    python benchmarks/weak_labels.py --size 16384 --roi-ratio 0.0001 --tag 16k   # ROI 0.01%

``--jobs J`` trains J seeds at once, each with one CPU thread (``train.threads: 1``), so the
minutes reported per seed are those of a machine shared by J runs. ``--set model.KEY=VALUE``
measures a non-default setting (the report says so); ``--slides-from runs/weak_labels_16k`` trains
on the slides an earlier run wrote instead of writing them again; ``--keep-finished`` reads back a
seed that an earlier run trained to the end with the same config (more seeds added to a report).

The outlines are written beside the slides and used only as a diagnostic (attention mass on the
lesions, their rank in alpha, on the held-out slides): the one change to the packaged config is
``annotation_weight: 0``, with which training never reads them — it ends bitwise equal to training
on the same manifest without its annotation column (tests/test_annotations.py).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml


DEFAULTS = {"appearance": "nuclei,colour", "n": 80, "distractors": 6}  # the arguments' defaults


def run(cmd: list[str], threads: int = 0) -> float:
    t0 = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
    subprocess.run(cmd, check=True, env=env)
    return time.perf_counter() - t0


def one_seed(args, seed: int) -> dict:
    out, zoomin = Path(args.out) / f"seed{seed}", [sys.executable, "-m", "zoomin"]
    manifest = Path(args.slides_from or args.out) / f"seed{seed}" / "slides" / "manifest.csv"
    write_s = 0.0
    if not manifest.exists():
        write_s = run(zoomin + ["synth-slides", "--n", str(args.n), "--size", str(args.size), "--out", str(manifest.parent),
                                "--seed", str(seed), "--roi-ratio", str(args.roi_ratio), "--appearance", args.appearance,
                                "--distractors", str(args.distractors), "--quiet"])
    from zoomin.cli import _packaged_config
    cfg = _packaged_config("slides.yaml").override(args.overrides).to_dict()
    cfg["train"]["seed"] = seed
    cfg["train"]["annotation_weight"] = 0.0  # outlines: diagnostics only (see the module docstring)
    if args.jobs > 1:
        cfg["train"]["threads"] = 1  # J runs share the cores: one thread each (more thrash the OpenMP pools)
    cfg["data"].update(task="manifest", manifest=str(manifest.resolve()))
    if args.epochs:
        cfg["train"]["epochs"] = args.epochs
    out.mkdir(parents=True, exist_ok=True)
    finished = kept(args, out, cfg)
    if finished is not None:
        return {"seed": seed, "write_s": 0.0, **finished}
    (out / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    train_s = run(zoomin + ["train", "--config", str(out / "config.yaml"), "--out", str(out / "run"), "--quiet"],
                  threads=1 if args.jobs > 1 else 0)
    m = json.loads((out / "run" / "metrics.json").read_text())
    (out / "result.json").write_text(json.dumps({"train_s": train_s}))
    return {"seed": seed, "write_s": write_s, "train_s": train_s, "metrics": m}


def kept(args, out: Path, cfg: dict) -> dict | None:
    """With ``--keep-finished``: the result of a seed an earlier run trained to the end with this
    very config (its ``config.yaml`` equal, ``metrics.json`` at the config's epochs), else None.
    Its training time is the one it wrote (``result.json``), or, for a run from before that file,
    the sum of its epochs' times (testing not counted; the report says so)."""
    metrics, saved = out / "run" / "metrics.json", out / "config.yaml"
    if not (args.keep_finished and metrics.exists() and saved.exists()):
        return None
    from zoomin.config import Config
    if Config.from_dict(yaml.safe_load(saved.read_text()), warn=False).to_dict() != cfg:  # fields added since: defaults
        return None
    m = json.loads(metrics.read_text())
    if m["epochs"] != cfg["train"]["epochs"]:
        return None
    result = out / "result.json"
    if result.exists():
        return {"train_s": json.loads(result.read_text())["train_s"], "metrics": m}
    return {"train_s": sum(h["seconds"] for h in m["history"]), "epochs_only": True, "metrics": m}


def reached(history: list[dict], bar: float = 0.95) -> str:
    """The first tested epoch from which the held-out AUC stays >= ``bar``, with the minutes of
    training up to it; "–" if the last tested epoch is below."""
    t, tested = 0.0, []
    for h in history:
        t += h["seconds"]
        if h.get("test_auc") is not None:
            tested.append((h["epoch"], t, h["test_auc"]))
    first = None
    for epoch, minutes, auc in tested:
        first = None if auc < bar else first or (epoch, minutes)
    return "–" if first is None else f"epoch {first[0]} ({first[1] / 60:.1f} min)"


def report(args, results: list[dict]) -> str:
    lines = [f"# Weak labels: {args.size:,}² slides, ROI {args.roi_ratio:.3%}, slide labels only", "",
             f"`python benchmarks/weak_labels.py --size {args.size} --roi-ratio {args.roi_ratio}"
             f"{f' --appearance {args.appearance}' if args.appearance != DEFAULTS['appearance'] else ''}"
             f"{f' --n {args.n}' if args.n != DEFAULTS['n'] else ''}"
             f"{f' --distractors {args.distractors}' if args.distractors != DEFAULTS['distractors'] else ''}"
             f"{f' --epochs {args.epochs}' if args.epochs else ''} --seeds "
             f"{' '.join(map(str, args.seeds))}{f' --tag {args.tag}' if args.tag else ''}"
             f"{f' --jobs {args.jobs}' if args.jobs > 1 else ''}"
             f"{''.join(f' --set {o}' for o in args.overrides)}"
             f"{f' --slides-from {args.slides_from}' if args.slides_from else ''}"
             f"{' --keep-finished' if args.keep_finished else ''}`: {args.n} synthetic slides per seed (75% train, 25% held out), lesion "
             f"appearance `{args.appearance}`, {args.distractors} lesion-like distractor cells per slide; trained by "
             f"`zoomin train` with the packaged `zoomin/configs/slides.yaml`"
             f"{' changed by ' + ', '.join(f'`{o}`' for o in args.overrides) + ' (not the default)' if args.overrides else ''}"
             f" and `annotation_weight: 0` (seed of data "
             f"and initialisation as listed): slide labels only; the outlines feed only the diagnostics.", "",
             *([f"{args.jobs} seeds trained at once, one CPU thread each: the times are those of a shared machine.", ""]
               if args.jobs > 1 else []),
             "| seed | held-out AUC | accuracy | evidence-head AUC | attention on lesions | lesions ranked first in α | "
             "AUC ≥ 0.95 from | training time | s/epoch |", "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        m = r["metrics"]
        last = [h for h in m["history"] if "test_auc" in h][-1]
        f = lambda k, fmt: format(last[k], fmt) if last.get(k) is not None else "–"  # noqa: E731
        lines.append(f"| {r['seed']} | **{m['test_auc']:.3f}** | {m['test_accuracy']:.3f} | {f('test_evidence_auc', '.3f')} "
                     f"| {f('test_roi_mass', '.3f')} | {f('test_roi_first', '.0%')} | {reached(m['history'])} "
                     f"| {r['train_s'] / 60:.1f} min{' (epochs only)' if r.get('epochs_only') else ''} "
                     f"| {m['seconds_per_epoch']:.1f} |")
    lines += ["", "Held-out AUC after each tested epoch (minutes of training in brackets):", ""]
    for r in results:
        m, t = r["metrics"], 0.0
        cells = []
        for h in m["history"]:
            t += h["seconds"]
            if h.get("test_auc") is not None:
                cells.append(f"{h['test_auc']:.2f} ({t / 60:.1f})")
        lines.append(f"- seed {r['seed']}: " + ", ".join(cells))
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="runs/weak_labels")
    p.add_argument("--docs", default="docs")
    p.add_argument("--tag", default="", help="suffix of the report: docs/weak_labels[_TAG].md")
    p.add_argument("--n", type=int, default=DEFAULTS["n"])
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--roi-ratio", type=float, default=0.0005)
    p.add_argument("--appearance", default=DEFAULTS["appearance"])
    p.add_argument("--distractors", type=int, default=DEFAULTS["distractors"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=0, help="override the config's epochs (0: as shipped)")
    p.add_argument("--jobs", type=int, default=1, help="seeds trained at once, one CPU thread each")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="SECTION.KEY=VALUE",
                   help="change a field of slides.yaml for this run (as zoomin train --set); said in the report")
    p.add_argument("--slides-from", default="", help="reuse the slides of an earlier --out (its seedN/slides)")
    p.add_argument("--keep-finished", action="store_true",
                   help="a seed already trained to the end with the same config is read back, not retrained")
    args = p.parse_args(argv)
    if args.tag:
        args.out = f"{args.out}_{args.tag}"
    with ThreadPoolExecutor(args.jobs) as pool:  # each seed is its own subprocess; --jobs 1: one after another
        results = list(pool.map(lambda s: one_seed(args, s), args.seeds))
    text = report(args, results)
    Path(args.docs).mkdir(parents=True, exist_ok=True)
    (Path(args.docs) / f"weak_labels{'_' + args.tag if args.tag else ''}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
