"""Tables and plots of the benchmarks: medians over repeats and two-stage / one-stage memory
ratios (pandas), markdown tables (``DataFrame.to_markdown``, which needs ``tabulate``: the
``bench`` extra), CSV files and the holoviews page of ``benchmarks/bench.py``."""
from __future__ import annotations

import platform
from pathlib import Path

import pandas as pd
import torch

KEYS = ["part", "model", "phase", "size"]  # one measured configuration
MEASURES = ["step_mb", "seconds", "process_peak_rss_mb"]  # what a probe reports


def num(v, digits: int = 1) -> str:
    """A number with thousands separators (``digits`` decimals for a float); "" when missing."""
    if v is None or v == "" or pd.isna(v):
        return ""
    return f"{v:,.{digits}f}" if isinstance(v, float) else f"{v:,}"


def side(v) -> str:
    return f"{int(v):,}²"


def pvalue(v: float) -> str:
    return f"{v:.3f}" if v >= 0.001 else "< 0.001"


def table(df: pd.DataFrame, text=()) -> str:
    """``df``, its cells already formatted, as a markdown table: the ``text`` columns
    left-aligned, the others (numbers) right-aligned."""
    return df.to_markdown(index=False, disable_numparse=True,
                          colalign=["left" if c in text else "right" for c in df.columns])


def write_csv(rows, path: Path) -> None:
    pd.DataFrame(rows).to_csv(path, index=False)


def medians(rows: list[dict]) -> pd.DataFrame:
    """One row per configuration (``KEYS``): the medians of ``MEASURES`` over the repeats that
    ran (``runs`` of them), or, where none did, the reason in ``note``."""
    df = pd.DataFrame(rows).reindex(columns=[*KEYS, *MEASURES, "error"])
    ok = df[df["error"].fillna("") == ""]
    out = df.groupby(KEYS, sort=False)["error"].first().rename("note").to_frame()
    out = out.join(ok.groupby(KEYS, sort=False)[MEASURES].median())
    out["runs"] = ok.groupby(KEYS, sort=False).size().reindex(out.index, fill_value=0)
    out["note"] = out["note"].where(out["runs"] == 0, "")
    return out.reset_index()


def ratios(table: pd.DataFrame) -> pd.DataFrame:
    """Two-stage / one-stage step memory at each (part, phase, size) both were measured at."""
    mem = table.dropna(subset=["step_mb"]).set_index(KEYS)["step_mb"].unstack("model")
    if not {"zoom_in", "one_stage"} <= set(mem.columns):
        return pd.DataFrame(columns=["part", "phase", "size", "ratio"])
    return (mem["zoom_in"] / mem["one_stage"].clip(lower=1e-9)).dropna().rename("ratio").reset_index()


def memory_section(cfg, medians_: pd.DataFrame, ratios_: pd.DataFrame) -> list[str]:
    t = medians_.sort_values(["part", "phase", "model", "size"])
    md = pd.DataFrame({"part": t["part"], "model": t["model"], "phase": t["phase"], "size": t["size"].map(side),
                       "step memory (MB)": t["step_mb"].map(num), "time (s)": t["seconds"].map(lambda v: num(v, 3)),
                       "process peak (MB)": t["process_peak_rss_mb"].map(lambda v: num(v, 0)), "note": t["note"]})
    lines = [f"Machine: {platform.machine()}, {torch.get_num_threads()} torch threads available, device "
             f"`{cfg.device}`{' (bf16 autocast)' if cfg.amp else ''}; torch {torch.__version__}. Medians of "
             f"{cfg.repeats} fresh processes.",
             "Memory: peak resident memory during the measured call minus the resident memory before it (CPU; "
             "model activations, gradients and optimiser state, not the input), or CUDA max_memory_allocated minus "
             "the allocation before it. `process peak` is the fresh process's own high-water mark (VmHWM).", "",
             table(md, text=("part", "model", "phase", "note"))]
    if len(ratios_):
        r = pd.DataFrame({"part": ratios_["part"], "phase": ratios_["phase"], "size": ratios_["size"].map(side),
                          "ratio": ratios_["ratio"].map(lambda v: f"{v:.3f}")})
        lines += ["", "Two-stage / one-stage step memory at equal detail:", "", table(r, text=("part", "phase"))]
    return lines


def variance_section(var_rows: list[dict], draws: int) -> list[str]:
    v = pd.DataFrame(var_rows)
    md = pd.DataFrame({"N": v["N"].map(str), "stage II with replacement": v["with_replacement"].map("{:.4f}".format),
                       "without (eq 9)": v["without_replacement"].map("{:.4f}".format),
                       "ratio": v["ratio"].map("{:.2f}".format)})
    return ["", f"Estimator variance (64 tiles x 16 sub-tiles, D = 8, {draws:,} draws):", "", table(md)]


