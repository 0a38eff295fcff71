"""Issue #6: hostile inputs (one-line errors, bad slides skipped), memory guard, safe loading,
determinism. Crash safety: test_crash_resume.py; several processes: test_distributed.py."""
import csv
import json
import pickle

import pytest
import torch

pytest.importorskip("large_image")
pytest.importorskip("tifffile")

from hostile import EXPECTED, write_all  # noqa: E402

from zoomin.cli import main  # noqa: E402
from zoomin.config import Config, ModelConfig  # noqa: E402
from zoomin.manifest import read_manifest  # noqa: E402
from zoomin.model import ZoomInNet, build_model  # noqa: E402
from zoomin.slides import SlideSource  # noqa: E402
from zoomin.sources import ArraySource, MemoryBudgetError, pixel_budget  # noqa: E402
from zoomin.synth import synth_slides  # noqa: E402
from zoomin.checkpoint import load_checkpoint, load_model, save_model  # noqa: E402

MODEL = dict(in_channels=3, num_classes=2, stage1_resolution=0.05, tile=128, stage2_resolution=0.25, subtile=32, n_samples=6,
             feature_dim=8, feature_width=8, foreground="otsu_dark")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    return write_all(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    cfg = Config(model=ModelConfig(**MODEL))
    torch.manual_seed(0)
    return save_model(tmp_path_factory.mktemp("ck") / "model.pt", build_model(cfg.model), cfg)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth")
    return d, synth_slides(d, 3, 1024, seed=1, tile=128, progress=False)


def read_and_predict(path):
    src = SlideSource(path, channels=3)
    with torch.no_grad():
        return ZoomInNet(ModelConfig(**MODEL)).eval()(src, generator=torch.Generator().manual_seed(0))


# -- hostile slides ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_hostile_slide(hostile, name):
    """Each hostile file is either read (finite probabilities) or refused with one line naming it."""
    expected = EXPECTED[name]
    if expected is None:
        tr = read_and_predict(hostile[name])
        assert torch.isfinite(tr.probs).all() and abs(float(tr.probs.sum()) - 1) < 1e-5
        return
    with pytest.raises((ValueError, OSError)) as e:
        read_and_predict(hostile[name])
    msg = str(e.value)
    assert msg.startswith(f"{hostile[name]}: ") and expected in msg and "\n" not in msg, msg


def test_hostile_files_stay_small_on_disk(hostile):
    """The huge fixtures cost little: the tiled one ~10 MB, the striped one is sparse."""
    assert hostile["huge_level0_only.tif"].stat().st_size < 20e6
    assert hostile["huge_striped.tif"].stat().st_blocks * 512 < 1e6


def test_sixteen_bit_and_grayscale_read_like_eight_bit(hostile, tmp_path):
    from hostile import picture
    boxes, rows = torch.tensor([[40, 50, 64, 64]]), torch.zeros(1, dtype=torch.long)
    ref = ArraySource(torch.from_numpy(picture(300, 300)).permute(2, 0, 1)[None].float() / 255)
    want = ref.read(rows, boxes, 1.0, (64, 64))
    got16 = SlideSource(hostile["sixteen_bit.tif"]).read(rows, boxes, 1.0, (64, 64))
    assert torch.allclose(got16, want, atol=1e-6)
    gray = SlideSource(hostile["grayscale.tif"]).read(rows, boxes, 1.0, (64, 64))
    assert torch.allclose(gray[:, 0], want[:, 0], atol=1e-6) and torch.equal(gray[:, 0], gray[:, 2])


def test_nan_pixels_become_background(hostile):
    src = SlideSource(hostile["float_nan.tif"])
    patch = src.read(torch.zeros(1, dtype=torch.long), torch.tensor([[0, 0, 128, 128]]), 1.0, (128, 128))
    assert torch.isfinite(patch).all() and (patch[0, :, 20:50, 20:50] == 0).all()


def test_predict_skips_every_bad_slide_and_writes_the_rest(hostile, checkpoint, tmp_path, capsys):
    out = tmp_path / "pred.csv"
    names = sorted(EXPECTED)
    rc = main(["predict", "--checkpoint", str(checkpoint), "--out", str(out), "--quiet", "--passes", "1"]
              + [str(hostile[n]) for n in names])
    err = capsys.readouterr().err
    bad = [n for n in names if EXPECTED[n]]
    assert rc == (3 if bad else 0) and "Traceback" not in err  # 3: some slides failed (cli.SOME_FAILED)
    lines = err.strip().splitlines()
    assert len(lines) == len(bad), lines
    for n, line in zip(bad, lines):
        assert line.startswith(f"zoomin: skipped {hostile[n]}: ") and EXPECTED[n] in line, line
    rows = list(csv.DictReader(open(out)))
    assert [r["slide_id"] for r in rows] == [hostile[n].stem for n in names if EXPECTED[n] is None]


def test_predict_only_bad_slides_exits_non_zero(hostile, checkpoint, tmp_path, capsys):
    rc = main(["predict", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "p.csv"), "--quiet",
               str(hostile["zero_bytes.tif"]), str(hostile["notes.svs"])])
    assert rc == 1 and "2 skipped" in capsys.readouterr().out


