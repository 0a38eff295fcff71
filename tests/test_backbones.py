"""Backbones users bring (``zoomin.backbones``, issue #13 item 8): starting weights for ``f`` from a
file, read only when training starts from scratch, and any timm model by name.

The timm tests need a working ``timm`` (which needs a torchvision built for the installed torch):
they skip where ``import timm`` fails, as on the CPU machine whose package index has only a CUDA
torchvision. The rest run everywhere."""
import sys

import pytest
import torch

from zoomin.backbones import load_backbone_weights
from zoomin.checkpoint import CHECKPOINT, load_model
from zoomin.config import Config
from zoomin.model import build_model
from zoomin.nets import SmallCNN
from zoomin.train import Trainer

CFG = {
    "model": {"kind": "zoom_in", "stage1_resolution": 0.1, "tile": 64, "stage2_resolution": 0.5, "subtile": 32, "n_samples": 4,
              "feature_dim": 8, "feature_width": 8, "foreground": "otsu_bright"},
    "data": {"canvas": 160, "n_noise": 2, "train_size": 8, "test_size": 4},
    "train": {"epochs": 1, "batch_size": 4, "threads": 1, "eval_every": 1, "bn_recalibrate": 1, "device": "cpu"},
}


def config(**model) -> Config:
    return Config.from_dict({**CFG, "model": {**CFG["model"], **model}})


def working_timm():
    try:
        import timm
    except Exception as e:  # ImportError, or a torchvision built for another torch (RuntimeError)
        pytest.skip(f"timm does not import here ({type(e).__name__})")
    return timm


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_small_cnn_starts_from_the_file_only_when_training_from_scratch(tmp_path):
    torch.manual_seed(1)
    saved = SmallCNN(1, out_dim=8, width=8).state_dict()
    path = tmp_path / "f.pt"
    torch.save(saved, path)
    trainer = Trainer(config(backbone_weights=str(path)), tmp_path / "run", progress=False, log=False)
    assert not same(trainer.model.features.state_dict(), saved)  # not at construction
    trainer.fit()
    first = {k: v.clone() for k, v in trainer.model.features.state_dict().items()}
    # one epoch from the file's weights: the same as an untouched trainer given those weights by hand
    ref = Trainer(config(), tmp_path / "ref", progress=False, log=False)
    ref.model.features.load_state_dict(saved)
    ref.fit()
    assert same(first, ref.model.features.state_dict())
    path.unlink()  # a trained model needs its checkpoint only: predicting and resuming never read the file
    model, cfg = load_model(tmp_path / "run" / CHECKPOINT)
    assert cfg.model.backbone_weights == str(path) and same(model.features.state_dict(), first)
    resumed = Trainer(config(backbone_weights="").override(["train.epochs=2"]), tmp_path / "run",
                      progress=False, log=False)  # the starting weights may be gone from the config too
    assert resumed.fit(resume=True)["epochs"] == 2
    # a zoomin checkpoint is a weights file too: its f is taken
    fresh = build_model(config().model)
    load_backbone_weights(fresh.features, "small_cnn", str(tmp_path / "run" / CHECKPOINT), 1)
    assert same(fresh.features.state_dict(), resumed.model.features.state_dict())


def test_small_cnn_weights_from_safetensors(tmp_path):
    save_file = pytest.importorskip("safetensors.torch").save_file
    torch.manual_seed(2)
    saved = SmallCNN(1, out_dim=8, width=8).state_dict()
    save_file(saved, str(tmp_path / "f.safetensors"))
    model = build_model(config().model)
    load_backbone_weights(model.features, "small_cnn", str(tmp_path / "f.safetensors"), 1)
    assert same(model.features.state_dict(), saved)


def test_bad_weights_are_one_line_errors_naming_the_file(tmp_path):
    model = build_model(config().model)
    with pytest.raises(FileNotFoundError, match="missing.pt: backbone weights file not found"):
        load_backbone_weights(model.features, "small_cnn", str(tmp_path / "missing.pt"), 1)
    wrong = tmp_path / "wrong.pt"
    torch.save(SmallCNN(1, out_dim=8, width=16).state_dict(), wrong)  # another width
    with pytest.raises(ValueError, match=r"wrong.pt: not weights for backbone 'small_cnn' \(.*size mismatch") as e:
        load_backbone_weights(model.features, "small_cnn", str(wrong), 1)
    assert "\n" not in str(e.value)
    partial = tmp_path / "partial.pt"
    torch.save({k: v for k, v in model.features.state_dict().items() if not k.startswith("head.")}, partial)
    with pytest.raises(ValueError, match=r"partial.pt: .*2 entries do not match f's, e.g. 'head.bias'"):
        load_backbone_weights(model.features, "small_cnn", str(partial), 1)
    empty = tmp_path / "empty.pt"
    torch.save({"epoch": 3}, empty)
    with pytest.raises(ValueError, match=r"empty.pt: .*no state dict of tensors in it"):
        load_backbone_weights(model.features, "small_cnn", str(empty), 1)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pt: not weights"):
        load_backbone_weights(model.features, "small_cnn", str(junk), 1)
    with pytest.raises(ValueError, match="timm-cache is for timm backbones"):
        load_backbone_weights(model.features, "small_cnn", "timm-cache", 1)


