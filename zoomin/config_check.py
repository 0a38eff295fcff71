"""Checks of a config: each field's type, choices and range, the rules between fields, unknown keys
(with a "did you mean"), and the keys of earlier versions read as today's. Every problem is a
one-line ``ValueError`` naming the field."""
from __future__ import annotations

import dataclasses
import difflib
import re
import warnings

from .units import Units

CHOICES = {
    "model.kind": ("zoom_in", "one_stage"),
    "model.feature_norm": ("batch", "group", "none"),
    "model.feature_output": ("linear", "l2"),
    "model.estimate": ("features", "probabilities", "both"),
    "model.foreground": ("none", "otsu_bright", "otsu_dark"),
    "model.instance_pool": ("max", "mean"),
    "model.stage1_units": tuple(u.value for u in Units),  # zoomin.units: one vocabulary
    "model.stage2_units": tuple(u.value for u in Units if u is not Units.PX),
    "data.task": ("megapixel_mnist", "manifest"),
    "readout.method": ("auto", "features", "mixture", "places"),
    "readout.mode": ("sample", "topk"),
}
AT_LEAST_1 = (">=", 1)
NOT_NEGATIVE = (">=", 0)
RANGES = {  # (lower, bound[, upper, bound]): ">=" / ">" below, "<=" / "<" above
    "model.in_channels": AT_LEAST_1, "model.num_classes": AT_LEAST_1, "model.stage1_resolution": (">", 0),
    "model.tile": AT_LEAST_1, "model.stage2_resolution": (">", 0),
    "model.subtile": AT_LEAST_1, "model.n_samples": AT_LEAST_1, "model.feature_dim": AT_LEAST_1,
    "model.feature_width": AT_LEAST_1, "model.feature_depth": AT_LEAST_1, "model.attention_hidden": AT_LEAST_1,
    "model.attention_depth": AT_LEAST_1, "model.dropout": (">=", 0, "<", 1), "readout.subtiles": AT_LEAST_1,
    "model.evidence_sharpness": (">", 0), "model.attention_score_grad": NOT_NEGATIVE,
    "model.evidence_prior": NOT_NEGATIVE, "model.evidence_topk": AT_LEAST_1, "model.augment_affine": NOT_NEGATIVE,
    "model.proposal_floor": (">=", 0, "<", 1), "model.instance_topk": AT_LEAST_1, "model.mpp": NOT_NEGATIVE,
    "model.magnification": NOT_NEGATIVE,
    "model.stage1_chunk": NOT_NEGATIVE, "model.count_mpp": NOT_NEGATIVE, "model.count_directions": NOT_NEGATIVE,
    "model.count_cells": NOT_NEGATIVE,
    "data.canvas": AT_LEAST_1, "data.n_digits": AT_LEAST_1, "data.n_target": AT_LEAST_1, "data.n_noise": NOT_NEGATIVE,
    "data.train_size": AT_LEAST_1, "data.test_size": AT_LEAST_1, "data.max_pixels": NOT_NEGATIVE,
    "train.epochs": NOT_NEGATIVE, "train.batch_size": AT_LEAST_1, "train.lr": (">", 0),
    "train.weight_decay": NOT_NEGATIVE, "train.warmup_steps": NOT_NEGATIVE, "train.clip_grad": NOT_NEGATIVE,
    "train.contrastive_weight": NOT_NEGATIVE, "train.reference_class": NOT_NEGATIVE,
    "train.evidence_weight": NOT_NEGATIVE, "train.mixture_weight": NOT_NEGATIVE,
    "train.instance_weight": NOT_NEGATIVE, "train.annotation_weight": NOT_NEGATIVE,
    "train.num_workers": NOT_NEGATIVE, "train.eval_every": NOT_NEGATIVE, "train.bn_recalibrate": NOT_NEGATIVE,
    "train.threads": NOT_NEGATIVE, "train.stall_epochs": NOT_NEGATIVE,
    "readout.passes": AT_LEAST_1, "readout.place_radius": NOT_NEGATIVE,
    "readout.place_confidence": (">=", 0, "<=", 1), "readout.place_full_rate": NOT_NEGATIVE,
}
DEVICE = re.compile(r"auto|cpu|mps|(cuda|xpu)(:\d+)?")
# a setting -> the switch it belongs to and the value that switches it on: set while off, it is an error
SETTING_OF = {
    "model.evidence_sharpness": ("model.evidence", True), "model.evidence_prior": ("model.evidence", True),
    "model.evidence_topk": ("model.evidence", True), "model.evidence_answer": ("model.evidence", True),
    "model.evidence_prior_whiten": ("model.evidence", True),
    "readout.place_radius": ("readout.method", "places"), "readout.place_confidence": ("readout.method", "places"),
    "readout.place_full_rate": ("readout.method", "places"), "readout.subtiles": ("readout.mode", "topk"),
}
# keys of earlier versions -> today's key, and how their values read today
TEST_POOLING = {"": "auto", "features": "features", "probabilities": "mixture", "places": "places"}
LEGACY = {"model.test_pooling": ("readout.method", TEST_POOLING), "model.place_radius": ("readout.place_radius", None),
          "model.place_confidence": ("readout.place_confidence", None),
          "model.place_full_rate": ("readout.place_full_rate", None),
          "model.topk_subtiles": ("readout.subtiles", None),
          "train.eval_mode": ("readout.mode", None), "train.eval_passes": ("readout.passes", None),
          "model.pooling": ("model.estimate", None)}
