"""Synthetic slides: real pyramidal TIFFs, lesions where the GeoJSON says, a valid manifest."""
import csv
import json

import numpy as np
import pytest
import torch

pytest.importorskip("large_image")

from zoomin.cli import main  # noqa: E402
from zoomin.slides import SlideSource  # noqa: E402
from zoomin.synth import lesion_geojson, make_spec, write_slide  # noqa: E402


def test_slide_is_a_pyramid_with_lesions_where_the_geojson_says(tmp_path):
    spec = make_spec(3000, True, np.random.default_rng(3))
    path = write_slide(tmp_path / "s.tif", spec, tile=128)
    src = SlideSource(path)
    assert src.size == (3000, 3000) and src.levels >= 5
    ring = np.array(lesion_geojson(spec)["features"][0]["geometry"]["coordinates"][0])  # (x, y)
    cx, cy = ring[:-1].mean(0)
    centre = src.read(torch.zeros(1, dtype=torch.long), torch.tensor([[int(cx) - 4, int(cy) - 4, 8, 8]]), 1.0, (8, 8))
    far = src.read(torch.zeros(1, dtype=torch.long), torch.tensor([[0, 0, 8, 8]]), 1.0, (8, 8))
    assert centre.mean() < 0.45 < far.mean()  # dark lesion vs bright background
    area = np.pi * spec.lesions[:, 2] * spec.lesions[:, 3]
    assert area.sum() / 3000**2 < 1e-3  # ROI-to-image ratio under 0.1%


def test_negative_slide_has_no_lesion():
    spec = make_spec(2000, False, np.random.default_rng(0))
    assert spec.label == 0 and lesion_geojson(spec)["features"] == []


def test_cli_writes_slides_and_manifest(tmp_path):
    assert main(["synth-slides", "--n", "4", "--size", "1024", "--out", str(tmp_path), "--quiet", "--svs"]) == 0
    rows = list(csv.DictReader(open(tmp_path / "manifest.csv")))
    assert [r["slide_id"] for r in rows] == [f"synth_{i:04d}" for i in range(4)]
    assert {r["label"] for r in rows} == {"0", "1"} and {r["split"] for r in rows} <= {"train", "test"}
    for r in rows:
        src = SlideSource(tmp_path / r["path"])
        assert src.size == (1024, 1024) and type(src._ts).__name__.lower().startswith("openslide")
        if r["label"] == "1":
            assert json.loads((tmp_path / r["annotation"]).read_text())["features"]
        else:
            assert r["annotation"] == ""


# ---------------------------------------------------------------- harder tasks for weak labels
import math  # noqa: E402

from scipy import ndimage  # noqa: E402

from zoomin.annotations import MaskSource  # noqa: E402
from zoomin.manifest import read_manifest  # noqa: E402
from zoomin.synth import CHOICES, synth_slides  # noqa: E402

NEW = [a for a in CHOICES if a != "plain"]


def ring_area(ring) -> float:
    """Signed shoelace area of a closed (x, y) ring (positive: the builder's orientation)."""
    x, y = np.asarray(ring, float).T
    return 0.5 * float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1]))


@pytest.mark.parametrize("ratio", [0.001, 0.0005, 0.0001, 0.00005])
@pytest.mark.parametrize("appearance", NEW)
def test_measured_roi_ratio_is_the_requested_one(ratio, appearance):
    for s in range(4):
        spec = make_spec(16384, True, np.random.default_rng(s), appearance=appearance, roi_ratio=ratio)
        rings = [f["geometry"]["coordinates"][0] for f in lesion_geojson(spec)["features"]]
        assert 1 <= len(rings) <= 3 and all(len(r) >= 4 and r[0] == r[-1] for r in rings)
        areas = [ring_area(r) for r in rings]
        assert min(areas) > 0  # one orientation throughout
        assert sum(areas) / 16384**2 == pytest.approx(ratio, rel=0.25)
        assert spec.roi_ratio == pytest.approx(ratio, rel=1e-9)


