"""Several processes under torchrun (gloo on CPU, loopback): DDP training keeps the ranks'
parameters identical and matches one process on the same global batch; sharded predict merges
into the same CSV one process writes."""
import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from train_hooks import DUMP_PARAMS, hook_env

# Stage I and stage II see 1 x 1 views, so sampling draws nothing random and two processes must
# agree with one up to float summation order; no batch norm (its statistics are per process).
DDP_CFG = {
    "model": {"kind": "zoom_in", "stage1_resolution": 0.00625, "tile": 160, "stage2_resolution": 0.00625, "subtile": 96, "n_samples": 2,
              "feature_dim": 8, "feature_width": 8, "feature_depth": 3, "feature_norm": "none"},
    "data": {"canvas": 160, "n_noise": 2, "train_size": 16, "test_size": 4, "fresh_train": True},
    "train": {"epochs": 1, "batch_size": 4, "threads": 1, "lr": 0.01, "eval_every": 0, "bn_recalibrate": 0},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def zoomin(*args, nproc=1, env=None, code=0):
    """``python -m zoomin ...``, or under ``torchrun --nproc_per_node=nproc`` on loopback; its exit
    status must be ``code`` (torchrun turns a rank's non-zero status into its own 1)."""
    launcher = [sys.executable, "-m", "zoomin"]
    if nproc > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}",
                    "--master_addr=127.0.0.1", f"--master_port={free_port()}", "-m", "zoomin"]
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", **(env or {})}
    r = subprocess.run(launcher + list(args), env=env, capture_output=True, text=True)
    assert r.returncode == (code if nproc == 1 or code == 0 else 1), r.stderr[-3000:]
    return r


@pytest.mark.slow
def test_ddp_two_cpu_processes_match_one(tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(yaml.safe_dump(DDP_CFG))
    two, one = tmp_path / "two", tmp_path / "one"
    dump = ("--callback", "train_hooks:DumpParams")
    r = zoomin("train", "--config", str(cfg), "--out", str(two), "--quiet", *dump, nproc=2,
               env=hook_env({DUMP_PARAMS: str(two / "params")}))
    assert r.stdout.count('"processes": 2') == 1  # only rank 0 reports
    zoomin("train", "--config", str(cfg), "--out", str(one), "--quiet", *dump,
           env=hook_env({DUMP_PARAMS: str(one / "params")}))
    p0, p1 = (torch.load(two / "params" / f"params.rank{r}.pt", weights_only=True) for r in (0, 1))
    single = torch.load(one / "params" / "params.rank0.pt", weights_only=True)
    for k in p0:
        assert torch.equal(p0[k], p1[k]), k  # DDP: identical on every rank
        assert torch.allclose(p0[k], single[k], atol=1e-4), k  # and what one process learns
    m2, m1 = (json.loads((d / "metrics.json").read_text()) for d in (two, one))
    assert m2["processes"] == 2 and m1["processes"] == 1
    assert abs(m2["history"][0]["ce"] - m1["history"][0]["ce"]) < 1e-5  # loss over the whole epoch, all ranks
    assert m2["history"][0]["train_accuracy"] == m1["history"][0]["train_accuracy"]
    assert sorted(p.name for p in two.iterdir()) == ["checkpoint.pt", "metrics.json", "params"]


@pytest.mark.slow
def test_predict_sharded_over_two_processes_merges_one_csv(tmp_path):
    pytest.importorskip("large_image")
    from zoomin.checkpoint import save_model
    from zoomin.config import Config, ModelConfig
    from zoomin.model import build_model
    from zoomin.synth import synth_slides
    manifest = synth_slides(tmp_path / "s", 3, 1024, seed=2, tile=128, progress=False)
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"\0" * 100)
    cfg = Config(model=ModelConfig(in_channels=3, num_classes=2, stage1_resolution=0.05, tile=128, stage2_resolution=0.25, subtile=32,
                                   n_samples=6, feature_dim=8, feature_width=8, foreground="otsu_dark"))
    ck = save_model(tmp_path / "m.pt", build_model(cfg.model), cfg)
    args = ["predict", "--checkpoint", str(ck), "--quiet", "--passes", "2", str(manifest), str(junk)]
    r = zoomin(*args, "--out", str(tmp_path / "two.csv"), nproc=2, code=3)  # 3: some slides failed
    assert r.stdout.count("3 slide(s) predicted") == 1 and "1 skipped" in r.stdout
    assert r.stderr.count("zoomin: skipped") == 1 and "junk.tif" in r.stderr
    zoomin(*args, "--out", str(tmp_path / "one.csv"), code=3)
    two, one = ([line.rsplit(",", 1)[0] for line in (tmp_path / f).read_text().splitlines()]
                for f in ("two.csv", "one.csv"))
    assert two == one  # the same file but for the last column, the slides' seconds
    assert [row["slide_id"] for row in csv.DictReader(open(tmp_path / "two.csv"))] == [
        "synth_0000", "synth_0001", "synth_0002"]
    assert sorted(p.name for p in Path(tmp_path).glob("two.csv*")) == ["two.csv"]  # parts merged and removed
