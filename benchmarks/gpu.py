"""One prepared GPU check (issue #14): training and predict times, CUDA peak memory, fp32 against
bf16 autocast, in at most ``--budget-s`` seconds (default 540, so ten minutes with start-up).

    python benchmarks/gpu.py                                   # on the GPU: -> docs/benchmarks_gpu.md
    python benchmarks/gpu.py --device cpu --quick --out /tmp/gpu.md   # tiny sizes, seconds (tests)

Sections, each with the device name, the torch version and this command:

* **Slide training**: the packaged ``zoomin/configs/slides.yaml`` on synthetic slides it writes
  (``zoomin.synth.synth_slides``), a few epochs through ``zoomin.train.Trainer``, once with
  ``train.amp`` off and once on (bf16 autocast on CUDA; the trainer autocasts on CUDA only);
  steps/s from a step callback, s/epoch from the trainer's metrics, ``max_memory_allocated``.
* **Predict**: ``zoomin.readout.answer`` on freshly opened ``SlideSource``s (what
  ``zoomin.predict.predict_slide`` does, 4 passes by default) for a few synthetic
  slides and one large one (``--large-size``), fp32 and bf16 autocast: seconds per slide (first
  open, then again) and CUDA peak memory.
* **Megapixel MNIST**: ``zoomin/configs/megapixel_mnist_zoom_in.yaml`` (the paper's benchmark), a
  short run (``--mnist-steps`` steps), fp32 and bf16.

A section (or one run in it) whose estimated time would take the run past ``--budget-s`` is
skipped with a printed note. Slides are written once into ``--work`` and reused by later runs.

``zoomin predict`` runs on the CPU (``predict_slide`` draws with a CPU generator), so predict is
timed here through ``answer`` with a generator on the device. The model moves a slide's
pixels to its device piece by piece; ``OnDevice`` below also does it for whole views (kept from
before that, harmless).
"""
from __future__ import annotations

import argparse
import platform
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from report import num, side, table
from torch.utils.data import Dataset

import zoomin
from zoomin.config import Config

CONFIGS = Path(zoomin.__file__).parent / "configs"
WRITE_PX_PER_S = 4e7  # synthetic slide writing, measured ~5e7 level-0 pixels/s on a 2-core CPU


class Budget:
    """The total time guard: ``allows`` says whether something estimated to take ``estimate_s``
    still ends within the budget; otherwise it prints and returns the skip note."""

    def __init__(self, seconds: float):
        self.seconds, self.t0 = seconds, time.perf_counter()

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def skip_note(self, what: str, estimate_s: float) -> str | None:
        end = self.elapsed() + estimate_s
        if end <= self.seconds:
            return None
        note = f"skipped: {what} (estimated {estimate_s:.1f} s) would end at {end:.1f} s, past --budget-s {self.seconds:g}"
        print(note, flush=True)
        return note


def failure(what: str, e: Exception) -> str:
    """The one-line note of a run that raised (the other runs go on)."""
    msg = str(e).splitlines()[0][:300] if str(e) else ""
    note = f"failed: {what}: {type(e).__name__}: {msg}"
    print(note, flush=True)
    return note


class OnDevice:
    """A source whose pixels arrive on ``device`` (the package's sources give CPU tensors); every
    other attribute (size, channels, mask, pixels_read, ...) is the wrapped source's."""

    def __init__(self, src, device: torch.device):
        self.src, self.device = src, device

    def __getattr__(self, name):
        if name in ("src", "device"):  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.src, name)

    def view(self, scale: float) -> torch.Tensor:
        return self.src.view(scale).to(self.device)  # (B, C, h, w)

    def read(self, batch_index: torch.Tensor, boxes: torch.Tensor, scale: float, size_hw) -> torch.Tensor:
        return self.src.read(batch_index.cpu(), boxes.cpu(), scale, size_hw).to(self.device)  # (M, C, h, w)


class OnDeviceSet(Dataset):
    """A slide data set whose items are ``OnDevice`` sources (same labels, same collate)."""

    def __init__(self, ds, device: torch.device):
        self.ds, self.device = ds, device
        self.collate = ds.collate

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int):
        src, y = self.ds[i]
        return OnDevice(src, self.device), y


class StepTimer:
    """Trainer callback: a timestamp after every optimiser step (the device synchronised first)."""

    def __init__(self, device: torch.device):
        self.device, self.times = device, []

    def on_step(self, trainer) -> None:
        sync(self.device)
        self.times.append(time.perf_counter())


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_cell(device: torch.device) -> str:
    """``torch.cuda.max_memory_allocated`` since the last reset, in MiB; "n/a (cpu)" elsewhere."""
    if device.type != "cuda":
        return f"n/a ({device.type})"
    return num(torch.cuda.max_memory_allocated(device) / 2**20, 0)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({platform.machine()}, {torch.get_num_threads()} torch threads)"


