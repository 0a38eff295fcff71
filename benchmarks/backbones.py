"""Backbones for ``f`` side by side (issue #13, item 8): the shipped slide model
(``zoomin/configs/slides.yaml``) with its small CNN and with timm backbones, one training step
(forward, backward, AdamW) and one inference pass on a slide-sized image, each in a fresh process
(``probe.py``: peak memory of the step and its time; medians over ``--repeats``).

    python benchmarks/backbones.py                                  # CPU -> docs/backbones.md
    python benchmarks/backbones.py --device cuda --out docs/backbones_gpu.md

A backbone that cannot be built here (timm missing, or a timm whose torchvision does not import)
gets a row saying why. The image is ``probe.NoiseSource``: pixels made for the regions the model
asks for, so the figures are the model's, not an image's.
"""
from __future__ import annotations

import argparse
import platform
import shlex
import statistics
import sys
from pathlib import Path

import pandas as pd
import torch
from probe import Probe, measure
from report import table

import zoomin
from zoomin.config import Config

CONFIG = Path(zoomin.__file__).parent / "configs" / "slides.yaml"


def parameters(model_config: dict) -> str:
    from zoomin.config import ModelConfig
    from zoomin.model import build_model
    try:
        model = build_model(ModelConfig(**model_config))
    except Exception as e:
        return f"– ({type(e).__name__})"
    return f"{sum(p.numel() for p in model.features.parameters()):,}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--backbones", nargs="+", default=["small_cnn", "timm:resnet18", "timm:resnet50"])
    p.add_argument("--size", type=int, default=16384, help="image side (level-0 pixels at the config's mpp)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default="docs/backbones.md")
    args = p.parse_args(argv)
    shipped = Config.from_yaml(CONFIG).to_dict()["model"]
    rows = []
    for backbone in args.backbones:
        model = {**shipped, "backbone": backbone}
        probe_config = {k: v for k, v in model.items() if k not in ("kind", "in_channels")}
        row = {"backbone": f"`{backbone}`", "parameters of f": parameters(model)}
        for phase in ("train", "infer"):
            runs = [measure(Probe(model="zoom_in", size=args.size, phase=phase, model_config=probe_config,
                                  channels=model["in_channels"], device=args.device, amp=args.amp,
                                  threads=args.threads, seed=r)) for r in range(args.repeats)]
            errors = [r["error"] for r in runs if "error" in r]
            if errors:
                row[f"{phase}: s"] = row[f"{phase}: MB"] = "–"
                row["note"] = errors[0][-160:]
                continue
            row[f"{phase}: s"] = f"{statistics.median(r['seconds'] for r in runs):.3f}"
            row[f"{phase}: MB"] = f"{statistics.median(r['step_mb'] for r in runs):.0f}"
        rows.append({**row, "note": row.pop("note", "")})
        print(row, flush=True)
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU ({platform.processor() or platform.machine()}, {args.threads} thread{'s' if args.threads > 1 else ''})"
    cmd = "python benchmarks/backbones.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    text = "\n".join([
        "# Backbones of f: the shipped slide model with its small CNN and with timm models", "",
        f"`{cmd.strip()}` on {device}, torch {torch.__version__}"
        f"{', bf16 autocast' if args.amp else ''}. The shipped `slides.yaml` model (N = {shipped['n_samples']} "
        f"sub-tiles of {shipped['subtile']}² at {shipped['mpp']:g} µm/px) on a {args.size:,}² image, `model.backbone` "
        f"changed; one training step (forward, backward, AdamW step) and one inference pass, each in a fresh "
        f"process; MB: the step's peak memory above what the process held before it, in MiB (2^20 bytes) "
        f"({'CUDA max_memory_allocated' if args.device == 'cuda' else 'resident memory'}); medians of "
        f"{args.repeats} runs.", "",
        table(pd.DataFrame(rows), text=("backbone", "note")), "",
        "timm rows need a timm that imports (and so a torchvision built for this torch). Measured on a "
        "lent H200 with timm: `docs/backbones_gpu.md`.", ""])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
