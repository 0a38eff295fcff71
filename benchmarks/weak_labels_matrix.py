"""Weak labels on slides zoomin's defaults were not tuned on: a matrix of real-tissue backgrounds,
lesion kinds, scan resolutions, ROI sizes and class counts (``zoomin.tissue_slides``), each cell
trained from the slide labels alone with the packaged ``slides.yaml`` as a user would run it
(``zoomin train --manifest``), one fresh process per (cell, seed); writes ``docs/weak_labels_matrix.md``.

    python benchmarks/weak_labels_matrix.py --jobs 2                       # the whole matrix, 3 seeds
    python benchmarks/weak_labels_matrix.py --cells cmu-dab-0.5 --seeds 0  # one cell, one seed
    python benchmarks/weak_labels_matrix.py --doctor ...                   # train with zoomin doctor's config
    python benchmarks/weak_labels_matrix.py --doctor --doctor-candidates 16 ...  # the doctor probing stage I at 16 µm/px only
    python benchmarks/weak_labels_matrix.py --doctor --collect --merge docs/weak_labels_doctor.json ...  # new runs beside earlier ones

Each cell says whether its generator was used while choosing settings (``tuning``) or held out
(``held-out``): the figure that counts is the held-out rows'. Every run writes its slides (the
slides of a (cell, seed) are a function of both), trains with ``train.threads: 1`` (``--jobs``
runs share the cores) and reports the trainer's last held-out AUC (macro one-vs-rest for more than
two classes), the evidence's, whether the trainer warned that nothing was learnt, and its minutes.
``--budget-min`` stops starting runs after that many minutes and reports what finished; a run
already trained to the end in ``--work`` is reported, not trained again.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

# name: (background, lesion kinds (one class each), scan µm/px, ROI ratio, distractor cells, role)
CELLS = {
    "synthetic-nuclei-1": ("synthetic", ("nuclei",), 1.0, 5e-4, 4, "tuning"),
    "synthetic-dab-0.5": ("synthetic", ("dab",), 0.5, 3e-4, 3, "tuning"),
    "ihc-giant-0.5": ("ihc", ("giant",), 0.5, 1e-3, 3, "tuning"),
    "ihc-giant-own-0.5": ("ihc", ("giant-own",), 0.5, 1e-3, 3, "tuning"),  # shape only: the tissue's own colour
    "synthetic-nuclei-own-0.25": ("synthetic", ("nuclei-own",), 0.25, 1e-3, 3, "tuning"),
    "ihc-dab-0.5-roi5e-5": ("ihc", ("dab",), 0.5, 5e-5, 3, "tuning"),  # the lowest ROI, on a background held out from cmu
    "synthetic-dab-0.5-roi5e-5": ("synthetic", ("dab",), 0.5, 5e-5, 3, "tuning"),
    "synthetic-giant-0.5": ("synthetic", ("giant",), 0.5, 1e-3, 3, "tuning"),
    "ihc-nuclei-inside-0.5": ("ihc", ("nuclei-inside",), 0.5, 1e-3, 3, "tuning"),  # a colour of its own inside the range
    "ihc-pale-0.5": ("ihc", ("pale",), 0.5, 5e-4, 0, "tuning"),  # a washed-out patch, on a background held out from cmu
    "synthetic-pale-0.5": ("synthetic", ("pale",), 0.5, 5e-4, 0, "tuning"),
    "ihc-nuclei-inside-0.25": ("ihc", ("nuclei-inside",), 0.25, 1e-3, 3, "tuning"),  # the same at a 0.25 µm/px scan
    "cmu-dab-0.5": ("cmu", ("dab",), 0.5, 3e-4, 3, "held-out"),
    "cmu-nuclei-0.25": ("cmu", ("nuclei",), 0.25, 1e-3, 3, "held-out"),
    "cmu-giant-0.5": ("cmu", ("giant",), 0.5, 1e-3, 3, "held-out"),
    "cmu-rbc-1": ("cmu", ("rbc",), 1.0, 5e-4, 3, "held-out"),
    "cmu-pale-0.5": ("cmu", ("pale",), 0.5, 5e-4, 0, "held-out"),
    "ihc-nuclei-0.5": ("ihc", ("nuclei",), 0.5, 5e-4, 3, "held-out"),
    "cmu-dab-0.5-roi5e-5": ("cmu", ("dab",), 0.5, 5e-5, 3, "held-out"),
    "cmu-3class-0.5": ("cmu", ("dab", "rbc"), 0.5, 5e-4, 3, "held-out"),
}


def zoomin(*args: str, threads: int = 1, log: Path | None = None) -> None:
    """``zoomin ARGS`` in a fresh process with ``threads`` CPU threads; its output to ``log`` (or dropped)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with open(log or os.devnull, "w") as out:
        subprocess.run([sys.executable, "-m", "zoomin", *args], check=True, env=env, stdout=out)


