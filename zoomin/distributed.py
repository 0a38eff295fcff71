"""Device placement and several processes under ``torchrun``: the device, the process group,
which rank does what, sharding.

``torchrun --nproc_per_node=W -m zoomin train ...`` starts W processes with ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` set; each joins one process group (nccl on CUDA, gloo on CPU).
Training wraps the model in ``DistributedDataParallel`` and shards every epoch with a
``DistributedSampler``; prediction shards the slides. Only rank 0 writes shared files. Without
torchrun (``WORLD_SIZE`` unset or 1) the process-group functions are no-ops and rank 0 is the
only rank.
"""
from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist


def select_device(name: str = "auto") -> torch.device:
    """``auto``: cuda, then mps, then cpu; any other name as torch spells it (``cuda:1``, ``cpu``)."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) in a plain process."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def is_main() -> bool:
    """True on the rank that writes checkpoints, metrics and merged predictions."""
    return rank_and_world()[0] == 0


def init(device_type: str = "cpu") -> bool:
    """Join torchrun's process group when ``WORLD_SIZE > 1`` (nccl on CUDA, gloo otherwise);
    True when running distributed."""
    if rank_and_world()[1] <= 1:
        return False
    if not dist.is_initialized():
        # generous: the other ranks wait at a barrier while rank 0 tests a whole slide set
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo", timeout=timedelta(hours=4))
    return True


def local_device(device: torch.device) -> torch.device:
    """On CUDA under torchrun each process takes the GPU ``LOCAL_RANK``."""
    if device.type != "cuda" or rank_and_world()[1] <= 1:
        return device
    index = int(os.environ.get("LOCAL_RANK", 0))
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_sum(values: list[float]) -> list[float]:
    """Element-wise sum over the ranks (the values themselves in a plain process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device="cuda" if dist.get_backend() == "nccl" else "cpu")
    dist.all_reduce(t)
    return t.tolist()


def close() -> None:
    """Leave the process group (end of a command)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