# resolution keys of earlier versions -> (stage, units), in the order the code of their time let them win
# (a view_size over everything, then a stage1_mpp over the scale it set)
OLD_RESOLUTION = {"model.view_size": (1, "px"), "model.stage1_mpp": (1, "mpp"), "model.scale1": (1, "baseline"),
                  "model.stage2_mpp": (2, "mpp"), "model.scale2": (2, "baseline")}


def _kind(default) -> type:
    return type(default) if isinstance(default, (bool, int, float, str)) else object


def check_fields(section: str, obj) -> None:
    """Type, choices and range of every field of one section (a dataclass instance). A number
    written as a string (YAML 1.1 reads ``5e-3`` so) is converted in place."""
    for f in dataclasses.fields(obj):
        name, value = f"{section}.{f.name}", getattr(obj, f.name)
        default = f.default if f.default is not dataclasses.MISSING else None
        kind = _kind(default)
        if kind is float and isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ValueError(f"{name} takes a number, got {value!r}") from None
            setattr(obj, f.name, value)
        ok = {bool: isinstance(value, bool), int: isinstance(value, int) and not isinstance(value, bool),
              float: isinstance(value, (int, float)) and not isinstance(value, bool),
              str: isinstance(value, str)}.get(kind, True)
        if not ok:
            what = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}[kind]
            raise ValueError(f"{name} takes {what}, got {value!r}")
        if name in CHOICES and value not in CHOICES[name]:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, CHOICES[name]))}, got {value!r}")
        if name in RANGES and not _in_range(value, RANGES[name]):
            raise ValueError(f"{name} must be {_range_text(RANGES[name])}, got {value}")
    if section == "train" and not DEVICE.fullmatch(obj.device):
        raise ValueError(f"train.device must be auto, cpu, mps, cuda or cuda:N, got {obj.device!r}")


def _in_range(value, spec) -> bool:
    ops = {">=": lambda a, b: a >= b, ">": lambda a, b: a > b, "<=": lambda a, b: a <= b, "<": lambda a, b: a < b}
    return all(ops[op](value, bound) for op, bound in zip(spec[::2], spec[1::2]))


def _range_text(spec) -> str:
    if len(spec) == 2:
        return f"{spec[0]} {spec[1]}"
    return f"in {'[' if spec[0] == '>=' else '('}{spec[1]}, {spec[3]}{']' if spec[2] == '<=' else ')'}"


