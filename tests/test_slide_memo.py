"""Kept pyramid levels (issue #34): a request cut from a level decoded whole is the array
large-image's ``getRegion`` returns for it, pixel for pixel; the read-ahead decodes the levels the
stage-II reads need, after which those reads ask large-image for nothing."""
import random

import numpy as np
import pytest
import torch

pytest.importorskip("large_image")
pytest.importorskip("tifffile")

from zoomin.config import ModelConfig  # noqa: E402
from zoomin.model import ZoomInNet  # noqa: E402
from zoomin.slides import SlideSource, write_pyramidal_tiff  # noqa: E402


@pytest.fixture(scope="module")
def pyramids(tmp_path_factory):
    """JPEG pyramids with sides that no power of two divides, a TIFF and an Aperio-style one."""
    d = tmp_path_factory.mktemp("memo")
    rng = np.random.default_rng(0)
    img = (rng.random((1031, 1501, 3)) * 255).astype(np.uint8)
    img[200:260, 300:420] = 30  # an edge, so resampling has something to do
    return [write_pyramidal_tiff(d / "odd.tif", img, tile=128),
            write_pyramidal_tiff(d / "aperio.tif", img[:700, :900], tile=128, aperio=True)]


def random_requests(src: SlideSource, n: int, seed: int):
    """``n`` in-file rectangles with output sizes from 1:1 to 64:1, some with a squeezed aspect."""
    rng = random.Random(seed)
    H, W = src.file_size
    for _ in range(n):
        w = min(W, rng.choice([33, 64, 100, 128, 257, 512, W // 2, W]))
        h = min(H, rng.choice([w, 64, 300, H // 3, H]))
        left, top = rng.randrange(0, W - w + 1), rng.randrange(0, H - h + 1)
        if rng.random() < 0.5:
            left, top = left // 8 * 8, top // 8 * 8  # on the coarser levels' grid
        d = rng.choice([1, 2, 3, 4, 5, 8, 16, 64])
        out = (max(1, round(h / d)), max(1, round(w / d)))
        if rng.random() < 0.2:
            out = (out[0], out[1] + 1)
        yield left, top, w, h, out


def test_a_cut_is_large_images_answer(pyramids):
    for path in pyramids:
        kept, asked = SlideSource(path), SlideSource(path)
        asked.memo_pixels = 0
        cuts = 0
        for left, top, w, h, out in random_requests(kept, 300, seed=1):
            cut = kept._cut(left, top, w, h, out)
            if cut is None:
                continue
            cuts += 1
            ref = asked._get_region(left, top, w, h, None if out == (h, w) else out)
            assert cut.shape == ref.shape and np.array_equal(cut, ref), (path.name, left, top, w, h, out)
        assert cuts > 150  # most requests were answered from a kept level
        assert any(v is not None for v in kept._levels.values()) and asked._levels == {}


def test_reads_and_views_are_the_same_with_and_without_kept_levels(pyramids):
    g = torch.Generator().manual_seed(2)
    for mpp in (0.0, 1.0):  # as stored; every read 4x reduced (the file is at 0.25 µm/px)
        kept, asked = SlideSource(pyramids[0], mpp=mpp), SlideSource(pyramids[0], mpp=mpp)
        asked.memo_pixels = 0
        H, W = kept.size
        for scale, size in ((1.0, (32, 32)), (0.25, (16, 16)), (0.5, (20, 20))):
            xy = torch.randint(-16, max(W, H), (24, 2), generator=g) // round(1 / scale) * round(1 / scale)  # on the read's grid
            boxes = torch.cat([xy, torch.full((24, 2), round(size[0] / scale))], 1)
            rows = torch.zeros(24, dtype=torch.long)
            assert torch.equal(kept.read(rows, boxes, scale, size), asked.read(rows, boxes, scale, size))
            if mpp and scale in (1.0, 0.5):  # levels 4x and 8x down: the windows of a kept level, no request
                assert kept._crops(boxes, scale, size, kept._read_level(scale)) is not None
                assert kept._crops(boxes + torch.tensor([1, 0, 0, 0]), 0.5, size, kept._read_level(0.5)) is None  # off the level's grid
        assert torch.equal(kept.view(0.1), asked.view(0.1))


def test_prefetch_keeps_the_levels_stage_two_reads_from(pyramids):
    cfg = ModelConfig(in_channels=3, stage1_resolution=0.0625, tile=128, stage2_resolution=0.25, subtile=32,
                      n_samples=6, feature_dim=8, feature_width=8, foreground="otsu_dark")
    model = ZoomInNet(cfg).eval()
    assert model.read_scales() == (0.25, 1.0)
    src = SlideSource(pyramids[0])
    src.memo_pixels = 2 * 1031 * 1501  # level 0 too, so that sub-tiles are cut as well
    src.prefetch(model.stage1_scale(src.size), model.read_scales())
    assert src._levels[src._read_level(0.25)] is not None and src._levels[src._read_level(1.0)] is not None
    asked = src.requests
    with torch.no_grad():
        tr = model(src, generator=torch.Generator().manual_seed(0))
    assert src.requests == asked  # every stage-II view and sub-tile was cut from a kept level
    plain = SlideSource(pyramids[0])
    plain.memo_pixels = 0
    with torch.no_grad():
        ref = model(plain, generator=torch.Generator().manual_seed(0))
    assert plain.requests > 0 and torch.equal(tr.logits, ref.logits)


def test_levels_are_kept_only_within_the_budgets(pyramids):
    src = SlideSource(pyramids[0], max_pixels=10_000)  # the memory guard is below every level but the coarsest
    src.prefetch(0.05, (0.25, 1.0))
    assert src._levels[src._read_level(1.0)] is None and src._levels[src._read_level(0.25)] is None
    small = SlideSource(pyramids[0])
    small.memo_pixels = 1000
    small.prefetch(0.05, (0.25,))
    assert small._levels[small._read_level(0.25)] is None


def test_what_a_read_returns_is_not_the_kept_level(pyramids):
    src = SlideSource(pyramids[0])
    rows, boxes = torch.zeros(1, dtype=torch.long), torch.tensor([[0, 0, 64, 64]])
    first = src.read(rows, boxes, 0.5, (32, 32))
    first.fill_(0)  # the caller owns what it got
    level = src._levels[src._read_level(0.5)]
    assert level is not None and not level.flags.writeable
    assert not torch.equal(src.read(rows, boxes, 0.5, (32, 32)), first)
