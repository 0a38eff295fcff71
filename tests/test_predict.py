"""Manifests and ``zoomin predict`` on synthetic slides: predictions CSV, heatmaps, bad inputs."""
import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("large_image")

from PIL import Image  # noqa: E402  (large-image's dependency)

from zoomin.checkpoint import load_model, save_model  # noqa: E402
from zoomin.cli import main  # noqa: E402
from zoomin.config import Config, ModelConfig  # noqa: E402
from zoomin.geometry import view_size  # noqa: E402
from zoomin.manifest import Entry, read_manifest, write_manifest  # noqa: E402
from zoomin.model import build_model  # noqa: E402
from zoomin.slides import SlideSource  # noqa: E402
from zoomin.synth import synth_slides  # noqa: E402


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    d = tmp_path_factory.mktemp("slides")
    manifest = synth_slides(d, 3, 1024, seed=1, tile=128, progress=False)
    cfg = Config(model=ModelConfig(in_channels=3, num_classes=2, stage1_resolution=0.05, tile=128, stage2_resolution=0.25, subtile=32,
                                   n_samples=6, feature_dim=8, feature_width=8, foreground="otsu_dark"))
    ckpt = save_model(d / "model.pt", build_model(cfg.model), cfg)
    return d, manifest, ckpt


def test_manifest_reads_and_resolves(slides):
    d, manifest, _ = slides
    entries = read_manifest(manifest)
    assert len(entries) == 3 and all(e.path.is_file() for e in entries)
    assert {e.label for e in entries} <= {0, 1}


@pytest.mark.parametrize("text,message", [
    ("slide_id,path\na,x.tif\n", "missing column(s) label"),
    ("slide_id,path,label\na,synth_0000.tif,1\na,synth_0001.tif,0\n", ":3: duplicate slide_id 'a'"),
    ("slide_id,path,label\na,synth_0000.tif,tumour\n", ":2: label 'tumour' is not a class index"),
    ("slide_id,path,label\na,missing.tif,1\n", ":2: slide file not found: missing.tif"),
    ("slide_id,path,label\n", "no slides listed"),
])
def test_bad_manifests_are_one_line(slides, text, message):
    d, _, _ = slides
    bad = d / "bad.csv"
    bad.write_text(text)
    with pytest.raises(ValueError) as e:
        read_manifest(bad)
    assert message in str(e.value) and "bad.csv" in str(e.value) and "\n" not in str(e.value)


def test_predict_writes_csv_and_heatmaps_and_skips_bad_slides(slides, tmp_path, capsys):
    d, manifest, ckpt = slides
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"\x00" * 10)
    out = tmp_path / "pred.csv"
    rc = main(["predict", "--checkpoint", str(ckpt), "--out", str(out), "--heatmaps", str(tmp_path / "hm"),
               "--quiet", "--passes", "2", str(manifest), str(junk)])
    assert rc == 3  # some slides failed: cli.SOME_FAILED
    cap = capsys.readouterr()
    err = cap.err
    assert "skipped" in err and "junk.tif" in err and err.count("\n") == 1
    assert "3 slide(s) predicted" in cap.out and "1 skipped" in cap.out
    rows = list(csv.DictReader(open(out)))
    assert [r["slide_id"] for r in rows] == ["synth_0000", "synth_0001", "synth_0002"]
    assert list(rows[0]) == ["slide_id", "p_0", "p_1", "prediction", "seconds"]
    for r in rows:
        assert abs(float(r["p_0"]) + float(r["p_1"]) - 1) < 1e-4 and r["prediction"] in ("0", "1")
        assert float(r["seconds"]) > 0
        with Image.open(tmp_path / "hm" / f"{r['slide_id']}.png") as png:  # the stage-I attention map
            assert png.size[::-1] == view_size(1024, 1024, 0.05)
        gj = json.loads((tmp_path / "hm" / f"{r['slide_id']}.geojson").read_text())
        assert gj["type"] == "FeatureCollection" and gj["features"]
        dsa = json.loads((tmp_path / "hm" / f"{r['slide_id']}.dsa.json").read_text())
        assert dsa["elements"][0]["type"] == "heatmap" and dsa["elements"][0]["points"]


