"""The benchmark harness in ``benchmarks/`` (outside the package): ``bench.py --smoke`` (the tiny
version of the suite), its tables, the accuracy part and the paired statistics."""
import csv
import importlib
import json
import sys
from collections import namedtuple
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from zoomin.cli import main as zoomin


def _benchmark(name: str):
    """A module of ``benchmarks/``, imported the way the scripts import one another: by name,
    with that folder on ``sys.path`` (appended, so it shadows nothing installed)."""
    folder = str(Path(__file__).parents[1] / "benchmarks")
    if folder not in sys.path:
        sys.path.append(folder)
    return importlib.import_module(name)


def _md_rows(text: str) -> list[list[str]]:
    """The cells of every markdown table row in ``text`` (header rows included, rules left out)."""
    return [[c.strip() for c in line.strip().strip("|").split("|")] for line in text.splitlines()
            if line.startswith("|") and not set(line.strip()) <= set("|:- ")]


def _csv(path: Path) -> list[dict]:
    return list(csv.DictReader(open(path)))


def _tiny_run(tmp_path: Path, model: str, data: str) -> Path:
    """One epoch of a tiny two-stage Megapixel MNIST run (300² canvases) -> its run folder."""
    run, cfg = tmp_path / "run", tmp_path / "tiny.yaml"
    cfg.write_text(f"model: {{kind: zoom_in, stage1_resolution: 0.1, tile: 60, stage2_resolution: 0.5, subtile: 30, {model}}}\n"
                   f"data: {{canvas: 300, {data}}}\ntrain: {{epochs: 1, batch_size: 4}}\n")
    assert zoomin(["train", "--config", str(cfg), "--out", str(run), "--quiet"]) == 0
    return run


def test_command_line_flags_map_to_the_config(tmp_path):
    bench = _benchmark("bench")
    args = ["--out", str(tmp_path), "--parts", "arrays,accuracy", "--sizes", "300,600", "--models", "zoom_in",
            "--accuracy-ns", "3,7", "--accuracy-passes", "1,4", "--canvas", "400", "--accuracy-jobs", "2"]
    cfg = bench.config(bench.parser().parse_args(args))
    assert (cfg.out, cfg.parts, cfg.array_sizes, cfg.models, cfg.phases) == (
        tmp_path, ("arrays", "accuracy"), (300, 600), ("zoom_in",), ("train", "infer"))
    assert {k: cfg.accuracy[k] for k in ("ns", "passes", "canvas", "jobs")} == dict(ns=(3, 7), passes=(1, 4), canvas=400, jobs=2)
    smoke = bench.config(bench.parser().parse_args(args + ["--smoke"]))
    assert (smoke.parts, smoke.array_sizes, smoke.repeats, smoke.phases) == (("arrays", "variance"), (256, 512), 1, ("train",))
    with pytest.raises(SystemExit):  # the package's CLI has no bench command any more
        zoomin(["bench", "--out", str(tmp_path)])


@pytest.mark.slow
def test_smoke_bench_writes_tables_and_measures_growth(tmp_path):
    assert _benchmark("bench").main(["--out", str(tmp_path), "--smoke", "--quiet"]) == 0
    rows = _csv(tmp_path / "bench.csv")
    assert {(r["model"], r["size"]) for r in rows} == {(m, s) for m in ("zoom_in", "one_stage", "cnn")
                                                      for s in ("256", "512")}
    assert not any(r["error"] for r in rows)
    mem = {(r["model"], int(r["size"])): float(r["step_mb"]) for r in rows}
    assert mem[("cnn", 512)] > 2 * mem[("cnn", 256)]  # a whole-image CNN grows with the area
    md = (tmp_path / "bench.md").read_text()
    cells = _md_rows(md)
    cnn = next(c for c in cells if c[:4] == ["arrays", "cnn", "train", "512²"])
    assert float(cnn[4].replace(",", "")) == pytest.approx(mem[("cnn", 512)], abs=0.05)  # the medians of one run
    assert ["arrays", "train", "512²", f"{mem['zoom_in', 512] / mem['one_stage', 512]:.3f}"] in cells
    assert "Estimator variance" in md and [c[0] for c in cells if c[0] in ("1", "4")] == ["1", "4"]
    assert [r["N"] for r in _csv(tmp_path / "variance.csv")] == ["1", "4"]


