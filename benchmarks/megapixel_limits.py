"""What limits a trained Megapixel MNIST model: finding the digits (the attention) or reading them
(the feature net and classifier)?

For every test image the script runs one forward pass and compares the full-resolution
patches the model drew (one-stage patches or two-stage sub-tiles, level-0 boxes from the trace)
with the digit boxes of the image's record. A digit counts as *seen* when one drawn patch covers
at least ``--cover`` of its 28 x 28 box. It reports, per run, the accuracy of that pass by how many
of the three label-class digits were seen, and the share of draws that landed on any digit. Each
``--modes`` entry is one pass per image: ``sample`` (a Monte-Carlo pass, as in training) or
``topk`` (deterministic: the N most attended tiles, for two stages one sub-tile in each, so both
kinds read N patches).

It then asks whether the *reading* or the *weighing* limits: every digit of a test image is cut
out in a patch centred on it (jitter up to ``--jitter`` pixels) and read by ``f`` and ``g``; the
table gives the share of digits read as their class, and the image accuracy when the five digit
patches are combined with equal weights as the model combines its draws (``g`` of the mean
feature, i.e. the mean of the patches' logits), as a mean of the patches' class probabilities,
or by a majority vote.

    python benchmarks/megapixel_limits.py runs/acc20/zoom_in runs/acc20/one_stage --out docs/megapixel_limits.md
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from paired import load_run
from report import table

from zoomin.data.megapixel_mnist import DIGIT, load_mnist_digits, rasterise
from zoomin.geometry import centred_boxes
from zoomin.nets import feature_output
from zoomin.readout import PASS_ESTIMATE
from zoomin.sources import as_source


def coverage(boxes: torch.Tensor, valid: torch.Tensor, digits: torch.Tensor) -> torch.Tensor:
    """Share of each digit box covered by its best drawn patch.

    boxes: (B, M, 4) level-0 (x, y, w, h); valid: (B, M); digits: (B, D, 2) top-left (row, col)
    -> (B, D, M) covered share of every digit by every patch (0 for padding draws).
    """
    x0, y0 = boxes[..., 0][:, None, :], boxes[..., 1][:, None, :]  # (B, 1, M)
    x1, y1 = x0 + boxes[..., 2][:, None, :], y0 + boxes[..., 3][:, None, :]
    r, c = digits[..., 0][..., None], digits[..., 1][..., None]  # (B, D, 1)
    dy = (torch.minimum(y1, r + DIGIT) - torch.maximum(y0, r)).clamp(min=0)
    dx = (torch.minimum(x1, c + DIGIT) - torch.maximum(x0, c)).clamp(min=0)
    return (dx * dy).float() / DIGIT ** 2 * valid[:, None, :]


@torch.no_grad()
def analyse(run: Path, test_size: int, batch: int, cover: float, seed: int, mode: str = "sample") -> dict:
    model, cfg, data = load_run(run, test_size)  # top-k: N patches in all, as in training
    gen = torch.Generator().manual_seed(seed)
    n_target = cfg.data.n_target
    seen_t, seen_o, correct, hits, draws = [], [], [], 0, 0
    for start in range(0, len(data), batch):
        idx = range(start, min(start + batch, len(data)))
        recs = [data.record(i) for i in idx]
        x = torch.stack([torch.from_numpy(rasterise(r, cfg.data.canvas)) for r in recs]).unsqueeze(1)  # (B, 1, H, W)
        y = torch.tensor([r.label for r in recs])
        tr = model(x, mode=mode, generator=gen, estimate=PASS_ESTIMATE[cfg.readout.method])  # each pass as the answer reads it
        boxes = tr.subtile_boxes.flatten(1, 2)  # (B, P * k, 4)
        valid = tr.subtile_valid.flatten(1)  # (B, P * k)
        digits = torch.as_tensor(np.stack([r.corners for r in recs]))  # (B, 5, 2), label-class first
        cov = coverage(boxes, valid, digits)  # (B, 5, M)
        seen = cov.amax(-1) >= cover  # (B, 5)
        seen_t.append(seen[:, :n_target].sum(1))
        seen_o.append(seen[:, n_target:].sum(1))
        correct.append(tr.logits.argmax(-1) == y)
        hits += int(((cov >= cover).any(1) & valid).sum())
        draws += int(valid.sum())
    st, so, ok = torch.cat(seen_t), torch.cat(seen_o), torch.cat(correct)
    rows = [dict(seen=k, images=int((st == k).sum()), accuracy=float(ok[st == k].float().mean()) if (st == k).any() else None)
            for k in range(n_target + 1)]
    return dict(run=str(run), model=cfg.model.kind, mode=mode, images=len(ok), accuracy=float(ok.float().mean()),
                by_seen=rows, mean_target_seen=float(st.float().mean()), mean_other_seen=float(so.float().mean()),
                draw_hit_rate=hits / max(draws, 1), distinct_patches=draws / len(ok))


def digit_centres(recs, jitter: int, rng: np.random.Generator):
    """Every digit of every record: image row (M,), patch centre (M, 2) within ``jitter`` px of the
    digit's centre, the digit's class (M,)."""
    _, labels = load_mnist_digits()
    corners = np.concatenate([r.corners for r in recs])  # (M, 2)
    rows = np.repeat(np.arange(len(recs)), [len(r.digits) for r in recs])
    centres = corners + DIGIT // 2 + rng.integers(-jitter, jitter + 1, size=corners.shape)
    classes = labels[np.concatenate([r.digits for r in recs])]
    return torch.as_tensor(rows), torch.as_tensor(centres), torch.as_tensor(classes)


def combined(logits: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Each image's digit patches combined with equal weights. logits: (B, D, classes); y: (B,) ->
    right or wrong (B,) for ``mean_logits`` (``g`` of the mean feature, as the model combines
    draws), ``mean_probs`` and ``majority`` (the most frequent argmax; a tie is wrong)."""
    votes = torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).sum(1)  # (B, classes)
    top2 = votes.topk(2, dim=-1).values  # (B, 2)
    return dict(mean_logits=logits.mean(1).argmax(-1) == y, mean_probs=logits.softmax(-1).mean(1).argmax(-1) == y,
                majority=(votes.argmax(-1) == y) & (top2[:, 0] > top2[:, 1]))


