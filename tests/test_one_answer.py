"""One answer: a tiny model trained on synthetic slides, then its answer for the same test slides
with the same seed from the trainer's test (``evaluate.iter_answers``, what ``Trainer.test``
scores), ``zoomin predict`` and the explorer: the same probabilities, for every readout method."""
import csv
import dataclasses

import pytest
import torch

pytest.importorskip("large_image")

from zoomin.checkpoint import save_model  # noqa: E402
from zoomin.cli import main  # noqa: E402
from zoomin.config import Config  # noqa: E402
from zoomin.evaluate import evaluate, iter_answers  # noqa: E402
from zoomin.manifest import read_manifest, write_manifest  # noqa: E402
from zoomin.synth import synth_slides  # noqa: E402
from zoomin.train import Trainer  # noqa: E402
from zoomin.viz.session import Session  # noqa: E402

SEED = 5
MODEL = dict(kind="zoom_in", in_channels=3, num_classes=2, stage1_resolution=0.05, tile=128, stage2_resolution=0.25, subtile=32,
             n_samples=6, feature_dim=8, feature_width=8, feature_norm="none", foreground="otsu_dark")
READOUTS = {"features": dict(method="features", passes=3), "mixture": dict(method="mixture", passes=3),
            "places": dict(method="places", passes=3, place_confidence=0.2), "topk": dict(method="mixture", mode="topk")}


def train_tiny(d, model: dict):
    entries = read_manifest(synth_slides(d, 4, 1024, seed=3, tile=128, progress=False))
    entries = [dataclasses.replace(e, split="test" if i >= 2 else "train") for i, e in enumerate(entries)]
    manifest = write_manifest(entries, d / "split.csv", annotations=False)
    cfg = Config.from_dict({"model": model, "data": {"task": "manifest", "manifest": str(manifest)},
                            "train": {"epochs": 1, "batch_size": 2, "threads": 1, "bn_recalibrate": 0, "eval_every": 0}})
    trainer = Trainer(cfg, d / "run", progress=False, log=False)
    trainer.fit()
    test = write_manifest([e for e in entries if e.split == "test"], d / "test.csv", annotations=False)
    return d, trainer, test


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_tiny(tmp_path_factory.mktemp("one_answer"), MODEL)


@pytest.fixture(scope="module")
def trained_with_counts(tmp_path_factory):
    """The same with evidence heads and the stain counts (``model.count_mpp``), at 1 µm/px."""
    model = {**MODEL, "mpp": 1.0, "stage1_resolution": 16.0, "stage1_units": "mpp", "stage2_resolution": 4.0, "stage2_units": "mpp", "evidence": True,
             "evidence_answer": True, "count_mpp": 2.0}
    return train_tiny(tmp_path_factory.mktemp("one_answer_counts"), model)


def answers_of_the_trainers_test(trainer, readout) -> dict[str, torch.Tensor]:
    out = {}
    for probs, _, x, _ in iter_answers(trainer.model, trainer.loaders()[1], trainer.device, readout, seed=SEED):
        out.update({src.slide_id: p for src, p in zip(x, probs)})
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(READOUTS))
def test_the_trainers_test_predict_and_the_explorer_give_one_answer(trained, name, tmp_path):
    one_answer(*trained, name, tmp_path)


@pytest.mark.slow
def test_the_stain_counts_give_one_answer(trained_with_counts, tmp_path):
    d, trainer, test_csv = trained_with_counts
    assert bool(trainer.model.counts.fitted)
    one_answer(d, trainer, test_csv, "mixture", tmp_path)


def one_answer(d, trainer, test_csv, name, tmp_path):
    cfg = Config.from_dict({**trainer.cfg.to_dict(), "readout": READOUTS[name]})
    ckpt = save_model(tmp_path / "model.pt", trainer.model, cfg)
    ours = answers_of_the_trainers_test(trainer, cfg.readout)
    assert len(ours) == 2
    metrics = evaluate(trainer.model, trainer.loaders()[1], trainer.device, cfg.readout, progress=False, seed=SEED)
    labels = {e.slide_id: e.label for e in read_manifest(test_csv)}
    right = [int(p.argmax()) == labels[s] for s, p in ours.items()]
    assert metrics["test_accuracy"] == sum(right) / len(right)  # the test scores exactly these answers

    out = tmp_path / "p.csv"
    assert main(["predict", "--checkpoint", str(ckpt), "--out", str(out), "--seed", str(SEED), "--quiet", str(test_csv)]) == 0
    predicted = {r["slide_id"]: torch.tensor([float(r["p_0"]), float(r["p_1"])]) for r in csv.DictReader(open(out))}
    assert predicted.keys() == ours.keys()

    session = Session.from_checkpoint(ckpt, {e.slide_id: e.path for e in read_manifest(test_csv)})
    for sid, p in ours.items():
        assert torch.allclose(predicted[sid], p, atol=2e-6), (name, sid, predicted[sid], p)  # the CSV's 6 decimals
        assert torch.allclose(session.answer(sid, seed=SEED), p, atol=1e-6), (name, sid)
    if name == "places":
        assert cfg.readout.method == "places" and session.readout == cfg.readout

    pytest.importorskip("holoviews")
    from zoomin.viz import Explorer
    sid = next(iter(ours))
    ex = Explorer.from_session(session, sid, seed=SEED)
    assert torch.allclose(ex.state.answer, ours[sid], atol=1e-6)
    bars = ex.prediction()
    titles = [el.opts.get().kwargs.get("title", "") for el in bars]
    assert titles[0].startswith("answer (") and titles[1].startswith("one pass (drawn)"), titles