def test_skipped_and_missing_configurations_are_reported():
    report = _benchmark("report")
    run = dict(part="arrays", phase="train", size=1000)
    rows = [dict(run, model="zoom_in", repeat=0, step_mb=10.0, seconds=1.0, process_peak_rss_mb=300.0),
            dict(run, model="zoom_in", repeat=1, step_mb=14.0, seconds=3.0, process_peak_rss_mb=310.0),
            dict(run, model="one_stage", repeat=0, step_mb=100.0, seconds=1.0, process_peak_rss_mb=400.0, error=None),
            dict(run, model="one_stage", repeat=1, error="exit -9: killed"),  # one of two repeats failed
            dict(run, model="cnn", size=16000, repeat=0, error="skipped: predicted 40 GB")]
    table = report.medians(rows).set_index("model")
    assert (table.loc["zoom_in", "step_mb"], table.loc["zoom_in", "seconds"], table.loc["zoom_in", "runs"]) == (12.0, 2.0, 2)
    assert (table.loc["one_stage", "step_mb"], table.loc["one_stage", "runs"], table.loc["one_stage", "note"]) == (100.0, 1, "")
    assert table.loc["cnn", "runs"] == 0 and table.loc["cnn", "note"] == "skipped: predicted 40 GB"
    assert report.ratios(table.reset_index()).to_dict("records") == [dict(part="arrays", phase="train", size=1000, ratio=0.12)]
    assert report.ratios(table.reset_index().query("model != 'one_stage'")).empty  # nothing to compare with


def test_probe_measures_in_a_fresh_process_and_reports_failures():
    probe = _benchmark("probe")
    src = probe.NoiseSource((1000, 600), channels=3, seed=1, batch_size=2)
    view = src.view(0.1)  # (2, 3, 100, 60): generated, never stored
    assert view.shape == (2, 3, 100, 60) and src.pixels_read == 2 * 100 * 60
    assert torch.equal(view, probe.NoiseSource((1000, 600), 3, 1, 2).view(0.1))  # deterministic per call order
    bad = probe.measure(probe.Probe(model="no_such_model", size=64))
    assert bad["error"].startswith("exit 1: ") and bad["model"] == "no_such_model"


@pytest.mark.slow
def test_accuracy_part_trains_both_models_and_measures_their_step_memory(tmp_path):
    assert _benchmark("bench").main(["--out", str(tmp_path), "--parts", "accuracy", "--quiet", "--accuracy-epochs", "1",
                                     "--accuracy-ns", "3", "--accuracy-train-size", "16", "--accuracy-test-size", "16",
                                     "--canvas", "400"]) == 0
    rows = _csv(tmp_path / "accuracy.csv")
    assert [(r["model"], r["N"], r["epochs"]) for r in rows] == [("zoom_in", "3", "1"), ("one_stage", "3", "1")]
    cols = ("accuracy_4_passes", "accuracy_16_passes", "accuracy_single_pass", "accuracy_topk")
    for r in rows:
        metrics = json.loads((tmp_path / "accuracy" / f"{r['model']}_n3" / "metrics.json").read_text())
        assert float(r["test_accuracy"]) == metrics["test_accuracy"]  # the trainer's own test
        assert float(r["step_mb"]) > 0 and not r["error"]
        for col in cols[:2] + cols[3:]:  # k of the 16 test images right
            assert float(r[col]) * 16 == round(float(r[col]) * 16)
        assert float(r["accuracy_single_pass"]) * 16 * 16 == round(float(r["accuracy_single_pass"]) * 16 * 16)
    paired = _csv(tmp_path / "accuracy_paired.csv")
    assert [(r["N"], r["passes"]) for r in paired] == [("3", "4"), ("3", "16"), ("3", "single"), ("3", "topk")]
    for r, col in zip(paired, cols):
        assert float(r["zoom_in"]) == float(rows[0][col])  # the paired rows are the runs' own accuracies
        assert float(r["one_stage"]) == float(rows[1][col])
        assert float(r["difference"]) == pytest.approx(float(r["zoom_in"]) - float(r["one_stage"]))
        if r["passes"] != "single":  # correctness: the difference is the discordant images' balance
            assert float(r["difference"]) == pytest.approx((int(r["only_zoom_in"]) - int(r["only_one_stage"])) / 16)
        if r["only_zoom_in"] == r["only_one_stage"] and r["passes"] != "single":
            assert float(r["p_value"]) == 1.0
        assert float(r["ci_low"]) <= float(r["difference"]) <= float(r["ci_high"])
    cells = _md_rows((tmp_path / "bench.md").read_text())
    assert ["model", "N", "test accuracy", "P = 4", "P = 16", "1 pass (mean)", "top-k", "step memory (MB)", "s/epoch"] in cells
    assert [c[:2] for c in cells if c[:2] in (["3", "topk"], ["3", "single"])] == [["3", "single"], ["3", "topk"]]


