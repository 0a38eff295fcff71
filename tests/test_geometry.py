import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zoomin.geometry import centred_boxes, crop, location_centres, subtile_boxes, tile_boxes, view_size
from zoomin.sources import ArraySource


def test_view_size_floor_and_minimum():
    assert view_size(1500, 1500, 0.12) == (180, 180)
    assert view_size(333, 501, 0.1) == (33, 50)
    assert view_size(5, 3, 0.1) == (1, 1)  # smaller than 1/s: one location
    with pytest.raises(ValueError):
        view_size(10, 10, 0.0)


def test_location_map_corners_and_independence_of_tile_size():
    H, W, (h, w) = 301, 457, view_size(301, 457, 0.1)
    idx = torch.tensor([0, w - 1, (h - 1) * w, h * w - 1])
    c = location_centres(idx, (h, w), (H, W))
    assert c.tolist() == [[0, 0], [0, W - 1], [H - 1, 0], [H - 1, W - 1]]
    b1, b2 = tile_boxes(idx, (h, w), (H, W), (20, 20)), tile_boxes(idx, (h, w), (H, W), (51, 31))
    # different tile sizes, same centres
    assert torch.equal(b1[:, 0] + 10, b2[:, 0] + 15) and torch.equal(b1[:, 1] + 10, b2[:, 1] + 25)


def test_single_row_view_maps_to_centre():
    c = location_centres(torch.tensor([0]), (1, 1), (7, 9))
    assert c.tolist() == [[3, 4]]


@settings(max_examples=60, deadline=None)
@given(H=st.integers(1, 120), W=st.integers(1, 120), s=st.floats(0.02, 1.0), t=st.integers(1, 40))
def test_every_location_maps_inside_and_tiles_cover(H, W, s, t):
    h, w = view_size(H, W, s)
    idx = torch.arange(h * w)
    c = location_centres(idx, (h, w), (H, W))
    assert (c[:, 0] >= 0).all() and (c[:, 0] < H).all() and (c[:, 1] >= 0).all() and (c[:, 1] < W).all()
    boxes = centred_boxes(c, (t, t))
    assert (boxes[:, 2] == t).all() and (boxes[:, 3] == t).all()
    # method §2 says h1 > 1/s guarantees coverage; exactly, the tile must span the spacing of the
    # centres, ceil((H-1)/(h-1)), which is about 1/s for large images but larger for small ones
    spacing = max(-(-(H - 1) // max(h - 1, 1)), -(-(W - 1) // max(w - 1, 1)))
    if t >= spacing and h > 1 and w > 1:
        covered = torch.zeros(H, W, dtype=torch.bool)
        for x, y, bw, bh in boxes.tolist():
            covered[max(y, 0):y + bh, max(x, 0):x + bw] = True
        assert covered.all()


@settings(max_examples=40, deadline=None)
@given(H=st.integers(1, 40), W=st.integers(1, 40), r=st.integers(-50, 50), c=st.integers(-50, 50),
       h=st.integers(1, 30), w=st.integers(1, 30))
def test_crop_equals_slice_of_zero_padded_image(H, W, r, c, h, w):
    img = torch.rand(2, 3, H, W)
    out = crop(img, torch.tensor([1]), torch.tensor([[r, c]]), (h, w))  # (1, 3, h, w)
    pad = 100  # more than any |r|, |c| plus window size drawn above
    padded = torch.nn.functional.pad(img, (pad, pad, pad, pad))
    assert torch.equal(out[0], padded[1, :, r + pad:r + pad + h, c + pad:c + pad + w])


def test_subtile_boxes_inside_their_tile():
    tiles = torch.tensor([[10, 20, 100, 80]])  # x, y, w, h
    u, v = view_size(80, 100, 0.25)
    idx = torch.arange(u * v)[None]
    sb = subtile_boxes(tiles, idx, (u, v), (80, 100), (16, 16))  # (1, S, 4)
    cx, cy = sb[..., 0] + 8, sb[..., 1] + 8
    assert cx.min() == 10 and cx.max() == 10 + 99 and cy.min() == 20 and cy.max() == 20 + 79


def test_array_source_views_and_reads():
    x = torch.arange(2 * 1 * 6 * 8, dtype=torch.float32).view(2, 1, 6, 8)
    src = ArraySource(x)
    assert src.view(0.5).shape == (2, 1, 3, 4)
    assert torch.allclose(src.view(0.5)[0, 0, 0, 0], x[0, 0, :2, :2].mean())
    boxes = torch.tensor([[-1, -1, 3, 3], [6, 4, 3, 3]])  # level-0 x, y, w, h, partly outside
    out = src.read(torch.tensor([0, 1]), boxes, 1.0, (3, 3))
    assert out[0, 0, 0].tolist() == [0, 0, 0] and out[0, 0, 1, 1] == x[0, 0, 0, 0]
    assert out[1, 0, 2].tolist() == [0, 0, 0] and out[1, 0, 0, 0] == x[1, 0, 4, 6]
