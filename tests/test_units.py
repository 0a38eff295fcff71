"""Physical units (zoomin.units, model.mpp): configs in µm per pixel, slides read at the model's
resolution whatever their size or scan resolution."""
import numpy as np
import pytest
import torch

from zoomin.config import Config, ModelConfig
from zoomin.model import build_model
from zoomin.units import Units, relative_scale, to_mpp

pytest.importorskip("large_image")
from zoomin.pyramid import write_pyramid  # noqa: E402
from zoomin.slides import SlideSource  # noqa: E402

PHYS = dict(kind="zoom_in", in_channels=3, num_classes=2, mpp=1.0, stage1_resolution=16.0, stage1_units="mpp", stage2_resolution=4.0, stage2_units="mpp", tile=64,
            subtile=16, n_samples=4, foreground="otsu_dark", feature_norm="none")


def test_units_vocabulary():
    assert to_mpp(40, Units.POWER) == 0.25 and to_mpp(10, "power") == 1.0 and to_mpp(0.5) == 0.5
    assert relative_scale(1.0, 16.0) == 0.0625
    with pytest.raises(ValueError, match="baseline"):
        to_mpp(0.5, Units.BASELINE)
    with pytest.raises(ValueError, match="> 0"):
        to_mpp(0, "mpp")


def test_config_states_resolutions_in_microns():
    cfg = ModelConfig(**PHYS)
    assert (cfg.scale1, cfg.scale2) == (1 / 16, 1 / 4)
    assert ModelConfig(**{**PHYS, "mpp": 0.0, "magnification": 10}).mpp == 1.0  # 10x = 1 µm/px
    with pytest.raises(ValueError, match="needs model.mpp"):
        ModelConfig(**{**PHYS, "mpp": 0.0})
    with pytest.raises(ValueError, match="disagree"):
        ModelConfig(**{**PHYS, "magnification": 20})
    with pytest.raises(ValueError, match="at most as fine as model.mpp"):
        ModelConfig(**{**PHYS, "stage1_resolution": 0.5, "stage1_units": "mpp"})
    shipped = Config.from_yaml("zoomin/configs/slides.yaml").model
    assert shipped.mpp > 0 and shipped.stage1_units == "mpp" and shipped.scale1 == shipped.mpp / shipped.stage1_resolution


def tissue(mpp: float, size: int, lesion_um=(700.0, 400.0)):
    """A pyramid writer's tile function for the same tissue scanned at ``mpp``: a pattern and a
    dark lesion defined in microns, so every scan shows the same thing at the same place."""
    def tile_at(level, ti, tj, tile=512):
        f = mpp * 2 ** level  # microns per pixel of this level
        y = (ti * tile + np.arange(tile) + 0.5)[:, None] * f  # microns
        x = (tj * tile + np.arange(tile) + 0.5)[None, :] * f
        g = 150 + 40 * np.sin(x / 90.0) * np.cos(y / 70.0)
        g = np.where((y - lesion_um[0]) ** 2 + (x - lesion_um[1]) ** 2 < 60.0**2, 40.0, g)
        g = np.where(x > size * mpp * 0.8, 240.0, g)  # glass on the right
        return np.repeat(g[..., None], 3, -1).clip(0, 255).astype(np.uint8)
    return tile_at


def write(tmp_path, name, mpp, size):
    return write_pyramid(tmp_path / name, (size, size), tissue(mpp, size), tile=512, mpp=mpp, quality=95)


def test_stage_one_sees_the_same_microns_on_any_slide_size_and_scan(tmp_path):
    """4,096² and 8,192² slides of the same tissue at 0.5 µm/px, and a 0.25 µm/px scan: the model
    (mpp 1, stage I at 16 µm/px) reads views of the same physical resolution."""
    small, large = write(tmp_path, "small.tif", 0.5, 4096), write(tmp_path, "large.tif", 0.5, 8192)
    fine = write(tmp_path, "fine.tif", 0.25, 8192)  # the small slide's tissue at twice the pixels
    model = build_model(ModelConfig(**PHYS)).eval()
    srcs = [SlideSource(p, mpp=1.0) for p in (small, large, fine)]
    assert [s.size for s in srcs] == [(2048, 2048), (4096, 4096), (2048, 2048)]
    views = [s.view(model.stage1_scale(s.size)) for s in srcs]
    assert [v.shape[-1] for v in views] == [128, 256, 128]  # 16 µm per view pixel on all three
    assert [s.mpp / model.stage1_scale(s.size) for s in srcs] == [16.0] * 3
    a, b, c = views[0][0], views[1][0, :, :128, :128], views[2][0]
    part = slice(0, 96)  # left of the small slide's glass strip
    assert (a[..., part] - b[..., part]).abs().mean() < 0.02 and (a - c).abs().mean() < 0.02
    lesion = [torch.nonzero(v.mean(0)[:, part] < 0.3).float().mean(0) for v in (a, b, c)]  # (row, col) centroid
    for centre in lesion:  # the lesion's centre, 700 x 400 µm, is at the same view pixel on all three
        assert torch.allclose(centre, torch.tensor([700 / 16 - 0.5, 400 / 16 - 0.5]), atol=0.5)
    with torch.no_grad():
        tr = model(srcs[1], generator=torch.Generator().manual_seed(0))
    assert tr.alpha.shape[-2:] == (256, 256) and tr.scale1 == 1 / 16