def train_run(cfg: Config, out: Path, device: torch.device, amp: bool, wrap_slides: bool) -> dict:
    """One ``Trainer.fit`` from scratch with ``train.amp = amp`` -> a row of the training table."""
    from zoomin.data.factory import make_datasets
    from zoomin.train import Trainer
    cfg.train.amp, cfg.train.device = amp, str(device)
    shutil.rmtree(out, ignore_errors=True)
    threads = torch.get_num_threads()  # a config's train.threads must not leak into the next run
    datasets = None
    if wrap_slides:
        datasets = tuple(OnDeviceSet(ds, device) for ds in make_datasets(cfg))
    timer = StepTimer(device)
    reset_peak(device)
    t0 = time.perf_counter()
    trainer = Trainer(cfg, out, datasets=datasets, progress=False, log=False, callbacks=[timer])
    metrics = trainer.fit()
    wall = time.perf_counter() - t0
    torch.set_num_threads(threads)
    gaps = np.diff(timer.times)  # the first step (set-up, kernel selection) is left out
    dtype = trainer.amp_dtype
    return {"train.amp": str(amp).lower(), "autocast": str(dtype).removeprefix("torch.") if dtype else "off",
            "steps": str(len(timer.times)), "batch": str(cfg.train.batch_size),
            "steps/s": num(len(gaps) / gaps.sum(), 2) if len(gaps) else "",
            "median s/step": num(float(np.median(gaps)), 3) if len(gaps) else "",
            "s/epoch": num(metrics["seconds_per_epoch"], 2), "wall (s)": num(wall, 1),
            "CUDA peak (MiB)": peak_cell(device), "_wall": wall}


def train_section(title: str, cfg: Config, out: Path, device, budget: Budget, estimate_s: float,
                  wrap_slides: bool) -> list[str]:
    """fp32 then bf16 runs of ``cfg`` into ``out``_fp32 / _amp -> the table and the notes of the
    runs skipped or failed; the bf16 run's estimate is the fp32 run's wall time."""
    rows, notes, measured = [], [], None
    for amp in (False, True):
        what = f"{title} with train.amp={str(amp).lower()}"
        note = budget.skip_note(what, measured or estimate_s)
        if note:
            notes.append(note)
            continue
        try:
            row = train_run(cfg, Path(f"{out}_{'amp' if amp else 'fp32'}"), device, amp, wrap_slides)
        except (RuntimeError, ValueError, OSError) as e:  # torch.OutOfMemoryError is a RuntimeError
            notes.append(failure(what, e))
            continue
        measured = measured or row["_wall"]
        rows.append(row)
        print(f"{title}: {row}", flush=True)
    lines = [table(pd.DataFrame(rows).drop(columns="_wall"), text=("train.amp", "autocast"))] if rows else []
    return lines + [f"\n{n}" for n in notes]


def write_slides(args, work: Path, budget: Budget) -> tuple[Path | None, str]:
    """The synthetic training slides (reused when already in ``work``) -> (manifest, note)."""
    from zoomin.synth import synth_slides
    folder = work / f"slides_{args.slides}x{args.slide_size}"
    manifest = folder / "manifest.csv"
    if manifest.exists():
        return manifest, f"{args.slides} synthetic {side(args.slide_size)} slides (reused from `{folder}`)"
    note = budget.skip_note("writing the synthetic slides", args.slides * args.slide_size**2 / WRITE_PX_PER_S)
    if note:
        return None, note
    t0 = time.perf_counter()
    synth_slides(folder, args.slides, args.slide_size, seed=args.seed, progress=False)
    return manifest, (f"{args.slides} synthetic {side(args.slide_size)} slides (`zoomin.synth.synth_slides`, seed "
                      f"{args.seed}, written in {time.perf_counter() - t0:.1f} s)")


def write_large(size: int, work: Path, budget: Budget, seed: int) -> tuple[Path | None, str]:
    """One large synthetic slide with lesions (reused when already in ``work``) -> (path, note)."""
    from zoomin.synth import make_spec, write_slide
    path = work / f"large_{size}.tif"
    if path.exists():
        return path, f"the {side(size)} slide was reused from `{path}`"
    note = budget.skip_note(f"writing the {side(size)} slide", size**2 / WRITE_PX_PER_S)
    if note:
        return None, note
    t0 = time.perf_counter()
    write_slide(path.with_suffix(".part.tif"), make_spec(size, True, np.random.default_rng(seed)))
    path.with_suffix(".part.tif").rename(path)  # a run killed mid-write leaves no half slide to reuse
    return path, f"the {side(size)} slide was written in {time.perf_counter() - t0:.1f} s"