def cell_slides(work, name: str, seed: int, n: int, size: int) -> Path:
    """The manifest of a (cell, seed)'s slides under ``work``, written first if missing."""
    background, kinds, mpp, roi, distractors, _ = CELLS[name]
    manifest = Path(work) / name / f"seed{seed}" / "slides" / "manifest.csv"
    if not manifest.exists():
        from zoomin.tissue_slides import tissue_slides
        tissue_slides(manifest.parent, n, size, mpp, background, kinds, roi, 2, distractors, seed=seed)
    return manifest


def slide_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments of a probe over the matrix's slides (``cell_data``): --n, --size, --work."""
    p.add_argument("--n", type=int, default=64, help="slides a cell (as this script writes them)")
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--work", default="runs/weak_labels_matrix", help="where the matrix's slides are (or are written)")


def cell_data(args, name: str, seed: int = 0):
    """A (cell, seed)'s slides for a probe, written first if missing -> (the packaged ``slides.yaml`` on
    their manifest, its rows, their labels as an array)."""
    import numpy as np

    from zoomin.cli import _packaged_config
    from zoomin.manifest import read_manifest
    classes = len(CELLS[name][1]) + 1
    manifest = cell_slides(args.work, name, seed, args.n, args.size)
    cfg = _packaged_config("slides.yaml").override(["data.task=manifest", f"data.manifest={manifest}",
                                                    f"model.num_classes={classes}"])
    entries = read_manifest(manifest, num_classes=classes)
    return cfg, entries, np.array([e.label for e in entries])


