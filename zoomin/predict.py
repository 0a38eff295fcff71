"""``zoomin predict``: class probabilities for slides, and per slide the exports of
``zoomin.heatmaps`` (a PNG overlay, GeoJSON that QuPath opens, a large-image (DSA) annotation JSON)."""
from __future__ import annotations

import csv
import dataclasses
import glob
import io
import math
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch

from . import distributed
from . import loader
from .errors import one_line
from .evaluate import image_generator
from .files import atomic_write_text
from .heatmaps import write_heatmaps
from .readout import answer


class Slide(NamedTuple):
    """One slide to predict."""

    slide_id: str
    path: Path
    mpp: float | None = None  # its level-0 pixel size in µm, when its manifest row states it


def list_slides(inputs: list[str]) -> list[Slide]:
    """Every input as a ``Slide``: slide files, and the rows of manifests ending in .csv."""
    from .manifest import read_manifest
    slides: list[Slide] = []
    for item in inputs:
        if item.endswith(".csv"):
            slides += [Slide(e.slide_id, e.path, e.mpp) for e in read_manifest(item, check_files=False)]
        else:
            slides.append(Slide(Path(item).stem, Path(item)))
    return slides


def slide_generator(seed: int, slide_id: str, device: torch.device | str = "cpu") -> torch.Generator:
    """The sampling generator of one slide, on ``device`` (the model's): seeded as
    ``zoomin.evaluate.image_generator`` of its id, so a slide's prediction does not depend on the
    other slides, their order, how they are sharded or how many are predicted at once."""
    g = image_generator(seed, slide_id)
    return g if torch.device(device).type == "cpu" else torch.Generator(device).manual_seed(g.initial_seed())


def open_slide(model, cfg, slide: Slide, max_pixels: int = 0, fallback_mpp: float | None = None):
    """The slide's source with its stage-I view decoded (what a prefetch thread does ahead of the
    model). ``fallback_mpp``: the slide's pixel size when neither the file nor its manifest row states it.
    A problem with the slide is a one-line ``ValueError``/``OSError`` naming it."""
    from .slides import SlideSource
    src = SlideSource(slide.path, channels=cfg.model.in_channels, max_pixels=max_pixels or cfg.data.max_pixels,
                      mpp=getattr(cfg.model, "mpp", 0.0), manifest_mpp=slide.mpp, fallback_mpp=fallback_mpp)
    src.prefetch(model.stage1_scale(src.size), model.read_scales())
    return src


def predict_slide(model, src, slide_id: str, readout, seed: int):
    """-> (the answer's probabilities (classes,) as ``readout`` defines it, the first pass's trace)
    of an opened slide."""
    device = next(model.parameters()).device
    probs, (tr,) = answer(model, src, readout, slide_generator(seed, slide_id, device))
    probs, tr = probs[0], tr.detach()  # (classes,); the first pass is also the one drawn
    if not torch.isfinite(probs).all():
        raise ValueError(f"{src.path}: the model's output is not finite")
    return probs, tr


def passes_readout(readout, passes: int):
    """``readout`` with ``passes`` (``--passes``) instead of its own, checked: a one-line ``ValueError``."""
    try:
        out = dataclasses.replace(readout, passes=passes)
    except ValueError as e:
        raise ValueError(f"--passes {passes}: {e}") from None
    if out.mode == "topk" and passes > 1:
        raise ValueError(f"--passes {passes}: the checkpoint's readout.mode is topk, one deterministic pass")
    return out


_END = object()


def prepared(items, prepare, ahead: int = 1):
    """``(item, prepare(item) or the error it raised, seconds waited for it)`` for each item, in
    order. With ``ahead`` > 0 the next ``ahead`` items are prepared in background threads while the
    caller works on this one; at most ``ahead`` results wait (drop each before asking for the next)."""
    pool = ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="zoomin-prefetch") if ahead > 0 else None
    pending: deque = deque()  # (item, future or None), in order
    items = iter(items)
    try:
        while True:
            while len(pending) <= ahead:  # this item and the next ``ahead``
                item = next(items, _END)
                if item is _END:
                    break
                pending.append((item, pool.submit(_attempt, prepare, item) if pool else None))
            if not pending:
                return
            item, future = pending.popleft()
            t0 = time.perf_counter()
            result = loader.wait_for(future) if future else _attempt(prepare, item)
            del future
            yield item, result, time.perf_counter() - t0
            del result
    finally:
        if pool:
            pool.shutdown(wait=True, cancel_futures=True)