def predict_once(model, cfg: Config, path: Path, device, amp_dtype, passes: int, seed: int) -> tuple[float, int, int]:
    """Open ``path`` and average ``passes`` passes on ``device`` -> (seconds, decoded pixels, side)."""
    from dataclasses import replace

    from zoomin.readout import answer
    from zoomin.slides import SlideSource
    sync(device)
    t0 = time.perf_counter()
    src = OnDevice(SlideSource(path, channels=cfg.model.in_channels, max_pixels=cfg.data.max_pixels,
                               mpp=cfg.model.mpp), device)  # at the model's µm/px, as zoomin predict reads it
    probs, _ = answer(model, src, replace(cfg.readout, passes=passes), torch.Generator(device).manual_seed(seed),
                      amp_dtype)
    if not torch.isfinite(probs).all():
        raise SystemExit(f"{path}: the model's output is not finite")
    sync(device)
    return time.perf_counter() - t0, src.pixels_read, src.size[1]


def predict_section(args, slides: list[tuple[Path, int]], checkpoint: Path, device, budget: Budget) -> list[str]:
    """Seconds per slide (first open, again) and CUDA peak memory, fp32 and bf16 autocast."""
    from zoomin.checkpoint import load_model
    from zoomin.model import build_model
    if not slides:
        return ["skipped: no slides to predict"]
    if checkpoint.exists():
        model, cfg = load_model(checkpoint)
        origin = f"the model of the fp32 slide-training run (`{checkpoint}`)"
    else:
        cfg = Config.from_yaml(CONFIGS / "slides.yaml")
        torch.manual_seed(args.seed)
        model, origin = build_model(cfg.model).eval(), "an untrained model of `slides.yaml` (no fp32 training checkpoint)"
    model.to(device)
    rows, notes, estimate = [], [], {}
    for dtype in (None, torch.bfloat16):
        precision = "bf16 autocast" if dtype else "fp32"
        try:
            predict_once(model, cfg, slides[0][0], device, dtype, 1, args.seed)  # warm-up: kernels, caches (not shown)
        except (RuntimeError, ValueError, OSError) as e:
            notes.append(failure(f"predict ({precision})", e))
            continue
        for path, width in slides:
            what = f"predict {path.name} ({precision})"
            guess = 2 * (2 + args.passes * width**2 / 1e9)  # twice: decoding the stage-I view, then the passes
            note = budget.skip_note(what, estimate.get(path, guess))
            if note:
                notes.append(note)
                continue
            reset_peak(device)
            try:
                first, pixels, _ = predict_once(model, cfg, path, device, dtype, args.passes, args.seed)
                again = predict_once(model, cfg, path, device, dtype, args.passes, args.seed)[0]
            except (RuntimeError, ValueError, OSError) as e:
                notes.append(failure(what, e))
                continue
            estimate[path] = first + again
            rows.append({"slide": path.name, "size": side(width), "precision": precision,
                         "first (s)": num(first, 3), "again (s)": num(again, 3),
                         "decoded (Mpx)": num(pixels / 1e6, 1), "CUDA peak (MiB)": peak_cell(device)})
            print(f"predict: {rows[-1]}", flush=True)
    lines = [f"Model: {origin}; {args.passes} Monte-Carlo passes per slide; each slide opened afresh twice "
             "(`first`: the first time in this process; `again`: large-image's caches warm). Decoded: pixels "
             "the source returned for one prediction. A warm-up prediction per precision is not shown.", ""]
    lines += [table(pd.DataFrame(rows), text=("slide", "precision"))] if rows else []
    return lines + [f"\n{n}" for n in notes]


def slide_sections(args, work: Path, device, budget: Budget, head: str) -> list[str]:
    """The slide-training and predict sections (markdown lines)."""
    doc = ["", "## Slide training (`zoomin/configs/slides.yaml`)", "", head, ""]
    manifest, written = write_slides(args, work, budget)
    if manifest is None:
        return doc + [written, "", "## Predict on synthetic slides", "", head, "",
                      "skipped: no synthetic slides were written"]
    cfg = Config.from_yaml(CONFIGS / "slides.yaml")
    cfg.data.task, cfg.data.manifest = "manifest", str(manifest)
    cfg.train.epochs, cfg.train.eval_every, cfg.train.seed = args.slide_epochs, 0, args.seed
    if args.quick:
        cfg.train.batch_size = 2  # several steps from 3 training slides
    doc += [f"{written}; the packaged config with {cfg.train.epochs} epochs, batch {cfg.train.batch_size}, "
            "tested once after the last epoch. steps/s: over the steps after the first (epoch ends, "
            "checkpoints included); s/epoch: the trainer's mean; wall: set-up, training and the test.", ""]
    doc += train_section("Slide training", cfg, work / "slides", device, budget, 40.0 if args.quick else 120.0,
                         wrap_slides=True)
    doc += ["", "## Predict on synthetic slides", "", head, ""]
    rows = pd.read_csv(manifest, dtype=str)
    slides = [(manifest.parent / p, args.slide_size) for p in rows.loc[rows["split"] == "test", "path"][:3]]
    large, note = write_large(args.large_size, work, budget, args.seed)
    doc += [f"Slides: {len(slides)} test slide(s) of the training set ({side(args.slide_size)}); {note}.", ""]
    return doc + predict_section(args, slides + ([(large, args.large_size)] if large else []),
                                 work / "slides_fp32" / "checkpoint.pt", device, budget)


