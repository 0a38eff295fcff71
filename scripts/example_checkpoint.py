"""Write the example checkpoint that notebook 02 explores: ``notebooks/data/weak_labels_example.pt``.

    python scripts/example_checkpoint.py             # about 2 min of slides, then the training

What it does, with fixed seeds so that a rerun on the same software gives the same model:

1. writes 64 synthetic 4,096² slides at 1 µm/px with ``zoomin.synth.synth_slides`` (data seed 0),
   with the settings of ``benchmarks/weak_labels.py``'s defaults: lesions of 0.05% of the slide
   (``roi_ratio 0.0005``), appearance ``nuclei,colour``, 6 lesion-like distractor cells per slide;
   half the slides have lesions, a quarter are held out (``split`` test);
2. trains the packaged ``zoomin/configs/slides.yaml`` on them with ``zoomin train`` (one process,
   ``train.threads: 1``) from the slide labels alone: the one change to the config, as in the
   benchmark, is ``annotation_weight: 0``, so the lesion outlines written beside the slides are
   never read by training, only by the held-out diagnostics; ``train.seed 0`` and 20 epochs instead
   of the config's 30 (fewer slides and epochs than the benchmark's 80 and 30, to stay short);
3. saves the trained model with ``zoomin.checkpoint.save_model`` (model and config only, well under
   2 MB) and prints the held-out figures the trainer measured on the 16 test slides: the answer's
   AUC, the mean attention mass of stage I on the lesion outlines (``zoomin.evidence.roi_attention``)
   and the share of positive slides whose lesion is the most attended location.

The slides and the training run go to a temporary folder (``--work DIR`` keeps them).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "notebooks" / "data" / "weak_labels_example.pt"
SLIDES = dict(size=4096, roi_ratio=0.0005, appearance="nuclei,colour", distractors=6)  # benchmarks/weak_labels.py
N, SEED, EPOCHS = 64, 0, 20


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=str(OUT), help="the checkpoint to write")
    p.add_argument("--work", default="", help="keep the slides and the run here (default: a temporary folder)")
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))  # this checkout's zoomin, also when run as a file
    from zoomin.checkpoint import load_model, save_model
    from zoomin.cli import _packaged_config
    from zoomin.synth import synth_slides

    with tempfile.TemporaryDirectory(prefix="zoomin_example_") as tmp:
        work = Path(args.work or tmp)
        t0 = time.perf_counter()
        manifest = synth_slides(work / "slides", N, seed=SEED, progress=False, **SLIDES)
        print(f"wrote {N} slides in {time.perf_counter() - t0:.0f} s: {manifest}")

        cfg = _packaged_config("slides.yaml").to_dict()
        cfg["data"].update(task="manifest", manifest=str(manifest.resolve()))
        cfg["train"].update(seed=SEED, epochs=EPOCHS, threads=1, annotation_weight=0.0)  # outlines: diagnostics only
        (work / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
        t0 = time.perf_counter()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
            [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
        subprocess.run([sys.executable, "-m", "zoomin", "train", "--config", str(work / "config.yaml"),
                        "--out", str(work / "run"), "--quiet"], check=True, env=env)
        minutes = (time.perf_counter() - t0) / 60

        model, config = load_model(work / "run" / "checkpoint.pt")
        config.data.manifest = ""  # the slides were in a temporary folder: the checkpoint names none
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        out = save_model(args.out, model, config)
        m = json.loads((work / "run" / "metrics.json").read_text())
    last = [h for h in m["history"] if "test_auc" in h][-1]  # the last tested epoch (the final one)
    print(f"trained {EPOCHS} epochs in {minutes:.1f} min; wrote {out} ({out.stat().st_size / 1e6:.2f} MB)")
    print(f"held out ({round(N * 0.25)} slides, epoch {last['epoch']}): AUC {last['test_auc']:.3f}, "
          f"accuracy {last['test_accuracy']:.3f}, attention mass on the lesions {last['test_roi_mass']:.3f} "
          f"(mean over the positive slides), lesion ranked first in alpha on {last['test_roi_first']:.0%} of them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