def one_run(args, name: str, seed: int) -> dict:
    kinds = CELLS[name][1]
    out = Path(args.work) / name / f"seed{seed}"
    done = read_run(out, name, seed) if (out / "times.json").exists() else None
    if done is not None and done["finished"]:  # trained to the end before: report it, train nothing
        return done
    t0 = time.perf_counter()
    manifest = cell_slides(args.work, name, seed, args.n, args.size)
    write_s = time.perf_counter() - t0
    from zoomin.cli import _packaged_config
    cfg = _packaged_config("slides.yaml").override(args.overrides)
    doctor_s = 0.0
    if args.doctor:  # its config and minutes kept (doctor.yaml, doctor.json, its output in doctor.log): a run
        # restarted after the doctor finished trains with the config it wrote
        done = out / "doctor.json"
        if not done.exists():
            t0 = time.perf_counter()
            zoomin("doctor", str(manifest), "--out", str(out / "doctor.yaml"), "--set", f"model.num_classes={len(kinds) + 1}",
                   *sum((["--set", o] for o in args.overrides), []),
                   *(["--candidates", args.doctor_candidates] if args.doctor_candidates else []), threads=1,
                   log=out / "doctor.log")
            done.write_text(json.dumps({"doctor_min": (time.perf_counter() - t0) / 60}))
        from zoomin.config import Config
        cfg = Config.from_yaml(out / "doctor.yaml")
        doctor_s = json.loads(done.read_text())["doctor_min"] * 60
    d = cfg.to_dict()
    d["model"]["num_classes"] = len(kinds) + 1
    d["train"].update(seed=seed, threads=args.threads, **({"epochs": args.epochs} if args.epochs else {}))
    d["data"].update(task="manifest", manifest=str(manifest.resolve()))
    (out / "config.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    t0 = time.perf_counter()
    zoomin("train", "--config", str(out / "config.yaml"), "--out", str(out / "run"), "--quiet", threads=args.threads)
    predict_test(out)
    (out / "times.json").write_text(json.dumps({"train_min": (time.perf_counter() - t0) / 60, "write_min": write_s / 60,
                                                    "doctor_min": doctor_s / 60}))
    return read_run(out, name, seed)


def predict_test(out: Path) -> None:
    """``zoomin predict`` on a finished run's held-out rows, as a user would run it: writes
    ``out/predict.csv`` (once; the run's checkpoint and the manifest's test rows; nothing for a run
    that has not finished)."""
    import csv
    manifest = out / "slides" / "manifest.csv"
    metrics = out / "run" / "metrics.json"
    if (out / "predict.csv").exists() or not metrics.exists() or not manifest.exists():
        return
    m = json.loads(metrics.read_text())
    if m["epochs"] != m["config"]["train"]["epochs"]:  # not finished (or still training): nothing to predict with yet
        return
    with open(manifest, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["split"] == "test"]
    for r in rows:
        r["path"] = str((manifest.parent / r["path"]).resolve())
    with open(out / "test_rows.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    zoomin("predict", "--checkpoint", str(out / "run" / "checkpoint.pt"), "--out", str(out / "predict.csv"),
           str(out / "test_rows.csv"), "--quiet")


def foci_attention(out: Path) -> dict | None:
    """Where the finished run's model looks on the held-out positive slides: alpha's mass on the
    foci (the generator's GeoJSON outlines, looked at here only, never trained on) and the share of
    slides whose most attended location is in a focus (``zoomin.evidence.roi_attention``); written
    once to ``out/foci.json``. None for a run that has not finished."""
    import csv

    import torch

    from zoomin.annotations import MaskSource
    from zoomin.checkpoint import load_model
    from zoomin.evidence import roi_attention
    from zoomin.slides import SlideSource
    done = out / "foci.json"
    if done.exists():
        return json.loads(done.read_text())
    if not (out / "predict.csv").exists():  # predict runs once the training has finished
        return None
    model, cfg = load_model(out / "run" / "checkpoint.pt")
    with open(out / "test_rows.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if int(r["label"]) > 0]
    mass, first = [], []
    for r in rows:
        path = Path(r["path"])
        src = SlideSource(path, channels=3, max_pixels=cfg.data.max_pixels, mpp=cfg.model.mpp,
                          manifest_mpp=float(r["mpp"]) if r.get("mpp") else None)
        with torch.no_grad():
            stage1 = model.attend(src)
        roi = MaskSource(path.with_suffix(".geojson"), src.size, 1 / src.k).view(stage1.scale).flatten(1) > 0
        m, rank = roi_attention(stage1.log_alpha.exp().float(), roi)
        mass.append(float(m[0]))
        first.append(int(rank[0]) == 1)
    result = {"mass": statistics.median(mass), "first": sum(first) / len(first), "slides": len(rows)}
    done.write_text(json.dumps(result))
    return result


def predict_auc(out: Path) -> float | None:
    """The held-out AUC of ``out/predict.csv`` against the manifest's labels (macro one-vs-rest for
    more than two classes); None without it."""
    import csv

    import numpy as np

    from zoomin.doctor import auc_of
    if not (out / "predict.csv").exists():
        return None
    with open(out / "test_rows.csv", newline="") as fh:
        labels = {r["slide_id"]: int(r["label"]) for r in csv.DictReader(fh)}
    with open(out / "predict.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("p_0")]
    y = np.array([labels[r["slide_id"]] for r in rows])
    probs = [[float(r[k]) for k in sorted((k for k in r if k.startswith("p_")), key=lambda k: int(k[2:]))] for r in rows]
    return float(auc_of(np.array(probs), y))


def read_run(out: Path, name: str, seed: int) -> dict | None:
    """A run's figures from its folder (its last test; ``finished`` False for a run stopped early,
    whose minutes are then the epochs' own); None before its first test."""
    path = out / "run" / "metrics.json"
    if not path.exists():
        return None
    m = json.loads(path.read_text())
    tested = [h for h in m["history"] if "test_accuracy" in h]
    if not tested:
        return None
    from zoomin.config import Config
    last, cfg = tested[-1], m["config"]
    model = Config.from_dict(cfg, warn=False, rules=False).model  # a run's config of any version
    times = json.loads((out / "times.json").read_text()) if (out / "times.json").exists() else \
        {"train_min": sum(h["seconds"] for h in m["history"]) / 60, "write_min": None}
    return {"cell": name, "seed": seed, "role": CELLS[name][5], "auc": last.get("test_auc"),
            "accuracy": last["test_accuracy"], "evidence_auc": last.get("test_evidence_auc"),
            "warned": bool(m.get("warnings")), "epochs": m["epochs"], "of": cfg["train"]["epochs"],
            "finished": m["epochs"] == cfg["train"]["epochs"], "stage1_mpp": model.view_mpp(1),
            "count_mpp": cfg["model"].get("count_mpp", 0.0), "count_directions": model.count_directions,
            "count_cells": model.count_cells, "count_answer": model.count_answer, "count_filled": model.count_filled,
            "count_peaks": model.count_peaks,
            "predict_auc": predict_auc(out),
            "foci": foci_attention(out), **times}


def runs_page(argv, columns: tuple[str, ...], measure, title: str, what: str, default_out: str) -> int:
    """The ``main`` of a benchmark that measures run folders of this script one by one: parses ``RUNS...
    --out PAGE``, and writes a page of one row per run (``measure(run) -> {column: value}``, each value
    printed with 2 decimals, or as it is when a string) with each run's cell role, after a line
    giving the command and ``what`` it measures; each row is printed as it is measured."""
    import torch
    script = Path(sys.argv[0]).name
    p = argparse.ArgumentParser(description=title)
    p.add_argument("runs", nargs="+", help="run folders of benchmarks/weak_labels_matrix.py")
    p.add_argument("--out", default=default_out)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    lines = [f"# {title}", "", f"Written by `python benchmarks/{script} {' '.join(sys.argv[1:])}`: {what}", "",
             "| run | role | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for run in map(Path, args.runs):
        r = measure(run)
        role = CELLS[run.parent.name][5] if run.parent.name in CELLS else "-"
        lines.append(f"| {run.parent.name} seed {run.name.removeprefix('seed')} | {role} | "
                     + " | ".join(v if isinstance(v, str) else f"{v:.2f}" for v in (r[k] for k in columns)) + " |")
        print(lines[-1], flush=True)
    Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


def counted(r: dict) -> str:
    """What a run's counts count, where its colour cells are on (``model.count_cells``): '' for the tails
    alone; " + peaks" where the cells are also counted at their densest place (``model.count_peaks``);
    ", filled" where they count inside the tissue's filled outline (``model.count_filled``);
    ", answer" where they answer alone (``model.count_answer``)."""
    cells = r.get("count_cells", 0)
    peaks = " + peaks" if r.get("count_peaks") else ""
    what = "" if not cells else f" ({'tails + ' if r.get('count_directions', 64) else ''}{cells} cells{peaks})"
    return what + (", filled" if r.get("count_filled") else "") + (", answer" if r.get("count_answer") else "")


def report(rows: list[dict], args) -> str:
    command = "python benchmarks/weak_labels_matrix.py " + " ".join(a for a in sys.argv[1:] if a != "--collect")
    head = f"Collected from runs trained by `{command}`" if args.collect else f"Written by `{command}`"
    lines = ["# Weak labels on slides the defaults were not tuned on", "",
             head + f" ({args.n} slides of {args.size:,}² per run, a quarter held out, balanced; slide labels only; "
             f"{'the config `zoomin doctor` recommends' if args.doctor else 'the packaged `slides.yaml`'}"
             f"{'; overrides: ' + ', '.join(args.overrides) if args.overrides else ''}; {args.threads} CPU thread(s) per run, "
             f"{args.jobs} run(s) at once).",
             "", "AUC: the trainer's held-out AUC after the last epoch (macro one-vs-rest for 3 classes); evidence: the "
             "stage-I evidence's; warned: the trainer's no-learning warning fired.", "",
             "The config: stage I's µm/px, and the stain counts' where they are on (`model.count_mpp`, per seed; "
             "their colour cells a lesion class, `model.count_cells`, where the doctor chose them, \"+ peaks\" where also "
             "counted at their densest stage-I location, `model.count_peaks`; \"filled\": every pixel "
             "inside the tissue's filled outline counted, `model.count_filled`; \"answer\": the counts "
             "answer alone, `model.count_answer`); "
             "min/run: training minutes, and the doctor's before them where it ran.", "",
             "`zoomin predict`: the AUC of `zoomin predict` run on the held-out rows with the run's checkpoint.", "",
             "α on foci: on the held-out positive slides, the median share of stage I's attention on the foci "
             "(the generator's outlines, never trained on) and the share of slides whose most attended "
             "location is in a focus, per seed.", "",
             "| cell | role | background | lesions | µm/px | ROI | config | AUC per seed | mean ± sd | `zoomin predict` | evidence AUC | α on foci | warned | min/run |",
             "|---|---|---|---|---:|---:|---|---|---:|---|---|---|---|---:|"]
    for name in dict.fromkeys(r["cell"] for r in rows):
        rs = sorted((r for r in rows if r["cell"] == name), key=lambda r: r["seed"])
        bg, kinds, mpp, roi, _, role = CELLS[name]
        aucs = [r["auc"] for r in rs if r["auc"] is not None]
        sd = statistics.stdev(aucs) if len(aucs) > 1 else 0.0
        mean = f"{statistics.mean(aucs):.2f} ± {sd:.2f}" if aucs else "-"
        evid = " / ".join("-" if r["evidence_auc"] is None else f"{r['evidence_auc']:.2f}" for r in rs)
        stopped = "".join(f" (seed {r['seed']} stopped at epoch {r['epochs']} of {r['of']})" for r in rs if not r["finished"])
        config = " / ".join(f"{r['stage1_mpp']:g}" + (f" + counts {r['count_mpp']:g}{counted(r)}" if r.get("count_mpp") else "")
                            for r in rs)
        doctor = [r["doctor_min"] for r in rs if r.get("doctor_min")]
        minutes = (f"{statistics.mean(doctor):.1f} + " if doctor else "") + f"{statistics.mean(r['train_min'] for r in rs):.1f}"
        predicted = " / ".join("-" if r.get("predict_auc") is None else f"{r['predict_auc']:.2f}" for r in rs)
        foci = " / ".join("-" if not r.get("foci") else f"{r['foci']['mass']:.2f}, {r['foci']['first']:.0%} first"
                          for r in rs)
        lines.append(f"| {name} | {role} | {bg} | {'+'.join(kinds)} | {mpp:g} | {roi * 100:.3g}% | {config} | "
                     f"{' / '.join(f'{a:.2f}' for a in aucs)} | {mean} | {predicted} | {evid} | {foci} | "
                     f"{sum(r['warned'] for r in rs)}/{len(rs)} | {minutes}{stopped} |")
    lines += ["", f"Held-out cells with mean AUC ≥ 0.95: **{tally(rows)}** over every seed run"
              + (f"; **{tally(rows, 3)}** over seeds 0–2, the benchmark's default three." if
                 any(r["seed"] >= 3 for r in rows) else ".")]
    return "\n".join(lines) + "\n"


def tally(rows: list[dict], seeds: int | None = None) -> str:
    """'k of n': the held-out cells whose mean AUC over their seeds (below ``seeds`` if given) is ≥ 0.95."""
    cells = {}
    for r in rows:
        if r["role"] == "held-out" and r["auc"] is not None and (seeds is None or r["seed"] < seeds):
            cells.setdefault(r["cell"], []).append(r["auc"])
    return f"{sum(statistics.mean(v) >= 0.95 for v in cells.values())} of {len(cells)}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cells", default=",".join(CELLS), help="comma-separated cell names")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--n", type=int, default=80, help="slides per run")
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--epochs", type=int, default=0, help="override train.epochs (the report says so)")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--threads", type=int, default=1, help="CPU threads per run")
    p.add_argument("--doctor", action="store_true", help="train with the config zoomin doctor recommends")
    p.add_argument("--doctor-candidates", default="", help="zoomin doctor --candidates (default: the doctor's own)")
    p.add_argument("--set", action="append", default=[], dest="overrides", metavar="SECTION.KEY=VALUE")
    p.add_argument("--budget-min", type=float, default=0, help="start no run after this many minutes (0: no limit)")
    p.add_argument("--collect", action="store_true", help="only report the runs already in --work (finished or not)")
    p.add_argument("--merge", default="", help="a JSON this script wrote before (e.g. docs/weak_labels_doctor.json): "
                   "its rows are reported beside --work's, for every (cell, seed) --work has no run of")
    p.add_argument("--work", default="runs/weak_labels_matrix")
    p.add_argument("--out", default="docs/weak_labels_matrix.md")
    args = p.parse_args()
    runs = [(c, int(s)) for c in args.cells.split(",") for s in args.seeds.split(",")]
    t0 = time.perf_counter()

    def guarded(run):
        if args.budget_min and time.perf_counter() - t0 > args.budget_min * 60:
            return None
        try:
            return one_run(args, *run)
        except subprocess.CalledProcessError as e:
            print(f"{run}: failed ({e})", file=sys.stderr)
            return None

    if not args.collect:
        with ThreadPoolExecutor(args.jobs) as pool:
            list(pool.map(guarded, runs))
    for c, s in runs:  # runs trained before predict was part of a run, or stopped ones since finished
        predict_test(Path(args.work) / c / f"seed{s}")
    rows = [r for r in (read_run(Path(args.work) / c / f"seed{s}", c, s) for c, s in runs) if r is not None]
    if args.merge:  # runs made earlier, elsewhere: kept where this work folder has none of their own
        have = {(r["cell"], r["seed"]) for r in rows}
        rows += [r for r in json.loads(Path(args.merge).read_text()) if (r["cell"], r["seed"]) not in have]
        order = list(CELLS)
        rows.sort(key=lambda r: (order.index(r["cell"]), r["seed"]))
    Path(args.out).write_text(report(rows, args))
    Path(args.out).with_suffix(".json").write_text(json.dumps(rows, indent=1))
    print(Path(args.out).read_text())


if __name__ == "__main__":
    main()
