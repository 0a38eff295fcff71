"""Plain pyramids (issue #34): what ``zoomin.tiff_pyramid`` reads with tifffile is what large-image
reads — the size, the levels, the pixel size and every level's pixels — and every other file is
left to large-image."""
import numpy as np
import pytest
import torch

large_image = pytest.importorskip("large_image")
tifffile = pytest.importorskip("tifffile")

from zoomin import slides as slides_module  # noqa: E402
from zoomin.slides import SlideSource, write_pyramidal_tiff  # noqa: E402
from zoomin.tiff_pyramid import probe  # noqa: E402


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """Plain pyramids: odd sides, several tile sizes, compressions and pixel sizes."""
    d = tmp_path_factory.mktemp("plain")
    rng = np.random.default_rng(0)
    img = (rng.random((1031, 1501, 3)) * 255).astype(np.uint8)
    img[200:260, 300:420] = 30
    return [write_pyramidal_tiff(d / "odd.tif", img, tile=128, mpp=0.499),
            write_pyramidal_tiff(d / "deflate.tiff", img[:777, :1024], tile=256, mpp=0.25, compression="zlib"),
            write_pyramidal_tiff(d / "raw.tif", img[:512, :300], tile=128, mpp=1.0, compression="none"),
            write_pyramidal_tiff(d / "one_tile.tif", img[:200, :250], tile=256, mpp=0.3)]


def test_what_tifffile_reads_is_what_large_image_reads(plain):
    for path in plain:
        pyr = probe(path)
        assert pyr is not None, path.name
        ts = large_image.open(str(path))
        meta = ts.getMetadata()
        assert ts.name == "tiff"  # the reader large-image itself picks for the file
        assert (pyr.size, pyr.levels, pyr.mm_x) == ((meta["sizeY"], meta["sizeX"]), meta["levels"], meta["mm_x"])
        assert all(d is not None for d in ts._nonemptyLevelsList())
        for level in range(pyr.levels):
            f = 2 ** (pyr.levels - 1 - level)
            H, W = pyr.size
            h, w = H // f, W // f
            kw = {} if f == 1 else {"output": dict(maxWidth=w, maxHeight=h)}
            ref = ts.getRegion(region=dict(left=0, top=0, width=w * f, height=h * f, units="base_pixels"),
                               format=large_image.constants.TILE_FORMAT_NUMPY, **kw)[0][..., :3]
            got = pyr.level(level)
            assert got.shape == ref.shape and np.array_equal(got, ref), (path.name, level)


def _pages(path, sizes, tile=128, first_tags=()):
    """A tiled RGB TIFF whose pages have ``sizes`` (h, w), page 0 with ``first_tags`` (tifffile's
    extratags) -> path."""
    with tifffile.TiffWriter(path) as tw:
        for k, (h, w) in enumerate(sizes):
            tw.write(np.full((h, w, 3), 100 + k, np.uint8), tile=(tile, tile), photometric="rgb",
                     compression="zlib", subfiletype=1 if k else 0, metadata=None,
                     extratags=list(first_tags) if k == 0 else [])
    return path


def test_other_files_are_left_to_large_image(tmp_path, plain):
    img = np.full((600, 700, 3), 128, np.uint8)
    aperio = write_pyramidal_tiff(tmp_path / "aperio.tif", img, tile=128, aperio=True)  # metadata in the description
    missing = write_pyramidal_tiff(tmp_path / "missing.tif", img, tile=128, levels=2)  # 4 levels, 2 pages
    untiled = tmp_path / "flat.tif"
    tifffile.imwrite(untiled, img)
    svs = tmp_path / "renamed.svs"
    svs.write_bytes(plain[0].read_bytes())  # not a .tif: large-image chooses its reader by name too
    png = tmp_path / "a.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n")
    two_names = tmp_path / "scan.ndpi.tif"  # large-image reads every dot-part: OpenSlide's
    two_names.write_bytes(plain[0].read_bytes())
    sizes = [(1030, 1030), (515, 515), (257, 257), (128, 128)]
    assert probe(_pages(tmp_path / "ok.tif", sizes, tile=256)) is not None  # the same pages, plainly
    oriented = _pages(tmp_path / "oriented.tif", sizes, tile=256, first_tags=[(274, "H", 1, 1, True)])  # page 0 only
    rounded_up = _pages(tmp_path / "up.tif", [(900, 900), (450, 450), (225, 225), (113, 113)])
    for path in (aperio, missing, untiled, svs, png, tmp_path / "absent.tif", two_names, oriented, rounded_up):
        assert probe(path) is None, path.name