def inside_outside(tmp_path, appearance: str, seed: int = 0, size: int = 2048):
    """Level-0 pixels (float RGB) of a written slide inside its lesion outlines and in the tissue
    around them (an annulus out to 4 lesion radii, away from the outlines)."""
    import tifffile
    spec = make_spec(size, True, np.random.default_rng(seed), appearance=appearance, roi_ratio=0.002)
    path = write_slide(tmp_path / f"{appearance}_{seed}.tif", spec, tile=256)
    img = tifffile.imread(path, key=0).astype(np.float32)
    path.unlink()
    mask = MaskSource(lesion_geojson(spec), (size, size)).read(
        torch.zeros(1, dtype=torch.long), torch.tensor([[0, 0, size, size]]), 1.0, (size, size))[0, 0].numpy()
    near = np.zeros((size, size), bool)
    yy, xx = np.ogrid[:size, :size]
    for cr, cc, ar, ac, _ in spec.lesions:
        near |= (yy - cr) ** 2 + (xx - cc) ** 2 <= (4 * max(ar, ac)) ** 2
    far = near & ~ndimage.binary_dilation(mask > 0, iterations=6) & (img.mean(-1) < 230)  # tissue, not glass
    return spec, img, mask > 0.99, far


def coherence(grey: np.ndarray) -> np.ndarray:
    """Structure-tensor coherence (0: isotropic, 1: one orientation) over 9 x 9 windows."""
    gy, gx = np.gradient(ndimage.gaussian_filter(grey, 1.0))
    jxx, jyy, jxy = (ndimage.uniform_filter(g, 9) for g in (gx * gx, gy * gy, gx * gy))
    return np.sqrt((jxx - jyy) ** 2 + 4 * jxy**2) / (jxx + jyy + 1e-6)


def test_nuclei_lesions_are_darker_and_crowded(tmp_path):
    spec, img, inside, far = inside_outside(tmp_path, "nuclei")
    grey = img.mean(-1)
    assert grey[far].mean() - grey[inside].mean() > 25  # mean darkness
    dark = grey < 110  # nuclear pixels
    assert dark[inside].mean() > 3 * dark[far].mean()  # crowded


def test_colour_lesions_shift_the_stain_not_the_texture(tmp_path):
    spec, img, inside, far = inside_outside(tmp_path, "colour")
    assert np.linalg.norm(img[inside].mean(0) - img[far].mean(0)) > 12  # mean colour moves
    od = -np.log(np.maximum(img, 1) / 255).sum(-1)  # optical density: stain amount
    mean = ndimage.uniform_filter(od, 7)
    spread = np.sqrt(np.maximum(ndimage.uniform_filter(od**2, 7) - mean**2, 0)) / (mean + 1e-3)  # local CV
    assert 0.85 < np.median(spread[inside]) / np.median(spread[far]) < 1.2  # same texture, more or other stain


def test_texture_lesions_change_the_texture_not_the_colour(tmp_path):
    spec, img, inside, far = inside_outside(tmp_path, "texture")
    assert np.abs(img[inside].mean(0) - img[far].mean(0)).max() < 8  # normal colour
    c = coherence(img.mean(-1))
    assert np.median(c[inside]) > np.median(c[far]) + 0.2  # fibres: one orientation


def test_giant_cells_are_3_to_4_times_a_nucleus(tmp_path):
    spec, img, inside, far = inside_outside(tmp_path, "giant_cells")
    dark = img.mean(-1) < 90
    lab, n = ndimage.label(dark)
    sizes = ndimage.sum(np.ones_like(dark), lab, np.arange(1, n + 1))  # (n,) blob areas
    normal = math.pi * spec.nucleus**2
    big_in = sizes[np.unique(lab[inside & dark]) - 1] if (inside & dark).any() else np.zeros(1)
    assert 2 <= (big_in > 5 * normal).sum() <= 8  # a few nuclei of 3-4x the radius
    blobs_far = np.unique(lab[far & dark])
    assert (sizes[blobs_far[blobs_far > 0] - 1] < 5 * normal).all()  # none in the tissue around


@pytest.mark.parametrize("appearance", NEW)
def test_distractors_are_on_negatives_too_and_outside_the_outlines(appearance):
    neg = make_spec(4096, False, np.random.default_rng(1), appearance=appearance, distractors=8)
    assert neg.label == 0 and lesion_geojson(neg)["features"] == [] and len(neg.distractors) >= 8
    for s in range(3):
        pos = make_spec(4096, True, np.random.default_rng(s), appearance=appearance, roi_ratio=0.001, distractors=8)
        mask = MaskSource(lesion_geojson(pos), (4096, 4096))
        r, c = pos.distractors[:, 0], pos.distractors[:, 1]
        boxes = torch.tensor(np.column_stack([c - 8, r - 8, np.full_like(r, 16), np.full_like(r, 16)]))
        cover = mask.read(torch.zeros(len(boxes), dtype=torch.long), boxes, 1.0, (4, 4))
        assert len(pos.distractors) >= 8 and float(cover.max()) == 0


