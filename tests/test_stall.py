"""The trainer says when nothing is being learnt (training at chance for ``train.stall_epochs``
epochs), in one line and in ``metrics.json``, and stays quiet when the labels can be learnt."""
import json

import torch
from torch.utils.data import Dataset

from zoomin.config import Config
from zoomin.train import Trainer, stall_message, stalled


class Squares(Dataset):
    """1 x 48 x 48 noisy images, class 1 brighter than class 0 everywhere (any patch tells them
    apart). ``shuffle``: labels drawn independently of the images."""

    def __init__(self, n: int, seed: int, shuffle: bool = False):
        g = torch.Generator().manual_seed(seed)
        self.y = torch.arange(n) % 2
        self.x = torch.rand(n, 1, 48, 48, generator=g) * 0.2 + 0.6 * self.y.view(n, 1, 1, 1)
        if shuffle:
            self.y = self.y[torch.randperm(n, generator=g)]

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], int(self.y[i])


def run(tmp_path, shuffle: bool) -> dict:
    cfg = Config.from_dict({
        "model": {"kind": "zoom_in", "in_channels": 1, "num_classes": 2, "stage1_resolution": 0.25, "tile": 16, "stage2_resolution": 0.5,
                  "subtile": 8, "n_samples": 4, "feature_dim": 8, "feature_width": 8, "feature_norm": "none"},
        "train": {"epochs": 3, "batch_size": 4, "lr": 0.02, "threads": 1, "eval_every": 0, "stall_epochs": 3,
                  "entropy_weight": 0.0}})
    trainer = Trainer(cfg, tmp_path / ("shuffled" if shuffle else "learnable"),
                      datasets=(Squares(64, 0, shuffle), Squares(16, 1, shuffle)), progress=False, log=False)
    trainer.fit()
    return json.loads((trainer.out / "metrics.json").read_text())


def test_warns_on_shuffled_labels_and_not_on_learnable_ones(tmp_path, capsys):
    learnable = run(tmp_path, shuffle=False)
    assert learnable["warnings"] == [] and learnable["history"][-1]["train_accuracy"] > 0.7
    assert "no learning" not in capsys.readouterr().err
    shuffled = run(tmp_path, shuffle=True)
    assert len(shuffled["warnings"]) == 1 and shuffled["warnings"][0].startswith("no learning")
    err = [line for line in capsys.readouterr().err.splitlines() if "no learning" in line]
    assert len(err) == 1 and "zoomin doctor" in err[0] and "train.lr" in err[0]


def test_stalled_reads_the_last_epochs():
    row = lambda acc, ev=None: {"train_accuracy": acc, "chance": 0.5, "samples": 400,  # noqa: E731  margin 0.05
                                **({} if ev is None else {"train_evidence_accuracy": ev})}
    assert stalled([row(0.9), row(0.5), row(0.52)], 2)
    assert not stalled([row(0.5), row(0.6)], 2)  # the last epoch learnt
    assert not stalled([row(0.5)], 2)  # too early to say
    assert not stalled([row(0.5, ev=0.8), row(0.5, ev=0.9)], 2)  # the evidence learns: not silent
    assert not stalled([{"train_accuracy": 0.5}, {"train_accuracy": 0.5}], 2)  # history from before "chance"
    assert stalled([{"train_accuracy": 0.6, "chance": 0.5, "samples": 60}] * 2, 2)  # within 2 sd of 60 coin flips


def test_the_warning_says_when_the_held_out_slides_are_ranked_all_the_same():
    cfg = Config.from_dict({"model": {"kind": "zoom_in", "evidence": True, "mpp": 1.0, "stage1_resolution": 16,
                                      "stage1_units": "mpp"}, "train": {"stall_epochs": 3, "lr": 0.003}})
    row = lambda auc=None: {"train_accuracy": 0.5, "chance": 0.5, "samples": 48,  # noqa: E731
                            **({} if auc is None else {"test_auc": auc})}
    plain = stall_message([row(), row(0.55), row()], cfg)
    assert plain.startswith("no learning: training accuracy has stayed at chance (0.50) for 3 epochs, the evidence too.")
    assert "stage I at 16 µm/px" in plain and "held-out" not in plain and "train.lr 0.003" in plain
    ranked = stall_message([row(0.9), row(0.78), row()], cfg)  # the last test in the window: 0.78
    assert "the held-out AUC was 0.78 at the last test" in ranked and "\n" not in ranked
    assert "held-out" not in stall_message([row(0.9), row(), row(), row()], cfg)  # a test before the window


def manifest_run(tmp_path, shuffle: bool) -> dict:
    """The packaged slide config on 24 small real-tissue-style slides (large dark foci), labels as
    written or shuffled, through ``zoomin train --manifest`` as a user runs it."""
    import csv

    from zoomin.cli import main
    from zoomin.tissue_slides import tissue_slides
    d = tmp_path / "slides"
    if not (d / "manifest.csv").exists():
        tissue_slides(d, 24, size=768, mpp=1.0, background="synthetic", classes=("nuclei",), roi_ratio=0.01,
                      foci=2, distractors=0, seed=3)
    rows = list(csv.DictReader(open(d / "manifest.csv")))
    if shuffle:
        labels = [r["label"] for r in rows if r["split"] == "train"]
        perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(0)).tolist()
        for r, i in zip((r for r in rows if r["split"] == "train"), perm):
            r["label"] = labels[i]
    m = tmp_path / ("shuffled.csv" if shuffle else "learnable.csv")
    with open(m, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({**r, "path": str(d / r["path"])} for r in rows)
    out = tmp_path / m.stem
    assert main(["train", "--manifest", str(m), "--out", str(out), "--quiet", "--epochs", "4",
                 "--set", "train.stall_epochs=4", "--set", "train.batch_size=6", "--set", "train.eval_every=0",
                 "--set", "train.threads=2", "--set", "model.stage1_resolution=8", "--set", "model.stage1_units=mpp"]) == 0
    return json.loads((out / "metrics.json").read_text())


import pytest  # noqa: E402


@pytest.mark.slow
def test_the_packaged_config_warns_on_a_shuffled_manifest_and_not_on_a_learnable_one(tmp_path, capsys):
    learnable = manifest_run(tmp_path, shuffle=False)
    assert learnable["warnings"] == [], learnable["history"]
    shuffled = manifest_run(tmp_path, shuffle=True)
    assert len(shuffled["warnings"]) == 1 and shuffled["warnings"][0].startswith("no learning"), shuffled["history"]
    assert capsys.readouterr().err.count("zoomin: warning: no learning") == 1
