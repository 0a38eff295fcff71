import os

import torch
from hypothesis import settings

# CI runs the same hypothesis examples every time; local runs explore new ones.
settings.register_profile("ci", derandomize=True, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

torch.set_num_threads(min(2, torch.get_num_threads()))