# -- manifests --------------------------------------------------------------------------------
@pytest.mark.parametrize("text,message", [
    ("slide_id,path,label\na,synth_0000.tif,1\nb,missing.tif,0\n", ":3: slide file not found: missing.tif"),
    ("slide_id,path,label\na,synth_0000.tif,1\na,synth_0001.tif,0\n", ":3: duplicate slide_id 'a' (first on line 2)"),
    ("slide_id,path,label\na,synth_0000.tif,7\n", ":2: unknown label 7 (the model's classes are 0..1)"),
    ("slide_id,path,label\na,synth_0000.tif,-1\n", ":2: unknown label -1"),
    ("slide_id,path,label\na,synth_0000.tif,tumour\n", ":2: label 'tumour' is not a class index"),
    ("slide_id,label\na,1\n", "missing column(s) path (need slide_id, path, label)"),
    ("", "missing column(s) slide_id, path, label"),
    ("slide_id,path,label\n", "no slides listed"),
    ("slide_id,path,label\n,synth_0000.tif,1\n", ":2: empty slide_id"),
    ("slide_id,path,label\na,synth_0000.tif,__import__('os').system('false')\n", "is not a class index"),
])
def test_bad_manifest_is_one_line(synth, text, message):
    d, _ = synth
    bad = d / "bad.csv"
    bad.write_text(text)
    with pytest.raises(ValueError) as e:
        read_manifest(bad, num_classes=2)
    assert str(e.value).startswith(str(bad)) and message in str(e.value) and "\n" not in str(e.value)


def tiny_cfg(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(json.dumps({"model": MODEL, "train": {"epochs": 1, "batch_size": 2, "threads": 1,
                                                       "bn_recalibrate": 1}, "readout": {"passes": 1}}))
    return p


def manifest_with(d, rows, name):
    path = d / name
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["slide_id", "path", "label", "split"])
        w.writerows(rows)
    return path