@torch.no_grad()
def reading(run: Path, test_size: int, batch: int, jitter: int, seed: int) -> dict:
    """``f`` and ``g`` on patches centred on the digits, and the five digits' patches combined."""
    model, cfg, data = load_run(run, test_size)
    rng, n_target, n_digits = np.random.default_rng(seed), cfg.data.n_target, cfg.data.n_digits
    read, label_digit, mean_logits, mean_probs, majority = [], [], [], [], []  # per batch
    for start in range(0, len(data), batch):
        recs = [data.record(i) for i in range(start, min(start + batch, len(data)))]
        src = as_source(torch.stack([torch.from_numpy(rasterise(r, cfg.data.canvas)) for r in recs]).unsqueeze(1))
        s1 = model.attend(src)  # the images' stage-I statistics (standardisation with evidence heads)
        rows, centres, classes = digit_centres(recs, jitter, rng)
        patches = src.read(rows, centred_boxes(centres, model.patch_hw), 1.0, model.patch_hw)  # (M, C, h2, w2)
        logits = model.classify(model.embed(patches, s1, rows))  # (M, classes): each digit's vote as g reads it
        read.append(logits.argmax(-1) == classes)
        label_digit.append(torch.arange(len(classes)) % n_digits < n_target)  # label-class digits come first
        right = combined(logits.view(len(recs), n_digits, -1), torch.tensor([r.label for r in recs]))
        mean_logits.append(right["mean_logits"])
        mean_probs.append(right["mean_probs"])
        majority.append(right["majority"])
    ok, lab = torch.cat(read), torch.cat(label_digit)
    return dict(run=str(run), model=cfg.model.kind, label_digits_read=float(ok[lab].float().mean()),
                other_digits_read=float(ok[~lab].float().mean()),
                mean_logits=float(torch.cat(mean_logits).float().mean()),
                mean_probs=float(torch.cat(mean_probs).float().mean()),
                majority=float(torch.cat(majority).float().mean()))


