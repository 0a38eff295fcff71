"""``zoomin bench --smoke``: the tiny version of the benchmark suite that CI runs."""
import csv

import pytest

from zoomin.bench.suite import medians, ratios
from zoomin.cli import main


def test_smoke_bench_writes_tables_and_measures_growth(tmp_path):
    assert main(["bench", "--out", str(tmp_path), "--smoke", "--quiet"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "bench.csv")))
    assert {(r["model"], r["size"]) for r in rows} == {(m, s) for m in ("zoom_in", "one_stage", "cnn")
                                                      for s in ("256", "512")}
    assert not any(r["error"] for r in rows)
    mem = {(r["model"], int(r["size"])): float(r["step_mb"]) for r in rows}
    assert mem[("cnn", 512)] > 2 * mem[("cnn", 256)]  # a whole-image CNN grows with the area
    md = (tmp_path / "bench.md").read_text()
    assert "| arrays | cnn | train | 512² |" in md and "Estimator variance" in md
    assert len(list(csv.DictReader(open(tmp_path / "variance.csv")))) == 2


def test_skipped_and_missing_configurations_are_reported():
    rows = [dict(part="arrays", model="zoom_in", phase="train", size=1000, repeat=0, step_mb=10.0, seconds=1.0,
                 process_peak_rss_mb=300.0),
            dict(part="arrays", model="zoom_in", phase="train", size=1000, repeat=1, step_mb=14.0, seconds=3.0,
                 process_peak_rss_mb=310.0),
            dict(part="arrays", model="one_stage", phase="train", size=1000, repeat=0, step_mb=100.0, seconds=1.0,
                 process_peak_rss_mb=400.0),
            dict(part="arrays", model="cnn", phase="train", size=16000, repeat=0, error="skipped: predicted 40 GB")]
    table = medians(rows)
    zi = next(r for r in table if r["model"] == "zoom_in")
    assert zi["step_mb"] == 12.0 and zi["runs"] == 2
    assert next(r for r in table if r["model"] == "cnn")["note"].startswith("skipped")
    assert ratios(table) == [dict(part="arrays", phase="train", size=1000, ratio=0.12)]


def test_accuracy_part_trains_both_models_and_measures_their_step_memory(tmp_path):
    assert main(["bench", "--out", str(tmp_path), "--parts", "accuracy", "--quiet", "--accuracy-epochs", "1",
                 "--accuracy-ns", "3", "--accuracy-train-size", "16", "--accuracy-test-size", "16", "--canvas", "400"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "accuracy.csv")))
    assert [(r["model"], r["N"], r["epochs"]) for r in rows] == [("zoom_in", "3", "1"), ("one_stage", "3", "1")]
    for r in rows:
        assert 0 <= float(r["test_accuracy"]) <= 1 and float(r["step_mb"]) > 0 and not r["error"]
        for col in ("accuracy_4_passes", "accuracy_16_passes", "accuracy_single_pass", "accuracy_topk"):
            assert 0 <= float(r[col]) <= 1
        assert float(r["accuracy_single_pass"]) * 16 * 16 == round(float(r["accuracy_single_pass"]) * 16 * 16)
    paired = list(csv.DictReader(open(tmp_path / "accuracy_paired.csv")))
    assert [(r["N"], r["passes"]) for r in paired] == [("3", "4"), ("3", "16"), ("3", "single"), ("3", "topk")]
    for r, col in zip(paired, ("accuracy_4_passes", "accuracy_16_passes", "accuracy_single_pass", "accuracy_topk")):
        assert float(r["zoom_in"]) == float(rows[0][col])  # the paired rows are the runs' own accuracies
        assert float(r["one_stage"]) == float(rows[1][col])
        assert int(r["only_zoom_in"]) + int(r["only_one_stage"]) <= 16 and 0 <= float(r["p_value"]) <= 1
    md = (tmp_path / "bench.md").read_text()
    assert "Accuracy against training-step memory" in md and "| P = 16 | 1 pass (mean) | top-k |" in md
    assert "McNemar" in md
    assert "| 3 | topk |" in md


def test_accuracy_part_runs_jobs_in_parallel_and_writes_the_curves(tmp_path):
    assert main(["bench", "--out", str(tmp_path), "--parts", "accuracy", "--quiet", "--accuracy-epochs", "2",
                 "--accuracy-ns", "2", "--accuracy-train-size", "8", "--accuracy-test-size", "8", "--canvas", "300",
                 "--accuracy-jobs", "2", "--accuracy-eval-every", "1"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "accuracy.csv")))
    assert [(r["model"], r["epochs"], r["batch"]) for r in rows] == [("zoom_in", "2", "32"), ("one_stage", "2", "32")]
    curves = list(csv.DictReader(open(tmp_path / "accuracy_curves.csv")))
    assert [(r["model"], r["epoch"]) for r in curves] == [("zoom_in", "1"), ("zoom_in", "2"), ("one_stage", "1"),
                                                         ("one_stage", "2")]
    assert all(0 <= float(r["test_accuracy"]) <= 1 for r in curves)  # tested every epoch
    for kind in ("zoom_in", "one_stage"):  # each run trained in its own folder, resumable
        assert (tmp_path / "accuracy" / f"{kind}_n2" / "checkpoint.pt").is_file()