def test_predict_with_only_bad_inputs_fails(slides, tmp_path):
    _, _, ckpt = slides
    rc = main(["predict", "--checkpoint", str(ckpt), "--out", str(tmp_path / "p.csv"), "--quiet",
               str(tmp_path / "nothing.tif")])
    assert rc == 1


def test_train_on_a_manifest_then_predict(slides, tmp_path):
    d, manifest, _ = slides
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: {kind: zoom_in, in_channels: 3, num_classes: 2, stage1_resolution: 0.05, tile: 128, stage2_resolution: 0.25,"
                   " subtile: 32, n_samples: 4, feature_dim: 8, feature_width: 8, foreground: otsu_dark}\n"
                   "train: {epochs: 1, batch_size: 2, contrastive_weight: 0.5, threads: 1}\nreadout: {mode: topk}\n")
    rows = list(csv.DictReader(open(manifest)))
    for i, r in enumerate(rows):  # make sure both splits exist
        r["split"] = "test" if i == 0 else "train"
    m2 = d / "m2.csv"
    with open(m2, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    out = tmp_path / "run"
    assert main(["train", "--manifest", str(m2), "--config", str(cfg), "--out", str(out), "--quiet"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    model, _ = load_model(out / "checkpoint.pt")
    with torch.no_grad():  # the one test slide, as the trainer scored it (deterministic top-k)
        logits = model.eval()(SlideSource(d / rows[0]["path"], channels=3), mode="topk").logits
    assert m["epochs"] == 1 and m["test_accuracy"] == float(int(logits.argmax()) == int(rows[0]["label"]))
    assert main(["predict", "--checkpoint", str(out / "checkpoint.pt"), "--out", str(tmp_path / "p.csv"),
                 "--quiet", str(m2)]) == 0


def test_auc():
    from zoomin.evaluate import auc
    assert auc(torch.tensor([0.9, 0.8, 0.3, 0.1]), torch.tensor([1, 1, 0, 0])) == 1.0
    assert auc(torch.tensor([0.5, 0.5]), torch.tensor([1, 0])) == 0.5
    assert auc(torch.tensor([0.2, 0.9]), torch.tensor([1, 0])) == 0.0
    assert auc(torch.tensor([0.2]), torch.tensor([1])) is None


@pytest.mark.slow
def test_predict_explore_writes_one_offline_html_per_slide(slides, tmp_path):
    pytest.importorskip("holoviews")
    _, manifest, ckpt = slides
    out = tmp_path / "p.csv"
    base = tmp_path / "base.csv"
    assert main(["predict", "--checkpoint", str(ckpt), "--out", str(base), "--quiet", str(manifest)]) == 0
    assert main(["predict", "--checkpoint", str(ckpt), "--out", str(out), "--explore", str(tmp_path / "ex"),
                 "--quiet", str(manifest)]) == 0
    assert predictions(out) == predictions(base)  # exploring does not change the predictions
    pages = sorted(p.name for p in (tmp_path / "ex").iterdir())
    assert pages == ["synth_0000.html", "synth_0001.html", "synth_0002.html"]
    html = (tmp_path / "ex" / "synth_0001.html").read_text()
    assert "synth_0001" in html and "cdn.bokeh.org" not in html


# -- many slides: prefetch, resume, large-image's caches --------------------------------------
def predictions(path):
    """A predictions CSV's rows without the timing column."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(open(path))]


def many(d, n, mpp=None):
    """A manifest listing the first synthetic slide ``n`` times (ids many_0..; optional mpp column)."""
    first = read_manifest(d / "manifest.csv")[0]
    entries = [Entry(f"many_{i}", first.path, 0, mpp=None if mpp is None else mpp[i]) for i in range(n)]
    return write_manifest(entries, d / f"many{n}.csv", annotations=False)


def predicted_in_full(slides, tmp_path, n):
    """A manifest of ``n`` slides predicted without interruption -> (the predict arguments without
    --out, the CSV's path and its lines)."""
    d, _, ckpt = slides
    args = ["predict", "--checkpoint", str(ckpt), "--quiet", "--passes", "1", str(many(d, n))]
    full = tmp_path / "full.csv"
    assert main(args + ["--out", str(full)]) == 0
    return args, full, full.read_text().splitlines(keepends=True)


@pytest.fixture
def opened(monkeypatch):
    """The keyword arguments of every ``SlideSource`` that predict opens, in order."""
    import zoomin.slides
    calls = []

    class Counted(SlideSource):
        def __init__(self, path, **kw):
            calls.append(dict(path=Path(path), **kw))
            super().__init__(path, **kw)
    monkeypatch.setattr(zoomin.slides, "SlideSource", Counted)
    return calls


def test_prefetch_gives_the_same_predictions_and_skips_a_bad_slide_in_the_middle(slides, tmp_path, capsys):
    d, manifest, ckpt = slides
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"II*\0" + b"\0" * 60)
    inputs = [str(d / "synth_0000.tif"), str(junk), str(manifest)]
    out = {}
    for k in (0, 1, 3):
        out[k] = tmp_path / f"p{k}.csv"
        assert main(["predict", "--checkpoint", str(ckpt), "--out", str(out[k]), "--quiet", "--passes", "2",
                     "--prefetch", str(k), *inputs]) == 3  # junk failed: cli.SOME_FAILED
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"zoomin: skipped {junk}: ")
    assert [r["slide_id"] for r in predictions(out[1])] == ["synth_0000", "synth_0000", "synth_0001", "synth_0002"]
    assert predictions(out[0]) == predictions(out[1]) == predictions(out[3])


def test_prefetch_keeps_at_most_k_slides_ahead():
    import weakref

    from zoomin.predict import prepared

    class Opened:  # stands for a source
        pass
    for ahead in (0, 1, 2):
        alive, peak = weakref.WeakSet(), []

        def prepare(i):
            if i == 3:
                raise ValueError("bad slide")
            src = Opened()
            alive.add(src)
            peak.append(len(alive))
            return src
        got = []
        for i, src, waited in prepared(range(8), prepare, ahead):
            got.append((i, type(src).__name__))
            assert waited >= 0
            del src
        assert got == [(i, "ValueError" if i == 3 else "Opened") for i in range(8)]
        assert max(peak) == ahead + 1  # the slide being predicted and `ahead` more, never the ones done


def test_resume_keeps_complete_rows_and_predicts_only_the_rest(slides, tmp_path, opened):
    args, full, lines = predicted_in_full(slides, tmp_path, 5)
    assert len(opened) == 5
    out = tmp_path / "p.csv"
    kept = lines[1].replace(lines[1].split(",")[1], "0.123456")  # a kept row is not predicted again
    out.write_text(lines[0] + kept + lines[3] + "many_3,0.5,0.5,1\n" + lines[5][:12])  # short row, half a line
    opened.clear()
    assert main(args + ["--out", str(out), "--resume"]) == 0
    assert len(opened) == 3  # many_1, many_3 (its row lacked a column) and many_4 (half a line)
    rows = predictions(out)
    assert [r["slide_id"] for r in rows] == ["many_0", "many_2", "many_1", "many_3", "many_4"]
    assert rows[0]["p_0"] == "0.123456"
    assert sorted(rows[1:], key=lambda r: r["slide_id"]) == [r for r in predictions(full) if r["slide_id"] != "many_0"]
    opened.clear()
    assert main(args + ["--out", str(out), "--resume"]) == 0 and not opened  # nothing left to do
    assert predictions(out) == rows


def test_resume_reads_a_stopped_torchrun_runs_parts(slides, tmp_path, opened):
    args, full, lines = predicted_in_full(slides, tmp_path, 4)
    out = tmp_path / "p.csv"
    (tmp_path / "p.csv.part0").write_text("_index," + lines[0] + "0," + lines[1] + "2," + lines[3][:5])
    (tmp_path / "p.csv.part1").write_text("_index," + lines[0] + "1," + lines[2])
    opened.clear()
    assert main(args + ["--out", str(out), "--resume"]) == 0
    assert [c["path"].name for c in opened] == ["synth_0000.tif"] * 2  # many_2, many_3
    assert predictions(out) == predictions(full) and not list(tmp_path.glob("p.csv.*"))


def test_resume_with_another_models_csv_is_one_line(slides, tmp_path):
    _, manifest, ckpt = slides
    out = tmp_path / "p.csv"
    out.write_text("slide_id,p_0,p_1,p_2,prediction\nsynth_0000,0.1,0.2,0.7,2\n")
    with pytest.raises(ValueError, match=r"p\.csv: columns slide_id,p_0,p_1,p_2,prediction are not this model's"):
        main(["--debug", "predict", "--checkpoint", str(ckpt), "--out", str(out), "--quiet", "--resume",
              str(manifest)])


def test_mpp_flag_and_manifest_mpp_reach_the_source(slides, tmp_path, opened):
    d, _, ckpt = slides
    manifest = many(d, 2, mpp=[0.25, None])
    assert main(["predict", "--checkpoint", str(ckpt), "--out", str(tmp_path / "p.csv"), "--quiet", "--passes", "1",
                 "--slide-mpp", "0.5", str(manifest), str(d / "synth_0001.tif")]) == 0
    # the manifest's value overrides the file's for its row; --slide-mpp only fills in for files that state none
    assert [(c["manifest_mpp"], c["fallback_mpp"]) for c in opened] == [(0.25, 0.5), (None, 0.5), (None, 0.5)]
    assert all(c["mpp"] == getattr(load_model(ckpt)[1].model, "mpp", 0.0) for c in opened)


@pytest.fixture
def fresh_cache_settings(monkeypatch):
    """``slide_cache`` as in a new process; large-image's settings restored afterwards."""
    from large_image import config

    from zoomin import slide_cache
    monkeypatch.setattr(slide_cache, "_settings", None)
    values = config.getConfig()
    for key in ("cache_backend", "cache_python_memory_portion", "cache_tilesource_maximum"):
        monkeypatch.setitem(values, key, None if key == "cache_backend" else values[key])
        monkeypatch.delenv(f"LARGE_IMAGE_{key.upper()}", raising=False)
    monkeypatch.delenv(slide_cache.ENV, raising=False)
    config.getConfig.cache_clear()
    yield slide_cache, config
    config.getConfig.cache_clear()


def test_cache_configure_sizes_large_image_once_and_respects_user_settings(fresh_cache_settings, monkeypatch):
    slide_cache, config = fresh_cache_settings
    monkeypatch.setenv("LARGE_IMAGE_CACHE_TILESOURCE_MAXIMUM", "7")
    monkeypatch.setenv(slide_cache.ENV, "16")
    got = slide_cache.configure()
    assert got == {"cache_backend": "python",
                   "cache_python_memory_portion": round(config.total_memory() / (16 * 2 ** 20))}
    assert config.getConfig("cache_tilesource_maximum") == 7  # the user's value, untouched
    assert config.getConfig("cache_python_memory_portion") == got["cache_python_memory_portion"]
    assert slide_cache.configure(memory_mb=1000) == got  # once per process


def test_cache_configure_takes_the_argument_and_rejects_a_bad_env(fresh_cache_settings, monkeypatch):
    slide_cache, config = fresh_cache_settings
    monkeypatch.setenv(slide_cache.ENV, "lots")
    with pytest.raises(ValueError, match="ZOOMIN_SLIDE_CACHE_MB='lots': not a number"):
        slide_cache.configure()
    monkeypatch.setitem(config.getConfig(), "cache_backend", "memcached")  # the caller's code chose one
    got = slide_cache.configure(memory_mb=64)
    assert "cache_backend" not in got and got["cache_tilesource_maximum"] == slide_cache.TILE_SOURCES
    assert got["cache_python_memory_portion"] == max(3, round(config.total_memory() / 2 ** 26))


def test_cache_configure_before_the_first_slide_bounds_large_images_caches(slides, tmp_path):
    """In a new process: the caches large-image creates on the first read have zoomin's sizes."""
    d, _, _ = slides
    code = ("import json, sys, large_image\n"
            "from large_image.cache_util import cachesInfo\n"
            "from zoomin import slide_cache\n"
            "slide_cache.configure(memory_mb=8)\n"
            "large_image.open(sys.argv[1]).getRegion(format=large_image.constants.TILE_FORMAT_NUMPY)\n"
            "print(json.dumps({k: v['maxsize'] for k, v in cachesInfo().items()}))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LARGE_IMAGE_CACHE")}
    r = subprocess.run([sys.executable, "-c", code, str(d / "synth_0000.tif")], capture_output=True, text=True,
                       env=env)
    assert r.returncode == 0, r.stderr
    sizes = json.loads(r.stdout.splitlines()[-1])
    assert sizes["tilesource"] == 2 and abs(sizes["tileCache"] - 16) <= 1  # 8 MB of large-image's 512 KiB tiles


def test_uncycled_tile_sources_are_freed_without_the_cyclic_collector(slides):
    import gc
    import weakref

    import large_image

    from zoomin.slide_cache import uncycled
    d, _, _ = slides
    gc.disable()
    try:
        ts = uncycled(large_image.open(str(d / "synth_0000.tif"), noCache=True))
        assert ts._map._ts.getMetadata()["sizeX"] == 1024  # its Jupyter map still reaches it
        alive = weakref.ref(ts)
        del ts
        assert alive() is None
    finally:
        gc.enable()


@pytest.mark.slow
def test_resume_under_torchrun(slides, tmp_path):
    """Two processes resume a run stopped with one complete row and a part file of a third rank."""
    args, full, lines = predicted_in_full(slides, tmp_path, 5)
    out = tmp_path / "p.csv"
    out.write_text(lines[0] + lines[2])
    (tmp_path / "p.csv.part2").write_text("_index," + lines[0] + "4," + lines[5] + "3,many")
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
                f"--master_port={port.getsockname()[1]}", "-m", "zoomin"]
    port.close()
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    r = subprocess.run(launcher + args + ["--out", str(out), "--resume"], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("3 slide(s) predicted") == 1  # many_0, many_2, many_3 (its part row was cut short)
    assert [row["slide_id"] for row in predictions(out)] == ["many_1", "many_4", "many_0", "many_2", "many_3"]
    assert sorted(predictions(out), key=lambda r: r["slide_id"]) == predictions(full)
    assert sorted(p.name for p in tmp_path.glob("p.csv*")) == ["p.csv"]


def test_heatmaps_are_in_the_files_pixels_under_physical_units(slides, tmp_path):
    """A model working at 2x the file's pixel size still exports outlines QuPath lays on the file."""
    d, manifest, _ = slides
    slide = read_manifest(manifest)[0]
    cfg = Config(model=ModelConfig(in_channels=3, num_classes=2, mpp=2 * SlideSource(slide.path).mpp,
                                   stage1_resolution=40 * SlideSource(slide.path).mpp, stage1_units="mpp", tile=64, stage2_resolution=0.25, subtile=16,
                                   n_samples=6, feature_dim=8, feature_width=8, foreground="otsu_dark"))
    ckpt = save_model(tmp_path / "phys.pt", build_model(cfg.model), cfg)
    assert main(["predict", "--checkpoint", str(ckpt), "--out", str(tmp_path / "p.csv"), "--heatmaps",
                 str(tmp_path / "h"), "--quiet", str(slide.path)]) == 0
    gj = json.loads((tmp_path / "h" / f"{slide.path.stem}.geojson").read_text())
    subs = [f["geometry"]["coordinates"][0] for f in gj["features"] if f["properties"].get("name") == "sub-tile"]
    assert subs
    for ring in subs:  # a 16-pixel sub-tile at 2x the pixel size: 32 file pixels a side
        xs = [p[0] for p in ring]
        assert max(xs) - min(xs) == pytest.approx(32)
    cells = [f["geometry"]["coordinates"][0] for f in gj["features"] if f["properties"].get("name") == "attention"]
    right = max(p[0] for ring in cells for p in ring)
    assert 512 < right <= 1024 + 1  # past the 512 pixels the model sees across: the file's 1,024


def test_predict_slide_mpp_is_the_slides_own_pixel_size_and_mpp_its_old_spelling(capsys):
    from zoomin.cli import parser
    new = parser().parse_args(["predict", "s.tif", "--checkpoint", "ck.pt", "--out", "p.csv", "--slide-mpp", "0.5"])
    assert new.fallback_mpp == 0.5 and "now --slide-mpp" not in capsys.readouterr().err
    old = parser().parse_args(["predict", "s.tif", "--checkpoint", "ck.pt", "--out", "p.csv", "--mpp", "0.25"])
    assert old.fallback_mpp == 0.25 and "--mpp is now --slide-mpp" in capsys.readouterr().err