def _attempt(prepare, item):
    """``prepare(item)``, or the per-slide error it raised."""
    try:
        return prepare(item)
    except (OSError, ValueError, RuntimeError) as e:
        return e


def write_explorer(folder: Path, slide_id: str, model, src, seed: int, probs: torch.Tensor | None = None,
                   readout=None) -> Path:
    """One offline explorer HTML for the slide: the answer ``probs`` (what the CSV says) beside one
    pass with the contrastive negatives, drawn from the slide's own generator (so it does not change
    the predictions)."""
    from .viz import Explorer
    with torch.no_grad():
        tr = model(src, negatives=True, generator=slide_generator(seed, slide_id, next(model.parameters()).device)).detach()
    return Explorer(tr, src, title=slide_id, answer=probs, readout=readout).save(folder / f"{slide_id}.html")


@dataclass
class Run:
    """What every slide of one ``predict`` call shares."""

    model: torch.nn.Module
    cfg: object  # zoomin.config.Config
    readout: object = None  # zoomin.config.ReadoutConfig: the answer (cfg.readout, passes as --passes says)
    seed: int = 0
    max_pixels: int = 0
    fallback_mpp: float | None = None  # --slide-mpp
    heatmaps: Path | None = None
    explore: Path | None = None

    def open(self, item: tuple[int, Slide]):
        return open_slide(self.model, self.cfg, item[1], self.max_pixels, self.fallback_mpp)

    def open_and_row(self, item: tuple[int, Slide], lane: loader.Lane | None = None) -> tuple[list | None, list, float]:
        """A worker's whole slide: opened, predicted and its outputs written -> (``row``'s two, seconds).
        ``lane``: opened outside it, predicted holding it, its pixel reads letting it go."""
        t0 = time.perf_counter()
        src = _attempt(self.open, item)
        if lane is None:
            return *self.row(item[1], src), time.perf_counter() - t0
        with lane:
            row = self.row(item[1], src if isinstance(src, Exception) else loader.LaneSource(src, lane))
        return *row, time.perf_counter() - t0

    def row(self, slide: Slide, src) -> tuple[list | None, list[str]]:
        """The slide's CSV values from ``slide_id`` to ``prediction`` (heatmaps and explorer page
        written first), or None when it failed; and the lines to say on stderr about it (said by the
        caller, in input order)."""
        try:
            if isinstance(src, Exception):  # opening or prefetching it failed
                raise src
            probs, tr = predict_slide(self.model, src, slide.slide_id, self.readout, self.seed)
        except (OSError, ValueError, RuntimeError) as e:
            return None, [f"zoomin: skipped {slide.path}: {one_line(e, slide.path, command=False)}"]
        notes = []
        try:
            if self.heatmaps:
                write_heatmaps(Path(self.heatmaps), slide.slide_id, src, tr)
            if self.explore:
                write_explorer(Path(self.explore), slide.slide_id, self.model, src, self.seed, probs, self.readout)
        except (OSError, ValueError, RuntimeError) as e:  # the prediction is still written
            notes.append(f"zoomin: no heatmaps/explorer for {slide.path}: {one_line(e, slide.path, command=False)}")
        return [slide.slide_id] + [f"{p:.6f}" for p in probs.tolist()] + [int(probs.argmax())], notes


def columns(cfg) -> list[str]:
    """The predictions CSV's header."""
    return ["slide_id"] + [f"p_{c}" for c in range(cfg.model.num_classes)] + ["prediction", "seconds"]


