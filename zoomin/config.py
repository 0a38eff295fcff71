"""Configuration dataclasses, loadable from YAML (parsed with ``yaml.safe_load``, never evaluated)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config_check import (LEGACY, OLD_RESOLUTION, Section, check_fields, cross_check, read_legacy,
                           unknown_key, unknown_section)

FEATURE_OUTPUTS = ("linear", "l2")
NOT_THE_MODEL = ("backbone_weights",)  # model fields a resume may change: f's start
SECTIONS = ("model", "data", "train", "readout")


@dataclass
class ModelConfig(Section):
    kind: str = "zoom_in"  # "zoom_in" (two stages, §2.2) or "one_stage" (ATS baseline, §2.1)
    in_channels: int = 1  # image channels C
    num_classes: int = 10  # classes predicted by g
    stage1_resolution: float = 0.05  # how fine stage I's view is (one stage: the view), in stage1_units
    stage1_units: str = "baseline"  # baseline (s1, a scale of level 0), mpp, power or px (the view's longer side)
    tile: int = 200  # h1 = w1: stage-I tile side in level-0 pixels (one stage: the patch fed to f)
    stage2_resolution: float = 0.25  # how fine a tile's stage-II view is, in stage2_units (two stages only)
    stage2_units: str = "baseline"  # baseline (s2, a scale of level 0), mpp or power
    subtile: int = 50  # h2 = w2: sub-tile side in level-0 pixels, the patch fed to f (two stages only)
    n_samples: int = 10  # N: stage-I draws per image (= sub-tiles per image)
    feature_dim: int = 64  # D: size of f's output and g's input
    feature_width: int = 32  # channels of f's conv blocks
    feature_depth: int = 4  # conv blocks in f
    feature_norm: str = "batch"  # normalisation in f: batch, group or none
    feature_output: str = "linear"  # f's last step: linear (as is) or l2 (unit-length features)
    estimate: str = "features"  # what the estimators average over the draws: features, probabilities or both
    backbone: str = "small_cnn"  # feature extractor f: a registered name or timm:NAME (zoomin.backbones)
    backbone_weights: str = ""  # f's starting weights: "" (random), a file, or "timm-cache"
    attention_hidden: int = 8  # channels of the attention nets a and b
    attention_depth: int = 3  # conv layers of a and b
    dropout: float = 0.0  # dropout before g's linear layer
    foreground: str = "none"  # mask background out of both attention maps: none, otsu_bright, otsu_dark
    evidence: bool = False  # MIL evidence heads: a and b give evidence maps, f an instance head (method §10)
    evidence_sharpness: float = 1.0  # model.evidence: attention logits = sharpness x evidence
    attention_score_grad: float = 1.0  # scale of the estimators' score gradient into the attention logits
    evidence_prior: float = 0.0  # model.evidence: weight of a fixed outlier score added to stage I's evidence
    evidence_prior_whiten: bool = False  # model.evidence_prior: measured in the slide's whitened colours
    evidence_answer: bool = False  # model.evidence: the answer adds the pooled evidence to g(z)
    evidence_topk: int = 8  # model.evidence: the evidence pooling is the mean of the k largest locations
    augment: bool = False  # training only: each patch fed to f under a random rotation / mirror
    augment_affine: float = 0.0  # training only: strength of a small random affine map of each patch
    proposal_floor: float = 0.0  # training only: stage I draws from (1 - floor) alpha + floor uniform
    instance_topk: int = 1  # smooth maximum of the instance pooling over an image's drawn sub-tiles
    instance_pool: str = "max"  # the instance loss on the drawn sub-tiles: max (needs evidence) or mean
    mpp: float = 0.0  # level 0 in µm per pixel: slides are read at this resolution (0: the file's own)
    magnification: float = 0.0  # mpp given as objective power (mpp = 10 / magnification)
    stage1_chunk: int = 256  # stage I streamed in pieces of this many view locations a side (0: one piece)
    count_mpp: float = 0.0  # stain counts read at this µm per pixel, a slide-level evidence (0: off; method §10.6)
    count_directions: int = 64  # model.count_mpp: colour directions the counts' tails are taken along (0: no tails)
    count_cells: int = 0  # model.count_mpp: colour cells counted for each lesion class, chosen from the training labels
    count_filled: bool = False  # model.count_mpp: count every pixel inside the tissue's outline (its holes filled)
    count_peaks: bool = False  # model.count_cells: also count each class's cells at its densest stage-I location
    count_answer: bool = False  # model.count_mpp: the answer is the stain counts' logits alone; the stages learn beside it

    def __post_init__(self):
        check_fields("model", self)
        self._physical_units()
        if self.kind == "zoom_in" and self.subtile >= self.tile:
            raise ValueError(f"model.subtile ({self.subtile}) must be smaller than model.tile ({self.tile})")

    def _physical_units(self) -> None:
        """Resolve ``magnification`` into ``mpp``, and check each stage's (resolution, units) pair."""
        from .units import PHYSICAL, Units, to_mpp
        if self.magnification:
            mpp = to_mpp(self.magnification, Units.POWER)
            if self.mpp and abs(self.mpp - mpp) > 1e-9 * mpp:
                raise ValueError(f"model.mpp ({self.mpp}) and model.magnification ({self.magnification}x = "
                                 f"{mpp:g} µm/px) disagree; give one")
            self.mpp = mpp
        if self.mpp < 0:
            raise ValueError(f"model.mpp must be >= 0 (0: the file's own pixels), got {self.mpp}")
        for stage in (1, 2):
            value, units = getattr(self, f"stage{stage}_resolution"), getattr(self, f"stage{stage}_units")
            name = f"model.stage{stage}_resolution"
            if units == Units.BASELINE and value > 1:
                raise ValueError(f"{name} in baseline units is a scale of level 0: in (0, 1], got {value}")
            if units == Units.PX and value != int(value):
                raise ValueError(f"{name} in px is the view's longer side: a whole number, got {value}")
            if units in PHYSICAL:
                if not self.mpp:
                    raise ValueError(f"{name} in {units} needs model.mpp (or model.magnification): the resolution of level 0")
                if self.view_mpp(stage) < self.mpp * (1 - 1e-9):
                    raise ValueError(f"{name} ({value} {units}) must be at most as fine as model.mpp ({self.mpp} µm/px)")

    def view_mpp(self, stage: int) -> float:
        """µm per pixel of stage ``stage``'s view (1 or 2), when its units are physical (else 0)."""
        from .units import PHYSICAL, to_mpp
        units = getattr(self, f"stage{stage}_units")
        return to_mpp(getattr(self, f"stage{stage}_resolution"), units) if units in PHYSICAL else 0.0

    def _scale(self, stage: int) -> float:
        from .units import Units, relative_scale
        units = getattr(self, f"stage{stage}_units")
        if units == Units.BASELINE:
            return float(getattr(self, f"stage{stage}_resolution"))
        return 0.0 if units == Units.PX else relative_scale(self.mpp, self.view_mpp(stage))

    @property
    def scale1(self) -> float:
        """``s1``: stage I's view scale, a scale of level 0 (``stage1_units: px``: it depends on the
        image's size, ``zoomin.model.stage1_scale_for``; 0 here)."""
        return self._scale(1)

    @property
    def scale2(self) -> float:
        """``s2``: the scale a tile is viewed at in stage II, a scale of level 0."""
        return self._scale(2)

    @property
    def view_size(self) -> int:
        """With ``stage1_units: px``: the stage-I view's longer side in pixels (else 0)."""
        from .units import Units
        return int(self.stage1_resolution) if self.stage1_units == Units.PX else 0