def centred_digits(indices: np.ndarray, side: int, jitter: int, rng: np.random.Generator) -> torch.Tensor:
    """MNIST digits ``indices`` (M,) alone on ``side x side`` patches, centred within ``jitter`` px
    -> (M, 1, side, side) in [0, 1]."""
    images, _ = load_mnist_digits()
    out = np.zeros((len(indices), 1, side, side), np.float32)
    corner = side // 2 - DIGIT // 2 + rng.integers(-jitter, jitter + 1, size=(len(indices), 2))
    rows = corner[:, :1, None] + np.arange(DIGIT)[None, :, None]  # (M, 28, 1)
    cols = corner[:, 1:, None] + np.arange(DIGIT)[None, None, :]  # (M, 1, 28)
    out[np.arange(len(indices))[:, None, None], 0, rows, cols] = images[indices] / 255.0
    return torch.from_numpy(out)


def supervised_reader(output: str, epochs: int, jitter: int, seed: int, test_size: int, width: int = 32,
                      side: int = 50, batch: int = 64) -> dict:
    """The shipped ``f`` (a ``SmallCNN``) and a linear ``g`` trained *with digit labels* on the train
    pool's digits alone on a patch, then scored on the test pool's digits, and on the test images'
    five digits combined as in ``reading``: how far the combination, not the reading, is the limit,
    for ``f``'s last step ``output`` (``linear`` or ``l2``)."""
    from zoomin.config import DataConfig
    from zoomin.data.megapixel_mnist import MegapixelMNIST, digit_pool
    from zoomin.nets import SmallCNN
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    _, labels = load_mnist_digits()
    f, g = SmallCNN(1, 64, width), torch.nn.Linear(64, 10)
    opt = torch.optim.Adam([*f.parameters(), *g.parameters()], 2e-3)
    train = digit_pool("train")
    for _ in range(epochs):
        for b in np.array_split(rng.permutation(train), len(train) // batch):
            loss = torch.nn.functional.cross_entropy(g(feature_output(f(centred_digits(b, side, jitter, rng)), output)),
                                                     torch.as_tensor(labels[b]))
            opt.zero_grad()
            loss.backward()
            opt.step()
    f.eval()
    cfg = DataConfig(test_size=test_size)
    test = MegapixelMNIST(cfg, "test")
    recs = [test.record(i) for i in range(test_size)]  # the test set's records
    digits = np.concatenate([r.digits for r in recs])
    with torch.no_grad():
        logits = g(feature_output(f(centred_digits(digits, side, jitter, rng)), output))  # (M, 10)
    right = combined(logits.view(len(recs), cfg.n_digits, -1), torch.tensor([r.label for r in recs]))
    return dict(output=output, epochs=epochs, digits_read=float((logits.argmax(-1) == torch.as_tensor(labels[digits])).float().mean()),
                **{k: float(v.float().mean()) for k, v in right.items()})


def markdown(results: list[dict], cover: float, reads: list[dict] = (), jitter: int = 0, supervised: list[dict] = ()) -> str:
    n = max(len(r["by_seen"]) for r in results) - 1
    runs = list(dict.fromkeys(r["run"] for r in results))
    modes = list(dict.fromkeys(r["mode"] for r in results))
    summary = pd.DataFrame([{"run": f"`{r['run']}`", "model": r["model"], "mode": r["mode"],
                             "accuracy (1 pass)": f"{r['accuracy']:.3f}",
                             f"label digits seen (mean of {n})": f"{r['mean_target_seen']:.2f}",
                             "other digits seen (of 2)": f"{r['mean_other_seen']:.2f}",
                             "draws on a digit": f"{r['draw_hit_rate']:.1%}",
                             "distinct patches / image": f"{r['distinct_patches']:.1f}"} for r in results])
    by_seen = pd.DataFrame([{"run": f"`{r['run']}`", "mode": r["mode"],
                             **{f"{b['seen']} seen": f"{b['accuracy']:.3f} ({b['images']})" if b["accuracy"] is not None
                                else f"– ({b['images']})" for b in r["by_seen"]}} for r in results])
    lines = ["# What limits the Megapixel MNIST models", "",
             "`python benchmarks/megapixel_limits.py " + " ".join(runs) + " --modes " + " ".join(modes) + "`", "",
             f"One pass per test image and mode (`sample`: Monte Carlo, as in training; `topk`: the N most "
             f"attended patches); a digit is *seen* when a drawn full-resolution patch covers "
             f"≥ {cover:.0%} of its 28 × 28 box. Label-class digits: {n} per image.", "",
             table(summary, text=("run", "model", "mode")), "",
             "Accuracy by the number of label-class digits seen (images in brackets):", "",
             table(by_seen, text=("run", "mode"))]
    if reads:
        frame = pd.DataFrame([{"run": f"`{r['run']}`", "model": r["model"],
                               "label digits read": f"{r['label_digits_read']:.3f}",
                               "other digits read": f"{r['other_digits_read']:.3f}",
                               "image: g(mean feature)": f"{r['mean_logits']:.3f}",
                               "image: mean probability": f"{r['mean_probs']:.3f}",
                               "image: majority vote": f"{r['majority']:.3f}"} for r in reads])
        lines += ["", f"Reading against weighing: every digit read alone from a patch centred on it (± {jitter} px), "
                  "and the image's five digit patches combined with equal weights — as the model combines its "
                  "draws (`g` of the mean feature = the mean of the patches' logits), as a mean of their class "
                  "probabilities, or by majority vote:", "", table(frame, text=("run", "model"))]
    if supervised:
        frame = pd.DataFrame([{"f's last step": r["output"], "epochs": r["epochs"], "digits read": f"{r['digits_read']:.3f}",
                               "image: g(mean feature)": f"{r['mean_logits']:.3f}",
                               "image: mean probability": f"{r['mean_probs']:.3f}",
                               "image: majority vote": f"{r['majority']:.3f}"} for r in supervised])
        lines += ["", "The same with a reader trained *with digit labels* (`--supervised`: the shipped `f`, a "
                  "`SmallCNN` of width 32, and a linear `g`, on the train pool's digits alone on a 50 × 50 patch; "
                  "scored on the test pool's digits and the test images' five digits):", "",
                  table(frame, text=("f's last step",))]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", type=Path, help="training output folders (with checkpoint.pt)")
    p.add_argument("--out", type=Path, default=Path("docs/megapixel_limits.md"))
    p.add_argument("--test-size", type=int, default=0, help="test images (0: the run's own test set)")
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--cover", type=float, default=0.75, help="share of a digit box a patch must cover")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--modes", nargs="+", choices=("sample", "topk"), default=["sample"], help="inference modes")
    p.add_argument("--jitter", type=int, default=6, help="digit-centred patches: largest offset from the centre (px)")
    p.add_argument("--supervised", type=int, default=0, metavar="EPOCHS",
                   help="also train a reader with digit labels for EPOCHS epochs, f's last step linear and l2")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    results = [analyse(r, a.test_size, a.batch, a.cover, a.seed, m) for r in a.runs for m in a.modes]
    reads = [reading(r, a.test_size, a.batch, a.jitter, a.seed) for r in a.runs]
    supervised = [supervised_reader(o, a.supervised, a.jitter, a.seed, a.test_size or 1000)
                  for o in ("linear", "l2")] if a.supervised else []
    a.out.write_text(markdown(results, a.cover, reads, a.jitter, supervised))
    print(a.out.read_text())


if __name__ == "__main__":
    main()