def _benchmark(name: str):
    import importlib.util
    from pathlib import Path
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_megapixel_limits_coverage_measures_the_share_of_each_digit_a_patch_covers():
    import torch
    mod = _benchmark("megapixel_limits")
    boxes = torch.tensor([[[90, 90, 50, 50], [114, 100, 50, 50], [500, 500, 50, 50]]])  # (1, 3, 4) x, y, w, h
    digits = torch.tensor([[[100, 100], [510, 510]]])  # (1, 2, 2) top-left (row, col)
    cov = mod.coverage(boxes, torch.tensor([[True, True, False]]), digits)  # (1, 2, 3)
    assert cov[0, 0].tolist() == [1.0, 0.5, 0.0]  # inside; half the columns; not its patch
    assert cov[0, 1].tolist() == [0.0, 0.0, 0.0]  # the patch over it is padding (not drawn)


def test_paired_test_statistics():
    import torch

    from zoomin.bench import paired as mod
    assert mod.mcnemar_exact(0, 0) == 1.0 and mod.mcnemar_exact(5, 5) == 1.0
    assert abs(mod.mcnemar_exact(0, 6) - 2 / 64) < 1e-12  # all six discordant images favour one model
    assert abs(mod.mcnemar_exact(2, 8) - 2 * 56 / 1024) < 1e-12  # 2 * P(Bin(10, 1/2) <= 2)
    a = torch.tensor([True] * 60 + [False] * 40)
    b = torch.tensor([True] * 50 + [False] * 50)  # a right on 10 more images, never wrong where b is right
    r = mod.compare(a, b)
    assert (r["only_a"], r["only_b"]) == (10, 0) and abs(r["difference"] - 0.1) < 1e-12
    assert r["ci_low"] > 0 and r["p_value"] < 0.01
    with pytest.raises(ValueError, match="passes must be >= 1"):
        mod.correctness("nowhere", [0])
    shares_a = torch.tensor([1.0, 0.75, 0.5, 0.25] * 50)  # per-image share of single passes right
    r = mod.compare(shares_a, shares_a - 0.25 * (torch.arange(200) % 2))  # A better on every other image
    assert abs(r["difference"] - 0.125) < 1e-12 and (r["only_a"], r["only_b"]) == (100, 0)
    se = float((0.25 * (torch.arange(200) % 2)).double().std()) / 200 ** 0.5
    assert abs(r["ci_low"] - (0.125 - 1.96 * se)) < 1e-12 and r["p_value"] < 1e-6  # paired normal test
    assert mod.compare(shares_a, shares_a)["p_value"] == 1.0


def test_paired_test_of_a_run_against_itself_finds_no_difference(tmp_path):
    import torch

    from zoomin.bench import paired as mod
    from zoomin.checkpoint import load_model
    from zoomin.data.megapixel_mnist import MegapixelMNIST
    run = tmp_path / "run"
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("model: {kind: zoom_in, scale1: 0.1, tile: 60, scale2: 0.5, subtile: 30, n_samples: 3}\n"
                   "data: {canvas: 300, train_size: 8, test_size: 12}\ntrain: {epochs: 1, batch_size: 4}\n")
    assert main(["train", "--config", str(cfg), "--out", str(run), "--quiet"]) == 0
    same = mod.correctness(run, [1, 3], 0, 5, seed=7)
    again = mod.correctness(run, [1, 3], 0, 5, seed=7)
    assert [len(v) for v in same.values()] == [12, 12]
    r = mod.compare(same[3], again[3])  # same seed: the same sampled passes, the same predictions
    assert (r["only_a"], r["only_b"], r["difference"], r["p_value"]) == (0, 0, 0.0, 1.0)
    top7, top8 = (mod.correctness(run, [1], 0, 5, seed=s, topk=True) for s in (7, 8))
    shares = mod.correctness(run, [1, 3], 0, 5, seed=7, single=True)["single"]  # (12,) of 3 passes
    assert ((shares * 3).round() == shares * 3).all() and (shares >= 0).all() and (shares <= 1).all()
    assert (shares[same[1]] >= 1 / 3).all()  # an image the first pass got right has a share >= 1/3
    assert torch.equal(top7["topk"], top8["topk"])  # deterministic: no seed enters
    assert torch.equal(top7[1], same[1])  # the sampled passes are the same with or without top-k
    model, cfg = load_model(run / "checkpoint.pt")
    model.cfg.topk_subtiles = 1
    x, y = MegapixelMNIST(cfg.data, "test")[0]
    trace = model.eval()(x[None], mode="topk")
    assert int(trace.subtile_valid.sum()) == cfg.model.n_samples  # N full-resolution patches, as in training
    assert bool(trace.logits.argmax(-1)[0] == y) == bool(top7["topk"][0])
    script = _benchmark("paired_test")  # the command-line wrapper's table
    text = script.markdown(run, run, {3: r, "topk": mod.compare(top7["topk"], top8["topk"])}, 12, 7)
    assert "| 3 | " in text and "| topk | " in text and "+0.000" in text and "--passes 3 --topk" in text
