"""How the ``places`` readout's two settings move accuracy, from one set of drawn passes.

Each run draws ``max(--passes)`` sampled passes per image once (seeded, as ``paired.correctness``
does); every (confidence, radius) pair and every P then reads the same draws out
(``zoomin.readout.read_out``), beside the mean of the passes' class probabilities (the mixture).
Choose the settings on images that are not the test set: ``--seen-digits`` scores images made of
the training digits in new places (``paired.load_run``).

    python benchmarks/place_sweep.py runs/acc40i/accuracy/zoom_in_n10 --seen-digits --out docs/bench/place_sweep.md
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch
from paired import batches, load_run
from report import table

from zoomin.readout import PASS_ESTIMATE, iter_passes, read_out


@torch.no_grad()
def sweep(run: Path, passes: list[int], confidences: list[float], radii: list[float], rates: list[float] = (0.5,), test_size: int = 0,
          batch: int = 50, seed: int = 0, seen_digits: bool = False, data: dict | None = None) -> pd.DataFrame:
    """Accuracy of one run -> rows (passes, readout, confidence, radius, rate, accuracy); ``data``:
    ``DataConfig`` fields changed for the images scored (``paired.load_run``)."""
    model, _, data = load_run(run, test_size, "places", seen_digits, data)
    gen = torch.Generator().manual_seed(seed)
    settings = [("mean", 0.0, 0.0, 0.0)] + [("places", c, r, q) for c in confidences for r in radii for q in rates]
    right = {(p, s): 0 for p in passes for s in settings}
    for x, y in batches(data, batch):
        traces = [t for t, in iter_passes(model, x, passes=max(passes), generator=gen,
                                          estimate=PASS_ESTIMATE["places"])]  # one per pass
        for p in passes:
            for s in settings:
                readout, conf, radius, rate = s
                right[p, s] += int((read_out(traces[:p], readout, radius, conf, rate).argmax(-1) == y).sum())
    return pd.DataFrame([{"passes": p, "readout": s[0], "confidence": s[1], "radius": s[2], "rate": s[3], "accuracy": n / len(data)}
                         for (p, s), n in right.items()])


def markdown(runs: list[Path], df: pd.DataFrame, args: str, what: str) -> str:
    lines = [f"# The places readout's settings on {what}", "", f"`python benchmarks/place_sweep.py {args}`", "",
             "Accuracy of each run from the same drawn passes: `mean` is the mean of the passes' class "
             "probabilities; the other columns are the `places` readout at `radius / full rate` (radius in "
             "level-0 pixels, 0: half the side of the patches fed to f; full rate 0: every place drawn votes "
             "whole), one row per number of passes and confidence.", ""]
    for run in runs:
        d = df[df.run == str(run)]
        wide = d[d.readout == "places"].pivot_table(index=["passes", "confidence"], columns=["radius", "rate"], values="accuracy")
        wide.columns = [f"{r:g} / {q:g}" for r, q in wide.columns]
        mean = d[d.readout == "mean"].set_index("passes").accuracy
        wide.insert(0, "mean", [mean[p] for p, _ in wide.index])
        cells = wide.map(lambda v: f"{v:.3f}").reset_index().astype(str)
        lines += [f"## `{run}`", "", table(cells), ""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path, nargs="+", help="training output folders (with checkpoint.pt)")
    p.add_argument("--passes", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--confidence", type=float, nargs="+", default=[0.4, 0.5, 0.6, 0.7])
    p.add_argument("--radius", type=float, nargs="+", default=[0.0])
    p.add_argument("--full-rate", type=float, nargs="+", default=[0.0, 0.25, 0.5, 1.0])
    p.add_argument("--test-size", type=int, default=0, help="images (0: the runs' own test-set size)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seen-digits", action="store_true", help="images of the training digits in new places")
    p.add_argument("--data", nargs="*", default=[], metavar="KEY=VALUE",
                   help="generator settings changed for the images scored, e.g. n_noise=100 (integers)")
    p.add_argument("--out", type=Path, default=None, help="also write the markdown here")
    a = p.parse_args()
    if min(a.passes) < 1:
        p.error("--passes must be >= 1")
    try:
        data = {k: int(v) for k, v in (item.split("=", 1) for item in a.data)}
    except ValueError:
        p.error(f"--data takes KEY=INTEGER items, got {a.data}")
    torch.set_num_threads(a.threads)
    df = pd.concat([sweep(r, sorted(set(a.passes)), a.confidence, a.radius, a.full_rate, a.test_size, seed=a.seed,
                          seen_digits=a.seen_digits, data=data).assign(run=str(r)) for r in a.runs])
    args = (" ".join(map(str, a.runs)) + " --passes " + " ".join(map(str, a.passes)) + " --confidence "
            + " ".join(f"{c:g}" for c in a.confidence) + " --radius " + " ".join(f"{r:g}" for r in a.radius)
            + " --full-rate " + " ".join(f"{q:g}" for q in a.full_rate)
            + (" --seen-digits" if a.seen_digits else "") + (" --data " + " ".join(a.data) if a.data else ""))
    what = "images of the training digits in new places" if a.seen_digits else "test images"
    text = markdown(a.runs, df, args, what + (f" ({', '.join(a.data)})" if a.data else ""))
    if a.out:
        a.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
