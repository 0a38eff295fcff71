"""zoomin: the Zoom-In network (Kong & Henao, CVPR 2022) — two-stage attention sampling for
classifying gigapixel images with tiny objects, and a trace of every stage to look at.

``import zoomin`` needs only torch and numpy; slides, views and notebooks are extras."""
from .config import Config, DataConfig, ModelConfig, TrainConfig
from .model import AttentionSamplingNet, ZoomInNet, build_model
from .sources import ArraySource, as_source
from .trace import Trace

__version__ = "0.1.0"
__all__ = ["Config", "DataConfig", "ModelConfig", "TrainConfig", "ZoomInNet", "AttentionSamplingNet",
           "build_model", "ArraySource", "as_source", "Trace", "__version__"]