@dataclass
class DataConfig(Section):
    task: str = "megapixel_mnist"  # "megapixel_mnist" (built in) or "manifest" (slides listed in a CSV)
    manifest: str = ""  # task "manifest": the CSV (slide_id,path,label[,split,annotation])
    test_split: str = "test"  # task "manifest": rows whose split is this are the test set, the rest train
    canvas: int = 1500  # canvas side H = W in pixels
    n_digits: int = 5  # digits per image: n_target of the label class, the rest of other classes
    n_target: int = 3  # digits of the label class (must be a strict majority)
    n_noise: int = 50  # 28 x 28 line scribbles per image
    train_size: int = 5000  # images per training epoch
    test_size: int = 1000  # images in the test set
    fresh_train: bool = False  # draw new training images every epoch (the records are cheap)
    seed: int = 0  # data seed (records are a pure function of seed, split and index)
    max_pixels: int = 0  # memory guard: most pixels one slide read may decode (0: $ZOOMIN_MAX_PIXELS)

    def __post_init__(self):
        check_fields("data", self)


@dataclass
class TrainConfig(Section):
    epochs: int = 10  # passes over the training set
    batch_size: int = 32  # images per optimiser step
    lr: float = 1e-3  # AdamW learning rate
    weight_decay: float = 1e-4  # AdamW weight decay
    warmup_steps: int = 0  # linear learning-rate warm-up steps
    cosine: bool = True  # cosine decay of the learning rate to 5% over all steps
    clip_grad: float = 5.0  # gradient-norm clip (0 disables)
    entropy_weight: float = 0.01  # weight of the attention entropy regulariser (method §3)
    contrastive_weight: float = 0.0  # weight of the contrastive-negatives loss (method §6)
    reference_class: int = 0  # the "negative" class for contrastive negatives
    evidence_weight: float = 0.0  # weight of the MIL losses on the pooled evidence (needs model.evidence)
    mixture_weight: float = 0.0  # weight of the mixture's cross-entropy (needs model.estimate: both)
    instance_weight: float = 0.0  # weight of the instance loss on the drawn sub-tiles (needs an instance head)
    annotation_weight: float = 0.0  # weight of the annotation loss (method §7) on slides with an annotation
    amp: bool = True  # autocast on CUDA (bf16 when supported, else fp16 with a scaler)
    amp_cpu: bool = False  # bf16 autocast on CPU where oneDNN has bf16 (train.cpu_bf16_supported)
    device: str = "auto"  # "auto" picks cuda -> mps -> cpu
    num_workers: int = 0  # DataLoader worker processes that rasterise images
    eval_every: int = 1  # test every this many epochs (0: only after the last epoch)
    bn_recalibrate: int = 8  # before testing, re-estimate batch-norm statistics on this many training batches
    seed: int = 0  # seed of model init, sampling and data order
    threads: int = 0  # torch CPU threads (0 keeps torch's default)
    stall_epochs: int = 5  # warn once training stays at chance this many epochs in a row (0: never)

    def __post_init__(self):
        check_fields("train", self)