def test_relative_scales_change_the_microns_with_the_slide_size(tmp_path):
    """What physical units fix: with a view size the stage-I resolution follows the slide's size."""
    rel = ModelConfig(**{**PHYS, "mpp": 0.0, "stage1_resolution": 128, "stage1_units": "px", "stage2_resolution": 0.25,
                              "stage2_units": "baseline"})
    model = build_model(rel)
    small, large = (SlideSource(write(tmp_path, n, 0.5, s)) for n, s in (("s.tif", 1024), ("l.tif", 4096)))
    assert small.mpp / model.stage1_scale(small.size) != large.mpp / model.stage1_scale(large.size)


def test_a_slide_without_a_pixel_size_is_a_clear_error(tmp_path):
    from PIL import Image
    png = tmp_path / "x.png"
    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(png)
    with pytest.raises(ValueError, match=r"x\.png: the file does not state its pixel size.*--slide-mpp"):
        SlideSource(png, mpp=1.0)
    src = SlideSource(png, mpp=1.0, manifest_mpp=0.5)  # the user says 0.5 µm/px
    assert src.size == (32, 32) and src.view(1.0).shape == (1, 3, 32, 32)
    assert SlideSource(png).size == (64, 64)  # relative units: the file's pixels


@pytest.mark.slow
def test_a_100000_pixel_slide_and_a_4096_one_of_the_same_tissue_give_views_of_the_same_microns(tmp_path):
    """The acceptance case: 4,096² and 100,000² slides at 0.5 µm/px, the same tissue in the top-left
    4,096² (glass elsewhere). The default config's stage-I views have the same µm per pixel and show
    the same pixels where they overlap."""
    glass = np.full((512, 512, 3), 240, np.uint8)
    tissue_at = tissue(0.5, 4096)

    def big(level, ti, tj, tile=512):  # ~30 s to write: nearly every tile is the same glass
        f = 2 ** level
        if max(ti, tj) * tile * f >= 4096:
            return glass
        t = tissue_at(level, ti, tj, tile).copy()
        t[(ti * tile + np.arange(tile)) * f >= 4096] = 240  # glass past the tissue's 4,096 px
        t[:, (tj * tile + np.arange(tile)) * f >= 4096] = 240
        return t
    small_path = write(tmp_path, "small.tif", 0.5, 4096)
    big_path = write_pyramid(tmp_path / "big.tif", (100_000, 100_000), big, tile=512, mpp=0.5, quality=95)
    cfg = Config.from_yaml("zoomin/configs/slides.yaml").model
    model = build_model(cfg).eval()
    small, large = SlideSource(small_path, mpp=cfg.mpp), SlideSource(big_path, mpp=cfg.mpp)
    scales = [model.stage1_scale(s.size) for s in (small, large)]
    assert [s.mpp / k for s, k in zip((small, large), scales)] == [cfg.view_mpp(1)] * 2  # 16 µm per view pixel
    a = small.view(scales[0])[0]  # (3, 128, 128)
    b = large.view_rows(scales[1], 0, 128)[0, :, :, :128].float() / 255  # the same 2,048 µm, streamed rows
    assert a.shape == (3, 128, 128) and large.size == (50_000, 50_000)
    part = slice(0, 96)  # left of the small slide's glass strip
    assert (a[..., part] - b[..., part]).abs().mean() < 0.02
    with torch.no_grad():
        tr = model(large, generator=torch.Generator().manual_seed(0))
    assert tr.alpha.shape[-2:] == (3125, 3125)
    assert (tr.tile_boxes[0, :, :2] < 2048).all()  # the draws land on the only tissue there is


def test_a_stated_pixel_size_wins_over_the_fallback_and_loses_to_an_override(tmp_path):
    path = write(tmp_path, "s.tif", 0.5, 1024)
    assert SlideSource(path, mpp=1.0, fallback_mpp=0.25).size == (512, 512)  # the file says 0.5
    assert SlideSource(path, mpp=1.0, manifest_mpp=0.25).size == (256, 256)  # a manifest row says 0.25
    with pytest.raises(ValueError, match="must be > 0"):
        SlideSource(path, mpp=1.0, fallback_mpp=-1)