@pytest.mark.parametrize("appearance", ["nuclei", "colour", "giant_cells"])
def test_every_level_shows_the_same_lesion(tmp_path, appearance):
    import tifffile
    spec = make_spec(2048, True, np.random.default_rng(3), appearance=appearance, roi_ratio=0.001)
    with tifffile.TiffFile(write_slide(tmp_path / "s.tif", spec, tile=256)) as tf:
        level0, level3 = tf.pages[0].asarray().astype(np.float32), tf.pages[3].asarray().astype(np.float32)
    down = level0.reshape(256, 8, 256, 8, 3).mean((1, 3))  # level 0 averaged to level 3's grid
    cr, cc = spec.lesions[0, :2] / 8
    reach = spec.lesions[0, 2:4].max() * 1.3 / 8
    box = np.s_[int(cr - reach):int(cr + reach) + 1, int(cc - reach):int(cc + reach) + 1]
    assert np.abs(level3[box].mean((0, 1)) - down[box].mean((0, 1))).max() < 5  # cells keep their ink
    assert np.abs(level3.mean((0, 1)) - down.mean((0, 1))).max() < 1


def test_distractors_are_drawn_on_negative_slides(tmp_path):
    import tifffile
    spec = make_spec(2048, False, np.random.default_rng(2), appearance="mixed", distractors=6)
    img = tifffile.imread(write_slide(tmp_path / "n.tif", spec, tile=256), key=0).mean(-1)
    r, c = spec.distractors[:, 0].astype(int), spec.distractors[:, 1].astype(int)
    assert np.median(img[r, c]) < 110 < np.median(img[img < 230])  # dark cells on pink tissue


def test_memory_stays_flat_tile_by_tile(tmp_path):
    import tracemalloc
    specs = {size: make_spec(size, True, np.random.default_rng(0), appearance="mixed", roi_ratio=0.001, distractors=4)
             for size in (2048, 8192)}
    write_slide(tmp_path / "warm.tif", specs[2048], tile=256)  # builds the texture banks (cached)
    peaks = {}
    for size, spec in specs.items():
        tracemalloc.start()
        write_slide(tmp_path / f"{size}.tif", spec, tile=256)
        peaks[size] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peaks[8192] < 32 * 2**20 < 8192 * 8192 * 3  # a few tiles, not a level (192 MB at level 0)
    assert peaks[8192] < 4 * peaks[2048] + 2**22  # not with the slide (16x the pixels of the 2048² one)


def test_labels_only_manifest_reads_back_with_mpp(tmp_path):
    assert main(["synth-slides", "--n", "4", "--size", "512", "--out", str(tmp_path), "--quiet", "--appearance",
                 "mixed", "--roi-ratio", "0.001", "--distractors", "3", "--no-annotations"]) == 0
    header = (tmp_path / "manifest.csv").read_text().splitlines()[0]
    assert header == "slide_id,path,label,split,mpp"
    entries = read_manifest(tmp_path / "manifest.csv")
    assert all(e.annotation is None and e.mpp == 1.0 for e in entries)
    assert {e.label for e in entries} == {0, 1}
    assert all((tmp_path / f"{e.slide_id}.geojson").is_file() == bool(e.label) for e in entries)  # diagnostics
    with_outlines = synth_slides(tmp_path / "b", 2, 512, appearance="nuclei", positive_fraction=1.0, progress=False)
    assert all(e.annotation and e.annotation.is_file() for e in read_manifest(with_outlines))


def test_bad_appearance_or_ratio_is_one_line():
    with pytest.raises(ValueError, match="unknown appearance 'blobs'"):
        make_spec(512, True, np.random.default_rng(0), appearance="blobs")
    with pytest.raises(ValueError, match="roi_ratio 0.5 is not in"):
        make_spec(512, True, np.random.default_rng(0), appearance="nuclei", roi_ratio=0.5)
