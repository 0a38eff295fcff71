"""Batching slides on the device (issue #34, deliverable 2): is one forward pass over N slides
faster than N passes of one, on this machine?

The packaged ``slides.yaml``'s model (untrained; weights from ``--seed``) answers ``--slides``
in-memory 4,096² images (``ArraySource``, levels resampled once before timing, so no read is
timed): one by one, each its own source, and all at once as one batch (B = ``--slides``), where
stage I, stage II and ``f`` each run once over every slide's tiles. The batched pass draws from one
generator, so its samples differ from the one-by-one passes'; only the time is compared. Pairs run
alternately, ``--repeats`` times; medians shown. Writes ``docs/batch_slides.md``.

    python benchmarks/batch_slides.py --device cpu
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu import sync  # noqa: E402


def main() -> None:
    from zoomin.cli import _packaged_config
    from zoomin.model import build_model
    from zoomin.sources import ArraySource
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--slides", default="2,4,8", help="batch sizes, comma-separated")
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch threads on a CPU")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="docs/batch_slides.md")
    args = p.parse_args()
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    cfg = _packaged_config("slides.yaml")
    torch.manual_seed(args.seed)
    model = build_model(cfg.model).eval().to(device)
    sizes = [int(s) for s in args.slides.split(",")]
    g = torch.Generator().manual_seed(args.seed)
    images = (torch.rand(max(sizes), 3, args.size, args.size, generator=g) * 255).round().div_(255).to(device)
    rows = []
    with torch.no_grad():
        for n in sizes:
            ones = [ArraySource(images[i:i + 1]) for i in range(n)]
            batch = ArraySource(images[:n])
            for src in ones + [batch]:  # every level resampled, and a first pass to warm up
                model(src, generator=torch.Generator(device).manual_seed(0))
            times = {"one by one": [], "batched": []}
            for _ in range(args.repeats):
                for kind in times:
                    sync(device)
                    t0 = time.perf_counter()
                    if kind == "batched":
                        model(batch, generator=torch.Generator(device).manual_seed(0))
                    else:
                        for i, src in enumerate(ones):
                            model(src, generator=torch.Generator(device).manual_seed(i))
                    sync(device)
                    times[kind].append(time.perf_counter() - t0)
            one, both = statistics.median(times["one by one"]), statistics.median(times["batched"])
            rows.append(f"| {n} | {one * 1000 / n:.1f} | {both * 1000 / n:.1f} | {one / both:.2f}× |")
            print(rows[-1], flush=True)
    what = (f"{torch.cuda.get_device_name(device)}" if device.type == "cuda"
            else f"cpu, {torch.get_num_threads()} torch thread(s)")
    lines = ["# Batching slides in one forward pass (issue #34)", "",
             f"Written by `{' '.join(['python benchmarks/batch_slides.py', *sys.argv[1:]])}` (its docstring says what "
             f"it times). Device: **{what}**; torch {torch.__version__}; the packaged `slides.yaml`, untrained; "
             f"{args.size:,}² in-memory images; medians of {args.repeats} alternating pairs.", "",
             "| slides | one by one (ms a slide) | batched (ms a slide) | speed-up of batching |",
             "|---:|---:|---:|---:|", *rows, ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