def mnist_section(args, work: Path, device, budget: Budget, head: str) -> list[str]:
    """A short Megapixel MNIST run of the packaged two-stage config (markdown lines)."""
    cfg = Config.from_yaml(CONFIGS / "megapixel_mnist_zoom_in.yaml")
    if args.quick:
        cfg.train.batch_size = 4
    cfg.data.train_size, cfg.data.test_size = args.mnist_steps * cfg.train.batch_size, cfg.train.batch_size
    cfg.train.epochs, cfg.train.eval_every, cfg.readout.passes = 1, 0, 1
    cfg.train.num_workers, cfg.train.seed = args.workers, args.seed
    doc = ["", "## Megapixel MNIST (`zoomin/configs/megapixel_mnist_zoom_in.yaml`)", "", head, "",
           f"The packaged config, one epoch of {args.mnist_steps} steps of {cfg.train.batch_size} "
           f"{side(cfg.data.canvas)} canvases ({args.workers} DataLoader workers), then one test batch. "
           "steps/s: over the steps after the first.", ""]
    return doc + train_section("MNIST training", cfg, work / "mnist", device, budget, 20.0 if args.quick else 90.0,
                               wrap_slides=False)


def header(device, command: str) -> str:
    return f"Device: **{device_name(device)}**; torch {torch.__version__}; command: `{command}`."


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto", help="auto (cuda, then mps, then cpu), cuda, cuda:1, cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds on a CPU): keeps the script from rotting")
    p.add_argument("--out", default="docs/benchmarks_gpu.md", help="markdown file with the figures")
    p.add_argument("--work", default="runs/gpu_bench", help="synthetic slides (reused) and training runs")
    p.add_argument("--budget-s", type=float, default=540.0, help="skip what would end past this many seconds")
    p.add_argument("--slides", type=int, help="synthetic training slides (default 24; quick 4)")
    p.add_argument("--slide-size", type=int, help="their side (default 4096; quick 1024)")
    p.add_argument("--slide-epochs", type=int, help="slide-training epochs (default 3; quick 2)")
    p.add_argument("--large-size", type=int, help="side of the large predict slide (default 50000; quick 3000)")
    p.add_argument("--passes", type=int, default=4, help="Monte-Carlo passes per predicted slide")
    p.add_argument("--mnist-steps", type=int, help="Megapixel MNIST training steps (default 30; quick 3)")
    p.add_argument("--workers", type=int, help="Megapixel MNIST DataLoader workers (default 4 on CUDA, else 0)")
    p.add_argument("--sections", default="slides,mnist",
                   help="which sections: slides (training and predict; needs the slides extra), mnist")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    budget = Budget(args.budget_s)
    from zoomin.distributed import select_device
    device = select_device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("benchmarks/gpu.py: no CUDA device here; use --device cpu --quick")
    q = args.quick
    for name, full, quick in (("slides", 24, 4), ("slide_size", 4096, 1024), ("slide_epochs", 3, 2),
                              ("large_size", 50_000, 3000), ("mnist_steps", 30, 3),
                              ("workers", 4 if device.type == "cuda" else 0, 0)):
        if getattr(args, name) is None:
            setattr(args, name, quick if q else full)
    command = shlex.join(["python", "benchmarks/gpu.py", *(sys.argv[1:] if argv is None else argv)])
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    doc = ["# GPU benchmark (issue #14)", "", header(device, command), "",
           f"Written by `benchmarks/gpu.py` ({'quick sizes' if q else 'full sizes'}; time budget {args.budget_s:.0f} s). "
           "CUDA peak: `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats` before each run "
           "(tensors only, not the CUDA context). bf16: `torch.autocast` with `torch.bfloat16`; the trainer "
           "autocasts on CUDA only, so on a CPU `train.amp: true` trains in fp32 (autocast `off`)."]
    sections = set(args.sections.split(","))
    if sections - {"slides", "mnist"}:
        raise SystemExit(f"benchmarks/gpu.py: --sections takes slides and/or mnist, got {args.sections!r}")
    if "slides" in sections:
        doc += slide_sections(args, work, device, budget, header(device, command))
    if "mnist" in sections:
        doc += mnist_section(args, work, device, budget, header(device, command))
    doc += ["", f"Total: {budget.elapsed():.0f} s."]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(doc) + "\n")
    print("\n".join(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
