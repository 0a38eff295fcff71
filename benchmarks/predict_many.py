"""Peak memory and time of ``zoomin predict`` over many slides: does memory climb with the count?

    OMP_NUM_THREADS=1 python benchmarks/predict_many.py [--counts 1 10 30 60] [--work runs/bench_many] [--out docs]

Writes one synthetic 10,000² slide (0.5 µm/px), an untrained checkpoint of the shipped default
config ``zoomin/configs/slides.yaml``, and manifests listing that slide 1, 10, 30 and 60 times
(distinct slide_ids). Each manifest is predicted by ``zoomin predict`` in fresh processes under
``/usr/bin/time -v`` (peak RSS, wall time; medians of ``--repeats`` processes); seconds per slide
are the median of the CSV's ``seconds`` column (a slide's time in the main thread). Comparison runs on the largest count:
``--prefetch 0``, and large-image's own cache sizes (through its environment variables, which
``zoomin.slide_cache`` leaves alone); then ``--distinct`` different slides (written once, kept in
``--work``) with zoomin's cache sizes (the default tile cache, and 64 MB) and with large-image's:
listing one file many times lets large-image reuse one open source and its tiles, different
files do not. Acceptance (issue 14): the largest count's peak RSS at most 1.3x the one-slide run's."""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from report import table

SIZE, MPP = 10_000, 0.5
LARGE_IMAGE_DEFAULTS = {"LARGE_IMAGE_CACHE_PYTHON_MEMORY_PORTION": "32", "LARGE_IMAGE_CACHE_TILESOURCE_MAXIMUM": "0"}


def setup(work: Path, counts: list[int], distinct: int) -> tuple[Path, dict]:
    """The slides (kept when already there), the checkpoint and the manifests: ``(n, 1)`` lists one
    slide ``n`` times, ``(distinct, distinct)`` that many different slides."""
    import torch

    from zoomin.checkpoint import save_model
    from zoomin.config import Config
    from zoomin.manifest import Entry, write_manifest
    from zoomin.model import build_model
    from zoomin.synth import make_spec, write_slide
    work.mkdir(parents=True, exist_ok=True)
    files = [work / f"slide_{SIZE}.tif"] + [work / "distinct" / f"slide_{i:03d}.tif" for i in range(1, distinct)]
    for i, path in enumerate(files):
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            write_slide(path, make_spec(SIZE, i % 2 == 0, np.random.default_rng(SIZE + i), mpp=MPP))
    cfg = Config.from_yaml(Path(__file__).resolve().parents[1] / "zoomin" / "configs" / "slides.yaml")
    torch.manual_seed(0)
    ckpt = save_model(work / "model.pt", build_model(cfg.model).eval(), cfg)
    lists = {(n, 1): [files[0]] * n for n in counts} | ({(distinct, distinct): files} if distinct > 1 else {})
    manifests = {(n, k): write_manifest([Entry(f"s{i:03d}", f, 0) for i, f in enumerate(paths)],
                                        work / f"many_{n}_{k}.csv", annotations=False)
                 for (n, k), paths in lists.items()}
    return ckpt, manifests


