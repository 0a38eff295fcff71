"""Peak memory of ``zoomin predict`` on synthetic slides of growing size, same settings.

    python benchmarks/slide_memory.py [--sizes 10000 100000] [--work runs/bench_slides] [--out docs]

Writes one synthetic slide per size (timed), a checkpoint of an (untrained) two-stage model with
slide settings, then runs ``zoomin predict`` in a fresh process per slide under
``/usr/bin/time -v`` and reports its peak RSS, plus the pixels the source decoded against the
pixels the method needs (stage-I view + N' stage-II views + N sub-tiles)."""
from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from report import table

MODEL = dict(in_channels=3, num_classes=2, view_size=1000, tile=2048, scale2=1 / 64, subtile=128, n_samples=16,
             foreground="otsu_dark")


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--work", default="runs/bench_slides")
    p.add_argument("--out", default="docs")
    p.add_argument("--repeats", type=int, default=5, help="predict runs per size (median reported)")
    args = p.parse_args(argv)
    import torch

    from zoomin.config import Config, ModelConfig
    from zoomin.model import build_model
    from zoomin.slides import SlideSource
    from zoomin.synth import make_spec, write_slide
    from zoomin.checkpoint import save_model
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cfg = Config(model=ModelConfig(**MODEL))
    torch.manual_seed(0)
    model = build_model(cfg.model).eval()
    ckpt = save_model(work / "model.pt", model, cfg)
    rows = []
    for size in args.sizes:
        slide = work / f"slide_{size}.tif"
        gen_s = None  # None: the slide was already there
        if not slide.exists():
            t0 = time.perf_counter()
            write_slide(slide, make_spec(size, True, np.random.default_rng(size)))
            gen_s = time.perf_counter() - t0
        cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "zoomin", "predict", "--checkpoint", str(ckpt),
               "--out", str(work / f"pred_{size}.csv"), "--passes", "1", "--quiet", str(slide)]
        rss_runs, walls = [], []
        for _ in range(args.repeats):  # fresh process each time; medians reported
            t0 = time.perf_counter()
            r = subprocess.run(cmd, capture_output=True, text=True)
            walls.append(time.perf_counter() - t0)
            if r.returncode:
                raise SystemExit(r.stderr)
            rss_runs.append(int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1)) / 2**20)
        rss, wall = statistics.median(rss_runs), statistics.median(walls)
        src = SlideSource(slide)
        with torch.no_grad():
            tr = model(src, generator=torch.Generator().manual_seed(0))
        u = model.subview_hw
        view_pixels = tr.alpha[0].numel()  # the stage-I view the model read
        needed = (view_pixels + int((tr.tile_counts > 0).sum()) * u[0] * u[1]
                  + int(tr.subtile_valid.sum()) * MODEL["subtile"] ** 2)
        rows.append(dict(size=size, generate_s=gen_s, predict_s=wall, peak_rss_gib=rss,
                         rss_runs=" ".join(f"{v:.3f}" for v in rss_runs),
                         view_pixels=view_pixels, decoded_over_needed=src.pixels_read / needed))
        print(rows[-1], flush=True)
    base = rows[0]["peak_rss_gib"]
    cells = pd.DataFrame([{"slide": f"{r['size']:,}²",
                           "write (s)": "existing" if r["generate_s"] is None else f"{r['generate_s']:.0f}",
                           "predict wall (s)": f"{r['predict_s']:.1f}", "peak RSS (GiB)": f"{r['peak_rss_gib']:.3f}",
                           "vs smallest": f"{r['peak_rss_gib'] / base:.2f}×", "runs (GiB)": r["rss_runs"],
                           "stage-I view pixels": f"{r['view_pixels']:,}",
                           "decoded / needed pixels": f"{r['decoded_over_needed']:.2f}"} for r in rows])
    lines = ["# zoomin predict: peak memory against slide size", "",
             "Untrained two-stage model, same settings for every size: "
             + ", ".join(f"{k} = {v}" for k, v in MODEL.items()) + ".",
             "Peak RSS of a fresh `zoomin predict` process (`/usr/bin/time -v`), one Monte-Carlo pass, "
             "median of the runs listed. "
             "Command: `python benchmarks/slide_memory.py`.", "", table(cells, text=("slide", "runs (GiB)"))]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "slide_memory.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
