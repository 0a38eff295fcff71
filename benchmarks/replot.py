"""Redraw a ``benchmarks/bench.py`` run's interactive plots from the CSV files it wrote, without
running anything again: ``memory.html`` from ``bench.csv`` (and ``variance.csv``), and
``accuracy.html`` from ``accuracy.csv`` and ``accuracy_curves.csv`` (an accuracy run's plots,
saved under that name in ``docs/bench``). Saved offline (``zoomin.viz.offline``: every script and
stylesheet inline), so the documentation site can frame them.

    python benchmarks/replot.py docs/bench
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import medians, write_plot  # noqa: E402


def _rows(path: Path, blank: tuple[str, ...] = ()) -> list[dict]:
    """A CSV's rows; the ``blank`` columns' empty cells as "" (as the run held them), the others' as NaN."""
    if not path.exists():
        return []
    df = pd.read_csv(path)
    return df.astype({c: object for c in blank}).fillna({c: "" for c in blank}).to_dict("records")


def replot(folder: Path) -> list[Path]:
    """The plots of the run in ``folder`` that its CSV files allow -> the files written."""
    written = []
    bench, variance = _rows(folder / "bench.csv"), _rows(folder / "variance.csv")
    if bench or variance:
        write_plot(medians(bench), variance, folder / "memory.html")
        written.append(folder / "memory.html")
    accuracy, curves = _rows(folder / "accuracy.csv"), _rows(folder / "accuracy_curves.csv", ("test_accuracy",))
    if accuracy:
        write_plot(medians([]), [], folder / "accuracy.html", accuracy, curves)
        written.append(folder / "accuracy.html")
    return written


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path, help="a bench.py run's folder (docs/bench)")
    for path in replot(p.parse_args(argv).folder):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