def test_a_truncated_plain_pyramid_is_one_line(tmp_path, capfd):
    path = write_pyramidal_tiff(tmp_path / "cut.tif", np.full((512, 512, 3), 90, np.uint8), tile=128)
    path.write_bytes(path.read_bytes()[:-2000])  # the last tiles' bytes gone, the tags kept
    capfd.readouterr()
    with pytest.raises(ValueError, match=r"cut\.tif: truncated TIFF"):
        SlideSource(path)
    assert capfd.readouterr().err == ""


def test_a_plain_slide_reads_as_through_large_image(plain, monkeypatch):
    """Views, stage-II reads and sub-tiles of a plain pyramid are the pixels large-image gives, and
    large-image is not opened for reads served from the kept levels."""
    def reads(src):
        src.prefetch(1 / 8, (0.5, 1.0))
        boxes = torch.tensor([[0, 0, 64, 64], [100, 37, 64, 64], [400, 300, 64, 64]])
        rows = torch.zeros(3, dtype=torch.long)
        return [src.view(1 / 8), src.read(rows, boxes, 0.5, (32, 32)), src.read(rows, boxes * 2, 1.0, (64, 64))]
    for path in plain[:2]:
        fast = SlideSource(path, mpp=1.0)
        got = reads(fast)
        assert fast._plain is not None and fast._tile_source is None  # nothing asked of large-image
        with monkeypatch.context() as m:
            m.setattr(slides_module, "probe", lambda p: None)
            slow = SlideSource(path, mpp=1.0)
            want = reads(slow)
        assert slow._plain is None and (fast.size, fast.mpp, fast.levels) == (slow.size, slow.mpp, slow.levels)
        for a, b in zip(got, want):
            assert a.shape == b.shape and torch.equal(a, b)
    fast = SlideSource(plain[0])  # level 0 (1,031 x 1,501) is above the kept levels' budget
    fast.read(torch.zeros(1, dtype=torch.long), torch.tensor([[0, 0, 8, 8]]), 4.0, (32, 32))
    assert fast._tile_source is not None  # large-image answers what no kept level holds
    ahead = SlideSource(plain[0])
    ahead.prefetch(1 / 8, (0.5,))
    assert ahead._tile_source is None  # every read it prefetched for is cut from a kept level
    ahead.prefetch(1 / 8, (0.5, 1.0))
    assert ahead._tile_source is not None  # the sub-tiles' level is not kept: opened ahead, not mid-read


def test_a_bad_tile_in_a_plain_pyramid_is_one_line(tmp_path):
    path = write_pyramidal_tiff(tmp_path / "bad.tif", np.full((512, 512, 3), 90, np.uint8), tile=128)
    with tifffile.TiffFile(path) as tf:
        page = tf.pages[-1]
        offset, count = int(page.dataoffsets[0]), int(page.databytecounts[0])
    data = bytearray(path.read_bytes())
    data[offset:offset + count] = b"\x00" * count  # the coarsest level's tile: zeros, not a JPEG
    path.write_bytes(bytes(data))
    src = SlideSource(path)
    assert src._plain is not None
    with pytest.raises(ValueError, match=r"bad\.tif: cannot decode pixels"):
        src.view(1 / 4)