def predict(checkpoint: str | Path, inputs: list[str], out_csv: str | Path, heatmaps: str | Path | None = None,
            passes: int | None = None, seed: int = 0, progress: bool = True, max_pixels: int = 0,
            explore: str | Path | None = None, prefetch: int = 1, resume: bool = False,
            fallback_mpp: float | None = None, workers: int = 1, device: str = "cpu") -> tuple[int, int]:
    """Predict every slide (files, or manifests ending in .csv): the model's answer as the
    checkpoint's ``readout`` section defines it, ``passes`` (when given) replacing its passes. A slide
    that fails is reported on stderr and skipped, the rest are still written. ``prefetch``: slides
    opened and decoded ahead while the model runs, taking turns with it on one compute lane
    (``_rows``). ``resume``: keep the complete rows of an existing ``out_csv`` (and of a stopped
    torchrun's part files) and predict only the other slides. ``fallback_mpp``: the slides'
    pixel size when neither the file nor the manifest row states it. ``workers`` > 1: that many slides
    opened and predicted at once in threads (one slide's reads overlap another's compute; rows
    still in input order; ``prefetch`` is then unused; the predictions do not change). ``device``:
    where the model runs (each slide's generator lives there). Under torchrun each rank predicts
    every ``world``-th slide and rank 0 merges the parts into ``out_csv`` (kept rows first, then the
    new ones in input order). Returns (written, failed) over all ranks, kept rows not counted."""
    from . import slide_cache
    from .checkpoint import load_model
    if prefetch < 0:
        raise ValueError(f"--prefetch {prefetch}: expected 0 (off) or more slides")
    if fallback_mpp is not None and not fallback_mpp > 0:
        raise ValueError(f"--slide-mpp {fallback_mpp}: a pixel size must be > 0 µm")
    if workers < 1:
        raise ValueError(f"workers {workers}: expected 1 or more slides at once")
    model, cfg = load_model(checkpoint)
    model.to(device)
    readout = cfg.readout if passes is None else passes_readout(cfg.readout, passes)
    slides = list_slides(inputs)
    if progress and distributed.is_main() and slides:
        from .doctor import reading  # how the slides are read, before the first one is predicted
        try:
            print(f"zoomin predict: {reading(cfg, slides, fallback_mpp=fallback_mpp)}", file=sys.stderr, flush=True)
        except (OSError, ValueError):  # the first slide is unreadable: its row says so
            pass
    out_csv = Path(out_csv)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    if explore:
        try:
            import zoomin.viz.explorer  # noqa: F401  (fail before any slide is read, not on the first one)
        except ImportError as e:
            raise RuntimeError(f"--explore needs the 'viz' extra: pip install 'zoomin[viz]' ({e.name} is missing)") from None
    for folder in (heatmaps, explore):
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
    header = columns(cfg)
    distributed.init("cpu")
    rank, world = distributed.rank_and_world()
    parts = sorted(out_csv.parent.glob(glob.escape(out_csv.name) + ".part*"))  # a stopped torchrun run's
    kept = previous_rows(out_csv, parts, header) if resume else []
    done = {r[0] for r in kept}
    mine = [(i, s) for i, s in enumerate(slides) if s.slide_id not in done][rank::world]
    distributed.barrier()  # every rank has read the old files
    if rank == 0:
        start_csv(out_csv, header, kept)
        for part in parts:
            part.unlink()
    distributed.barrier()
    part = out_csv if world == 1 else part_path(out_csv, rank)
    if world > 1:
        start_csv(part, ["_index"] + header, [])
    slide_cache.configure()  # before the first slide is opened
    run = Run(model, cfg, readout, seed, max_pixels, fallback_mpp, heatmaps, explore)
    written, failed = _predict_into(run, mine, part, world > 1, prefetch, progress, workers)
    if world > 1:
        written, failed = (int(v) for v in distributed.all_sum([written, failed]))
        distributed.barrier()
        if rank == 0:
            merge_parts(out_csv, world, header)
        distributed.barrier()
    return written, failed


