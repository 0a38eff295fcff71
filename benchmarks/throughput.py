"""Slide throughput (issue #34): slides per hour of ``zoomin predict`` and of slide training, the
main thread's time split into open / read / wait / compute, the thread-seconds spent decoding, and
the same figures with every read replaced by in-memory tensors (the compute-only limit).

    python benchmarks/throughput.py                                 # this CPU -> docs/throughput.md
    python benchmarks/throughput.py --device cuda --workers 4 --sizes 4096,16384 --predict-slides 80,8 \
        --train-slides 80,0 --repeats 1 --budget-s 240 --out $OUT/throughput_gpu.md --work /tmp/tp   # a GPU

Each measured run has a twin run side by side in the same process: the same slides, model, seed
and code path, but each slide's source is a ``MemorySource`` that answers every ``view`` /
``view_rows`` / ``read`` call from tensors recorded in RAM by an earlier (untimed) run through a
``Recorder``. The draws depend only on the seed and the pixels, so the twin makes exactly the same
calls and gets exactly the same pixels (the benchmark checks that its predictions are equal):
what it measures is the compute alone.

Time split (``Clock``, wall seconds of the thread that computes, summed over the run):

* open: ``SlideSource`` construction in that thread (with read-ahead it happens in others); a plain
  pyramid's large-image source, opened later when a read needs it, is counted where it is opened
  (in ``prefetch``: read; in a region request: decode);
* read: ``SlideSource`` pixel calls in that thread (``raw_view``, ``view_rows``, ``read``, ``prefetch``), the
  time it waits for their region requests included;
* wait: blocked on read-ahead (the next slide or batch not ready yet); in predict (any ``at once``
  with ``--prefetch`` above 0: one at once is predict's compute lane, ``zoomin.loader.Lane``) the
  slides are opened, read and computed in worker threads and the main thread only waits for them,
  so open / read / compute are those threads' (in the all-threads and decode columns) and this
  column is the run's wall time;
* compute: the rest (the model, the draws, the loss and optimiser, writing the CSV);
* open+read, all threads (thread-seconds): open and read in every thread (read-ahead, workers);
* decode (thread-seconds, every thread): large-image's region requests (``SlideSource._get_region``:
  tile reads, JPEG decoding, resampling) and tifffile's decoding of a plain pyramid's levels
  (``zoomin.tiff_pyramid.Pyramid.decode``), whichever thread ran them; the whole pyramid levels a
  slide keeps (``SlideSource._level``) included, the requests cut from them not.

Device utilisation (CUDA only): ``nvidia-smi``'s utilization.gpu sampled every 100 ms during the
run (the share of time a kernel was running), its mean; "n/a" on a CPU.
"""
from __future__ import annotations

import argparse
import csv
import shlex
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from report import num, side, table

import zoomin
from zoomin.config import Config

CONFIGS = Path(zoomin.__file__).parent / "configs"


# -- timing ---------------------------------------------------------------------------------------
class Clock:
    """Wall time of ``SlideSource`` calls and read-ahead waits by kind and thread (main: the thread
    that created the clock); installed by patching the classes while the ``with`` block runs."""

    def __init__(self):
        self.main = threading.get_ident()
        self.seconds: dict[tuple[str, bool], float] = defaultdict(float)  # (kind, in main thread) -> s
        self._depth = threading.local()
        self._patches: list = []

    def _wrap(self, owner, name: str, kind: str, outer_only: bool = True):
        original = getattr(owner, name)
        clock = self

        def timed(*args, **kw):
            depth = getattr(clock._depth, kind, 0)
            setattr(clock._depth, kind, depth + 1)
            t0 = time.perf_counter()
            try:
                return original(*args, **kw)
            finally:
                setattr(clock._depth, kind, depth)
                if depth == 0 or not outer_only:
                    clock.seconds[kind, threading.get_ident() == clock.main] += time.perf_counter() - t0
        self._patches.append((owner, name, original))
        setattr(owner, name, timed)

    def __enter__(self):
        from zoomin import loader
        from zoomin.slides import SlideSource
        from zoomin.tiff_pyramid import Pyramid
        self._wrap(SlideSource, "__init__", "open")
        for name in ("raw_view", "view_rows", "read", "prefetch"):
            self._wrap(SlideSource, name, "read")
        self._wrap(SlideSource, "_get_region", "decode")
        self._wrap(Pyramid, "decode", "decode")
        self._wrap(loader, "wait_for", "wait")
        return self

    def __exit__(self, *exc):
        for owner, name, original in reversed(self._patches):
            setattr(owner, name, original)

    def split(self, wall: float) -> dict:
        """The main thread's wall split and the decode thread-seconds."""
        main = {k: self.seconds[k, True] for k in ("open", "read", "wait")}
        every = {k: self.seconds[k, True] + self.seconds[k, False] for k in ("open", "read", "decode")}
        return {**main, "compute": wall - sum(main.values()), "decode": every["decode"],
                "open+read, all threads": every["open"] + every["read"]}