def cross_check(cfg) -> None:
    """The rules between fields of a whole ``Config``: a loss weight needs its head, a setting its
    switch, the readout's passes their mode."""
    m, t, r, d = cfg.model, cfg.train, cfg.readout, cfg.data
    if t.mixture_weight and m.estimate != "both":
        raise ValueError(f"train.mixture_weight needs model.estimate: both (got {m.estimate!r})")
    if t.evidence_weight and not m.evidence:
        raise ValueError("train.evidence_weight needs model.evidence: true (the evidence heads it trains)")
    if t.instance_weight and not (m.evidence or m.instance_pool == "mean"):
        raise ValueError("train.instance_weight needs an instance head: model.evidence: true or model.instance_pool: mean")
    if m.count_mpp:
        if not m.evidence:
            raise ValueError("model.count_mpp needs model.evidence: true (the counts are trained and answered as evidence)")
        if not m.mpp or m.count_mpp < m.mpp:
            raise ValueError(f"model.count_mpp ({m.count_mpp}) needs model.mpp set and at most model.count_mpp (got {m.mpp})")
        if m.in_channels != 3:
            raise ValueError(f"model.count_mpp counts colours: it needs model.in_channels: 3 (got {m.in_channels})")
        if m.count_answer and r.method == "places":
            raise ValueError("model.count_answer: the counts' answer is one per slide; readout.method places votes "
                             "over the draws instead (use auto, features or mixture)")
        if m.count_filled and m.foreground == "none":
            raise ValueError("model.count_filled fills the holes of stage I's foreground: it needs model.foreground "
                             "(got 'none')")
        if m.count_peaks and not m.count_cells:
            raise ValueError("model.count_peaks counts the chosen colour cells at their densest place: it needs "
                             "model.count_cells > 0")
        if not m.count_directions and not m.count_cells:
            raise ValueError("model.count_mpp counts nothing with model.count_directions: 0 and model.count_cells: 0 "
                             "(set one of them)")
    elif m.count_directions != 64:
        raise ValueError("model.count_directions is a setting of model.count_mpp, which is off (remove it or set model.count_mpp)")
    elif m.count_cells:
        raise ValueError("model.count_cells is a setting of model.count_mpp, which is off (remove it or set model.count_mpp)")
    elif m.count_answer:
        raise ValueError("model.count_answer is a setting of model.count_mpp, which is off (remove it or set model.count_mpp)")
    elif m.count_filled:
        raise ValueError("model.count_filled is a setting of model.count_mpp, which is off (remove it or set model.count_mpp)")
    elif m.count_peaks:
        raise ValueError("model.count_peaks is a setting of model.count_mpp, which is off (remove it or set model.count_mpp)")
    if t.reference_class >= m.num_classes:
        raise ValueError(f"train.reference_class ({t.reference_class}) must be a class below model.num_classes ({m.num_classes})")
    if d.task == "megapixel_mnist" and not 2 * d.n_target > d.n_digits:
        raise ValueError(f"data.n_target ({d.n_target}) must be a strict majority of data.n_digits ({d.n_digits})")
    if r.mode == "topk" and r.passes > 1:
        raise ValueError(f"readout.passes ({r.passes}) needs readout.mode: sample (topk is one deterministic pass)")
    for name, (switch, on) in SETTING_OF.items():
        section, key = name.split(".")
        obj = getattr(cfg, section)
        default = next(f.default for f in dataclasses.fields(obj) if f.name == key)
        sw_section, sw_key = switch.split(".")
        if getattr(obj, key) != default and getattr(getattr(cfg, sw_section), sw_key) != on:
            on_text = "true" if on is True else on
            raise ValueError(f"{name} is a setting of {switch}: {on_text}, which is off (remove it or set {switch})")


def resolution_given_twice(model: dict) -> None:
    """Stage-I (stage-II) resolution given more than one way in a raw model section of an earlier
    version: ``view_size`` with ``stage1_mpp`` or with a ``scale1`` other than the default, or
    ``stage1_mpp`` with a ``scale1`` it does not give (a saved config holds the scale its
    ``stage1_mpp`` gave)."""
    from .units import relative_scale
    view, s1_mpp = model.get("view_size") or 0, model.get("stage1_mpp") or 0
    if view and s1_mpp:
        raise ValueError("model.view_size and model.stage1_mpp both set the stage-I resolution; give "
                         "model.stage1_resolution and model.stage1_units")
    if view and model.get("scale1", 0.05) != 0.05:
        raise ValueError("model.view_size and model.scale1 both set the stage-I resolution; give "
                         "model.stage1_resolution and model.stage1_units")
    mpp = model.get("mpp") or (10.0 / model["magnification"] if model.get("magnification") else 0)
    for scale, res, stage in (("scale1", "stage1_mpp", 1), ("scale2", "stage2_mpp", 2)):
        if model.get(res) and scale in model and mpp and isinstance(model[scale], (int, float)) \
                and isinstance(model[res], (int, float)) and model[res] >= mpp:
            derived = relative_scale(mpp, model[res])
            if abs(model[scale] - derived) > 1e-9 * max(derived, 1e-12):
                raise ValueError(f"model.{scale} ({model[scale]}) and model.{res} ({model[res]} µm/px, scale "
                                 f"{derived:g}) both set the stage-{'I' * stage} resolution; give "
                                 f"model.stage{stage}_resolution and model.stage{stage}_units")


