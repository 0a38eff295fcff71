"""Memory and time against image size (arrays and slides) for the two-stage model, the one-stage
model at equal full-resolution detail and a plain CNN on the whole image; estimator variance
against N; optionally accuracy against memory on Megapixel MNIST (``accuracy.py``). Each memory
and time figure comes from a fresh process (``probe.py``). Needs the ``bench`` extra.

    python benchmarks/bench.py --out runs/bench_full      # -> bench.csv, bench.md, memory.html, variance.csv
    python benchmarks/bench.py --out runs/smoke --smoke   # the tiny version the tests run
    python benchmarks/bench.py --out runs/acc --parts accuracy --accuracy-ns 5,10 --accuracy-epochs 20

Equal detail: both attention models feed ``f`` the same N full-resolution patches of the same
size; the one-stage model's attention view keeps ATS's ratio (scale x patch = 6, i.e. 0.12 for
50-pixel patches on Megapixel MNIST), the two-stage model's stage-I view is 1/5 of that scale
(arrays) or fixed at 1,000 pixels (slides, ``stage1_units: px``) and it zooms in through stage II.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from probe import Probe, measure
from report import medians, ratios, write_csv, write_markdown, write_plot

ARRAY_MODELS = {  # Megapixel-MNIST geometry: 50-px full-resolution patches, N = 10
    "zoom_in": dict(stage1_resolution=0.025, tile=400, stage2_resolution=0.12, subtile=50, n_samples=10, foreground="none"),
    "one_stage": dict(stage1_resolution=0.12, tile=50, n_samples=10, foreground="none"),
}
SLIDE_MODELS = {  # 128-px full-resolution patches, N = 16 (the slide-memory benchmark's model)
    "zoom_in": dict(stage1_resolution=1000, stage1_units="px", tile=2048, stage2_resolution=1 / 64, subtile=128, n_samples=16, num_classes=2,
                    foreground="otsu_dark"),
    "one_stage": dict(stage1_resolution=6 / 128, tile=128, n_samples=16, num_classes=2, foreground="otsu_dark"),
}


@dataclass
class BenchConfig:
    out: Path  # output folder
    parts: tuple[str, ...] = ("arrays", "slides", "variance")  # which parts to run (also "accuracy")
    array_sizes: tuple[int, ...] = (1000, 2000, 4000, 8000, 16000)  # array sides
    slide_sizes: tuple[int, ...] = (10_000, 31_623, 100_000)  # synthetic slide sides
    models: tuple[str, ...] = ("zoom_in", "one_stage", "cnn")  # which models
    phases: tuple[str, ...] = ("train", "infer")  # training step and/or inference
    repeats: int = 3  # fresh processes per configuration (medians reported)
    max_gb: float = 8.0  # skip a configuration predicted (from the last smaller one) to need more
    device: str = "cpu"  # "cpu" or "cuda"
    amp: bool = False  # bf16 autocast (CUDA)
    threads: int = 2  # torch CPU threads per process
    variance_ns: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)  # N for the variance part
    variance_draws: int = 5000  # draws per N
    accuracy: dict = field(default_factory=dict)  # AccuracyPlan fields for the "accuracy" part
    rows: list = field(default_factory=list)  # one per probe (or skipped configuration)


def _probe(cfg: BenchConfig, part: str, model: str, size: int, phase: str, path: str = "") -> Probe:
    table = ARRAY_MODELS if part == "arrays" else SLIDE_MODELS
    return Probe(model=model, size=size, phase=phase, source="slide" if path else "noise", path=path,
                 model_config=dict(table.get(model, {})), channels=1 if part == "arrays" else 3,
                 device=cfg.device, amp=cfg.amp, threads=cfg.threads)


def _series(cfg: BenchConfig, part: str, model: str, phase: str, sizes, paths=None, progress=None) -> None:
    """Measure ``sizes`` in ascending order. Where memory grows with the image area (every model on
    arrays; one stage on slides) a size predicted, by area scaling from the last one measured, to
    need more than ``max_gb`` is skipped and recorded as such."""
    last, failed = None, ""
    scales_with_area = not (part == "slides" and model == "zoom_in")
    for size in sorted(sizes):
        row = dict(part=part, model=model, phase=phase, size=size)
        predicted = last[1] * (size / last[0]) ** 2 if last and scales_with_area else 0.0
        skip = (f"skipped: {failed} failed" if failed  # a smaller size failed (out of memory, timeout)
                else f"skipped: predicted {predicted / 1024:.1f} GB > {cfg.max_gb:g} GB" if predicted / 1024 > cfg.max_gb
                else "")
        if skip:
            cfg.rows.append({**row, "repeat": 0, "error": skip})
            if progress:
                progress.update(cfg.repeats)
            continue
        runs = []
        for r in range(cfg.repeats):
            res = measure(_probe(cfg, part, model, size, phase, (paths or {}).get(size, "")))
            cfg.rows.append({**row, "repeat": r, **{k: res.get(k) for k in ("seconds", "step_mb", "process_peak_rss_mb", "error")}})
            if progress:
                progress.update(1)
            if not res.get("error"):
                runs.append(res["step_mb"])
        if runs:
            last = (size, statistics.median(runs))
        else:
            failed = f"{size:,}²"


def _cnn_on_slides(cfg: BenchConfig) -> None:
    """A whole-image CNN on a slide needs level 0 in memory: not run, predicted from the largest
    array it ran on (memory per pixel x area x 3 channels for the input)."""
    done = [r for r in cfg.rows if r["part"] == "arrays" and r["model"] == "cnn" and not r.get("error")]
    for phase in cfg.phases:
        mine = [r for r in done if r["phase"] == phase]
        if not mine:
            continue
        size = max(r["size"] for r in mine)
        per_px = statistics.median(r["step_mb"] for r in mine if r["size"] == size) / size ** 2
        for s in cfg.slide_sizes:
            gb = (per_px * s ** 2 + 3 * 4 * s ** 2 / 2**20) / 1024
            cfg.rows.append(dict(part="slides", model="cnn", phase=phase, size=s, repeat=0,
                                 error=f"not run: needs level 0 in memory, predicted {gb:,.0f} GB"))


def slide_files(cfg: BenchConfig) -> dict[int, str]:
    """Synthetic pyramidal slides for the slide part (written once, kept under ``out/slides``)."""
    import numpy as np

    from zoomin.synth import make_spec, write_slide
    folder = cfg.out / "slides"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for size in cfg.slide_sizes:
        path = folder / f"slide_{size}.tif"
        if not path.exists():
            write_slide(path.with_suffix(".tmp.tif"), make_spec(size, True, np.random.default_rng(size)))
            path.with_suffix(".tmp.tif").rename(path)
        paths[size] = str(path)
    return paths


def run(cfg: BenchConfig, progress: bool = True) -> dict:
    """Every part of ``cfg``; writes bench.csv, bench.md, memory.html (with the ``viz`` extra) and
    each part's CSV under ``cfg.out``."""
    from tqdm.auto import tqdm
    cfg.out.mkdir(parents=True, exist_ok=True)
    jobs = []
    if "arrays" in cfg.parts:
        jobs += [("arrays", m, ph, cfg.array_sizes, None) for m in cfg.models for ph in cfg.phases]
    if "slides" in cfg.parts:
        paths = slide_files(cfg)
        jobs += [("slides", m, ph, cfg.slide_sizes, paths) for m in cfg.models if m != "cnn" for ph in cfg.phases]
    with tqdm(total=sum(len(j[3]) for j in jobs) * cfg.repeats, desc="bench", disable=not progress) as bar:
        for part, model, phase, sizes, paths in jobs:
            _series(cfg, part, model, phase, sizes, paths, bar)
    if "slides" in cfg.parts and "cnn" in cfg.models:
        _cnn_on_slides(cfg)
    table = medians(cfg.rows)
    ratio_rows = ratios(table)
    var_rows = []
    if "variance" in cfg.parts:
        from zoomin.montecarlo import variance_against_n
        var_rows = variance_against_n(cfg.variance_ns, cfg.variance_draws)
        write_csv(var_rows, cfg.out / "variance.csv")
    acc_rows, curve_rows, paired = [], [], []
    if "accuracy" in cfg.parts:
        from accuracy import AccuracyPlan, accuracy_runs
        plan = AccuracyPlan(out=cfg.out, device=cfg.device, threads=cfg.threads, **cfg.accuracy)
        acc_rows, curve_rows, paired = accuracy_runs(plan)
        write_csv(acc_rows, cfg.out / "accuracy.csv")
        write_csv(curve_rows, cfg.out / "accuracy_curves.csv")
        if paired:
            write_csv(paired, cfg.out / "accuracy_paired.csv")
    if cfg.rows:
        write_csv(cfg.rows, cfg.out / "bench.csv")
    write_markdown(cfg, table, ratio_rows, var_rows, cfg.out / "bench.md", acc_rows, paired)
    try:
        write_plot(table, var_rows, cfg.out / "memory.html", acc_rows, curve_rows)
    except ImportError:  # the viz extra is optional
        pass
    return {"table": table, "ratios": ratio_rows, "variance": var_rows, "accuracy": acc_rows, "paired": paired}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for bench.csv, bench.md, memory.html (and the synthetic slides)")
    p.add_argument("--parts", default="arrays,slides,variance",
                   help="comma list of arrays, slides, variance, accuracy (training runs: hours on a CPU)")
    p.add_argument("--sizes", default="1000,2000,4000,8000,16000", help="array sides")
    p.add_argument("--slide-sizes", default="10000,31623,100000", help="synthetic slide sides")
    p.add_argument("--models", default="zoom_in,one_stage,cnn", help="comma list of zoom_in, one_stage, cnn")
    p.add_argument("--phases", default="train,infer", help="comma list of train, infer")
    p.add_argument("--repeats", type=int, default=3, help="fresh processes per configuration (medians)")
    p.add_argument("--max-gb", type=float, default=8.0, help="skip configurations predicted to need more")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads per process")
    p.add_argument("--accuracy-epochs", type=int, default=10, help="accuracy part: epochs per run")
    p.add_argument("--accuracy-ns", default="5,10,20", help="accuracy part: N values")
    p.add_argument("--accuracy-train-size", type=int, default=5000, help="accuracy part: training images per epoch")
    p.add_argument("--accuracy-test-size", type=int, default=1000, help="accuracy part: test images")
    p.add_argument("--accuracy-jobs", type=int, default=1,
                   help="accuracy part: runs trained at once (separate processes sharing --threads)")
    p.add_argument("--accuracy-eval-every", type=int, default=0,
                   help="accuracy part: also test every this many epochs (the curves; 0: at the end only)")
    p.add_argument("--accuracy-passes", default="4,16",
                   help="accuracy part: sampled passes averaged per test image in the paired comparison (each reported)")
    p.add_argument("--canvas", type=int, default=1500, help="accuracy part: Megapixel MNIST canvas side")
    p.add_argument("--smoke", action="store_true", help="a tiny version (arrays 256/512, training steps, one run each)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def config(args: argparse.Namespace) -> BenchConfig:
    """The ``BenchConfig`` the command-line flags describe."""
    def ints(text):
        return tuple(int(v) for v in text.split(","))
    cfg = BenchConfig(out=Path(args.out), parts=tuple(args.parts.split(",")), array_sizes=ints(args.sizes),
                      slide_sizes=ints(args.slide_sizes), models=tuple(args.models.split(",")),
                      phases=tuple(args.phases.split(",")), repeats=args.repeats, max_gb=args.max_gb,
                      device=args.device, amp=args.amp, threads=args.threads,
                      accuracy=dict(epochs=args.accuracy_epochs, ns=ints(args.accuracy_ns),
                                    train_size=args.accuracy_train_size, test_size=args.accuracy_test_size,
                                    canvas=args.canvas, jobs=args.accuracy_jobs,
                                    eval_every=args.accuracy_eval_every, passes=ints(args.accuracy_passes)))
    if args.smoke:
        cfg.parts, cfg.array_sizes, cfg.repeats, cfg.phases = ("arrays", "variance"), (256, 512), 1, ("train",)
        cfg.variance_ns, cfg.variance_draws = (1, 4), 500
    return cfg


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    run(config(args), progress=not args.quiet)
    print(Path(args.out) / "bench.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