@pytest.mark.slow
def test_accuracy_part_runs_jobs_in_parallel_and_writes_the_curves(tmp_path):
    assert _benchmark("bench").main(["--out", str(tmp_path), "--parts", "accuracy", "--quiet", "--accuracy-epochs", "2",
                                     "--accuracy-ns", "2", "--accuracy-train-size", "8", "--accuracy-test-size", "8",
                                     "--canvas", "300", "--accuracy-jobs", "2", "--accuracy-eval-every", "1"]) == 0
    rows = _csv(tmp_path / "accuracy.csv")
    assert [(r["model"], r["epochs"], r["batch"]) for r in rows] == [("zoom_in", "2", "32"), ("one_stage", "2", "32")]
    curves = _csv(tmp_path / "accuracy_curves.csv")
    assert [(r["model"], r["epoch"]) for r in curves] == [("zoom_in", "1"), ("zoom_in", "2"), ("one_stage", "1"),
                                                         ("one_stage", "2")]
    assert all(float(r["test_accuracy"]) * 8 == round(float(r["test_accuracy"]) * 8) for r in curves)  # tested every epoch
    for r in rows:  # the last point of each curve is the run's reported test
        assert [c["test_accuracy"] for c in curves if c["model"] == r["model"]][-1] == r["test_accuracy"]
    for kind in ("zoom_in", "one_stage"):  # each run trained in its own folder, resumable
        assert (tmp_path / "accuracy" / f"{kind}_n2" / "checkpoint.pt").is_file()


def test_megapixel_limits_coverage_measures_the_share_of_each_digit_a_patch_covers():
    mod = _benchmark("megapixel_limits")
    boxes = torch.tensor([[[90, 90, 50, 50], [114, 100, 50, 50], [500, 500, 50, 50]]])  # (1, 3, 4) x, y, w, h
    digits = torch.tensor([[[100, 100], [510, 510]]])  # (1, 2, 2) top-left (row, col)
    cov = mod.coverage(boxes, torch.tensor([[True, True, False]]), digits)  # (1, 2, 3)
    assert cov[0, 0].tolist() == [1.0, 0.5, 0.0]  # inside; half the columns; not its patch
    assert cov[0, 1].tolist() == [0.0, 0.0, 0.0]  # the patch over it is padding (not drawn)


