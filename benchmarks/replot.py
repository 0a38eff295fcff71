"""Draw a benchmark's interactive plots from the CSV files it wrote, without running anything
again: ``memory.html`` from ``bench.csv`` (and ``variance.csv``) and ``accuracy.html`` from
``accuracy.csv`` and ``accuracy_curves.csv`` (``benchmarks/bench.py``; an accuracy run's plots are
kept under that name in ``docs/bench``), and ``slide_memory.html`` from ``slide_memory.csv``
(``benchmarks/slide_memory.py``). Saved offline (``zoomin.viz.offline``: every script and
stylesheet inline), so the documentation site can frame them. The site draws them when it is built
(``docs/conf.py``); the repository keeps only the CSV files.

    python benchmarks/replot.py docs/bench [--out FOLDER]      # default: beside the CSV files
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


def replot(folder: Path, out: Path | None = None) -> list[Path]:
    """The plots that the CSV files in ``folder`` allow, written into ``out`` (default: ``folder``)
    -> the files written."""
    out = out or folder
    out.mkdir(parents=True, exist_ok=True)
    written = []
    bench, variance = _rows(folder / "bench.csv"), _rows(folder / "variance.csv")
    if bench or variance:
        write_plot(medians(bench), variance, out / "memory.html")
        written.append(out / "memory.html")
    accuracy, curves = _rows(folder / "accuracy.csv"), _rows(folder / "accuracy_curves.csv", ("test_accuracy",))
    if accuracy:
        write_plot(medians([]), [], out / "accuracy.html", accuracy, curves)
        written.append(out / "accuracy.html")
    if (folder / "slide_memory.csv").exists():
        slide_memory_plot(pd.read_csv(folder / "slide_memory.csv"), out / "slide_memory.html")
        written.append(out / "slide_memory.html")
    return written


def slide_memory_plot(df: pd.DataFrame, path: Path) -> None:
    """``benchmarks/slide_memory.py``'s plot: peak memory of ``zoomin predict`` against slide size,
    measured (``peak_rss_gib``, where measured) and the memory model's curves (``two_stage``,
    ``one_stage``, ``whole_image``), from one row per ``size``."""
    import holoviews as hv
    import holoviews.plotting.bokeh  # noqa: F401  (registers the bokeh backend)

    from zoomin.viz.offline import save_html  # scripts and stylesheets inline: the page draws offline
    hv.Store.set_current_backend("bokeh")
    lines = [hv.Curve(df, "size", col, label=f"{col.replace('_', ' ')} (model)").opts(line_dash="dashed")
             for col in ("two_stage", "one_stage", "whole_image")]
    measured = df[["size", "peak_rss_gib"]].dropna()
    pts = hv.Scatter(measured, "size", "peak_rss_gib", label="zoomin predict (measured)").opts(size=9)
    fig = hv.Overlay([*lines, pts * hv.Curve(measured, "size", "peak_rss_gib")]).opts(
        logx=True, logy=True, width=720, height=420, xlabel="slide side (pixels at the scan's µm/px)",
        ylabel="peak RSS (GiB)", legend_position="top_left", title="Peak memory against slide size")
    save_html(fig, path, title="zoomin predict: memory against slide size")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("folder", type=Path, help="a folder of a benchmark's CSV files (docs/bench, docs)")
    p.add_argument("--out", type=Path, default=None, help="where to write the plots (default: FOLDER)")
    args = p.parse_args(argv)
    for path in replot(args.folder, args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
