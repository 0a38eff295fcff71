"""SlideSource: a slide read lazily through large-image is interchangeable with an in-memory array."""
import numpy as np
import pytest
import torch

pytest.importorskip("large_image")
pytest.importorskip("tifffile")

from zoomin.config import ModelConfig  # noqa: E402
from zoomin.model import ZoomInNet  # noqa: E402
from zoomin.slides import SlideSource, write_pyramidal_tiff  # noqa: E402
from zoomin.sources import ArraySource, to_unit  # noqa: E402


def synthetic(H=768, W=1024, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    img = np.stack([xx * 255 // W, yy * 255 // H, (xx + yy) % 256], -1).astype(np.uint8)
    for _ in range(12 if min(H, W) > 40 else 0):  # small dark "lesions"
        r, c = rng.integers(0, H - 20), rng.integers(0, W - 20)
        img[r:r + 12, c:c + 12] = 20
    return img


@pytest.fixture(scope="module")
def lossless(tmp_path_factory):
    img = synthetic()
    path = write_pyramidal_tiff(tmp_path_factory.mktemp("s") / "slide.tif", img, tile=128, compression="zlib")
    return path, img


def as_array(img):
    return ArraySource(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255)


def test_size_levels_and_view(lossless):
    path, img = lossless
    src = SlideSource(path)
    assert src.size == (768, 1024) and src.levels >= 3 and src.batch_size == 1
    v = src.view(0.1)
    assert v.shape == (1, 3, 76, 102)
    ref = as_array(img).view(0.1)
    assert (v - ref).abs().mean() < 0.02  # another resampler, same picture


def test_level0_reads_match_the_array_exactly(lossless):
    path, img = lossless
    src, arr = SlideSource(path), as_array(img)
    boxes = torch.tensor([[-5, -7, 32, 32], [1000, 750, 32, 32], [300, 200, 32, 32], [2000, 10, 32, 32]])
    rows = torch.zeros(4, dtype=torch.long)
    a, b = src.read(rows, boxes, 1.0, (32, 32)), arr.read(rows, boxes, 1.0, (32, 32))
    assert torch.allclose(a, b, atol=1e-6)
    assert (a[3] == 0).all()  # entirely outside: zeros


def test_scaled_reads_come_from_the_pyramid(lossless):
    path, img = lossless
    src = SlideSource(path)
    boxes = torch.tensor([[256, 128, 256, 256]])
    got = src.read(torch.zeros(1, dtype=torch.long), boxes, 0.25, (64, 64))
    assert src.pixels_read <= 64 * 64 * 1.1  # decoded at the requested size, not at level 0
    ref = as_array(img).read(torch.zeros(1, dtype=torch.long), boxes, 0.25, (64, 64))
    assert (got - ref).abs().mean() < 0.03


def test_zoom_in_net_runs_on_a_slide_and_reads_little(lossless):
    path, _ = lossless
    src = SlideSource(path)
    cfg = ModelConfig(in_channels=3, stage1_resolution=0.05, tile=128, stage2_resolution=0.25, subtile=32, n_samples=8, feature_dim=8,
                      feature_width=8, foreground="otsu_dark")
    tr = ZoomInNet(cfg).eval()(src)
    assert tr.logits.shape == (1, 10)
    needed = 38 * 51 + int((tr.tile_counts > 0).sum()) * 32 * 32 + int(tr.subtile_valid.sum()) * 32 * 32
    assert src.pixels_read <= 4 * needed  # what the method needs, not the slide


def test_jpeg_pyramid_and_png(tmp_path):
    from PIL import Image
    img = synthetic(300, 400)
    jp = write_pyramidal_tiff(tmp_path / "j.tif", img, tile=128)
    assert (SlideSource(jp).view(0.5) - as_array(img).view(0.5)).abs().mean() < 0.05
    Image.fromarray(img).save(tmp_path / "x.png")
    png = SlideSource(tmp_path / "x.png")
    assert png.size == (300, 400)
    assert torch.allclose(png.read(torch.zeros(1, dtype=torch.long), torch.tensor([[10, 20, 8, 8]]), 1.0, (8, 8)),
                          as_array(img).read(torch.zeros(1, dtype=torch.long), torch.tensor([[10, 20, 8, 8]]), 1.0, (8, 8)))


def test_aperio_svs_style_file_opens_through_openslide(tmp_path):
    openslide = pytest.importorskip("openslide")
    img = synthetic(512, 640)
    path = write_pyramidal_tiff(tmp_path / "slide.svs", img, tile=128, aperio=True, mpp=0.5)
    assert openslide.OpenSlide.detect_format(str(path)) == "aperio"
    src = SlideSource(path)
    assert type(src._ts).__name__.lower().startswith("openslide") and src.size == (512, 640)
    assert abs(src.mpp - 0.5) < 1e-6
    boxes = torch.tensor([[100, 60, 64, 64]])
    got = src.read(torch.zeros(1, dtype=torch.long), boxes, 1.0, (64, 64))
    assert (got - as_array(img).read(torch.zeros(1, dtype=torch.long), boxes, 1.0, (64, 64))).abs().mean() < 0.03
    # the stage-I view as raw pixels: OpenSlide gives RGBA, cut to RGB (not contiguous), and the
    # model reads a slide's view this way (NumPy 2 refused the no-copy request; found on a GPU run)
    view = src.raw_view(0.25)
    assert view.dtype == torch.uint8 and view.shape == (1, 3, 128, 160)
    assert (to_unit(view) - as_array(img).view(0.25)).abs().mean() < 0.03
    trace = ZoomInNet(ModelConfig(in_channels=3, stage1_resolution=0.25, tile=64, stage2_resolution=0.5, subtile=16, n_samples=3,
                                  num_classes=2, foreground="otsu_dark"))(src)
    assert torch.isfinite(trace.logits).all()


@pytest.mark.parametrize("H,W", [(1, 1), (20, 30)])
def test_tiny_images_smaller_than_a_tile(tmp_path, H, W):
    from PIL import Image
    img = synthetic(max(H, 2), max(W, 2))[:H, :W]
    Image.fromarray(img).save(tmp_path / "t.png")
    torch.manual_seed(0)  # the weights: near-tied attention would make the draw order depend on earlier tests
    model = ZoomInNet(ModelConfig(in_channels=3, stage1_resolution=0.1, tile=64, stage2_resolution=0.25, subtile=16, n_samples=4,
                                  feature_dim=8, feature_width=8)).eval()
    with torch.no_grad():
        tr, ref = (model(s, generator=torch.Generator().manual_seed(0)) for s in (SlideSource(tmp_path / "t.png"),
                                                                                  as_array(img)))
    assert torch.isfinite(tr.logits).all() and torch.equal(tr.subtile_boxes, ref.subtile_boxes)
    assert torch.allclose(tr.logits, ref.logits, atol=1e-4)  # the same draws and pixels as the in-memory array


def test_bad_files_are_one_line_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.tif: file not found"):
        SlideSource(tmp_path / "nope.tif")
    (tmp_path / "empty.tif").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.tif: not a readable image"):
        SlideSource(tmp_path / "empty.tif")
    (tmp_path / "text.svs").write_text("hello")
    with pytest.raises(ValueError, match="text.svs: not a readable image"):
        SlideSource(tmp_path / "text.svs")


def test_one_writer_for_arrays_and_tile_sources(tmp_path):
    import tifffile

    from zoomin.pyramid import write_pyramid
    img = synthetic(300, 520)
    a = write_pyramidal_tiff(tmp_path / "a.tif", img, tile=64, compression="zlib", mpp=0.5)
    calls = []

    def tile_at(level, ti, tj):  # the same pyramid from a tile source (2 x 2 means per level)
        calls.append((level, ti, tj))
        f = 2**level
        h, w = 300 // f, 520 // f
        lv = img[: h * f, : w * f].reshape(h, f, w, f, 3).mean((1, 3)).round().astype(np.uint8) if f > 1 else img
        return lv[ti * 64:(ti + 1) * 64, tj * 64:(tj + 1) * 64]

    b = write_pyramid(tmp_path / "b.tif", (300, 520), tile_at, tile=64, compression="zlib", mpp=0.5)
    with tifffile.TiffFile(a) as ta, tifffile.TiffFile(b) as tb:
        assert len(ta.pages) == len(tb.pages) == 5  # until one 64² tile covers the level (32 x 18)
        for k, (pa, pb) in enumerate(zip(ta.pages, tb.pages)):
            assert pa.shape == pb.shape == (300 >> k, 520 >> k, 3) and pa.is_tiled and pa.subfiletype == (1 if k else 0)
            assert pb.tags["ResolutionUnit"].value == 3  # centimetre
            assert pb.tags["XResolution"].value[0] / pb.tags["XResolution"].value[1] == pytest.approx(2e4 / 2**k)
            assert abs(pa.asarray().astype(int) - pb.asarray()).max() <= 1  # 2 x 2 means of 2 x 2 means vs direct
    assert calls[0] == (0, 0, 0) and calls[-1] == (4, 0, 0) and len(calls) == 5 * 9 + 3 * 5 + 2 * 3 + 2 + 1
