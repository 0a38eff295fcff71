"""One benchmark measurement in a fresh process: build a model, make its input, run a training
step (forward, backward, AdamW step) or an inference pass, and report peak memory and time.

CPU: peak resident memory sampled every 0.5 ms during the measured call, minus the resident
memory just before it (the model's activations, gradients and optimiser state, not the input),
plus the process's own peak (``VmHWM``). CUDA: ``torch.cuda.max_memory_allocated`` after a reset,
minus the memory allocated before the call. ``measure`` runs this file in a fresh process:

    python benchmarks/probe.py '{"model": "zoom_in", "size": 4000, "phase": "train"}'
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from zoomin.geometry import view_size

PAGE = 4096


@dataclass
class Probe:
    model: str  # "zoom_in", "one_stage" or "cnn" (a plain CNN on the whole image)
    size: int  # image side H = W (level-0 pixels)
    phase: str = "train"  # "train" (forward + backward + AdamW step) or "infer" (no_grad forward)
    source: str = "noise"  # "noise" (``NoiseSource``: generated on demand) or "slide" (``path``)
    path: str = ""  # source "slide": a pyramidal TIFF
    model_config: dict = field(default_factory=dict)  # ModelConfig fields (zoom_in / one_stage)
    cnn_width: int = 32  # cnn: channels of the whole-image CNN (the feature net's architecture)
    channels: int = 1  # image channels
    batch: int = 1  # images per step (the input itself is made before the measured call)
    device: str = "cpu"  # "cpu" or "cuda"
    amp: bool = False  # bf16 autocast (CUDA, or CPU where oneDNN has bf16)
    threads: int = 2  # torch CPU threads
    warmup: int = 1  # unmeasured calls first (allocator, lazy init)
    seed: int = 0


class NoiseSource:
    """A batch of (B, C, H, W) images of uniform noise that costs nothing to hold: pixels are
    generated for the region and scale asked for (the way a pyramidal slide is read, without the
    file), so a probe measures the model's memory, not an image's. Reads are deterministic per
    call order (a seeded generator), never stored."""

    def __init__(self, size: tuple[int, int], channels: int = 1, seed: int = 0, batch_size: int = 1):
        self.size, self.channels, self.batch_size = tuple(size), channels, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.pixels_read = 0

    def view(self, scale: float) -> torch.Tensor:
        h, w = view_size(*self.size, scale)
        self.pixels_read += self.batch_size * h * w
        return torch.rand(self.batch_size, self.channels, h, w, generator=self.generator)

    def read(self, batch_index: torch.Tensor, boxes: torch.Tensor, scale: float,
             size_hw: tuple[int, int]) -> torch.Tensor:
        self.pixels_read += boxes.shape[0] * size_hw[0] * size_hw[1]
        return torch.rand(boxes.shape[0], self.channels, *size_hw, generator=self.generator)


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * PAGE


def high_water_mb() -> float:
    """This process's peak resident memory in MB (``VmHWM``). Not ``ru_maxrss``, which survives
    ``exec`` and so reports the parent's peak when the parent was larger."""
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM")) / 1024


class PeakRSS:
    """Highest resident memory seen while the block runs (sampled in a thread)."""

    def __enter__(self):
        self.start = self.peak = _rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, _rss())
            time.sleep(0.0005)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())


def _build(p: Probe):
    from zoomin.config import ModelConfig
    from zoomin.model import build_model
    from zoomin.nets import Classifier, SmallCNN
    if p.model == "cnn":
        return torch.nn.Sequential(SmallCNN(p.channels, out_dim=64, width=p.cnn_width), Classifier(64, 10))
    return build_model(ModelConfig(kind=p.model, in_channels=p.channels, **p.model_config))


def _input(p: Probe, device):
    if p.model == "cnn":  # the whole image has to exist for a CNN
        return torch.rand(p.batch, p.channels, p.size, p.size, generator=torch.Generator().manual_seed(p.seed)).to(device)
    if p.source == "slide":
        from zoomin.slides import SlideSource
        return SlideSource(p.path, channels=p.channels)
    return NoiseSource((p.size, p.size), p.channels, p.seed, p.batch)


def run(p: Probe) -> dict:
    """Measure ``p`` in this process."""
    torch.manual_seed(p.seed)
    torch.set_num_threads(p.threads)
    device = torch.device(p.device)
    model = _build(p).to(device)
    model.train(p.phase == "train")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4) if p.phase == "train" else None
    x, y = _input(p, device), torch.ones(p.batch, dtype=torch.long, device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=p.amp):
            if p.phase == "infer":
                with torch.no_grad():
                    out = model(x)
                return
            out = model(x)
            logits = out if torch.is_tensor(out) else out.logits
            loss = F.cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(p.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    out = {**asdict(p), "seconds": seconds, "step_mb": (rss.peak - rss.start) / 2**20,
           "process_peak_rss_mb": high_water_mb()}
    if device.type == "cuda":
        out["step_mb"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    return out


# glibc keeps freed heap memory resident and raises its mmap threshold as large blocks are freed,
# so after a warm-up call the measured call would reuse memory the RSS already counts. A fixed
# threshold sends every block over 64 KiB to mmap (returned on free) and trims the heap eagerly.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}


def measure(p: Probe, timeout: float = 1800) -> dict:
    """``run(p)`` in a fresh Python process (so no earlier allocation hides this one's peak)."""
    try:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), json.dumps(asdict(p))],
                              capture_output=True, text=True, timeout=timeout, env={**os.environ, **MALLOC_ENV})
    except subprocess.TimeoutExpired:
        return {**asdict(p), "error": f"timed out after {timeout:g} s"}
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {**asdict(p), "error": f"exit {proc.returncode}: {tail}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(run(Probe(**json.loads(sys.argv[1])))))
