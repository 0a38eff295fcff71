"""Real images through zoomin (issue #15 item 3): OpenSlide's CMU-1-Small-Region (real H&E, Aperio
SVS) through both large-image readers, the tissue mask against a hand-checked figure, a forward
pass, and ``zoomin predict`` on it, on a real IHC image and on a real satellite mosaic, with every
export read back by its readers. Where each file comes from: docs/real_data.md and realdata.py."""
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from export_readers import dsa_problems, geojson_problems
from realdata import cmu_svs, earth_jpg, ihc_png, module

pytest.importorskip("large_image")

import zoomin  # noqa: E402
from zoomin import foreground  # noqa: E402
from zoomin.config import Config  # noqa: E402
from zoomin.geometry import view_size  # noqa: E402
from zoomin.model import build_model  # noqa: E402
from zoomin.slides import SlideSource  # noqa: E402

try:
    from zoomin.checkpoint import save_model
except ImportError:  # before save_model moved out of zoomin.train
    from zoomin.train import save_model

SLIDES_YAML = Path(zoomin.__file__).parent / "configs" / "slides.yaml"
SVS_HW = (2967, 2220)  # CMU-1-Small-Region, level 0 (rows, columns)

# Tissue fraction of CMU-1-Small-Region, checked by hand: the 555 x 742 thumbnail was looked at
# and the tissue outlined band by band (about 0.38, counting the white gaps inside the loose
# dermis as tissue, so an upper bound); an independent HSV rule (skimage.color.rgb2hsv, saturation
# > 0.1: stained tissue is coloured, glass is grey) gives 0.335 on the thumbnail, and stays within
# 0.32-0.35 for saturation cuts from 0.05 to 0.15. The figure: 0.34 of the slide is tissue.
TISSUE_FRACTION = 0.34
TISSUE_TOLERANCE = 0.05  # zoomin's Otsu mask on the stage-I view measured 0.338


def level0_boxes(n: int, hw: tuple[int, int], size: int, seed: int = 0) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    return [(int(rng.integers(0, hw[1] - size)), int(rng.integers(0, hw[0] - size))) for _ in range(n)]


def test_svs_reads_the_same_through_tiff_openslide_and_zoomin():
    """Level 0 of the SVS is a set of JPEG tiles; large-image's tiff source (libtiff), its OpenSlide
    source and tifffile (imagecodecs) each decode them. JPEG decoders may round the inverse DCT and
    the chroma upsampling differently, which moves a pixel by a few levels, so the tolerance is
    8/255 at most and 1/255 on average (with the decoders installed here they agree exactly)."""
    import large_image
    tifffile = module("tifffile")
    tiff_source, openslide_source = module("large_image_source_tiff"), module("large_image_source_openslide")
    svs = cmu_svs()
    with tifffile.TiffFile(svs) as tf:
        reference = tf.pages[0].asarray()  # (H, W, 3) uint8
    assert reference.shape == (*SVS_HW, 3)
    readers = {"tiff": tiff_source.open(str(svs)), "openslide": openslide_source.open(str(svs))}
    for name, ts in readers.items():
        assert ts.name == name  # each source decodes the file itself (no fallback to the other)
        meta = ts.getMetadata()
        assert (meta["sizeY"], meta["sizeX"]) == SVS_HW, name
        assert meta["mm_x"] == pytest.approx(0.499e-3) and ts.getNativeMagnification()["magnification"] == 20, name
    src = SlideSource(svs)
    assert src.size == SVS_HW and src.mpp == pytest.approx(0.499)
    for x, y in level0_boxes(6, SVS_HW, 256):
        want = reference[y:y + 256, x:x + 256].astype(int)
        for name, ts in readers.items():
            got, _ = ts.getRegion(region=dict(left=x, top=y, width=256, height=256, units="base_pixels"),
                                  format=large_image.constants.TILE_FORMAT_NUMPY)
            diff = np.abs(got[..., :3].astype(int) - want)
            assert diff.max() <= 8 and diff.mean() <= 1, (name, x, y, diff.max(), diff.mean())
        mine = src.read(torch.zeros(1, dtype=torch.long), torch.tensor([[x, y, 256, 256]]), 1.0, (256, 256))[0]
        diff = np.abs(mine.permute(1, 2, 0).numpy() * 255 - want)
        assert diff.max() <= 8.5 and diff.mean() <= 1, ("SlideSource", x, y, diff.max(), diff.mean())