def accuracy_section(acc_rows: list[dict], paired: list[dict]) -> list[str]:
    a, r0 = pd.DataFrame(acc_rows), acc_rows[0]
    ps = sorted(int(k.split("_")[1]) for k in r0 if k.startswith("accuracy_") and k.endswith("_passes"))
    heads = {f"accuracy_{p}_passes": f"P = {p}" for p in ps}
    heads |= {c: h for c, h in (("accuracy_single_pass", "1 pass (mean)"), ("accuracy_topk", "top-k")) if c in r0}
    md = pd.DataFrame({"model": a["model"], "N": a["N"].map(str),
                       **{h: a[c].map(lambda v: num(v, 3)) for c, h in {"test_accuracy": "test accuracy", **heads}.items()},
                       "step memory (MB)": a["step_mb"].map(num),
                       "s/epoch": a["seconds_per_epoch"].map(lambda v: num(v, 0))})
    lines = ["", f"Accuracy against training-step memory (Megapixel MNIST {r0['canvas']}², {r0['train_size']:,} "
             f"images per epoch, {r0['epochs']} epochs; step memory: one training step on a batch of "
             f"{r0['batch']}, the images not counted; test accuracy: the trainer's last test; then every run "
             f"on the same test images with P sampled passes, read out as each config's readout.method says (averaged, or a vote of places); 1 pass (mean): the mean accuracy of those "
             f"passes on their own; top-k: deterministic, the N most attended patches):", "", table(md, text=("model",))]
    if paired:
        p = pd.DataFrame(paired)
        md = pd.DataFrame({"N": p["N"].map(str), "passes": p["passes"].map(str),
                           "two stages": p["zoom_in"].map("{:.3f}".format), "one stage": p["one_stage"].map("{:.3f}".format),
                           "difference [95% CI]": [f"{r.difference:+.3f} [{r.ci_low:+.3f}, {r.ci_high:+.3f}]"
                                                   for r in p.itertuples()],
                           "two better": p["only_zoom_in"].map(str), "one better": p["only_one_stage"].map(str),
                           "p": p["p_value"].map(pvalue)})
        lines += ["", "Two stages against one stage on the same test images (difference with a 95% interval; "
                  "exact McNemar test on the images only one of them gets right; for `single`, the share of "
                  "single passes right per image and a paired normal test):", "",
                  table(md, text=("difference [95% CI]",))]
    return lines


def write_markdown(cfg, medians_, ratios_, var_rows, path: Path, acc_rows=(), paired=()) -> None:
    lines = ["# Benchmarks: memory, time, estimator variance, accuracy", ""]
    if len(medians_):
        lines += memory_section(cfg, medians_, ratios_)
    if var_rows:
        lines += variance_section(var_rows, cfg.variance_draws)
    if acc_rows:
        lines += accuracy_section(list(acc_rows), list(paired))
    path.write_text("\n".join(lines) + "\n")


def write_plot(medians_: pd.DataFrame, var_rows, path: Path, acc_rows=(), curve_rows=()) -> None:
    """Step memory against image side (log-log), one curve per model and phase; variance against
    N; accuracy against memory and the training curves."""
    import holoviews as hv
    import holoviews.plotting.bokeh  # noqa: F401  (registers the bokeh backend)

    from zoomin.viz.offline import save_html  # scripts and stylesheets inline: nothing from a CDN
    hv.Store.set_current_backend("bokeh")
    size, mem = hv.Dimension("size", label="image side"), hv.Dimension("step_mb", label="step memory (MB)")
    acc = hv.Dimension("test_accuracy", label="test accuracy")
    panels = []
    for part, g in medians_.dropna(subset=["step_mb"]).sort_values("size").groupby("part"):
        curves = [hv.Curve(s, size, mem, label=f"{m} {ph}") * hv.Scatter(s, size, mem, label=f"{m} {ph}")
                  for (m, ph), s in g.groupby(["model", "phase"])]
        panels.append(hv.Overlay(curves).opts(
            hv.opts.Curve(logx=True, logy=True), hv.opts.Scatter(logx=True, logy=True, size=6),
            hv.opts.Overlay(title=f"{part}: memory per call", width=560, height=400, legend_position="top_left")))
    if var_rows:
        v = pd.DataFrame(var_rows)
        panels.append(hv.Overlay([hv.Curve(v, "N", hv.Dimension(k, label="total variance"), label=k)
                                  for k in ("with_replacement", "without_replacement")]).opts(
            hv.opts.Curve(logx=True, logy=True), hv.opts.Overlay(title="estimator variance", width=560, height=400)))
    if acc_rows:
        a = pd.DataFrame(acc_rows)
        panels.append(hv.Overlay([hv.Scatter(s, mem, [acc, "N"], label=m).opts(size=9, tools=["hover"])
                                  for m, s in a.groupby("model")]).opts(
            hv.opts.Overlay(title="accuracy against memory", width=560, height=400)))
    tested = pd.DataFrame(list(curve_rows)).query("test_accuracy != ''") if curve_rows else pd.DataFrame()
    if len(tested):
        tested = tested.astype({"test_accuracy": float})
        panels.append(hv.Overlay([hv.Curve(s, "epoch", acc, label=f"{m} N={n}")
                                  for (m, n), s in tested.groupby(["model", "N"])]).opts(
            hv.opts.Overlay(title="test accuracy during training", width=560, height=400, legend_position="bottom_right")))
    if panels:
        save_html(hv.Layout(panels).cols(2), path, "benchmarks")