def test_megapixel_limits_reading_cuts_digit_centred_patches_and_weighs_them_three_ways():
    mod = _benchmark("megapixel_limits")
    from zoomin.data.megapixel_mnist import DIGIT, load_mnist_digits
    Rec = namedtuple("Rec", "digits corners")
    recs = [Rec(np.array([0, 1]), np.array([[100, 200], [300, 40]])), Rec(np.array([2]), np.array([[5, 6]]))]
    rows, centres, classes = mod.digit_centres(recs, 3, np.random.default_rng(0))
    assert rows.tolist() == [0, 0, 1] and classes.tolist() == load_mnist_digits()[1][[0, 1, 2]].tolist()
    off = centres - torch.tensor([[100, 200], [300, 40], [5, 6]]) - DIGIT // 2
    assert (off.abs() <= 3).all()
    # one image, 5 digits, 3 classes; label 0 read on three patches with small margins, two confident
    # patches of class 1: the mean of the logits says 1, the mean of probabilities and the vote say 0
    logits = torch.tensor([[[1.0, 0, 0], [1, 0, 0], [1, 0, 0], [0, 9, 0], [0, 9, 0]]])
    right = mod.combined(logits, torch.tensor([0]))
    assert right["mean_logits"].tolist() == [False] and right["majority"].tolist() == [True]
    assert right["mean_probs"].tolist() == [False]  # 3 x 0.58 against 2 x 1.0: probabilities do not tally either
    tie = mod.combined(torch.eye(3)[[0, 1, 2]].unsqueeze(0) * 5, torch.tensor([0]))  # one vote each: no majority
    assert tie["majority"].tolist() == [False]
    images = load_mnist_digits()[0]
    alone = mod.centred_digits(np.array([3, 4]), 50, 2, np.random.default_rng(0))  # (2, 1, 50, 50)
    for patch, d in zip(alone[:, 0], (3, 4)):
        assert abs(float(patch.sum()) - images[d].sum() / 255.0) < 1e-3  # the whole digit, nothing else
        rows, cols = patch.nonzero(as_tuple=True)
        assert rows.float().mean().sub(24.5).abs() < 10 and cols.float().mean().sub(24.5).abs() < 10


@pytest.mark.slow
def test_megapixel_limits_supervised_reader_learns_the_test_pools_digits():
    r = _benchmark("megapixel_limits").supervised_reader("linear", epochs=2, jitter=6, seed=0, test_size=40)
    assert r["digits_read"] > 0.3 and r["output"] == "linear"  # chance: 0.1 (0.475 to 0.735 measured, by machine)
    assert all(0 <= r[k] <= 1 for k in ("mean_logits", "mean_probs", "majority"))


def test_paired_test_statistics():
    mod = _benchmark("paired")
    assert mod.mcnemar_exact(0, 0) == 1.0 and mod.mcnemar_exact(5, 5) == 1.0
    assert abs(mod.mcnemar_exact(0, 6) - 2 / 64) < 1e-12  # all six discordant images favour one model
    assert abs(mod.mcnemar_exact(2, 8) - 2 * 56 / 1024) < 1e-12  # 2 * P(Bin(10, 1/2) <= 2)
    assert mod.mcnemar_exact(8, 2) == mod.mcnemar_exact(2, 8)  # two-sided
    a = torch.tensor([True] * 60 + [False] * 40)
    b = torch.tensor([True] * 50 + [False] * 50)  # a right on 10 more images, never wrong where b is right
    r = mod.compare(a, b)
    assert (r["only_a"], r["only_b"]) == (10, 0) and abs(r["difference"] - 0.1) < 1e-12
    assert r["ci_low"] > 0 and abs(r["p_value"] - 2 / 1024) < 1e-12  # McNemar on the 10 discordant images
    with pytest.raises(ValueError, match="passes must be >= 1"):
        mod.correctness("nowhere", [0])
    shares_a = torch.tensor([1.0, 0.75, 0.5, 0.25] * 50)  # per-image share of single passes right
    r = mod.compare(shares_a, shares_a - 0.25 * (torch.arange(200) % 2))  # A better on every other image
    assert abs(r["difference"] - 0.125) < 1e-12 and (r["only_a"], r["only_b"]) == (100, 0)
    se = 0.125 * (200 / 199) ** 0.5 / 200 ** 0.5  # the differences: 0 or 0.25, half each (sample std / sqrt(n))
    assert abs(r["ci_low"] - (0.125 - 1.959964 * se)) < 1e-6 and abs(r["ci_high"] - (0.125 + 1.959964 * se)) < 1e-6
    assert r["p_value"] < 1e-6  # z = 14.1: the paired normal test
    assert mod.compare(shares_a, shares_a)["p_value"] == 1.0
    r = mod.compare(shares_a, shares_a - 0.01)  # a constant gap: no spread, certain
    assert (r["ci_low"], r["ci_high"], r["p_value"]) == pytest.approx((0.01, 0.01, 0.0))


