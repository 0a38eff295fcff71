"""Built-in data sets, and the training/test sets a config names (``make_datasets``)."""
from .factory import make_datasets, usable_slides
from .megapixel_mnist import MegapixelMNIST, Record, load_mnist_digits, make_record, rasterise

__all__ = ["MegapixelMNIST", "Record", "load_mnist_digits", "make_datasets", "make_record", "rasterise",
           "usable_slides"]
