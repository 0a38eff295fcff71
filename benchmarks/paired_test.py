"""Is one trained Megapixel MNIST model more accurate than another, or is the gap noise?

Both runs predict the *same* test images from ``--passes`` sampled passes (from a seeded
generator; the mean class probability, or with ``--test-pooling places`` the vote of the places
the draws visited); the script reports each run's accuracy, the paired difference
with a 95% interval and the exact two-sided McNemar test (``paired.py``). ``benchmarks/bench.py
--parts accuracy`` does the same for its own runs.

    python benchmarks/paired_test.py runs/acc20/zoom_in runs/acc20/one_stage --passes 1 4 16 --topk

``--single`` adds the expected one-pass accuracy (each image's share of the passes right, paired
normal test) as a row "single"; ``--topk`` the deterministic prediction (the N most attended
patches) as a row "topk". ``--test-pooling probabilities`` reads both runs' weights out as a
mixture of their patches' class probabilities (``readout.method``) instead of their own setting,
``--test-pooling places`` as the vote of the places the passes' draws visited (``zoomin.readout``).
``--seen-digits`` scores images made of the runs' *training* digits in new places instead of the
test images (``paired.load_run``): the gap to the test set is what the reader memorised.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch
from paired import compare, correctness
from report import pvalue, table

from zoomin.config_check import CHOICES, TEST_POOLING


def markdown(run_a: Path, run_b: Path, rows: dict[int | str, dict], images: int, seed: int,
             method: str = "", seen_digits: bool = False) -> str:
    passes = " ".join(str(p) for p in rows if isinstance(p, int)) + "".join(f" --{k}" for k in rows if isinstance(k, str))
    passes += f" --method {method}" if method else ""
    passes += " --seen-digits" if seen_digits else ""
    what = "images of the training digits in new places" if seen_digits else "test images"
    how = {"places": "a vote of the places its *passes* sampled passes drew (`zoomin.readout`; `topk`: of its N "
                     "most attended patches)",
           "": "*passes* sampled passes read out as its own `readout.method` says (the mean class "
               "probability, or a vote of places)"}.get(method, "the mean class probability of *passes* sampled passes")
    cells = pd.DataFrame([{"passes": str(p), "accuracy A": f"{r['accuracy_a']:.3f}", "accuracy B": f"{r['accuracy_b']:.3f}",
                           "A − B [95% CI]": f"{r['difference']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]",
                           "A better": str(r["only_a"]), "B better": str(r["only_b"]), "p": pvalue(r["p_value"])}
                          for p, r in rows.items()])
    lines = [f"# Paired comparison on the same {what}", "",
             f"`python benchmarks/paired_test.py {run_a} {run_b} --passes {passes} --seed {seed}`", "",
             f"A = `{run_a}`, B = `{run_b}`; {images} {what}, each predicted by {how}. Difference A − B with a 95% interval (normal "
             "approximation on per-image differences); exact two-sided McNemar test on the images "
             "only one model gets right. Passes `single`: each image's share of single passes right (paired "
             "normal test); `topk`: deterministic, the N most attended patches.", "",
             table(cells, text=("A − B [95% CI]",))]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_a", type=Path, help="training output folder (with checkpoint.pt)")
    p.add_argument("run_b", type=Path)
    p.add_argument("--passes", type=int, nargs="+", default=[4], help="sampled passes read out together per image")
    p.add_argument("--test-size", type=int, default=0, help="test images (0: the runs' own test set)")
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--single", action="store_true", help="also compare the mean one-pass accuracies")
    p.add_argument("--topk", action="store_true", help="also compare the deterministic (top-k) predictions")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--method", default="", choices=CHOICES["readout.method"],
                   help="read both runs out this way instead of their own readout.method")
    p.add_argument("--test-pooling", default="", choices=TEST_POOLING, help="the earlier name of --method "
                   "(its values: probabilities = mixture, features, places)")
    p.add_argument("--seen-digits", action="store_true",
                   help="score images made of the training digits in new places instead of the test images")
    p.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    a = p.parse_args()
    if min(a.passes) < 1:
        p.error("--passes must be >= 1")
    a.method = a.method or (TEST_POOLING[a.test_pooling] if a.test_pooling else "")
    torch.set_num_threads(a.threads)
    passes = sorted(set(a.passes))
    ca, cb = (correctness(run, passes, a.test_size, a.batch, a.seed, a.topk, a.single, a.method, a.seen_digits)
              for run in (a.run_a, a.run_b))
    text = markdown(a.run_a, a.run_b, {q: compare(ca[q], cb[q]) for q in ca}, len(ca[passes[0]]), a.seed,
                    a.method, a.seen_digits)
    if a.out:
        a.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
