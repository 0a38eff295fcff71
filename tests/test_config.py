"""One validated config: every shipped config with each field misspelt, each choice given a wrong
value and each rule between fields broken is a one-line error naming the field, raised before any
slide is opened; the reference page is generated and current; ``zoomin config`` prints the
effective config."""
import dataclasses
import warnings
from pathlib import Path

import pytest
import yaml

from zoomin.cli import main
from zoomin.config import Config, ModelConfig, ReadoutConfig
from zoomin.config_check import CHOICES, LEGACY, RANGES
from zoomin.configdoc import CLASSES, PAGE, comments, render

CONFIGS = sorted((Path(__file__).parent.parent / "zoomin" / "configs").glob("*.yaml"))
DATA = Path(__file__).parent / "data"


def shipped(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def one_line_error(d: dict, source: str = "c.yaml") -> str:
    with pytest.raises(ValueError) as e:
        Config.from_dict(d, source=source)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{source}: "), msg
    return msg


def patched(d: dict, patch: dict) -> dict:
    out = {k: dict(v or {}) for k, v in d.items()}
    for section, values in patch.items():
        out.setdefault(section, {}).update(values)
    return out


def misspelt(name: str) -> str:
    """A plausible typo: the second and third letters swapped (else the last one doubled)."""
    swapped = name[0] + name[2] + name[1] + name[3:] if len(name) > 3 else name
    return swapped if swapped != name else name + name[-1]


def test_every_shipped_config_loads_without_a_warning():
    assert len(CONFIGS) >= 9
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for path in CONFIGS:
            Config.from_yaml(path)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_each_field_misspelt_names_it_and_the_field_meant(path):
    d = shipped(path)
    for section, klass in CLASSES.items():
        for f in dataclasses.fields(klass):
            typo = misspelt(f.name)
            msg = one_line_error(patched(d, {section: {typo: 1}}))
            assert f"unknown key {section}.{typo} (did you mean {section}.{f.name}?)" in msg, msg


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_each_choice_given_a_wrong_value_names_the_field(path):
    d = shipped(path)
    for name, choices in CHOICES.items():
        section, key = name.split(".")
        msg = one_line_error(patched(d, {section: {key: "bogus"}}))
        assert f"{name} must be one of" in msg and "'bogus'" in msg, msg


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_each_range_and_type_broken_names_the_field(path):
    d = shipped(path)
    for name, spec in RANGES.items():
        section, key = name.split(".")
        below = spec[1] - 1 if spec[0] == ">=" else spec[1]
        msg = one_line_error(patched(d, {section: {key: below}}))
        assert f"{name} must be" in msg, msg
    msg = one_line_error(patched(d, {"model": {"n_samples": "ten"}}))
    assert "model.n_samples takes a whole number" in msg
    msg = one_line_error(patched(d, {"model": {"evidence": "yes"}}))
    assert "model.evidence takes true or false" in msg
    assert "train.device" in one_line_error(patched(d, {"train": {"device": "gpu"}}))


NO_EVIDENCE = {"evidence": False, "evidence_sharpness": 1.0, "evidence_topk": 8, "evidence_prior": 0.0,
               "instance_pool": "mean"}
BROKEN = {  # a rule broken -> the field the one-line error names first
    "mixture": ({"model": {"estimate": "features"}, "train": {"mixture_weight": 0.5}}, "train.mixture_weight"),
    "evidence": ({"model": NO_EVIDENCE, "train": {"evidence_weight": 1.0}}, "train.evidence_weight"),
    "instance": ({"model": {**NO_EVIDENCE, "instance_pool": "max"}, "train": {"instance_weight": 1.0, "evidence_weight": 0}},
                 "train.instance_weight"),
    "evidence setting": ({"model": {**NO_EVIDENCE, "evidence_prior": 1.0}, "train": {"evidence_weight": 0}},
                         "model.evidence_prior"),
    "place setting": ({"readout": {"method": "mixture", "place_radius": 6.0}}, "readout.place_radius"),
    "topk passes": ({"readout": {"mode": "topk", "passes": 4}}, "readout.passes"),
    "reference class": ({"model": {"num_classes": 2}, "train": {"reference_class": 2}}, "train.reference_class"),
    "majority": ({"data": {"task": "megapixel_mnist", "n_digits": 5, "n_target": 2}}, "data.n_target"),
    "view size and mpp": ({"model": {"mpp": 1.0, "stage1_mpp": 16.0, "view_size": 256}}, "model.view_size"),
    "view size and scale": ({"model": {"view_size": 256, "scale1": 0.2, "stage1_mpp": 0}}, "model.view_size"),
    "scale and stage1_mpp": ({"model": {"mpp": 1.0, "stage1_mpp": 16.0, "scale1": 0.2, "view_size": 0}}, "model.scale1"),
    "scale and stage2_mpp": ({"model": {"mpp": 1.0, "stage2_mpp": 4.0, "scale2": 0.5}}, "model.scale2"),
    "an earlier key and its pair": ({"model": {"scale1": 0.2}}, "model.scale1"),
    "physical units without mpp": ({"model": {"mpp": 0.0, "magnification": 0.0, "count_mpp": 0.0, "stage1_resolution": 16.0,
                                              "stage1_units": "mpp", "stage2_resolution": 0.25, "stage2_units": "baseline"}},
                                   "model.stage1_resolution"),
    "a view finer than mpp": ({"model": {"mpp": 1.0, "magnification": 0.0, "stage2_resolution": 0.5, "stage2_units": "mpp"}},
                              "model.stage2_resolution"),
    "a baseline scale above 1": ({"model": {"stage1_resolution": 2.0, "stage1_units": "baseline"}}, "model.stage1_resolution"),
    "a view of part of a pixel": ({"model": {"stage1_resolution": 100.5, "stage1_units": "px"}}, "model.stage1_resolution"),
    "mpp and magnification": ({"model": {"mpp": 0.5, "magnification": 40.0}}, "model.mpp"),
    "subtile": ({"model": {"kind": "zoom_in", "tile": 64, "subtile": 64}}, "model.subtile"),
    "counts without evidence": ({"model": {**NO_EVIDENCE, "count_mpp": 2.0, "evidence_answer": False},
                                 "train": {"evidence_weight": 0, "instance_weight": 0}}, "model.count_mpp"),
    "counts finer than mpp": ({"model": {"evidence": True, "mpp": 1.0, "count_mpp": 0.5, "in_channels": 3}},
                              "model.count_mpp"),
    "counts of one channel": ({"model": {"evidence": True, "mpp": 1.0, "count_mpp": 2.0, "in_channels": 1}},
                              "model.count_mpp"),
    "count setting": ({"model": {"count_mpp": 0.0, "count_directions": 8}}, "model.count_directions"),
}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
@pytest.mark.parametrize("rule", sorted(BROKEN))
def test_each_rule_between_fields_broken_names_the_field(path, rule):
    patch, field = BROKEN[rule]
    msg = one_line_error(patched(shipped(path), patch))
    assert field in msg, msg


def test_an_unknown_section_and_a_field_set_by_hand():
    assert "unknown section 'readuot' (did you mean readout?)" in one_line_error({"readuot": {}})
    assert "did you mean readout.passes?" in one_line_error({"train": {"eval_pass": 4}})  # a key of an earlier version
    cfg = Config()
    with pytest.raises(AttributeError, match=r"unknown key train.eval_passes \(did you mean readout.passes\?\)"):
        cfg.train.eval_passes = 16
    cfg.readout.passes = 0
    with pytest.raises(ValueError, match="readout.passes must be >= 1"):
        cfg.check()


def test_earlier_keys_are_read_as_the_readout_section_with_a_warning():
    old = {"model": {"test_pooling": "probabilities"}, "train": {"eval_mode": "sample", "eval_passes": 8}}
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        cfg = Config.from_dict(old)
    assert [str(w.message) for w in seen] == [
        "config: model.test_pooling is deprecated, read as readout.method: 'mixture'",
        "config: train.eval_mode is deprecated, read as readout.mode: 'sample'",
        "config: train.eval_passes is deprecated, read as readout.passes: 8"]
    assert all(w.category is FutureWarning for w in seen)
    assert (cfg.readout.method, cfg.readout.passes) == ("mixture", 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Config.from_dict(old, warn=False).readout == cfg.readout
    assert "train.eval_passes and readout.passes both given" in one_line_error(
        {"train": {"eval_passes": 8}, "readout": {"passes": 4}})
    assert "model.test_pooling (now readout.method) must be one of" in one_line_error({"model": {"test_pooling": "vote"}})
    with pytest.warns(FutureWarning):
        assert Config().override(["model.test_pooling=places"]).readout.method == "places"


def test_model_pooling_is_read_as_model_estimate_with_a_warning(tmp_path):
    """``model.pooling`` (what the estimators average) was renamed ``model.estimate``: a file,
    ``--set`` and a saved config with the old key still load; both keys at once is an error."""
    path = tmp_path / "old.yaml"
    path.write_text("model:\n  pooling: both\ntrain:\n  mixture_weight: 0.5\n")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert Config.from_yaml(path).model.estimate == "both"
    assert [str(w.message) for w in seen] == [f"{path}: model.pooling is deprecated, read as model.estimate: 'both'"]
    with pytest.warns(FutureWarning, match="model.pooling is deprecated"):
        assert Config().override(["model.pooling=probabilities"]).model.estimate == "probabilities"
    saved = Config().to_dict()
    saved["model"]["pooling"] = saved["model"].pop("estimate")  # as a checkpoint of an earlier version holds it
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a checkpoint's config: read silently
        assert Config.from_dict(saved, warn=False, rules=False) == Config()
    msg = one_line_error({"model": {"pooling": "features", "estimate": "features"}})
    assert "model.pooling and model.estimate both given" in msg and "give model.estimate only" in msg
    with pytest.warns(FutureWarning):  # a bad value under the old key: the error names today's key
        assert "model.estimate must be one of" in one_line_error({"model": {"pooling": "votes"}})


def test_each_stage_resolution_is_one_value_and_units_pair():
    slides = Config.from_yaml(CONFIGS[[p.stem for p in CONFIGS].index("slides")])
    assert (slides.model.stage1_resolution, slides.model.stage1_units, slides.model.scale1) == (16.0, "mpp", 1 / 16)
    assert slides.override(["model.stage1_resolution=8"]).model.scale1 == 1 / 8
    assert slides.override(["model.mpp=0.5"]).model.scale1 == 0.5 / 16  # the µm/px stays, the scale follows
    px = slides.override(["model.stage1_resolution=512", "model.stage1_units=px"]).model
    assert (px.view_size, px.scale1) == (512, 0.0)  # the scale depends on each image's size
    assert Config().override(["model.stage1_resolution=0.2"]).model.scale1 == 0.2
    assert Config.from_dict(slides.to_dict()) == slides
    assert not {"scale1", "scale2", "view_size", "stage1_mpp", "stage2_mpp"} & set(slides.to_dict()["model"])


def test_earlier_resolution_keys_are_read_as_the_pair():
    with pytest.warns(FutureWarning, match="model.stage1_mpp is deprecated, read as model.stage1_resolution: 8"):
        cfg = Config.from_dict({"model": {"mpp": 1.0, "stage1_mpp": 8.0, "view_size": 0}})
    assert (cfg.model.stage1_resolution, cfg.model.stage1_units, cfg.model.scale1) == (8.0, "mpp", 1 / 8)
    with pytest.warns(FutureWarning, match="model.view_size"):
        assert Config().override(["model.view_size=256"]).model.view_size == 256
    saved = {"model": {"mpp": 1.0, "scale1": 1 / 16, "view_size": 0, "stage1_mpp": 16.0, "scale2": 0.25, "stage2_mpp": 4.0}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a checkpoint's config: every earlier key, consistent, read silently
        old = Config.from_dict(saved, warn=False, rules=False).model
    assert (old.stage1_units, old.scale1, old.stage2_units, old.scale2) == ("mpp", 1 / 16, "mpp", 1 / 4)
    old = Config.from_dict({"model": {"scale1": 0.1, "view_size": 0, "stage1_mpp": 0.0}}, warn=False).model
    assert (old.stage1_resolution, old.stage1_units) == (0.1, "baseline")
    both = {"model": {"mpp": 1.0, "scale1": 0.05, "view_size": 32, "stage1_mpp": 16.0}}  # the view_size won then
    assert Config.from_dict(both, warn=False, rules=False).model.stage1_units == "px"
    with pytest.raises(ValueError, match="model.stage1_resolution must be > 0"):
        Config.from_dict({"model": {"scale1": 0}}, warn=False)
    fmow = Config.from_yaml(CONFIGS[[p.stem for p in CONFIGS].index("fmow")])
    with pytest.raises(ValueError, match="0 switched model.view_size off"):
        fmow.override(["model.view_size=0"])


@pytest.mark.parametrize("args,field", [
    (["--set", "model.n_sample=4"], "model.n_sample (did you mean model.n_samples?)"),
    (["--set", "readout.method=vote"], "readout.method must be one of"),
    (["--set", "train.evidence_weight=1", "--set", "model.evidence=false"], "train.evidence_weight needs"),
])
def test_the_cli_says_one_line_before_any_slide_is_opened(args, field, tmp_path, capsys, monkeypatch):
    import zoomin.slides

    def opened(*a, **k):
        raise AssertionError("a slide was opened")
    monkeypatch.setattr(zoomin.slides.SlideSource, "__init__", opened)
    rc = main(["train", "--manifest", str(tmp_path / "no_such.csv"), "--out", str(tmp_path / "run"), *args])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("zoomin: error: --set") and field in err, err
    assert "Traceback" not in err


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_broken_shipped_config_is_one_cli_line_before_any_slide_is_opened(path, tmp_path, capsys, monkeypatch):
    import zoomin.slides

    def opened(*a, **k):
        raise AssertionError("a slide was opened")
    monkeypatch.setattr(zoomin.slides.SlideSource, "__init__", opened)
    d = shipped(path)
    cases = {rule: patch for rule, (patch, _) in BROKEN.items()}
    expect = {rule: field for rule, (_, field) in BROKEN.items()}
    for section, klass in CLASSES.items():  # every field misspelt
        for f in dataclasses.fields(klass):
            typo = misspelt(f.name)
            cases[f"typo {section}.{f.name}"] = {section: {typo: 1}}
            expect[f"typo {section}.{f.name}"] = f"unknown key {section}.{typo} (did you mean {section}.{f.name}?)"
    for name in CHOICES:  # every choice given a wrong value
        section, key = name.split(".")
        cases[f"choice {name}"] = {section: {key: "no_such_choice"}}
        expect[f"choice {name}"] = f"{name} must be one of"
    for rule, patch in cases.items():
        bad = tmp_path / f"{rule}.yaml"
        bad.write_text(yaml.safe_dump(patched(d, patch)))
        rc = main(["train", "--config", str(bad), "--manifest", str(tmp_path / "no_such.csv"), "--out", str(tmp_path / "run")])
        err = capsys.readouterr().err
        assert rc == 2 and err.count("\n") == 1 and err.startswith(f"zoomin: error: {bad}: "), (rule, err)
        assert expect[rule] in err and "Traceback" not in err, (rule, err)


def test_a_misspelt_yaml_key_from_the_cli(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  kind: zoom_in\ntrain:\n  eval_mode: topk\n  batchsize: 4\n")
    assert main(["train", "--config", str(bad), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1] == f"zoomin: error: {bad}: unknown key train.batchsize (did you mean train.batch_size?)"
    assert "zoomin: warning: " in err and "train.eval_mode is deprecated" in err  # one line each


def test_every_field_has_a_short_comment_and_the_reference_page_is_current():
    for section, klass in CLASSES.items():
        for name, text in comments(klass).items():
            assert text, f"{section}.{name} has no comment in zoomin/config.py"
            assert len(text) <= 100, f"{section}.{name}: comment of {len(text)} characters (long text: configdoc.HELP)"
    page = render()
    assert PAGE.read_text(encoding="utf-8") == page, "docs/config.md is stale: python -m zoomin.configdoc"
    for section, klass in CLASSES.items():
        assert all(f"**`{f.name}`**" in page for f in dataclasses.fields(klass))


def test_zoomin_config_prints_the_effective_config(tmp_path, capsys):
    assert main(["config", "demo.yaml", "--set", "readout.passes=8"]) == 0
    d = yaml.safe_load(capsys.readouterr().out)
    assert list(d) == ["model", "data", "train", "readout"] and d["readout"]["passes"] == 8
    assert d["readout"]["method"] == "mixture" and d["model"]["feature_dim"] == ModelConfig().feature_dim  # defaults too
    assert main(["config", str(DATA / "legacy_places.pt")]) == 0  # a checkpoint from before the readout section
    out = capsys.readouterr()
    d = yaml.safe_load(out.out)
    assert d["readout"]["method"] == "places" and d["readout"]["place_confidence"] == 0.3 and not out.err
    assert "test_pooling" not in d["model"]
    assert main(["config"]) == 0 and yaml.safe_load(capsys.readouterr().out)["readout"] == dataclasses.asdict(ReadoutConfig())
    assert main(["config", str(tmp_path / "none.pt")]) == 2


def test_every_earlier_key_maps_onto_a_field():
    for old, (new, _) in LEGACY.items():
        section, key = new.split(".")
        assert key in {f.name for f in dataclasses.fields(CLASSES[section])}, new


@pytest.mark.parametrize("passes,message", [("0", "--passes 0: readout.passes must be >= 1"),
                                            ("4", "--passes 4: the checkpoint's readout.mode is topk")])
def test_predict_passes_is_checked_like_the_readout(passes, message, tmp_path, capsys):
    rc = main(["predict", "--checkpoint", str(DATA / "legacy_topk.pt"), "--out", str(tmp_path / "p.csv"),
               "--passes", passes, str(tmp_path / "never_opened.tif")])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and message in err, err
