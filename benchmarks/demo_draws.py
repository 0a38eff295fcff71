"""Where does a trained Megapixel MNIST model's estimate come from?

    python benchmarks/demo_draws.py runs/demo [runs/other ...] [--images 200] [--passes 8] [--out docs]

For each run's ``checkpoint.pt`` (the demo, or any Megapixel MNIST run), the test images are put
through the model in sample mode and every drawn sub-tile is sorted by where its centre falls:
in one of the label digits (the class seen three times), in a distractor digit, or elsewhere
(scribbles, a digit's margin). Reported per run:

* the share of ``z``'s weight (``trace.weights``, summed per kind) on each kind;
* how often ``g`` applied to one draw's feature names the digit the draw sits in;
* one-pass accuracy, and for the images the ``--passes``-pass average gets wrong and right: the
  weight on label digits against distractors, and on the least / most covered digit.

It measures a trained model, reading its trace (no training). It shows what limits the demo's
accuracy (docs/demo.md). Writes ``docs/demo_draws.md``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from zoomin.checkpoint import load_model
from zoomin.data.megapixel_mnist import DIGIT, MegapixelMNIST, load_mnist_digits
from zoomin.readout import PASS_ESTIMATE


def digit_of_draws(trace, b: int, record) -> tuple[torch.Tensor, np.ndarray]:
    """The drawn sub-tiles of image ``b``: their weights (M,) and the index of the digit their
    centre falls in (M,), -1 where none."""
    valid = trace.subtile_valid[b]
    boxes = trace.subtile_boxes[b][valid]  # (M, 4) level-0 x, y, w, h
    cx, cy = boxes[:, 0] + boxes[:, 2] / 2, boxes[:, 1] + boxes[:, 3] / 2
    corners = torch.as_tensor(record.corners)  # (5, 2) row, col
    inside = ((cy[:, None] >= corners[:, 0]) & (cy[:, None] < corners[:, 0] + DIGIT)
              & (cx[:, None] >= corners[:, 1]) & (cx[:, None] < corners[:, 1] + DIGIT))  # (M, 5)
    which = torch.where(inside.any(1), inside.float().argmax(1), torch.full_like(cx, -1, dtype=torch.long))
    return trace.weights[b][valid], which.numpy()


@torch.no_grad()
def measure(run: Path, images: int, passes: int) -> dict:
    model, cfg = load_model(run / "checkpoint.pt")
    ds = MegapixelMNIST(cfg.data, "test")
    _, digit_class = load_mnist_digits()
    records = [ds.record(i) for i in range(images)]
    x = torch.stack([ds[i][0] for i in range(images)])  # (n, 1, H, W)
    y = torch.tensor([r.label for r in records])
    gen = torch.Generator().manual_seed(0)
    kinds = np.zeros(3)  # label digit, distractor digit, elsewhere
    named, drawn_in_digit, one_pass = 0, 0, 0
    per_image = np.zeros((images, 6))  # weight on each of the 5 digits (3 label first), elsewhere
    probs = torch.zeros(images, cfg.model.num_classes)
    lin = model.classifier.linear
    for p in range(passes):
        for b0 in range(0, images, 50):
            tr = model(x[b0:b0 + 50], generator=gen, estimate=PASS_ESTIMATE[cfg.readout.method])  # as the answer reads a pass
            probs[b0:b0 + 50] += tr.probs
            if p == 0:
                one_pass += int((tr.logits.argmax(-1) == y[b0:b0 + 50]).sum())
            logits = lin(tr.features) if p == 0 else None  # (B, P, K, classes): g on each draw alone
            for b in range(tr.logits.shape[0]):
                rec = records[b0 + b]
                w, which = digit_of_draws(tr, b, rec)
                for j in range(5):
                    per_image[b0 + b, j] += float(w[which == j].sum()) / passes
                per_image[b0 + b, 5] += float(w[which < 0].sum()) / passes
                if p == 0:
                    classes = np.where(which >= 0, digit_class[rec.digits[np.maximum(which, 0)]], -1)
                    kind = np.where(classes == rec.label, 0, np.where(classes >= 0, 1, 2))
                    for k in range(3):
                        kinds[k] += float(w[torch.from_numpy(kind == k)].sum())
                    pred = logits[b][tr.subtile_valid[b]].argmax(-1).numpy()
                    named += int((pred == classes)[classes >= 0].sum())
                    drawn_in_digit += int((classes >= 0).sum())
    right = (probs.argmax(-1) == y).numpy()
    out = dict(run=str(run), images=images, passes=passes, one_pass=one_pass / images,
               averaged=float(right.mean()), share=kinds / kinds.sum(), named=named / max(drawn_in_digit, 1))
    for name, sel in (("wrong", ~right), ("right", right)):
        d = per_image[sel]
        cover = np.sort(d[:, :5], axis=1)
        out[name] = dict(n=int(sel.sum()), label=d[:, :3].sum(1).mean(), distractor=d[:, 3:5].sum(1).mean(),
                         elsewhere=d[:, 5].mean(), least=cover[:, 0].mean(), most=cover[:, -1].mean()) if len(d) else None
    return out


def report(results: list[dict], command: str) -> str:
    lines = ["# Where the demo's estimate comes from", "", f"`{command}` (test images, sample mode).", "",
             "| run | one pass | averaged | z weight: label digits / distractors / elsewhere | g on one draw names its digit |",
             "|---|---:|---:|---|---:|"]
    for r in results:
        s = r["share"]
        lines.append(f"| `{r['run']}` | {r['one_pass']:.3f} | {r['averaged']:.3f} ({r['passes']} passes) | "
                     f"{s[0]:.2f} / {s[1]:.2f} / {s[2]:.2f} | {r['named']:.3f} |")
    lines += ["", "Images the averaged prediction gets wrong and right (weight per image, averaged over passes):", "",
              "| run | images | n | label digits (3) | distractors (2) | elsewhere | least-covered digit | most-covered digit |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        for name in ("wrong", "right"):
            d = r[name]
            if d:
                lines.append(f"| `{r['run']}` | {name} | {d['n']} | {d['label']:.2f} | {d['distractor']:.2f} | "
                             f"{d['elsewhere']:.2f} | {d['least']:.3f} | {d['most']:.3f} |")
    lines += ["", "`averaged` is the first `--images` test images without batch-norm re-estimation, so it can",
              "differ from the run's own `test_accuracy` (500 images, statistics re-estimated first).",
              "", "With attention spread evenly over the five digits, the label digits would carry 3/5 of the",
              "digits' weight. Reading: if `g` names the digit of most single draws but the wrong images",
              "have about as much weight on distractors as on label digits, what limits accuracy is how",
              "unevenly the attention covers the digits, not the features.", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="run folders holding checkpoint.pt")
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--passes", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("docs"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    results = [measure(r, a.images, a.passes) for r in a.runs]
    command = "python benchmarks/demo_draws.py " + " ".join(map(str, a.runs)) + \
              f" --images {a.images} --passes {a.passes}"
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "demo_draws.md").write_text(report(results, command))
    print((a.out / "demo_draws.md").read_text())


if __name__ == "__main__":
    main()
