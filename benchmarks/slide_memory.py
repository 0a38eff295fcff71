"""Memory and speed of ``zoomin predict`` against slide size, at the shipped default config.

    python benchmarks/slide_memory.py [--sizes 10000 100000] [--curve 10000 25000 50000 100000]
                                      [--mpp 0.5] [--config zoomin/configs/slides.yaml] [--out docs]

For every size a synthetic slide of the same tissue at ``--mpp`` µm/px is written once (timed) and
an untrained model of the shipped config is saved. Then, each in a fresh process:

* peak RSS of ``zoomin predict`` (``/usr/bin/time -v``, default passes), median of ``--repeats``;
* in one process (``--probe``): a warm-up prediction, then the time to decode the stage-I view
  alone (a fresh ``SlideSource``), the warm predict latency (``predict_slide``: open, decode,
  model, default passes) and their ratio, the region requests and decoded / needed pixels.

``--curve`` sizes (default: the ``--sizes``) are plotted against the paper's memory model (§2.2:
inference memory O(s² HW + N h² w²)): the streamed two-stage model grows by its per-location maps
only, a one-stage model at the stage-II detail and a whole-image CNN by their activations. Writes
``slide_memory.md``, ``slide_memory.csv`` (the plot's data: the curves and the measured peaks) and
``slide_memory.html`` (bokeh, offline, drawn from the CSV by ``benchmarks/replot.py``, as the
documentation site draws it when it is built) into ``--out``.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from report import table

HERE = Path(__file__).resolve().parent
CONFIG = HERE.parent / "zoomin" / "configs" / "slides.yaml"


def probe(slide: str, ckpt: str, passes: int) -> dict:
    """Timings in this (fresh) process: warm-up, decode-only, warm predict latency."""
    import dataclasses

    import torch

    from zoomin.allocator import steady
    from zoomin.checkpoint import load_model
    from zoomin.predict import Slide, open_slide, predict_slide
    from zoomin.slides import SlideSource
    steady()  # as zoomin predict does
    model, cfg = load_model(ckpt)
    item = Slide("s", Path(slide))

    def run():
        src = open_slide(model, cfg, item)
        return src, predict_slide(model, src, item.slide_id, dataclasses.replace(cfg.readout, passes=passes), 0)
    run()  # warm-up: imports, allocator, file cache
    t0 = time.perf_counter()
    src, (probs, tr) = run()
    predict_s = time.perf_counter() - t0
    before = rss_mib()
    fresh = SlideSource(slide, mpp=cfg.model.mpp)
    open_mib = rss_mib() - before  # the file's directory (tile offsets) in the reader
    t0 = time.perf_counter()
    fresh.raw_view(model.stage1_scale(fresh.size))  # the whole stage-I view, decoded once
    decode_s = time.perf_counter() - t0
    u = getattr(model, "subview_hw", (0, 0))
    view_pixels = tr.alpha[0].numel()
    needed = view_pixels + passes * (int((tr.tile_counts > 0).sum()) * u[0] * u[1]
                                     + int(tr.subtile_valid.sum()) * cfg.model.subtile ** 2)  # view once, per pass the rest
    return dict(predict_s=predict_s, decode_s=decode_s, view_hw=list(tr.alpha.shape[-2:]), requests=src.requests,
                decoded_over_needed=src.pixels_decoded / needed, threads=torch.get_num_threads(), open_mib=open_mib)


def rss_mib() -> float:
    """This process's resident memory now, MiB."""
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS")) / 1024


def peak_rss(cmd: list[str], repeats: int) -> tuple[float, float, list[float]]:
    """Median peak RSS (GiB) and wall time (s) of ``cmd`` in fresh processes, and every RSS."""
    rss, walls = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        r = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
        walls.append(time.perf_counter() - t0)
        if r.returncode:
            raise SystemExit(r.stderr[-2000:])
        rss.append(int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1)) / 2**20)
    return statistics.median(rss), statistics.median(walls), rss


MEMORY_MODEL = ("the streamed two-stage model adds 4 bytes per stage-I location (the logits map); a one-stage "
                "model whose view has the stage-II detail holds the attention net's activations over it (hidden "
                "channels x 4 bytes x 2 live layers per location); a whole-image CNN holds 4 bytes x 3 channels x 2 "
                "live copies per level-0 pixel at the model's resolution.")


