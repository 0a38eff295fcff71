"""Built-in data sets."""
from .megapixel_mnist import MegapixelMNIST, Record, load_mnist_digits, make_record, rasterise

__all__ = ["MegapixelMNIST", "Record", "load_mnist_digits", "make_record", "rasterise"]