@pytest.mark.slow
def test_paired_test_of_a_run_against_itself_finds_no_difference(tmp_path):
    mod = _benchmark("paired")
    from zoomin.data.megapixel_mnist import MegapixelMNIST
    from zoomin.config import ReadoutConfig
    from zoomin.readout import answer

    def predict_proba(model, x, passes=1, generator=None, **readout):
        return answer(model, x, ReadoutConfig(passes=passes, **readout), generator)[0]
    run = _tiny_run(tmp_path, "n_samples: 3", "train_size: 8, test_size: 12")
    same = mod.correctness(run, [1, 3], 0, 5, seed=7)
    again = mod.correctness(run, [1, 3], 0, 5, seed=7)
    assert [len(v) for v in same.values()] == [12, 12]
    r = mod.compare(same[3], again[3])  # same seed: the same sampled passes, the same predictions
    assert (r["only_a"], r["only_b"], r["difference"], r["p_value"]) == (0, 0, 0.0, 1.0)
    top7, top8 = (mod.correctness(run, [1], 0, 5, seed=s, topk=True) for s in (7, 8))
    shares = mod.correctness(run, [1, 3], 0, 5, seed=7, single=True)["single"]  # (12,) of 3 passes
    assert ((shares * 3).round() == shares * 3).all()
    assert (shares[same[1]] >= 1 / 3).all()  # an image the first pass got right has a share >= 1/3
    assert torch.equal(top7["topk"], top8["topk"])  # deterministic: no seed enters
    assert torch.equal(top7[1], same[1])  # the sampled passes are the same with or without top-k
    model, cfg, data = mod.load_run(run)
    x = torch.stack([data[i][0] for i in range(12)])  # (12, 1, 300, 300)
    y = torch.tensor([data[i][1] for i in range(12)])
    one_batch = mod.correctness(run, [1, 3], 0, 12, seed=7, single=True)
    for p in (1, 3):  # P passes: what predict_proba gives from the same generator
        expect = predict_proba(model, x, passes=p, generator=torch.Generator().manual_seed(7)).argmax(-1) == y
        assert torch.equal(one_batch[p], expect)
    gen = torch.Generator().manual_seed(7)
    per_pass = torch.stack([predict_proba(model, x, generator=gen).argmax(-1) == y for _ in range(3)])  # (3, 12)
    assert torch.equal(one_batch["single"], per_pass.double().mean(0))  # each image's share of single passes right
    assert cfg.readout.subtiles == 1  # load_run: one sub-tile per kept tile
    trace = model(x[:1], mode="topk", subtiles=cfg.readout.subtiles)
    assert int(trace.subtile_valid.sum()) == cfg.model.n_samples  # N full-resolution patches, as in training
    assert bool(trace.logits.argmax(-1)[0] == y[0]) == bool(mod.correctness(run, [1], 0, 12, topk=True)["topk"][0])
    _, mixture, _ = mod.load_run(run, method="mixture")  # the same weights, read out otherwise
    assert model(x[:2]).draw_probs is None and answer(model, x[:2], mixture.readout)[1][0].draw_probs is not None
    with pytest.raises(ValueError, match="readout.method"):
        mod.load_run(run, method="vote")
    from zoomin.data.megapixel_mnist import digit_pool
    _, _, seen = mod.load_run(run, seen_digits=True)  # the training digits in new places
    train = MegapixelMNIST(cfg.data, "train")
    assert len(seen) == len(data) == 12 and set(digit_pool("train")) >= {int(d) for i in range(12) for d in seen.record(i).digits}
    assert not any((seen.record(i).corners == train.record(i).corners).all() for i in range(len(train)))  # not the training images
    assert len(mod.correctness(run, [1], 0, 12, seen_digits=True)[1]) == 12
    voted = mod.correctness(run, [1, 3], 0, 12, seed=7, method="places")  # P passes read out together as a vote of places
    expect = predict_proba(model, x, passes=3, generator=torch.Generator().manual_seed(7), method="places").argmax(-1) == y
    assert torch.equal(voted[3], expect)
    sweep = _benchmark("place_sweep").sweep(run, [1, 3], [0.5], [0.0], [0.5], 0, 12, seed=7)
    row = sweep[(sweep.passes == 3) & (sweep.readout == "places")]
    assert float(row.accuracy.iloc[0]) == pytest.approx(float(voted[3].double().mean()))  # the same draws, the same votes
    assert float(sweep[(sweep.passes == 3) & (sweep.readout == "mean")].accuracy.iloc[0]) == pytest.approx(float(same[3].double().mean()))
    script = _benchmark("paired_test")  # the command-line wrapper's table
    text = script.markdown(run, run, {3: r, "topk": mod.compare(top7["topk"], top8["topk"])}, 12, 7)
    cells = _md_rows(text)
    assert cells[0][0] == "passes" and [c[0] for c in cells[1:]] == ["3", "topk"]
    assert all(c[3].startswith("+0.000") and c[-1] == "1.000" for c in cells[1:]) and "--passes 3 --topk" in text