def model_curves(sizes, cfg, mpp: float, base_gib: float) -> pd.DataFrame:
    """The paper's memory model (§2.2) in GiB per size, anchored at the smallest measured size
    (``MEMORY_MODEL`` says what each curve counts)."""
    m = cfg.model
    rows = []
    for n in sizes:
        side = n * mpp / m.mpp  # pixels at the model's resolution
        loc1, loc_one = (side * m.scale1) ** 2, (side * m.scale1 * m.view_mpp(1) / m.view_mpp(2)) ** 2
        rows.append(dict(size=n, two_stage=4 * loc1, one_stage=m.attention_hidden * 4 * 2 * loc_one,
                         whole_image=4 * 3 * 2 * side**2))
    df = pd.DataFrame(rows)
    for col in ("two_stage", "one_stage", "whole_image"):
        df[col] = base_gib + (df[col] - df[col].iloc[0]) / 2**30
    return df


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--curve", type=int, nargs="*", default=None, help="sizes for the plot (default: --sizes)")
    p.add_argument("--mpp", type=float, default=0.5, help="the synthetic slides' µm per pixel")
    p.add_argument("--config", default=str(CONFIG))
    p.add_argument("--work", default="runs/bench_slides")
    p.add_argument("--out", default="docs")
    p.add_argument("--repeats", type=int, default=3, help="fresh predict processes per size (median reported)")
    p.add_argument("--passes", type=int, default=4, help="Monte-Carlo passes (zoomin predict's default before the readout section)")
    p.add_argument("--probe", nargs=2, metavar=("SLIDE", "CHECKPOINT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.probe:
        print(json.dumps(probe(*args.probe, args.passes)))
        return
    import torch

    from zoomin.checkpoint import save_model
    from zoomin.config import Config
    from zoomin.model import build_model
    from zoomin.synth import make_spec, write_slide
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cfg = Config.from_yaml(args.config)
    torch.manual_seed(0)
    ckpt = save_model(work / "default_model.pt", build_model(cfg.model).eval(), cfg)
    rows = []
    for size in sorted(set(args.sizes) | set(args.curve or [])):
        slide = work / f"slide_{size}_{args.mpp:g}um.tif"
        gen_s = None  # None: the slide was already there
        if not slide.exists():
            t0 = time.perf_counter()
            write_slide(slide, make_spec(size, True, np.random.default_rng(0), mpp=args.mpp))
            gen_s = time.perf_counter() - t0
        cmd = [sys.executable, "-m", "zoomin", "predict", "--checkpoint", str(ckpt), "--out",
               str(work / f"pred_{size}.csv"), "--passes", str(args.passes), "--quiet", str(slide)]
        rss, wall, runs = peak_rss(cmd, args.repeats)
        r = subprocess.run([sys.executable, __file__, "--probe", str(slide), str(ckpt), "--passes", str(args.passes)],
                           capture_output=True, text=True)
        if r.returncode:
            raise SystemExit(r.stderr[-2000:])
        rows.append(dict(size=size, generate_s=gen_s, peak_rss_gib=rss, rss_runs=runs, process_s=wall,
                         **json.loads(r.stdout.strip().splitlines()[-1])))
        print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    base = df.peak_rss_gib.iloc[0]
    m = cfg.model
    cells = pd.DataFrame([{"slide": f"{r.size:,}² at {args.mpp:g} µm/px",
                           "write (s)": "existing" if r.generate_s is None or pd.isna(r.generate_s) else f"{r.generate_s:.0f}",
                           "stage-I view": f"{r.view_hw[1]:,} × {r.view_hw[0]:,}",
                           "peak RSS (GiB)": f"{r.peak_rss_gib:.3f}", "vs smallest": f"{r.peak_rss_gib / base:.2f}×",
                           "runs (GiB)": " ".join(f"{v:.3f}" for v in r.rss_runs),
                           "process wall (s)": f"{r.process_s:.1f}", "warm predict (s)": f"{r.predict_s:.2f}",
                           "decode stage-I view (s)": f"{r.decode_s:.2f}", "predict / decode": f"{r.predict_s / r.decode_s:.2f}",
                           "opening (MiB)": f"{r.open_mib:.0f}",
                           "requests": r.requests, "decoded / needed": f"{r.decoded_over_needed:.2f}"}
                          for r in df.itertuples()])
    lines = ["# zoomin predict: memory and speed against slide size", "",
             f"Untrained two-stage model of the shipped `{Path(args.config).name}` (mpp {m.mpp:g}, stage I at "
             f"{m.view_mpp(1):g} µm/px in {m.stage1_chunk}² pieces, stage II at {m.view_mpp(2):g} µm/px, tile {m.tile}, "
             f"sub-tile {m.subtile}, N = {m.n_samples}), {args.passes} Monte-Carlo passes (zoomin predict's default), "
             f"synthetic slides at {args.mpp:g} µm/px, {df.threads.iloc[0]} torch threads. Peak RSS: fresh "
             "`zoomin predict` processes under `/usr/bin/time -v`, median of the runs listed. Warm predict: "
             "`predict_slide` after a warm-up in the same process (open, stage-I decode, model, all passes); "
             "decode: reading the stage-I view alone from a freshly opened slide. Opening: resident memory a "
             "freshly opened slide adds (the reader's tile directory). Decoded / needed: pixels large-image decodes "
             "(at the pyramid level it reads), against the stage-I view once plus, per pass, the stage-II views and "
             "sub-tiles; a view over 2^20 locations is read twice (the fit's sample, then stage I, band by band).",
             f"Command: `python benchmarks/slide_memory.py --sizes {' '.join(map(str, args.sizes))}"
             + (f" --curve {' '.join(map(str, args.curve))}" if args.curve else "") + "`.", "",
             table(cells, text=("slide", "stage-I view", "runs (GiB)")), ""]
    curve = model_curves(sorted(df["size"]), cfg, args.mpp, base)
    lines += ["Memory model (dashed in `slide_memory.html`), anchored at the smallest slide: "
              + MEMORY_MODEL, "",
              table(pd.DataFrame({"slide": [f"{s:,}²" for s in curve["size"]],
                                  "two-stage, streamed (GiB)": curve.two_stage.map("{:.3f}".format),
                                  "measured (GiB)": df.peak_rss_gib.map("{:.3f}".format),
                                  "one-stage at stage-II detail (GiB)": curve.one_stage.map("{:.2f}".format),
                                  "whole-image CNN (GiB)": curve.whole_image.map("{:.1f}".format)}), text=("slide",))]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "slide_memory.md").write_text("\n".join(lines) + "\n")
    data = curve.merge(df[["size", "peak_rss_gib"]], on="size", how="outer").sort_values("size")
    data.to_csv(out / "slide_memory.csv", index=False)
    try:
        from replot import slide_memory_plot
        slide_memory_plot(data, out / "slide_memory.html")
    except ImportError as e:  # the viz extra is optional
        print(f"no plot ({e.name} is missing)")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