@dataclass
class ReadoutConfig(Section):
    """The model's answer for an image (``zoomin.readout.answer``): the trainer's test, ``zoomin
    predict``, the explorer and the benchmarks all read it."""

    method: str = "auto"  # how passes become the answer: auto, features, mixture or places
    mode: str = "sample"  # sample (Monte-Carlo passes) or topk (one deterministic pass)
    passes: int = 1  # mode sample: passes read out together per image
    subtiles: int = 2  # mode topk: sub-tiles kept per kept tile
    place_radius: float = 0.0  # method places: draws closer than this (level-0 px) are one place (0: auto)
    place_confidence: float = 0.5  # method places: a place votes when its top class probability is this
    place_full_rate: float = 0.5  # method places: draws per pass for a whole vote (fewer: that share; 0: all whole)

    def __post_init__(self):
        check_fields("readout", self)


SECTION_CLASSES = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig, "readout": ReadoutConfig}


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    readout: ReadoutConfig = field(default_factory=ReadoutConfig)

    def check(self) -> None:
        """Every field and the rules between them, again (after fields were set by hand)."""
        for name in SECTIONS:
            check_fields(name, getattr(self, name))
        cross_check(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config", warn: bool = True, rules: bool = True) -> "Config":
        """A checked ``Config`` from a mapping of sections; the keys of earlier versions are read
        as today's (a ``FutureWarning`` each when ``warn``). Any problem is one ``ValueError`` line
        starting with ``source`` and naming the field. ``rules=False`` checks each field but not the
        rules between fields (a checkpoint's config: the trainer of its time ignored some)."""
        if not isinstance(d, dict):
            raise ValueError(f"{source}: expected a mapping with sections {', '.join(SECTIONS)}")
        try:
            return cls._from_dict(d, source, warn, rules)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{source}: {e}") from None

    @classmethod
    def _from_dict(cls, d: dict[str, Any], source: str, warn: bool, rules: bool) -> "Config":
        for name in d:
            if name not in SECTIONS:
                raise ValueError(unknown_section(name, list(SECTIONS)))
        d = read_legacy(d, source, warn, strict=rules)
        known = {name: [f.name for f in dataclasses.fields(klass)] for name, klass in SECTION_CLASSES.items()}
        parts = {}
        for name in SECTIONS:
            sec = d.get(name) or {}
            if not isinstance(sec, dict):
                raise ValueError(f"section {name}: expected a mapping of keys to values, got {sec!r}")
            for key in sec:
                if key not in known[name]:
                    raise ValueError(unknown_key(name, str(key), known[name], known))
            parts[name] = SECTION_CLASSES[name](**sec)
        cfg = cls(**parts)
        if rules:
            cross_check(cfg)
        return cfg

    def override(self, items: list[str], source: str = "--set") -> "Config":
        """A copy with ``SECTION.KEY=VALUE`` items applied (VALUE read as YAML: ``0.25``, ``true``,
        ``otsu_dark``), checked like a config file; a bad item is a one-line error naming it. An
        earlier version's resolution key (``model.stage1_mpp=4``) sets today's (resolution, units) pair."""
        import yaml
        d = self.to_dict()
        for item in items:
            key, eq, value = item.partition("=")
            section, dot, name = key.partition(".")
            if not eq or not dot or section not in d:
                raise ValueError(f"{source} {item}: expected SECTION.KEY=VALUE, SECTION one of {', '.join(SECTIONS)}")
            try:
                new = yaml.safe_load(value)
            except yaml.YAMLError:
                raise ValueError(f"{source} {item}: the value is not valid YAML") from None
            if key in OLD_RESOLUTION:  # an earlier version's resolution key: today's pair takes it
                pair = read_legacy({"model": {name: new}}, source)["model"]
                if not pair:  # 0 switched it off: the pair to go back to is not said
                    stage = OLD_RESOLUTION[key][0]
                    raise ValueError(f"{source} {item}: 0 switched {key} off in earlier versions; set "
                                     f"model.stage{stage}_resolution and model.stage{stage}_units instead")
                d["model"].update(pair)
                continue
            if key in LEGACY:  # an earlier version's key: today's key takes the value
                old_section, old_name, key = section, name, LEGACY[key][0]
                section, name = key.split(".")
                new = read_legacy({old_section: {old_name: new}}, source)[section][name]
            d[section][name] = new
        return Config.from_dict(d, source=f"{source} {' '.join(items)}") if items else self

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Config":
        import yaml
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: config file not found")
        try:
            d = yaml.safe_load(path.read_text())
        except yaml.YAMLError as e:
            raise ValueError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        return cls.from_dict(d or {}, source=str(path))

    def to_yaml(self, path: str | Path) -> None:
        import yaml
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