def _predict_into(run: Run, slides, out_csv: Path, index_column: bool, prefetch: int,
                  progress: bool, workers: int = 1) -> tuple[int, int]:
    """Predict ``slides`` [(index, Slide)], appending to ``out_csv`` a row as soon as it is known;
    ``seconds``: the slide's wall time as ``_rows`` counts it."""
    from .progress import bar as progress_bar
    written = failed = 0
    every = max(1, min(100, len(slides) // 20))  # off a terminal: a line per this many slides
    with open(out_csv, "a", newline="") as fh, progress_bar(total=len(slides), desc="slides", enabled=progress,
                                                            every=every) as bar:
        w = csv.writer(fh)
        for (i, slide), row, notes, seconds in _rows(run, slides, prefetch, workers):
            for line in notes:
                print(line, file=sys.stderr)
            bar.update()
            if row is None:
                failed += 1
                continue
            w.writerow(([i] if index_column else []) + row + [f"{seconds:.3f}"])
            fh.flush()
            written += 1
    return written, failed


def _rows(run: Run, slides, prefetch: int, workers: int):
    """``((index, Slide), row or None, lines for stderr, seconds)`` in input order (seconds: in its
    worker, from opening it to its outputs; with ``prefetch`` 0, in this thread, its wait
    included). ``workers`` > 1: that many slides predicted at once. Else, with ``prefetch`` N > 0,
    N + 1 slides in worker threads taking turns on one compute lane (``loader.Lane``): while one
    computes, the others are opened or wait for their stage-II and sub-tile reads, which depend on
    the slide's own draws and so cannot be read ahead.
    ``prefetch`` 0: one slide after another in this thread."""
    if workers > 1 or prefetch > 0:
        lane = loader.Lane() if workers == 1 else None
        for item, done, _ in prepared(slides, lambda item: run.open_and_row(item, lane),
                                     workers if workers > 1 else prefetch + 1):
            if isinstance(done, Exception):
                raise done
            yield item, *done
        return
    for item, src, waited in prepared(slides, run.open, 0):
        t0 = time.perf_counter()
        row = run.row(item[1], src)
        del src  # released before the next slide is prefetched
        yield item, *row, waited + time.perf_counter() - t0


def part_path(out_csv: Path, rank: int) -> Path:
    return out_csv.with_name(f"{out_csv.name}.part{rank}")


def complete_rows(path: Path, header: list[str]) -> list[list[str]]:
    """The complete rows of a predictions CSV (or part file) written with ``header``: every column
    present, numbers where numbers belong; a last line without its line end (a write cut short) is
    dropped. Other columns than ``header`` are a one-line ``ValueError``."""
    text = path.read_text(encoding="utf-8", errors="replace")
    rows = list(csv.reader(io.StringIO(text[:text.rfind("\n") + 1])))
    if not rows:
        return []
    if rows[0] != header:
        raise ValueError(f"{path}: columns {','.join(rows[0])} are not this model's {','.join(header)}; "
                         f"--resume needs the same model, or another --out")
    numeric = [j for j, c in enumerate(header) if c not in ("slide_id",)]
    return [r for r in rows[1:] if len(r) == len(header) and r[header.index("slide_id")] and _numbers(r, numeric)]


def _numbers(row: list[str], cols: list[int]) -> bool:
    try:
        return all(math.isfinite(float(row[j])) for j in cols)
    except ValueError:
        return False


def previous_rows(out_csv: Path, parts: list[Path], header: list[str]) -> list[list[str]]:
    """``--resume``: the complete rows of ``out_csv`` and of ``parts`` (a stopped torchrun's), as
    ``header``'s columns; the first row of a slide_id wins."""
    rows = complete_rows(out_csv, header) if out_csv.is_file() else []
    for part in parts:
        rows += [r[1:] for r in complete_rows(part, ["_index"] + header)]
    seen: set[str] = set()
    return [r for r in rows if not (r[0] in seen or seen.add(r[0]))]


def start_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    """``path`` (re)written with ``header`` and ``rows``, atomically; predictions are appended after."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    atomic_write_text(path, buf.getvalue(), newline="")


def merge_parts(out_csv: Path, world: int, header: list[str]) -> None:
    """Rank 0: ``out_csv``'s rows (kept by --resume), then the part files of all ranks in input
    order -> ``out_csv`` (atomically); parts removed."""
    parts = [part_path(out_csv, r) for r in range(world)]
    new = [r for part in parts for r in complete_rows(part, ["_index"] + header)]
    start_csv(out_csv, header, complete_rows(out_csv, header) + [r[1:] for r in sorted(new, key=lambda r: int(r[0]))])
    for part in parts:
        part.unlink()
