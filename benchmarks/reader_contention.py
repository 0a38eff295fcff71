"""Why reads overlapped in threads still cost compute time (issue #34): ``zoomin predict`` of
``--slides`` synthetic slides of ``--size``² (4,096²) one after another in the main thread (``--prefetch 0``), alone,
then while a background *thread* opens slides without pause (``zoomin.predict.open_slide``: what the
read-ahead does), then while a background *process* does the same. The predict's wall time in each
case, the median of ``--repeats``; one torch thread.

    python benchmarks/reader_contention.py --out docs/reader_contention.md --work runs/throughput

A thread and the predict share one interpreter lock; a process shares only the cores. The slides
and the untrained model are those of ``benchmarks/throughput.py`` (made there when missing).
"""
from __future__ import annotations

import argparse
import multiprocessing
import statistics
import threading
import time
from pathlib import Path

import torch
from throughput import model_checkpoint, write_slides


def open_forever(ckpt: str, manifest: str, stop, opened) -> None:
    """Open every slide of ``manifest`` for the model of ``ckpt``, again and again, until ``stop`` is set."""
    torch.set_num_threads(1)
    from zoomin.checkpoint import load_model
    from zoomin.predict import list_slides, open_slide
    model, cfg = load_model(ckpt)
    slides = list_slides([manifest])
    while not stop.is_set():
        for s in slides:
            if stop.is_set():
                break
            open_slide(model, cfg, s)
            with opened.get_lock():
                opened.value += 1


def timed_predicts(ckpt: Path, manifest: Path, out: Path, repeats: int) -> list[float]:
    from zoomin.predict import predict
    walls = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        predict(ckpt, [str(manifest)], out, progress=False, prefetch=0)
        walls.append(time.perf_counter() - t0)
    return walls


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--slides", type=int, default=80)
    p.add_argument("--size", type=int, default=4096, help="the slides' side in pixels")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", default="runs/throughput")
    p.add_argument("--out", default="docs/reader_contention.md")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    manifest, ckpt = write_slides(work, args.slides, args.size, args.seed), model_checkpoint(work, args.seed)
    out = work / "contention.csv"
    timed_predicts(ckpt, manifest, out, 1)  # warm: imports, caches
    rows = [("alone", timed_predicts(ckpt, manifest, out, args.repeats), None)]
    ctx = multiprocessing.get_context("spawn")
    for kind in ("thread", "process"):
        stop, opened = threading.Event() if kind == "thread" else ctx.Event(), ctx.Value("q", 0)
        worker = (threading.Thread if kind == "thread" else ctx.Process)(
            target=open_forever, args=(str(ckpt), str(manifest), stop, opened))
        worker.start()
        time.sleep(5 if kind == "process" else 1)  # the process imports torch and zoomin first
        start = opened.value
        t0 = time.perf_counter()
        walls = timed_predicts(ckpt, manifest, out, args.repeats)
        rate = (opened.value - start) / (time.perf_counter() - t0)
        stop.set()
        worker.join()
        rows.append((f"beside a {kind} opening slides", walls, rate))
    base = statistics.median(rows[0][1])
    lines = [f"# Reads beside compute: a thread against a process\n",
             f"`python benchmarks/reader_contention.py --slides {args.slides} --size {args.size} --repeats {args.repeats} --out {args.out}"
             f" --work {args.work}` (its docstring says what it does): `zoomin predict` of {args.slides} slides of"
             f" {args.size:,}², one after another in one thread, one torch thread; an untrained `slides.yaml`.\n",
             "| predict | wall (s), median | each run (s) | vs alone | slides opened beside it a second |",
             "|---|---:|---|---:|---:|"]
    for name, walls, rate in rows:
        m = statistics.median(walls)
        lines.append(f"| {name} | {m:.2f} | {', '.join(f'{w:.2f}' for w in walls)} | {m / base:.2f}× | "
                     f"{'' if rate is None else f'{rate:.0f}'} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