def tissue_mask(src: SlideSource, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """zoomin's tissue mask on the view at ``scale`` -> (view (1, C, h, w), mask (h, w) bool)."""
    view = src.view(scale)
    fg = foreground.mask(view, foreground.fit(view, "otsu_dark"), "otsu_dark")
    return view, fg[0].view(view.shape[-2:])


def test_tissue_mask_on_real_he_matches_the_hand_checked_fraction():
    color = module("skimage.color")
    cfg = Config.from_yaml(SLIDES_YAML)
    view, fg = tissue_mask(SlideSource(cmu_svs()), cfg.model.scale1)
    assert abs(float(fg.float().mean()) - TISSUE_FRACTION) <= TISSUE_TOLERANCE
    # and it is the same tissue as the independent saturation rule's, not just as much of it
    coloured = torch.from_numpy(color.rgb2hsv(view[0].permute(1, 2, 0).numpy())[..., 1] > 0.1)
    iou = float((fg & coloured).sum() / (fg | coloured).sum())
    assert iou >= 0.85, iou


@pytest.fixture(scope="module")
def slide_model(tmp_path_factory):
    """An untrained model with the packaged slide settings (configs/slides.yaml), saved as a checkpoint."""
    torch.manual_seed(0)
    cfg = Config.from_yaml(SLIDES_YAML)
    model = build_model(cfg.model).eval()
    return model, cfg, save_model(tmp_path_factory.mktemp("real") / "slides.pt", model, cfg)


def test_forward_pass_on_real_he_attends_only_to_tissue(slide_model):
    model, cfg, _ = slide_model
    src = SlideSource(cmu_svs())
    with torch.no_grad():
        tr = model(src, generator=torch.Generator().manual_seed(0))
    assert tr.image_size == SVS_HW and tr.alpha.shape[-2:] == view_size(*SVS_HW, cfg.model.scale1)
    probs = tr.probs[0]
    assert torch.isfinite(probs).all() and float(probs.sum()) == pytest.approx(1, abs=1e-5)
    _, fg = tissue_mask(src, tr.scale1)
    assert torch.equal(tr.alpha[0] > 0, fg)  # background gets exactly no attention
    assert float(tr.alpha[0][fg].sum()) == pytest.approx(1, abs=1e-4)
    drawn = tr.tile_index[0][tr.tile_counts[0] > 0]
    assert fg.flatten()[drawn].all() and int(tr.tile_counts[0].sum()) == cfg.model.n_samples
    assert int(tr.subtile_valid[0].sum()) == cfg.model.n_samples  # one sub-tile per stage-I draw


@pytest.mark.parametrize("image", [cmu_svs, ihc_png, earth_jpg], ids=["cmu_svs", "ihc", "earth"])
def test_subtiles_are_drawn_inside_real_images(slide_model, image):
    """Tiles at the border stick out of the image and their stage-II views are zero-padded there.
    Black padding is darker than any tissue threshold: before the mask left it out, 36 of these 120
    sub-tiles were centred outside ihc.png (tissue to its edges), 8 outside earth.jpg, 1 the SVS."""
    model, _, _ = slide_model
    src = SlideSource(image())
    H, W = src.size
    outside = 0
    for seed in range(10):
        with torch.no_grad():
            tr = model(src, generator=torch.Generator().manual_seed(seed))
        boxes = tr.subtile_boxes[0][tr.subtile_valid[0]]  # (M, 4) level-0 (x, y, w, h)
        cx, cy = boxes[:, 0] + boxes[:, 2] // 2, boxes[:, 1] + boxes[:, 3] // 2
        outside += int(((cx < 0) | (cy < 0) | (cx >= W) | (cy >= H)).sum())
    assert outside == 0, f"{outside} sub-tile(s) centred outside {src.path.name}"


@pytest.mark.slow
def test_predict_cli_on_real_slide_ihc_and_satellite_images(slide_model, tmp_path):
    """``zoomin predict`` as a user runs it, on three real files in one call; every heatmap, GeoJSON
    and DSA annotation it writes is read back by its readers."""
    _, cfg, ckpt = slide_model
    images = {"cmu_small_region": cmu_svs(), "ihc": ihc_png(), "earth": earth_jpg()}
    out, hm = tmp_path / "pred.csv", tmp_path / "heatmaps"
    # slides.yaml works at 1 µm/px: the SVS states 0.499 µm/px and is read at half its pixels; the PNG and
    # the JPEG state no pixel size, so --slide-mpp 1 reads them as they are
    run = subprocess.run([sys.executable, "-m", "zoomin", "predict", "--checkpoint", str(ckpt), "--out", str(out),
                          "--heatmaps", str(hm), "--slide-mpp", "1", "--quiet", *map(str, images.values())],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "zoomin:" not in run.stderr and "3 slide(s) predicted" in run.stdout  # nothing skipped, all exported
    rows = list(csv.DictReader(open(out)))
    assert [r["slide_id"] for r in rows] == list(images)
    from PIL import Image
    for r in rows:
        sid = r["slide_id"]
        assert abs(float(r["p_0"]) + float(r["p_1"]) - 1) < 1e-4 and r["prediction"] in ("0", "1")
        H, W = SlideSource(images[sid]).size  # the file's pixels: what the exports are in
        seen = SlideSource(images[sid], mpp=cfg.model.mpp, fallback_mpp=1.0).size  # what the model read
        with Image.open(hm / f"{sid}.png") as png:
            assert png.size[::-1] == view_size(*seen, cfg.model.scale1)
        assert geojson_problems(hm / f"{sid}.geojson") == []
        assert dsa_problems(hm / f"{sid}.dsa.json") == []
        points = np.array(json.loads((hm / f"{sid}.dsa.json").read_text())["elements"][0]["points"])
        assert len(points) and (points[:, 0] >= 0).all() and (points[:, 0] <= W).all()
        assert (points[:, 1] >= 0).all() and (points[:, 1] <= H).all() and (points[:, 3] > 0).all()