def test_train_skips_unreadable_slides_and_reports_them(synth, hostile, tmp_path, capsys):
    d, _ = synth
    rows = [["s0", "synth_0000.tif", 0, "train"], ["s1", "synth_0001.tif", 1, "train"],
            ["s2", "synth_0002.tif", 1, "test"], ["z", str(hostile["zero_bytes.tif"]), 0, "train"],
            ["h", str(hostile["huge_level0_only.tif"]), 1, "train"]]
    m = manifest_with(d, rows, "mixed.csv")
    out = tmp_path / "run"
    assert main(["train", "--manifest", str(m), "--config", str(tiny_cfg(tmp_path)), "--out", str(out), "--quiet"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "zero_bytes.tif: not a readable image" in err[0] and "over the budget" in err[1]
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 1


@pytest.mark.parametrize("rows,message", [
    ([["a", "synth_0000.tif", 0, "train"], ["b", "nowhere.tif", 1, "test"]], ":3: slide file not found"),
    ([["a", "synth_0000.tif", 0, "train"], ["a", "synth_0001.tif", 1, "test"]], ":3: duplicate slide_id 'a'"),
    ([["a", "synth_0000.tif", 0, "train"], ["b", "synth_0001.tif", 3, "test"]], ":3: unknown label 3"),
    ([["a", "synth_0000.tif", 0, "train"], ["b", "synth_0001.tif", 1, "train"]], "need both training rows"),
])
def test_train_fatal_manifest_problem_is_one_line_and_non_zero(synth, tmp_path, capsys, rows, message):
    d, _ = synth
    m = manifest_with(d, rows, "fatal.csv")
    rc = main(["train", "--manifest", str(m), "--config", str(tiny_cfg(tmp_path)), "--out", str(tmp_path / "x"),
               "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and str(m) in err and message in err and "Traceback" not in err


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(FileNotFoundError):
        main(["--debug", "train", "--config", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "x")])


def test_unexpected_errors_are_one_line_too(tmp_path, capsys, monkeypatch):
    import zoomin.train

    def broken(*args, **kw):
        raise KeyError("boom")
    monkeypatch.setattr(zoomin.train, "Trainer", broken)
    assert main(["train", "--config", str(tiny_cfg(tmp_path)), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "KeyError" in err and "--debug" in err


def test_one_line_for_a_command_and_for_a_skipped_slide():
    from zoomin.errors import one_line
    path = "/d/a.tif"
    assert one_line(ValueError(f"{path}: bad\nmore")) == f"{path}: bad"  # a command names the file
    assert one_line(ValueError(f"{path}: bad\nmore"), path, command=False) == "bad"  # after "skipped PATH: "
    assert one_line(KeyError("k")) == "KeyError: 'k' (--debug for the traceback)"
    assert one_line(ValueError("")) == "ValueError: no detail (--debug for the traceback)"
    assert one_line(KeyError("k"), path, command=False) == "'k'"
    assert one_line(RuntimeError(""), path, command=False) == "RuntimeError"


# -- memory guard -----------------------------------------------------------------------------
def test_memory_guard_names_file_size_and_budget(hostile, monkeypatch):
    src = SlideSource(hostile["grayscale.tif"], max_pixels=10_000)
    with pytest.raises(MemoryBudgetError) as e:
        src.view(0.5)  # no pyramid: the whole 300 x 300 level 0 is decoded for a 150 x 150 view
    assert str(e.value) == (f"{hostile['grayscale.tif']}: reading a 300x300 region at 150x150 would decode "
                            "90,000 pixels, over the budget of 10,000 (data.max_pixels / ZOOMIN_MAX_PIXELS)")
    assert src.pixels_read == 0  # refused before anything was decoded
    monkeypatch.setenv("ZOOMIN_MAX_PIXELS", "5000")
    assert pixel_budget() == 5000 and pixel_budget(123) == 123
    with pytest.raises(MemoryBudgetError, match="over the budget of 5,000"):
        SlideSource(hostile["grayscale.tif"]).read(torch.zeros(1, dtype=torch.long),
                                                   torch.tensor([[0, 0, 100, 100]]), 1.0, (100, 100))
    monkeypatch.setenv("ZOOMIN_MAX_PIXELS", "lots")
    with pytest.raises(ValueError, match="ZOOMIN_MAX_PIXELS='lots' is not a number"):
        pixel_budget()


def test_memory_guard_counts_the_level_large_image_decodes(hostile):
    """A pyramid serves a small view from a small level; level 0 alone must be decoded whole."""
    from hostile import good_pyramid
    path = hostile["zero_bytes.tif"].with_name("ok_pyramid.tif")
    good_pyramid(path)
    pyr = SlideSource(path)
    assert pyr.levels == 3 and pyr.decoded_pixels(512, 512, (128, 128)) == 128 * 128
    huge = SlideSource(hostile["huge_level0_only.tif"])
    assert huge.decoded_pixels(60_000, 60_000, (3000, 3000)) == 60_000 ** 2
    assert huge.decoded_pixels(512, 512, (512, 512)) == 512 ** 2  # sub-tiles still readable


def test_array_source_guard():
    with pytest.raises(MemoryBudgetError, match="array: a 50x50 view would decode 2,500 pixels"):
        ArraySource(torch.zeros(1, 1, 100, 100), max_pixels=1000).view(0.5)


def test_predict_max_pixels_option(synth, checkpoint, tmp_path, capsys):
    _, manifest = synth
    rc = main(["predict", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "p.csv"), "--quiet",
               "--max-pixels", "1000", str(manifest)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 3 and all("over the budget of 1,000" in line for line in err)


# -- safe loading -----------------------------------------------------------------------------
class Evil:
    def __reduce__(self):
        return (exec, ("open(__import__('os').environ['ZOOMIN_EVIL'], 'w').write('ran')",))


def test_checkpoints_load_weights_only(tmp_path, monkeypatch):
    """A checkpoint that would run code when unpickled is refused, and the code never runs."""
    marker = tmp_path / "ran.txt"
    monkeypatch.setenv("ZOOMIN_EVIL", str(marker))
    p = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": Evil()}, p)
    with pytest.raises(ValueError, match="evil.pt: not a readable zoomin checkpoint"):
        load_checkpoint(p)
    assert not marker.exists()
    p.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ValueError, match="not a readable zoomin checkpoint"):
        load_model(p)
    assert not marker.exists()


@pytest.mark.parametrize("content,message", [
    (lambda p: p.write_bytes(b""), "not a readable zoomin checkpoint"),
    (lambda p: torch.save({"weights": torch.zeros(2)}, p), "not a zoomin checkpoint (no model and config in it)"),
    (lambda p: torch.save({"model": {"x": torch.zeros(1)}, "config": {"model": MODEL}}, p),
     "the weights do not match the model its config describes"),
])
def test_wrong_checkpoints_are_one_line(tmp_path, capsys, content, message):
    p = tmp_path / "c.pt"
    content(p)
    rc = main(["predict", "--checkpoint", str(p), "--out", str(tmp_path / "o.csv"), "--quiet", "x.tif"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and str(p) in err and message in err


def test_configs_are_parsed_never_evaluated(tmp_path, monkeypatch, capsys):
    marker = tmp_path / "ran.txt"
    bad = tmp_path / "evil.yaml"
    bad.write_text(f"model: !!python/object/apply:os.system ['touch {marker}']\n")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "x")]) == 2
    assert "not valid YAML" in capsys.readouterr().err and not marker.exists()


# -- determinism ------------------------------------------------------------------------------
def test_same_seed_same_locations_and_predictions():
    x = torch.rand(2, 3, 400, 400)
    traces = []
    for _ in range(2):
        torch.manual_seed(3)
        model = ZoomInNet(ModelConfig(**{**MODEL, "foreground": "none"})).eval()
        with torch.no_grad():
            traces.append(model(x, generator=torch.Generator().manual_seed(5)))
    a, b = traces
    for field in ("tile_boxes", "tile_counts", "subtile_boxes", "weights", "logits"):
        assert torch.equal(getattr(a, field), getattr(b, field)), field
    with torch.no_grad():
        c = model(x, generator=torch.Generator().manual_seed(6))
    assert not torch.equal(a.subtile_boxes, c.subtile_boxes)  # another seed draws elsewhere


def untimed(path):
    """A predictions CSV's lines without the last column (the slide's seconds)."""
    return [line.rsplit(",", 1)[0] for line in path.read_text().splitlines()]


def test_predict_is_deterministic_and_order_independent(synth, checkpoint, tmp_path):
    d, manifest = synth
    args = ["predict", "--checkpoint", str(checkpoint), "--quiet", "--passes", "2", "--seed", "4"]
    assert main(args + ["--out", str(tmp_path / "a.csv"), str(manifest)]) == 0
    assert main(args + ["--out", str(tmp_path / "b.csv"), str(manifest)]) == 0
    assert untimed(tmp_path / "a.csv") == untimed(tmp_path / "b.csv")
    assert main(args + ["--out", str(tmp_path / "c.csv"), str(d / "synth_0002.tif")]) == 0
    last = untimed(tmp_path / "a.csv")[-1]
    assert untimed(tmp_path / "c.csv")[-1] == last  # alone or after others: the same
