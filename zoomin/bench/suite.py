"""The benchmark suite behind ``zoomin bench --out DIR``: memory and time against image size
(arrays and slides) for the two-stage model, the one-stage model at equal full-resolution
detail and a plain CNN on the whole image; estimator variance against N. Writes
``DIR/bench.csv`` (every run), ``DIR/bench.md`` (medians) and ``DIR/memory.html`` (holoviews).

Equal detail: both attention models feed ``f`` the same N full-resolution patches of the same
size; the one-stage model's attention view keeps ATS's ratio (scale x patch = 6, i.e. 0.12 for
50-pixel patches on Megapixel MNIST), the two-stage model's stage-I view is 1/5 of that scale
(arrays) or fixed at 1,000 pixels (slides, ``view_size``) and it zooms in through stage II.
"""
from __future__ import annotations

import csv
import platform
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .probe import Probe, measure

ARRAY_MODELS = {  # Megapixel-MNIST geometry: 50-px full-resolution patches, N = 10
    "zoom_in": dict(scale1=0.025, tile=400, scale2=0.12, subtile=50, n_samples=10, foreground="none"),
    "one_stage": dict(scale1=0.12, tile=50, n_samples=10, foreground="none"),
}
SLIDE_MODELS = {  # 128-px full-resolution patches, N = 16 (the slide-memory benchmark's model)
    "zoom_in": dict(view_size=1000, tile=2048, scale2=1 / 64, subtile=128, n_samples=16, num_classes=2,
                    foreground="otsu_dark"),
    "one_stage": dict(scale1=6 / 128, tile=128, n_samples=16, num_classes=2, foreground="otsu_dark"),
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
    rows: list = field(default_factory=list)


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
        if failed:  # a smaller size already failed (an out-of-memory kill, a timeout): do not retry bigger
            cfg.rows.append({**row, "repeat": 0, "error": f"skipped: {failed} failed"})
            if progress:
                progress.update(cfg.repeats)
            continue
        if predicted / 1024 > cfg.max_gb:
            cfg.rows.append({**row, "repeat": 0,
                             "error": f"skipped: predicted {predicted / 1024:.1f} GB > {cfg.max_gb:g} GB"})
            if progress:
                progress.update(cfg.repeats)
            continue
        runs = []
        for r in range(cfg.repeats):
            res = measure(_probe(cfg, part, model, size, phase, (paths or {}).get(size, "")))
            cfg.rows.append({**row, "repeat": r,
                             **{k: res.get(k) for k in ("seconds", "step_mb", "process_peak_rss_mb", "error")}})
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

    from ..synth import make_spec, write_slide
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


def variance(cfg: BenchConfig) -> list[dict]:
    """Total variance of the two-stage estimate against N, stage II with and without replacement."""
    from ..montecarlo import variance_against_n
    return variance_against_n(cfg.variance_ns, cfg.variance_draws)


def medians(rows: list[dict]) -> list[dict]:
    """One row per (part, model, phase, size): medians over repeats, or the reason it is missing."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["part"], r["model"], r["phase"], r["size"]), []).append(r)
    out = []
    for (part, model, phase, size), rs in groups.items():
        ok = [r for r in rs if not r.get("error")]
        row = dict(part=part, model=model, phase=phase, size=size, runs=len(ok))
        if ok:
            row.update({k: statistics.median(r[k] for r in ok) for k in ("step_mb", "seconds", "process_peak_rss_mb")})
        else:
            row["note"] = rs[0]["error"]
        out.append(row)
    return out


def ratios(table: list[dict]) -> list[dict]:
    """Two-stage / one-stage step memory at each size and phase."""
    idx = {(r["part"], r["model"], r["phase"], r["size"]): r for r in table if "step_mb" in r}
    out = []
    for (part, model, phase, size), r in sorted(idx.items()):
        other = idx.get((part, "one_stage", phase, size))
        if model == "zoom_in" and other:
            out.append(dict(part=part, phase=phase, size=size, ratio=r["step_mb"] / max(other["step_mb"], 1e-9)))
    return out


def _fmt(v, digits=1):
    return "" if v is None else (f"{v:,.{digits}f}" if isinstance(v, float) else f"{v:,}")


def _p(v: float) -> str:
    return f"{v:.3f}" if v >= 0.001 else "< 0.001"


def write_markdown(cfg: BenchConfig, table, ratio_rows, var_rows, path: Path, acc_rows=(), paired=()) -> None:
    lines = ["# zoomin bench", "",
             f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads available, device `{cfg.device}`"
             f"{' (bf16 autocast)' if cfg.amp else ''}; torch {torch.__version__}. Medians of {cfg.repeats} fresh processes.",
             "Memory: peak resident memory during the measured call minus the resident memory before it (CPU; "
             "model activations, gradients and optimiser state, not the input), or CUDA max_memory_allocated minus "
             "the allocation before it. `process peak` is the fresh process's ru_maxrss.", "",
             "| part | model | phase | size | step memory (MB) | time (s) | process peak (MB) | note |",
             "|---|---|---|---:|---:|---:|---:|---|"]
    for r in sorted(table, key=lambda r: (r["part"], r["phase"], r["model"], r["size"])):
        lines.append(f"| {r['part']} | {r['model']} | {r['phase']} | {r['size']:,}² | {_fmt(r.get('step_mb'))} | "
                     f"{_fmt(r.get('seconds'), 3)} | {_fmt(r.get('process_peak_rss_mb'), 0)} | {r.get('note', '')} |")
    if ratio_rows:
        lines += ["", "Two-stage / one-stage step memory at equal detail:", "", "| part | phase | size | ratio |",
                  "|---|---|---:|---:|"]
        lines += [f"| {r['part']} | {r['phase']} | {r['size']:,}² | {r['ratio']:.3f} |" for r in ratio_rows]
    if var_rows:
        lines += ["", f"Estimator variance (64 tiles x 16 sub-tiles, D = 8, {cfg.variance_draws:,} draws):", "",
                  "| N | stage II with replacement | without (eq 9) | ratio |", "|---:|---:|---:|---:|"]
        lines += [f"| {r['N']} | {r['with_replacement']:.4f} | {r['without_replacement']:.4f} | {r['ratio']:.2f} |"
                  for r in var_rows]
    if acc_rows:
        r0 = acc_rows[0]
        ps = sorted(int(k.split("_")[1]) for k in r0 if k.startswith("accuracy_") and k.endswith("_passes"))
        extra = [(c, h) for c, h in (("accuracy_single_pass", "1 pass (mean)"), ("accuracy_topk", "top-k")) if c in r0]
        cols = [f"accuracy_{p}_passes" for p in ps] + [c for c, _ in extra]
        heads = [f"P = {p}" for p in ps] + [h for _, h in extra]
        lines += ["", f"Accuracy against training-step memory (Megapixel MNIST {r0['canvas']}², {r0['train_size']:,} "
                  f"images per epoch, {r0['epochs']} epochs; step memory: one training step on a batch of "
                  f"{r0['batch']}, the images not counted; test accuracy: the trainer's last test; then every run "
                  f"on the same test images with P sampled passes averaged; 1 pass (mean): the mean accuracy of those "
                  f"passes on their own; top-k: deterministic, the N most attended patches):", "",
                  "| model | N | test accuracy | " + "".join(f"{h} | " for h in heads) + "step memory (MB) | s/epoch |",
                  "|---|---:|---:|" + "---:|" * len(cols) + "---:|---:|"]
        lines += [f"| {r['model']} | {r['N']} | {_fmt(r['test_accuracy'], 3)} | "
                  + "".join(f"{_fmt(r.get(c), 3)} | " for c in cols)
                  + f"{_fmt(r['step_mb'])} | {_fmt(r['seconds_per_epoch'], 0)} |" for r in acc_rows]
    if paired:
        lines += ["", "Two stages against one stage on the same test images (difference with a 95% interval; "
                  "exact McNemar test on the images only one of them gets right; for `single`, the share of "
                  "single passes right per image and a paired normal test):", "",
                  "| N | passes | two stages | one stage | difference [95% CI] | two better | one better "
                  "| p |", "|---:|---:|---:|---:|---|---:|---:|---:|"]
        lines += [f"| {r['N']} | {r['passes']} | {r['zoom_in']:.3f} | {r['one_stage']:.3f} | {r['difference']:+.3f} "
                  f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] | {r['only_zoom_in']} | {r['only_one_stage']} | "
                  f"{_p(r['p_value'])} |" for r in paired]
    path.write_text("\n".join(lines) + "\n")


def write_plot(table, var_rows, path: Path, acc_rows=(), curve_rows=()) -> None:
    """Step memory against image side (log-log), one curve per model and phase; variance vs N;
    accuracy against memory and the training curves."""
    import holoviews as hv
    from bokeh.resources import INLINE
    hv.extension("bokeh", logo=False)
    panels = []
    for part in sorted({r["part"] for r in table}):
        curves = []
        for model in sorted({r["model"] for r in table}):
            for phase in sorted({r["phase"] for r in table}):
                pts = sorted((r["size"], r["step_mb"]) for r in table
                             if r["part"] == part and r["model"] == model and r["phase"] == phase and "step_mb" in r)
                if pts:
                    curves.append(hv.Curve(pts, "image side", "step memory (MB)", label=f"{model} {phase}")
                                  * hv.Scatter(pts, "image side", "step memory (MB)", label=f"{model} {phase}"))
        if curves:
            panels.append(hv.Overlay(curves).opts(hv.opts.Curve(logx=True, logy=True), hv.opts.Scatter(logx=True, logy=True, size=6),
                                                  hv.opts.Overlay(title=f"{part}: memory per call", width=560, height=400,
                                                                  legend_position="top_left")))
    if var_rows:
        panels.append(hv.Overlay([hv.Curve([(r["N"], r[k]) for r in var_rows], "N", "total variance", label=k)
                                  for k in ("with_replacement", "without_replacement")]).opts(
            hv.opts.Curve(logx=True, logy=True), hv.opts.Overlay(title="estimator variance", width=560, height=400)))
    if acc_rows:
        panels.append(hv.Overlay([hv.Scatter([(r["step_mb"], r["test_accuracy"], r["N"]) for r in acc_rows if r["model"] == m],
                                             "step memory (MB)", ["test accuracy", "N"], label=m).opts(size=9, tools=["hover"])
                                  for m in sorted({r["model"] for r in acc_rows})]).opts(
            hv.opts.Overlay(title="accuracy against memory", width=560, height=400)))
    tested = [r for r in curve_rows if r["test_accuracy"] != ""]
    if tested:
        runs = sorted({(r["model"], r["N"]) for r in tested})
        panels.append(hv.Overlay([hv.Curve([(r["epoch"], r["test_accuracy"]) for r in tested if (r["model"], r["N"]) == k],
                                           "epoch", "test accuracy", label=f"{k[0]} N={k[1]}") for k in runs]).opts(
            hv.opts.Overlay(title="test accuracy during training", width=560, height=400, legend_position="bottom_right")))
    if panels:
        hv.save(hv.Layout(panels).cols(2), path, resources=INLINE, title="zoomin bench")


def write_csv(rows: list[dict], path: Path) -> None:
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("part", "model", "phase", "size"), k))
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)


def run(cfg: BenchConfig, progress: bool = True) -> dict:
    from tqdm.auto import tqdm
    cfg.out.mkdir(parents=True, exist_ok=True)
    jobs = []
    if "arrays" in cfg.parts:
        jobs += [("arrays", m, ph, cfg.array_sizes, None) for m in cfg.models for ph in cfg.phases]
    if "slides" in cfg.parts:
        paths = slide_files(cfg)
        jobs += [("slides", m, ph, cfg.slide_sizes, paths) for m in cfg.models if m != "cnn" for ph in cfg.phases]
    total = sum(len(j[3]) for j in jobs) * cfg.repeats
    with tqdm(total=total, desc="bench", disable=not progress) as bar:
        for part, model, phase, sizes, paths in jobs:
            _series(cfg, part, model, phase, sizes, paths, bar)
    if "slides" in cfg.parts and "cnn" in cfg.models:
        _cnn_on_slides(cfg)
    table = medians(cfg.rows)
    ratio_rows = ratios(table)
    var_rows = variance(cfg) if "variance" in cfg.parts else []
    acc_rows, curve_rows, paired = [], [], []
    if "accuracy" in cfg.parts:
        from .accuracy import AccuracyPlan, accuracy_runs
        plan = AccuracyPlan(out=cfg.out, device=cfg.device, threads=cfg.threads, **cfg.accuracy)
        acc_rows, curve_rows, paired = accuracy_runs(plan)
        write_csv(acc_rows, cfg.out / "accuracy.csv")
        write_csv(curve_rows, cfg.out / "accuracy_curves.csv")
        if paired:
            write_csv(paired, cfg.out / "accuracy_paired.csv")
    if cfg.rows:
        write_csv(cfg.rows, cfg.out / "bench.csv")
    if var_rows:
        write_csv(var_rows, cfg.out / "variance.csv")
    write_markdown(cfg, table, ratio_rows, var_rows, cfg.out / "bench.md", acc_rows, paired)
    try:
        write_plot(table, var_rows, cfg.out / "memory.html", acc_rows, curve_rows)
    except ImportError:  # the viz extra is optional
        pass
    return {"table": table, "ratios": ratio_rows, "variance": var_rows, "accuracy": acc_rows, "paired": paired, "config": {k: str(v) for k, v in asdict(cfg).items() if k != "rows"}}