def test_timm_backbone_without_timm_is_one_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError
    with pytest.raises(ImportError, match=r"needs the timm package \(pip install 'zoomin\[timm\]'\)"):
        build_model(config(backbone="timm:resnet18").model)
    with pytest.raises(ValueError, match="not a hub or directory reference"):  # timm would fetch its config
        build_model(config(backbone="timm:hf-hub:timm/resnet18.a1_in1k").model)


def test_timm_resnet18_backbone_trains_a_step(tmp_path):
    working_timm()
    cfg = config(backbone="timm:resnet18")
    trainer = Trainer(cfg, tmp_path / "run", progress=False, log=False)
    before = {k: v.clone() for k, v in trainer.model.features.state_dict().items()}
    metrics = trainer.fit()
    after = trainer.model.features.state_dict()
    assert torch.isfinite(torch.tensor(metrics["history"][0]["ce"]))
    assert not torch.equal(before["conv1.weight"], after["conv1.weight"])  # f (timm's resnet) was trained
    assert trainer.model.features(torch.rand(3, 1, 32, 32)).shape == (3, 8)  # (M, K)
    model, _ = load_model(tmp_path / "run" / CHECKPOINT)
    assert same(model.features.state_dict(), after)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_state_dict_loads_through_backbone_weights(tmp_path, suffix):
    timm = working_timm()
    torch.manual_seed(3)
    imagenet = timm.create_model("resnet18", pretrained=False).state_dict()  # 3 channels, 1,000 classes
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file(imagenet, str(path))
    else:
        torch.save(imagenet, path)
    trainer = Trainer(config(backbone="timm:resnet18", backbone_weights=str(path)), tmp_path / "run",
                      progress=False, log=False)
    trainer.fit(stop_after=0)  # the start of training: f's weights come from the file
    got = trainer.model.features.state_dict()
    assert torch.equal(got["layer1.0.conv1.weight"], imagenet["layer1.0.conv1.weight"])
    assert torch.equal(got["bn1.running_var"], imagenet["bn1.running_var"])
    # one input channel: timm's loader sums the RGB filters of the first convolution
    assert torch.allclose(got["conv1.weight"], imagenet["conv1.weight"].sum(1, keepdim=True))
    assert got["fc.weight"].shape == (8, 512)  # the 1,000-class head is dropped for f's K outputs
    metrics = trainer.fit()  # and it trains
    assert metrics["epochs"] == 1 and torch.isfinite(torch.tensor(metrics["history"][0]["ce"]))
    # weights whose head already has f's K outputs (a saved f) keep it
    own = tmp_path / "f.pt"
    torch.save(trainer.model.features.state_dict(), own)
    fresh = build_model(config(backbone="timm:resnet18").model)
    load_backbone_weights(fresh.features, "timm:resnet18", str(own), 1)
    assert same(fresh.features.state_dict(), trainer.model.features.state_dict())


def test_timm_cache_is_read_never_downloaded(tmp_path, monkeypatch):
    working_timm()
    import huggingface_hub
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    model = build_model(config(backbone="timm:resnet18").model)
    with pytest.raises(FileNotFoundError, match="no pretrained weights in timm's cache.*never downloads"):
        load_backbone_weights(model.features, "timm:resnet18", "timm-cache", 1)
    url = model.features.pretrained_cfg.get("url")
    if not url:
        pytest.skip("this timm's resnet18 names no torch-hub file")
    cached = tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
    cached.parent.mkdir(parents=True)
    torch.manual_seed(4)
    weights = build_model(config(backbone="timm:resnet18").model).features.state_dict()
    torch.save(weights, cached)
    assert load_backbone_weights(model.features, "timm:resnet18", "timm-cache", 1) == cached
    assert torch.equal(model.features.state_dict()["layer2.0.conv1.weight"], weights["layer2.0.conv1.weight"])