def read_old_resolution(model: dict, source: str, warn: bool, strict: bool) -> None:
    """In place: a raw model section's resolution keys of earlier versions (``OLD_RESOLUTION``) read
    as today's ``stage{1,2}_resolution`` / ``stage{1,2}_units`` pair, the first non-zero one of each
    stage (a saved config holds all of them, consistent). ``strict``: two given ways is an error."""
    if strict:
        resolution_given_twice(model)
    for stage in (1, 2):
        olds = [(old.split(".")[1], units) for old, (s, units) in OLD_RESOLUTION.items() if s == stage]
        given = [(key, units) for key, units in olds if key in model]
        if not given:
            continue
        pair = (f"stage{stage}_resolution", f"stage{stage}_units")
        if any(k in model for k in pair):
            raise ValueError(f"model.{given[0][0]} and model.{pair[0]} both given; give model.{pair[0]} "
                             f"and model.{pair[1]} only")
        values = {key: model.pop(key) for key, _ in given}
        key, units = next(((k, u) for k, u in given if values[k]), given[-1])
        if not values[key] and units != "baseline":  # only zeros of the keys 0 switched off (view_size: 0)
            continue
        model[pair[0]], model[pair[1]] = values[key], units
        if warn:
            warnings.warn(f"{source}: model.{key} is deprecated, read as model.{pair[0]}: {values[key]!r} with "
                          f"model.{pair[1]}: {units}", FutureWarning, stacklevel=5)


def unknown_key(section: str, key: str, known: list[str], sections: dict[str, list[str]]) -> str:
    """The one-line message for an unknown key, with the nearest known name."""
    names = {k: f"{section}.{k}" for k in known}  # a key -> the field it names
    names.update({old.split(".")[1]: new for old, (new, _) in LEGACY.items() if old.startswith(section + ".")})
    names.update({old.split(".")[1]: f"model.stage{stage}_resolution" for old, (stage, _) in OLD_RESOLUTION.items()
                  if old.startswith(section + ".")})
    near = difflib.get_close_matches(key, list(names), n=1, cutoff=0.6)
    elsewhere = [f"{s}.{key}" for s, keys in sections.items() if s != section and key in keys]
    hint = f" (did you mean {names[near[0]]}?)" if near else f" (did you mean {elsewhere[0]}?)" if elsewhere else ""
    return f"unknown key {section}.{key}{hint}"


def unknown_section(name: str, sections: list[str]) -> str:
    near = difflib.get_close_matches(str(name), sections, n=1, cutoff=0.6)
    hint = f" (did you mean {near[0]}?)" if near else f"; expected {', '.join(sections)}"
    return f"unknown section {name!r}{hint}"


def read_legacy(d: dict, source: str, warn: bool = True, strict: bool = True) -> dict:
    """A copy of the raw config ``d`` with the keys of earlier versions (``LEGACY``, ``OLD_RESOLUTION``)
    moved to today's (a ``FutureWarning`` each when ``warn``); a key given both ways is an error."""
    d = {k: (dict(v) if isinstance(v, dict) else v) for k, v in d.items()}
    if isinstance(d.get("model"), dict):
        read_old_resolution(d["model"], source, warn, strict)
    for old, (new, values) in LEGACY.items():
        osec, okey = old.split(".")
        if not isinstance(d.get(osec), dict) or okey not in d[osec]:
            continue
        value = d[osec].pop(okey)
        if values is not None:
            if value not in values:
                raise ValueError(f"{old} (now {new}) must be one of {', '.join(map(repr, values))}, got {value!r}")
            value = values[value]
        nsec, nkey = new.split(".")
        if d.get(nsec) is None:
            d[nsec] = {}
        if not isinstance(d[nsec], dict):
            raise ValueError(f"section {nsec}: expected a mapping of keys to values")
        target = d[nsec]
        if nkey in target:  # no version wrote both: one of them is a mistake
            raise ValueError(f"{old} and {new} both given ({value!r} and {target[nkey]!r}); give {new} only")
        target[nkey] = value
        if warn:
            warnings.warn(f"{source}: {old} is deprecated, read as {new}: {value!r}", FutureWarning, stacklevel=4)
    return d


class Section:
    """Base of the config sections: setting a field a section does not have is an error naming it
    (``cfg.train.eval_pases = 4`` would otherwise do nothing)."""

    def __setattr__(self, name: str, value) -> None:
        fields = type(self).__dataclass_fields__
        if name not in fields:
            section = type(self).__name__.removesuffix("Config").lower()
            raise AttributeError(unknown_key(section, name, list(fields), {}))
        object.__setattr__(self, name, value)