def run(ckpt: Path, manifest: Path, out: Path, prefetch: int, env: dict | None = None) -> dict:
    """One ``zoomin predict`` process: peak RSS (GiB), wall time (s), median seconds per slide."""
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "zoomin", "predict", "--checkpoint", str(ckpt),
           "--out", str(out), "--passes", "1", "--quiet", "--prefetch", str(prefetch), str(manifest)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(r.stderr[-3000:])
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1)) / 2**20
    seconds = pd.read_csv(out)["seconds"]
    return dict(peak_rss_gib=rss, wall_s=wall, slide_s=float(seconds.median()), rows=len(seconds))


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument("--counts", type=int, nargs="+", default=[1, 10, 30, 60])
    p.add_argument("--work", default="runs/bench_many")
    p.add_argument("--out", default="docs")
    p.add_argument("--prefetch", type=int, default=1)
    p.add_argument("--distinct", type=int, default=60, help="also predict this many different slides (0: not)")
    p.add_argument("--repeats", type=int, default=3, help="processes per row (medians reported)")
    args = p.parse_args(argv)
    work = Path(args.work)
    ckpt, manifests = setup(work, args.counts, args.distinct)
    n_max, li = max(args.counts), ("large-image defaults", LARGE_IMAGE_DEFAULTS)
    plan = [(n, 1, args.prefetch, "zoomin", None) for n in args.counts]
    plan += [(n_max, 1, 0, "zoomin", None), (n_max, 1, args.prefetch, *li)]
    if args.distinct > 1:
        d = args.distinct
        plan += [(d, d, args.prefetch, "zoomin", None),
                 (d, d, args.prefetch, "zoomin, 64 MB tile cache", {"ZOOMIN_SLIDE_CACHE_MB": "64"}),
                 (d, d, args.prefetch, *li)]
    rows = []
    for n, files, prefetch, caches, env in plan:
        runs = pd.DataFrame([run(ckpt, manifests[n, files], work / f"pred_{len(rows)}.csv", prefetch, env)
                             for _ in range(args.repeats)])
        if (runs.pop("rows") != n).any():
            raise SystemExit(f"{manifests[n, files]}: {n} slides listed, fewer predicted")
        rows.append(dict(slides=n, files=files, prefetch=prefetch, caches=caches, **runs.median().to_dict()))
        print(rows[-1], flush=True)
    base = rows[0]["peak_rss_gib"]
    cells = pd.DataFrame([{"slides": f"{r['slides']}", "files": f"{r['files']}", "--prefetch": f"{r['prefetch']}",
                           "caches": r["caches"], "peak RSS (GiB)": f"{r['peak_rss_gib']:.3f}",
                           "vs 1 slide": f"{r['peak_rss_gib'] / base:.2f}×",
                           "wall (s)": f"{r['wall_s']:.1f}", "wall / slide (s)": f"{r['wall_s'] / r['slides']:.2f}",
                           "median CSV seconds": f"{r['slide_s']:.2f}"} for r in rows])
    last = rows[len(args.counts) - 1]
    ratio = last["peak_rss_gib"] / base
    lines = ["# zoomin predict over many slides: memory and time against the slide count", "",
             f"One synthetic {SIZE:,}² slide ({MPP} µm/px) listed 1–{n_max} times under distinct slide_ids"
             + (f", and {args.distinct} different slides of that size (`files`)" if args.distinct > 1 else "")
             + "; an untrained model of the shipped `zoomin/configs/slides.yaml`, one Monte-Carlo pass; each row is a "
             f"fresh `zoomin predict` process under `/usr/bin/time -v` (median of {args.repeats}), OMP_NUM_THREADS="
             f"{os.environ.get('OMP_NUM_THREADS', 'unset')}, on {os.cpu_count()} CPU cores. "
             "`caches`: zoomin's sizing of large-image's caches (`zoomin.slide_cache`), or large-image's own "
             "(`LARGE_IMAGE_CACHE_PYTHON_MEMORY_PORTION=32 LARGE_IMAGE_CACHE_TILESOURCE_MAXIMUM=0`). "
             "`median CSV seconds`: a slide's wall time in the main thread (the `seconds` column), waiting for "
             "its prefetch included; `wall` includes starting Python and loading the model. "
             "Command: `" + (f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if "OMP_NUM_THREADS" in os.environ else "")
             + "python benchmarks/predict_many.py`.", "",
             table(cells, text=("caches",)), "",
             f"Acceptance (issue 14, ≤ 1.3×): {n_max} slides peak at {ratio:.2f}× the one-slide run — "
             + ("met." if ratio <= 1.3 else "NOT met.")]
    if args.distinct > 1:
        zoomin_d, mb64, li_d = (r["peak_rss_gib"] / base for r in rows[-3:])
        lines += ["", f"{args.distinct} different files: {zoomin_d:.2f}× the one-slide peak with zoomin's cache "
                      f"sizes, {mb64:.2f}× with a 64 MB tile cache, {li_d:.2f}× with large-image's own."]
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "predict_many.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