def test_demo_draws_sorts_every_draw_by_the_digit_it_sits_in(tmp_path):
    mod = _benchmark("demo_draws")
    run = _tiny_run(tmp_path, "n_samples: 6", "train_size: 4, test_size: 6, n_noise: 3")
    r = mod.measure(run, images=6, passes=2)
    assert r["share"].sum() == pytest.approx(1.0) and (r["share"] >= 0).all()
    assert 0 <= r["named"] <= 1 and 0 <= r["one_pass"] <= 1
    assert sum(r[k]["n"] for k in ("wrong", "right") if r[k]) == 6
    for k in ("wrong", "right"):
        if r[k]:  # per image the kinds add up to the whole weight (1 per pass, averaged over passes)
            assert r[k]["label"] + r[k]["distractor"] + r[k]["elsewhere"] == pytest.approx(1.0, abs=1e-4)
    # a draw centred in a digit's box is that digit's, one centred outside every box is nobody's
    rec = SimpleNamespace(corners=np.array([[0, 0], [100, 100], [200, 0], [0, 200], [200, 200]]))
    boxes = torch.tensor([[[[0, 0, 10, 10], [100, 100, 10, 10], [60, 60, 10, 10]]]], dtype=torch.float)  # x, y, w, h
    trace = SimpleNamespace(subtile_valid=torch.ones(1, 1, 3, dtype=torch.bool), subtile_boxes=boxes,
                            weights=torch.full((1, 1, 3), 1 / 3))
    w, which = mod.digit_of_draws(trace, 0, rec)
    assert which.tolist() == [0, 1, -1] and w.sum().item() == pytest.approx(1.0)
    text = mod.report([r], "cmd")
    assert "| run | one pass |" in text


def test_the_sites_plots_are_drawn_from_the_committed_csv_files(tmp_path):
    """docs/conf.py draws every framed plot from the CSV files in docs/ (nothing but the CSV files is
    kept in the repository); each is offline (no script or stylesheet from another host) and
    carries its figures."""
    import re
    replot = _benchmark("replot")
    docs = Path(__file__).resolve().parents[1] / "docs"
    drawn = {p.name: p for folder in (docs, docs / "bench") for p in replot.replot(folder, tmp_path)}
    assert set(drawn) == {"slide_memory.html", "memory.html", "accuracy.html"}
    for page in drawn.values():
        html = page.read_text()
        assert not re.search(r"""<(script|link)[^>]*(src|href)=["']https?://""", html), page.name
        assert "Bokeh" in html
    assert "Peak memory against slide size" in drawn["slide_memory.html"].read_text()
    assert not list(docs.glob("*.html")) and not list((docs / "bench").glob("*.html"))
