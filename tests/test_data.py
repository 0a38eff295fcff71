import numpy as np
import pytest
import torch

from zoomin.config import DataConfig
from zoomin.data import MegapixelMNIST, load_mnist_digits, rasterise
from zoomin.data.megapixel_mnist import digit_pool


def test_real_digits_and_disjoint_pools():
    images, labels = load_mnist_digits()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8 and set(labels.tolist()) == set(range(10))
    train, test = digit_pool("train"), digit_pool("test")
    assert len(train) == 4000 and len(test) == 1000 and not set(train) & set(test)


def test_records_follow_the_protocol():
    cfg = DataConfig(canvas=600, n_noise=20, train_size=50, test_size=20)
    _, labels = load_mnist_digits()
    for split, pool in (("train", set(digit_pool("train"))), ("test", set(digit_pool("test")))):
        ds = MegapixelMNIST(cfg, split)
        for i in range(len(ds)):
            r = ds.record(i)
            classes = labels[r.digits]
            assert (classes == r.label).sum() == 3 and len(classes) == 5  # label = majority digit
            assert set(r.digits.tolist()) <= pool
            c = r.corners
            sep = np.abs(c[:, None] - c[None]).max(-1) + np.eye(5, dtype=int) * 1000
            assert (sep >= 28).all()  # non-overlapping digits
            assert r.scribbles.shape == (20, 2, 2) and (r.scribbles >= 0).all() and (r.scribbles < 600).all()


def test_lazy_deterministic_and_fresh():
    cfg = DataConfig(canvas=300, n_noise=5, train_size=10, test_size=10, fresh_train=True)
    ds = MegapixelMNIST(cfg, "train")
    x, y = ds[3]
    assert x.shape == (1, 300, 300) and x.dtype == torch.float32
    assert torch.equal(x[0], torch.from_numpy(rasterise(ds.record(3), 300))) and y == ds.record(3).label  # drawn lazily
    assert torch.equal(ds[3][0], x)  # a pure function of (seed, split, epoch, index)
    ds.set_epoch(1)
    assert not torch.equal(ds[3][0], x)  # fresh images next epoch
    test = MegapixelMNIST(cfg, "test")
    t0 = test[0][0]
    test.set_epoch(1)
    assert torch.equal(test[0][0], t0)  # the test set never changes


def test_rasterised_digits_are_where_the_record_says():
    cfg = DataConfig(canvas=200, n_noise=0, train_size=1)
    ds = MegapixelMNIST(cfg)
    r = ds.record(0)
    img = rasterise(r, 200)
    images, _ = load_mnist_digits()
    for d, (row, col) in zip(r.digits, r.corners):
        assert np.allclose(img[row:row + 28, col:col + 28], images[d] / 255.0)


def test_bad_parameters_are_clear():
    with pytest.raises(ValueError, match="majority"):
        MegapixelMNIST(DataConfig(n_digits=4, n_target=2)).record(0)
    with pytest.raises(ValueError, match="too small"):
        MegapixelMNIST(DataConfig(canvas=60, n_noise=0)).record(0)