class Utilisation:
    """Mean GPU utilisation over a run from ``nvidia-smi`` sampled every 100 ms (CUDA only)."""

    def __init__(self, device: torch.device):
        self.device, self.proc, self.mean = device, None, None

    def __enter__(self):
        if self.device.type == "cuda":
            index = self.device.index or 0
            try:
                self.proc = subprocess.Popen(["nvidia-smi", f"--id={index}", "--query-gpu=utilization.gpu",
                                              "--format=csv,noheader,nounits", "-lms", "100"],
                                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            except OSError:
                self.proc = None
        return self

    def __exit__(self, *exc):
        if self.proc is not None:
            self.proc.terminate()
            out = self.proc.communicate()[0]
            values = [float(v) for v in out.split() if v.strip().replace(".", "", 1).isdigit()]
            self.mean = float(np.mean(values)) if values else None

    def cell(self) -> str:
        if self.device.type != "cuda":
            return "n/a"
        return "no nvidia-smi" if self.mean is None else f"{self.mean:.0f} %"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- in-memory twins -----------------------------------------------------------------------------
def _key(*parts) -> tuple:
    return tuple(p.cpu().numpy().tobytes() if isinstance(p, torch.Tensor) else p for p in parts)


def _pack(x: torch.Tensor) -> torch.Tensor:
    """A recorded read kept as uint8 when its float values are exactly k / 255 (as 8-bit slides
    give), to hold a whole benchmark's reads in RAM; ``_unpack`` gives back the same floats."""
    if x.dtype == torch.float32:
        u = (x * 255).round().clamp(0, 255).to(torch.uint8)
        if torch.equal(u.float().div_(255), x):
            return u
    return x.clone()


def _unpack(x: torch.Tensor, was_float: bool) -> torch.Tensor:
    return x.float().div_(255) if was_float and x.dtype == torch.uint8 else x.clone()


class Recorder:
    """A ``SlideSource`` whose pixel calls are recorded (``calls``) for a ``MemorySource``; every
    other attribute is the wrapped source's."""

    def __init__(self, src):
        self.src, self.calls = src, {}

    def __getattr__(self, name):
        if name in ("src", "calls"):
            raise AttributeError(name)
        return getattr(self.src, name)

    def raw_view(self, scale):
        out = self.src.raw_view(scale)
        self.calls[_key("raw_view", scale)] = (out.clone(), False)
        return out

    def view_rows(self, scale, r0, r1):
        out = self.src.view_rows(scale, r0, r1)
        self.calls[_key("view_rows", scale, r0, r1)] = (out.clone(), False)
        return out

    def view(self, scale):
        return zoomin.sources.to_unit(self.raw_view(scale))

    def read(self, batch_index, boxes, scale, size_hw):
        out = self.src.read(batch_index, boxes, scale, size_hw)
        self.calls[_key("read", batch_index, boxes, scale, tuple(size_hw))] = (_pack(out), out.dtype == torch.float32)
        return out


class MemorySource:
    """The compute-only twin of a recorded slide: the same attributes, every pixel call answered
    from RAM (a call the recording did not see is an error)."""

    piece, identity = 1, None  # any band; nothing kept by identity (every pass computes, as measured)

    def __init__(self, rec: Recorder):
        src = rec.src
        self.path, self.size, self.channels, self.batch_size = src.path, src.size, src.channels, 1
        self.k, self.mpp, self.file_size = getattr(src, "k", 1.0), src.mpp, src.file_size
        self.pixels_read = 0
        self.mask = src.mask
        self.calls = rec.calls
        self._views = {k[1] for k in rec.calls if k[0] == "raw_view"}

    def _get(self, *key):
        try:
            x, was_float = self.calls[_key(*key)]
        except KeyError:
            raise RuntimeError(f"{self.path}: a call the recording did not make: {key[0]}") from None
        return _unpack(x, was_float)

    def check_view(self, scale):
        pass

    def has_view(self, scale):
        return scale in self._views

    def prefetch(self, scale, later=()):
        pass

    def raw_view(self, scale):
        return self._get("raw_view", scale)

    def view_rows(self, scale, r0, r1):
        return self._get("view_rows", scale, r0, r1)

    def view(self, scale):
        return zoomin.sources.to_unit(self.raw_view(scale))

    def read(self, batch_index, boxes, scale, size_hw):
        return self._get("read", batch_index, boxes, scale, tuple(size_hw))


# -- slides ---------------------------------------------------------------------------------------
def write_slides(work: Path, n: int, size: int, seed: int) -> Path:
    """``n`` synthetic ``size``² slides (``zoomin.synth.synth_slides``; reused when there) -> manifest."""
    from zoomin.synth import synth_slides
    folder = work / f"slides_{n}x{size}"
    manifest = folder / "manifest.csv"
    if not manifest.exists():
        t0 = time.perf_counter()
        synth_slides(folder, n, size, seed=seed, progress=False)
        print(f"wrote {n} {side(size)} slides in {time.perf_counter() - t0:.0f} s", flush=True)
    return manifest


def model_checkpoint(work: Path, seed: int) -> Path:
    """An untrained model of the packaged ``slides.yaml`` (its weights from ``seed``)."""
    from zoomin.checkpoint import save_model
    from zoomin.model import build_model
    cfg = Config.from_yaml(CONFIGS / "slides.yaml")
    torch.manual_seed(seed)
    return save_model(work / "untrained_slides.pt", build_model(cfg.model).eval(), cfg)


# -- predict --------------------------------------------------------------------------------------
def predict_run(ckpt: Path, manifest: Path, out_csv: Path, device: torch.device, prefetch: int,
                twin: dict | None = None, record: dict | None = None, workers: int = 1) -> tuple[float, Clock, Utilisation]:
    """One ``zoomin.predict.predict`` over the manifest -> (wall s, clock, utilisation). ``record``:
    collect each slide's recorded calls (untimed use); ``twin``: answer them from RAM."""
    from zoomin import predict as P
    original = P.open_slide

    def opened(model, cfg, slide, max_pixels=0, mpp=None):
        if twin is not None:
            return MemorySource(twin[slide.slide_id])
        src = original(model, cfg, slide, max_pixels, mpp)
        if record is not None:
            record[slide.slide_id] = rec = Recorder(src)
            scale = model.stage1_scale(src.size)
            if src.has_view(scale):  # prefetched by open_slide, before the recorder existed
                rec.calls[_key("raw_view", scale)] = (src.raw_view(scale).clone(), False)
            return rec
        return src
    P.open_slide = opened
    try:
        with Clock() as clock, Utilisation(device) as util:
            sync(device)
            t0 = time.perf_counter()
            extra = {"device": str(device)} if device.type != "cpu" else {}
            extra.update({"workers": workers} if workers > 1 else {})
            P.predict(ckpt, [str(manifest)], out_csv, progress=False, prefetch=prefetch, **extra)
            sync(device)
            wall = time.perf_counter() - t0
    finally:
        P.open_slide = original
    return wall, clock, util


def probabilities(path: Path) -> dict:
    with open(path) as fh:
        return {r["slide_id"]: tuple(v for k, v in r.items() if k.startswith("p_")) for r in csv.DictReader(fh)}


def repeat_slide(work: Path, slide: Path, n: int) -> Path:
    """A manifest listing ``slide`` ``n`` times under distinct slide ids (each read afresh, as a
    new slide would be: nothing of a slide is kept between its sources) -> manifest."""
    from zoomin.manifest import Entry, write_manifest
    folder = work / f"repeat_{n}x{slide.stem}"
    folder.mkdir(parents=True, exist_ok=True)
    return write_manifest([Entry(f"{slide.stem}_{i:03d}", slide.resolve(), i % 2, "test") for i in range(n)],
                          folder / "manifest.csv", annotations=False)


def predict_section(args, device, size: int, n: int, work: Path) -> tuple[list[dict], list[str]]:
    """Predict ``n`` slides of ``size``² (``--slide``: that file ``n`` times): real reads and the
    in-memory twin, ``--repeats`` times alternating -> rows, notes."""
    manifest = repeat_slide(work, Path(args.slide), n) if args.slide else write_slides(work, n, size, args.seed)
    ckpt = Path(args.checkpoint) if args.checkpoint else model_checkpoint(work, args.seed)
    rows, notes, recorded = [], [], {}
    predict_run(ckpt, manifest, work / "warm.csv", device, args.prefetch, record=recorded)
    at_once = [int(w) for w in str(args.workers).split(",")]
    for rep in range(args.repeats):  # each setting's pair in turn, so that the settings compare too
        for workers in at_once:
            for kind in ("slides", "in memory"):
                out = work / f"pred_{size}_{workers}_{kind.replace(' ', '_')}.csv"
                wall, clock, util = predict_run(ckpt, manifest, out, device, args.prefetch,
                                                twin=recorded if kind == "in memory" else None, workers=workers)
                rows.append(row("predict", size, n, kind, wall, clock, util, rep, at_once=workers))
                print(rows[-1], flush=True)
    for workers in at_once:
        same = (probabilities(work / f"pred_{size}_{workers}_slides.csv")
                == probabilities(work / f"pred_{size}_{workers}_in_memory.csv"))
        notes.append(f"predict {side(size)}, {workers} at once: the in-memory twin's probabilities equal the real "
                     f"run's: {same}")
    return rows, notes


# -- training -------------------------------------------------------------------------------------
class RecordingSet(torch.utils.data.Dataset):
    """A slide data set whose sources are ``Recorder``s (kept in ``records`` by item)."""

    def __init__(self, ds, records: dict):
        self.ds, self.records, self.collate = ds, records, ds.collate
        self.read_ahead = getattr(ds, "read_ahead", False)

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        src, y = self.ds[i]
        self.records[i] = rec = self.records.get(i) or Recorder(src)
        rec.src = src
        return rec, y


class MemorySet(RecordingSet):
    """The compute-only twin of a ``RecordingSet``'s recording."""

    def __getitem__(self, i):
        return MemorySource(self.records[i]), self.ds.entries[i].label


def train_run(cfg: Config, device: torch.device, datasets, work: Path) -> tuple[float, float, Clock, Utilisation, dict]:
    """One training epoch and one test pass of ``cfg`` from scratch -> (train wall s, test wall s,
    clock over both, utilisation, final weights' checksum and the epoch's losses)."""
    from zoomin.evaluate import evaluate
    from zoomin.train import Trainer
    threads = torch.get_num_threads()
    trainer = Trainer(cfg, work / "train_run", datasets=datasets, progress=False, log=False)
    train_loader, test_loader = trainer.loaders()
    with Clock() as clock, Utilisation(device) as util:
        sync(device)
        t0 = time.perf_counter()
        losses = trainer.train_epoch(train_loader)
        sync(device)
        t1 = time.perf_counter()
        evaluate(trainer.model, test_loader, device, cfg.readout, trainer.amp_dtype, progress=False,
                 read_ahead=trainer.read_ahead)
        sync(device)
        t2 = time.perf_counter()
    torch.set_num_threads(threads)
    weights = float(sum(p.detach().double().sum() for p in trainer.model.parameters()))
    return t1 - t0, t2 - t1, clock, util, {"weights": weights, **losses}


def train_section(args, device, size: int, n: int, work: Path) -> tuple[list[dict], list[str]]:
    """One epoch of the packaged config on ``n`` slides of ``size``² (3/4 train), then its test
    pass: real reads and the in-memory twin -> rows, notes."""
    from zoomin.data.factory import make_datasets
    manifest = write_slides(work, n, size, args.seed)
    cfg = Config.from_yaml(CONFIGS / "slides.yaml")
    cfg.data.task, cfg.data.manifest = "manifest", str(manifest)
    cfg.train.epochs, cfg.train.eval_every, cfg.train.seed, cfg.train.device = 1, 0, args.seed, str(device)
    cfg.train.threads = args.threads or 0
    records = ({}, {})
    real = make_datasets(cfg)
    train_run(cfg, device, tuple(RecordingSet(ds, r) for ds, r in zip(real, records)), work)  # records; warms up
    rows, results = [], {}
    for rep in range(args.repeats):
        for kind in ("slides", "in memory"):
            sets = real if kind == "slides" else tuple(MemorySet(ds, r) for ds, r in zip(real, records))
            t_train, t_test, clock, util, results[kind] = train_run(cfg, device, sets, work)
            steps = -(-len(real[0]) // cfg.train.batch_size)
            rows.append(row("train", size, len(real[0]), kind, t_train, clock, util, rep, steps=steps,
                            test_s=t_test, test_n=len(real[1])))
            print(rows[-1], flush=True)
    same = results["slides"] == results["in memory"]
    return rows, [f"train {side(size)}: the in-memory twin ends with the real run's weights and losses: {same}"]


# -- report ---------------------------------------------------------------------------------------
def row(what: str, size: int, n: int, kind: str, wall: float, clock: Clock, util: Utilisation, rep: int,
        steps: int = 0, test_s: float = 0.0, test_n: int = 0, at_once: int = 1) -> dict:
    split = clock.split(wall + test_s)
    out = {"run": what, "slide": side(size), "at once": at_once, "slides": n, "reads": kind, "repeat": rep, "wall_s": wall,
           "slides_per_hour": n / wall * 3600, "s_per_slide": wall / n}
    if steps:
        out.update(steps_per_s=steps / wall, test_s=test_s, test_slides_per_hour=test_n / test_s * 3600)
    return {**out, **{f"{k}_s": v for k, v in split.items()}, "device_util": util.cell()}


def render(rows: list[dict]) -> str:
    df = pd.DataFrame(rows)
    lines = []
    for what, part in df.groupby("run", sort=False):
        keys = ["slide", "at once", "reads"]
        med = part.groupby(keys, sort=False).median(numeric_only=True).reset_index()
        util = part.groupby(keys, sort=False)["device_util"].last().values
        cols = {"slide": med["slide"], **({"at once": med["at once"].astype(int)} if what == "predict" else {}),
                "reads": med["reads"], "slides": med["slides"].astype(int).map(num),
                "slides/h": med["slides_per_hour"].map(lambda v: num(float(v), 0)),
                "s/slide": med["s_per_slide"].map(lambda v: num(float(v), 4))}
        if what == "train":
            cols["steps/s"] = med["steps_per_s"].map(lambda v: num(float(v), 3))
            cols["test slides/h"] = med["test_slides_per_hour"].map(lambda v: num(float(v), 0))
        for k in ("open", "read", "wait", "compute", "decode", "open+read, all threads"):
            cols[f"{k} (s)"] = med[f"{k}_s"].map(lambda v: num(float(v), 2))
        cols["device busy"] = util
        t = pd.DataFrame(cols)
        ratio = []
        for (s, once), sub in part.groupby(["slide", "at once"], sort=False):
            walls = sub.pivot_table(index="repeat", columns="reads", values="wall_s")
            if {"slides", "in memory"} <= set(walls.columns):
                pairs = (walls["slides"] / walls["in memory"]).sort_values()
                m = med[(med["slide"] == s) & (med["at once"] == once)].set_index("reads")["wall_s"]
                ratio.append(f"{what} {s}{f', {once} at once' if what == 'predict' else ''}: real / compute-only "
                             f"wall = {m['slides'] / m['in memory']:.2f}× (the medians); pair by pair "
                             f"{', '.join(f'{v:.2f}' for v in pairs)}")
        lines += [f"## {'Predict' if what == 'predict' else 'Training (one epoch) and its test pass'}", "",
                  table(t, text=("slide", "reads", "device busy")), ""] + [f"- {r}" for r in ratio] + [""]
    return "\n".join(lines)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform
    return f"{device.type} ({platform.machine()}, {torch.get_num_threads()} torch threads)"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1")
    p.add_argument("--out", default="docs/throughput.md")
    p.add_argument("--work", default="runs/throughput", help="synthetic slides (reused) and scratch files")
    p.add_argument("--sizes", default="4096", help="slide sides, comma-separated (e.g. 4096,16384)")
    p.add_argument("--predict-slides", default="80", help="slides predicted per size (comma-separated, one per size)")
    p.add_argument("--train-slides", default="80",
                   help="slides written for training per size (3/4 train, 1/4 test; 0: no training at that size)")
    p.add_argument("--parts", default="predict,train")
    p.add_argument("--slide", help="predict this slide file --predict-slides times (distinct slide ids) instead "
                   "of synthetic slides of --sizes; no training (e.g. the 100,000² slide of benchmarks/zoom_latency.py)")
    p.add_argument("--prefetch", type=int, default=1, help="zoomin predict --prefetch")
    p.add_argument("--workers", default="1", help="slides predicted at once (zoomin.predict.predict's workers); "
                   "comma-separated, each measured (e.g. 1,2; 1 is zoomin predict's default)")
    p.add_argument("--repeats", type=int, default=2, help="real / in-memory pairs, alternating (medians shown)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default on a CPU: 1; a 2-core machine shared with other work runs "
                        "OpenMP's two threads up to 10x slower whenever the other core is busy)")
    p.add_argument("--budget-s", type=float, default=float("inf"),
                   help="start no further section once this many seconds have passed")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", default="", help="predict with this checkpoint (a trained model) instead of an "
                   "untrained slides.yaml; training is unchanged")
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("benchmarks/throughput.py: no CUDA device here")
    if args.threads is None and device.type == "cpu":
        args.threads = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    command = shlex.join(["python", "benchmarks/throughput.py", *(sys.argv[1:] if argv is None else argv)])
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sizes, slide_mpp = [int(s) for s in args.sizes.split(",")], 0.25
    if args.slide:  # predict only, on that file (its side, for the tables)
        from zoomin.slides import SlideSource
        src = SlideSource(args.slide)
        sizes, args.parts, args.train_slides = [max(src.file_size)], "predict", "0"
        slide_mpp = src.file_mpp
    counts = {p: dict(zip(sizes, [int(c) for c in getattr(args, f"{p}_slides").split(",")] * len(sizes)))
              for p in ("predict", "train")}
    t0 = time.perf_counter()
    rows, notes = [], []
    parts = args.parts.split(",")
    for size in sizes:
        for part, section in (("predict", predict_section), ("train", train_section)):
            if part not in parts or not counts[part][size]:
                continue
            if time.perf_counter() - t0 > args.budget_s:
                notes.append(f"skipped: {part} {side(size)} (past --budget-s {args.budget_s:g} s)")
                continue
            r, n = section(args, device, size, counts[part][size], work)
            rows, notes = rows + r, notes + n
    pd.DataFrame(rows).to_csv(Path(args.out).with_suffix(".csv"), index=False)
    doc = ["# Slide throughput (issue #34)", "",
           f"Device: **{device_name(device)}**; torch {torch.__version__}; command: `{command}`; "
           f"{time.perf_counter() - t0:.0f} s in all.", "",
           "Written by `benchmarks/throughput.py` (its docstring defines every column). Each `slides` run "
           "and its `in memory` twin (the same calls answered from RAM: the compute-only limit) ran side by side "
           f"in one process, alternating, {args.repeats} times; medians shown. Model: "
           + (f"predict with the checkpoint `{args.checkpoint}`, training an untrained `zoomin/configs/slides.yaml`; "
              if args.checkpoint else "an untrained `zoomin/configs/slides.yaml` (weights from the seed); ")
           + (f"the slide `{args.slide}` listed {counts['predict'][sizes[0]]} times under distinct slide ids"
              if args.slide else "synthetic slides of `zoomin.synth.synth_slides`")
           + f" ({slide_mpp:g} µm/px, read at the config's 1 µm/px). Predict: `zoomin.predict.predict`, 4 passes, "
           f"--prefetch {args.prefetch}, {args.workers} slide(s) at once (`at once`)."
           + (" Training: one epoch of the packaged config (batch 8) through `Trainer.train_epoch`, then the test "
              "slides through `zoomin.evaluate.evaluate` (4 passes); open / read / wait / compute / decode cover both."
              if any(r["run"] == "train" for r in rows) else ""), "",
           render(rows), *[f"- {n}" for n in notes]]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(doc) + "\n")
    print("\n".join(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
