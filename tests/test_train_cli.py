import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import zoomin
from zoomin.checkpoint import load_checkpoint, load_model
from zoomin.cli import main
from zoomin.config import Config
from zoomin.data.factory import make_datasets
from zoomin.model import AttentionSamplingNet, ZoomInNet, build_model
from zoomin.train import Trainer

TINY = {
    "model": {"kind": "zoom_in", "stage1_resolution": 0.1, "tile": 40, "stage2_resolution": 0.25, "subtile": 16, "n_samples": 4,
              "feature_dim": 8, "feature_width": 8, "foreground": "otsu_bright"},
    "data": {"canvas": 160, "n_noise": 2, "train_size": 12, "test_size": 6, "fresh_train": True},
    "train": {"epochs": 2, "batch_size": 4, "threads": 1},
}


def write(tmp_path, d, name="cfg.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(d))
    return p


@pytest.mark.parametrize("kind", ["zoom_in", "one_stage"])
def test_train_cli_writes_metrics_and_checkpoint(tmp_path, kind, capsys):
    d = {**TINY, "model": {**TINY["model"], "kind": kind}, "readout": {"mode": "topk"}}
    if kind == "one_stage":
        d["model"]["tile"] = 16
    out = tmp_path / "run"
    assert main(["train", "--config", str(write(tmp_path, d)), "--out", str(out), "--quiet"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["epochs"] == 2 and len(m["history"]) == 2
    ck = load_checkpoint(out / "checkpoint.pt")  # weights_only=True
    assert ck["epoch"] == 2 and ck["config"]["model"]["kind"] == kind
    model, cfg = load_model(out / "checkpoint.pt")
    assert cfg.model.kind == kind and model(torch.rand(1, 1, 160, 160)).logits.shape == (1, 10)
    # the reported accuracy is the saved model's (deterministic top-k) accuracy on the 6 test images
    _, test = make_datasets(cfg)
    x, y = torch.stack([test[i][0] for i in range(len(test))]), torch.tensor([test[i][1] for i in range(len(test))])
    with torch.no_grad():
        right = int((model.eval()(x, mode="topk").logits.argmax(-1) == y).sum())
    assert m["test_accuracy"] == pytest.approx(right / 6)


class CountCalls:
    """A callback recording the step at each ``on_step`` and counting ``on_fit_end``."""

    def __init__(self):
        self.steps, self.ends = [], 0

    def on_step(self, trainer):
        self.steps.append(trainer.step)

    def on_fit_end(self, trainer):
        self.ends += 1


def test_resume_matches_an_uninterrupted_run(tmp_path):
    cfg = Config.from_dict(TINY)
    calls = CountCalls()
    full = Trainer(cfg, tmp_path / "full", progress=False, log=False, callbacks=[calls, object()])
    full.fit()
    assert calls.steps == [1, 2, 3, 4, 5, 6] and calls.ends == 1  # 12 images, batch 4, 2 epochs; object(): no hooks
    Trainer(cfg, tmp_path / "part", progress=False, log=False).fit(stop_after=1)  # "interrupted" after epoch 1
    resumed = Trainer(cfg, tmp_path / "part", progress=False, log=False)
    resumed.fit(resume=True)
    for (k, a), b in zip(full.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert full.history[-1]["test_accuracy"] == resumed.history[-1]["test_accuracy"]


def test_bad_config_is_one_line(tmp_path, capsys):
    bad = write(tmp_path, {"model": {"kind": "zoom_in", "n_smaples": 3}})
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(bad) in err and "n_smaples" in err
    assert main(["train", "--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "x")]) == 2
    assert "missing.yaml" in capsys.readouterr().err
    (tmp_path / "junk.yaml").write_text("model: [unclosed")
    assert main(["train", "--config", str(tmp_path / "junk.yaml"), "--out", str(tmp_path / "x")]) == 2
    assert "not valid YAML" in capsys.readouterr().err


@pytest.mark.parametrize("spec, message", [("nocolon", "expected MODULE:NAME"),
                                           ("zoomin.no_such_module:X", "cannot import it"),
                                           ("zoomin.train:NoSuchCallback", "cannot import it")])
def test_bad_callback_is_one_line(tmp_path, capsys, spec, message):
    cfg = write(tmp_path, TINY)
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "x"), "--callback", spec]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--callback {spec}: {message}" in err


def test_bad_checkpoint_is_one_line(tmp_path):
    p = tmp_path / "checkpoint.pt"
    p.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="checkpoint.pt: not a readable zoomin checkpoint"):
        load_checkpoint(p)


SHIPPED = sorted((Path(zoomin.__file__).parent / "configs").glob("*.yaml"))


def test_every_data_set_has_a_shipped_config():
    names = {p.stem for p in SHIPPED}
    assert {"demo", "slides", "megapixel_mnist_zoom_in", "megapixel_mnist_one_stage"} <= names
    assert {p.stem for p in (Path(__file__).parents[1] / "data_manifests").glob("*.md")} - {"README"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_config_builds_its_model_and_runs_it(path):
    """Each shipped YAML parses, builds the model it names and runs a forward pass on an image of
    its channels, one stage-I tile in size: N draws, attention that sums to 1, sub-tiles of its size."""
    cfg = Config.from_yaml(path).model
    model = build_model(cfg).eval()
    assert isinstance(model, ZoomInNet if cfg.kind == "zoom_in" else AttentionSamplingNet)
    x = torch.rand(1, cfg.in_channels, cfg.tile, cfg.tile, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        tr = model(x, generator=torch.Generator().manual_seed(0))
    assert tr.logits.shape == (1, cfg.num_classes) and torch.isfinite(tr.logits).all()
    assert float(tr.alpha.sum()) == pytest.approx(1.0, abs=1e-5) and int(tr.tile_counts.sum()) == cfg.n_samples
    side = cfg.subtile if cfg.kind == "zoom_in" else cfg.tile
    assert (tr.subtile_boxes[tr.subtile_valid][:, 2:] == side).all()


def test_python_dash_m_entry_point():
    r = subprocess.run([sys.executable, "-m", "zoomin", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "demo" in r.stdout and "train" in r.stdout


def test_import_stays_light():
    code = "import sys, zoomin; bad = [m for m in ('holoviews', 'bokeh', 'ipywidgets', 'large_image', 'yaml', 'mlxtend') if m in sys.modules]; print(bad)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "[]", r.stdout + r.stderr


def test_batch_norm_recalibration_replaces_stale_statistics():
    from zoomin.evaluate import recalibrate_batch_norm
    cfg = Config.from_dict(TINY)
    model = build_model(cfg.model)
    bn = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bn:
        m.running_mean.fill_(100.0)
    x = torch.zeros(4, 1, 160, 160)
    x[:, :, 40:70, 60:90] = 1.0
    loader = [(x, torch.zeros(4, dtype=torch.long))] * 3
    recalibrate_batch_norm(model, loader, torch.device("cpu"), batches=2)
    assert all(m.running_mean.abs().max() < 50 for m in bn)
    assert all(m.momentum == 0.1 for m in bn) and all(int(m.num_batches_tracked) == 2 for m in bn)


def test_set_overrides_fields_and_reports_bad_items(tmp_path, capsys):
    cfg = Config.from_dict(TINY).override(["model.n_samples=7", "train.lr=5e-3", "model.foreground=none",
                                           "train.cosine=false"])
    assert (cfg.model.n_samples, cfg.train.lr, cfg.model.foreground, cfg.train.cosine) == (7, 0.005, "none", False)
    assert Config.from_dict(TINY).override([]).model.n_samples == TINY["model"]["n_samples"]
    path = write(tmp_path, TINY)
    for item, message in [("model.n_smaples=3", "n_smaples"), ("n_samples=3", "expected SECTION.KEY=VALUE"),
                          ("model.n_samples=0", "n_samples must be >= 1"), ("train.lr=[1", "not valid YAML"),
                          ("train.lr=fast", "takes a number")]:
        assert main(["train", "--config", str(path), "--out", str(tmp_path / "x"), "--set", item]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err and "--set" in err, err
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "y"), "--set", "train.epochs=1",
                 "--set", "model.n_samples=3"]) == 0
    saved = load_checkpoint(tmp_path / "y" / "checkpoint.pt")["config"]
    assert saved["model"]["n_samples"] == 3 and saved["train"]["epochs"] == 1


@pytest.mark.parametrize("amp_cpu, supported", [(False, True), (True, True), (True, False)])
def test_amp_cpu_trains_f_in_bfloat16_and_keeps_float32_weights(tmp_path, monkeypatch, amp_cpu, supported):
    if supported and not zoomin.train.cpu_bf16_supported():
        pytest.skip("oneDNN runs no bfloat16 on this CPU")
    monkeypatch.setattr(zoomin.train, "cpu_bf16_supported", lambda: supported)
    cfg = Config.from_dict({**TINY, "train": {**TINY["train"], "epochs": 1, "amp_cpu": amp_cpu}})
    trainer = Trainer(cfg, tmp_path / "run", progress=False, log=False)
    seen = []
    trainer.model.features.register_forward_hook(lambda mod, inp, out: seen.append(out.dtype))
    before = [p.detach().clone() for p in trainer.model.parameters()]
    m = trainer.fit()
    assert seen[0] == (torch.bfloat16 if amp_cpu and supported else torch.float32)  # the first training step's f
    assert seen[-1] == seen[0]  # testing runs under the same autocast
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))
    assert math.isfinite(m["history"][0]["ce"]) and m["history"][0]["ce"] > 0
    model, _ = load_model(tmp_path / "run" / "checkpoint.pt")
    assert all(t.dtype == torch.float32 for t in model.state_dict().values() if t.is_floating_point())
