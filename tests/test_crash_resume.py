"""Crash-safe training: SIGKILL mid-epoch, ``--resume``, and the run ends bitwise equal to an
uninterrupted one; checkpoints are replaced atomically."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml

from train_hooks import PAUSE_AT_STEP, hook_env

from zoomin.checkpoint import CHECKPOINT, atomic_save, load_checkpoint
from zoomin.config import Config
from zoomin.train import Trainer

CFG = {
    "model": {"kind": "zoom_in", "stage1_resolution": 0.1, "tile": 40, "stage2_resolution": 0.25, "subtile": 16, "n_samples": 4,
              "feature_dim": 8, "feature_width": 8, "foreground": "otsu_bright"},
    "data": {"canvas": 160, "n_noise": 2, "train_size": 16, "test_size": 6, "fresh_train": True},
    "train": {"epochs": 2, "batch_size": 4, "threads": 1, "eval_every": 1, "bn_recalibrate": 2},
}  # 4 steps per epoch: step 6 is the middle of epoch 2


def zoomin(*args, env=None, **kw):
    return subprocess.Popen([sys.executable, "-m", "zoomin", *args], env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def strip_times(metrics: dict) -> dict:
    return {**metrics, "history": [{k: v for k, v in r.items() if k != "seconds"} for r in metrics["history"]],
            "seconds_per_epoch": None}


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bitwise_equal(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(CFG))
    full, crashed = tmp_path / "full", tmp_path / "crashed"
    ref = zoomin("train", "--config", str(cfg), "--out", str(full), "--quiet")
    victim = zoomin("train", "--config", str(cfg), "--out", str(crashed), "--quiet",
                    "--callback", "train_hooks:PauseAtStep", env=hook_env({PAUSE_AT_STEP: "6"}))
    deadline = time.monotonic() + 600  # a guard against hanging, not a speed requirement
    while not (crashed / "paused").exists():
        assert victim.poll() is None, victim.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    assert load_checkpoint(crashed / CHECKPOINT)["epoch"] == 1  # killed in epoch 2, after step 6 of 8
    assert not (crashed / (CHECKPOINT + ".tmp")).exists()
    resumed = zoomin("train", "--config", str(cfg), "--out", str(crashed), "--quiet", "--resume")
    for p in (ref, resumed):
        out, err = p.communicate()
        assert p.returncode == 0, err
    a, b = load_checkpoint(full / CHECKPOINT), load_checkpoint(crashed / CHECKPOINT)
    assert a["epoch"] == b["epoch"] == 2
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert torch.equal(a["rng_torch"], b["rng_torch"])
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (full, crashed))
    assert strip_times(ma) == strip_times(mb)


def test_a_failed_checkpoint_write_leaves_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / CHECKPOINT
    atomic_save({"epoch": 1, "w": torch.ones(3)}, path)

    def dies_halfway(obj, f, *a, **kw):
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(OSError):
        atomic_save({"epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    ck = load_checkpoint(path)
    assert ck["epoch"] == 1 and torch.equal(ck["w"], torch.ones(3))


def test_every_atomic_writer_replaces_whole_files(tmp_path):
    """metrics.json and the predictions CSV go through the same tmp-then-rename as checkpoints."""
    from zoomin.files import atomic_write_text
    from zoomin.predict import start_csv
    path = tmp_path / "metrics.json"
    atomic_write_text(path, "old")
    with pytest.raises(UnicodeEncodeError):  # fails halfway through the write
        atomic_write_text(path, "new \u00b5m", encoding="ascii")
    assert path.read_text() == "old"
    start_csv(tmp_path / "p.csv", ["slide_id", "p"], [["a", "0.5"]])
    start_csv(tmp_path / "q.csv", ["slide_id", "p"], [])
    assert (tmp_path / "p.csv").read_bytes() == b"slide_id,p\r\na,0.5\r\n"
    assert (tmp_path / "q.csv").read_bytes() == b"slide_id,p\r\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "p.csv", "q.csv"]  # no .tmp left


def test_checkpoint_restores_every_random_state(tmp_path):
    import random

    import numpy as np
    trainer = Trainer(Config.from_dict({**CFG, "train": {**CFG["train"], "epochs": 1}}), tmp_path, progress=False,
                      log=False)
    trainer.fit()
    want = (torch.rand(3), random.random(), np.random.rand(3))
    Trainer(Config.from_dict(CFG), tmp_path, progress=False, log=False).resume()
    got = (torch.rand(3), random.random(), np.random.rand(3))
    assert torch.equal(want[0], got[0]) and want[1] == got[1] and (want[2] == got[2]).all()


def test_resuming_under_another_model_config_is_refused(tmp_path):
    Trainer(Config.from_dict({**CFG, "train": {**CFG["train"], "epochs": 1}}), tmp_path, progress=False,
            log=False).fit()
    other = Config.from_dict({**CFG, "model": {**CFG["model"], "stage1_resolution": 0.2}})  # same weight shapes
    with pytest.raises(ValueError, match=r"checkpoint.pt: trained with another model config \(stage1_resolution 0.1 there, 0.2 here\)"):
        Trainer(other, tmp_path, progress=False, log=False).resume()
    longer = Config.from_dict({**CFG, "train": {**CFG["train"], "epochs": 3}})  # more epochs: allowed
    assert Trainer(longer, tmp_path, progress=False, log=False).resume()
    readout = Config.from_dict({**CFG, "readout": {"method": "mixture", "passes": 2}})  # a readout: allowed
    assert Trainer(readout, tmp_path, progress=False, log=False).resume()


def test_a_checkpoint_in_the_old_resolution_keys_is_compared_as_todays(tmp_path):
    """A checkpoint written before the (value, units) pair holds ``scale1`` etc.: resuming it under
    another stage-I resolution is still refused, under the same one allowed."""
    Trainer(Config.from_dict({**CFG, "train": {**CFG["train"], "epochs": 1}}), tmp_path, progress=False,
            log=False).fit()
    path = tmp_path / "checkpoint.pt"
    ck = torch.load(path, weights_only=False)
    m = ck["config"]["model"]
    for stage in (1, 2):  # the layout of b864867: every old key, consistent
        m[f"scale{stage}"] = m.pop(f"stage{stage}_resolution")
        m[f"stage{stage}_mpp"] = 0.0
        del m[f"stage{stage}_units"]
    m["view_size"] = 0
    torch.save(ck, path)
    other = Config.from_dict({**CFG, "model": {**CFG["model"], "stage1_resolution": 0.2}})
    with pytest.raises(ValueError, match=r"\(stage1_resolution 0.1 there, 0.2 here\)"):
        Trainer(other, tmp_path, progress=False, log=False).resume()
    assert Trainer(Config.from_dict(CFG), tmp_path, progress=False, log=False).resume()
