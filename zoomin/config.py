"""Configuration dataclasses, loadable from YAML (parsed with ``yaml.safe_load``, never evaluated)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


FEATURE_OUTPUTS = ("linear", "l2")
POOLINGS = ("features", "probabilities", "both")
TEST_POOLINGS = ("", "features", "probabilities", "places")  # "": as trained; places: zoomin.readout
NOT_THE_MODEL = ("backbone_weights", "test_pooling", "place_radius", "place_confidence", "place_full_rate")  # model fields a resume may change: starting weights, readout


@dataclass
class ModelConfig:
    kind: str = "zoom_in"  # "zoom_in" (two stages, §2.2) or "one_stage" (ATS baseline, §2.1)
    in_channels: int = 1  # image channels C
    num_classes: int = 10  # classes predicted by g
    scale1: float = 0.05  # s1: stage-I view scale (one stage: the view scale s)
    view_size: int = 0  # if > 0: s1 is set per image so the stage-I view's longer side has this many pixels
    tile: int = 200  # h1 = w1: stage-I tile side in level-0 pixels (one stage: the patch fed to f)
    scale2: float = 0.25  # s2: scale at which a tile is viewed for stage II (two stages only)
    subtile: int = 50  # h2 = w2: sub-tile side in level-0 pixels, the patch fed to f (two stages only)
    n_samples: int = 10  # N: stage-I draws per image (= sub-tiles per image)
    feature_dim: int = 64  # K: size of f's output and g's input
    feature_width: int = 32  # channels of f's conv blocks
    feature_depth: int = 4  # conv blocks in f
    feature_norm: str = "batch"  # normalisation in f: batch, group or none
    feature_output: str = "linear"  # f's last step: linear (as is) or l2 (unit-length features, as ATS normalises them: no patch outweighs the others in z; zoomin.nets.feature_output)
    pooling: str = "features"  # what eq 3 / eq 5 average over the draws: "features" (the paper: logits = g(E[f])), "probabilities" (each patch classified, logits = log E[softmax(g(f))]: every patch a bounded vote; zoomin.model.probability_logits) or "both" (trained on g(E[f]) plus train.mixture_weight x the mixture's cross-entropy; tested on the mixture)
    test_pooling: str = ""  # what the eval-mode forward reads out (testing, predict): "" (as trained: pooling, the mixture for "both"), "features" or "probabilities" (a model trained on features read out as a mixture of its patches' own class probabilities under g) or "places" (for labels that count objects: the draws of all passes grouped into places, each place the reader is sure of casting one vote; zoomin.readout)
    place_radius: float = 0.0  # test_pooling places: draws whose patch centres are closer than this (level-0 pixels) are one place (0: half the side of the patches fed to f)
    place_confidence: float = 0.5  # test_pooling places: a place votes when its largest class probability is at least this
    place_full_rate: float = 0.5  # test_pooling places: a place's vote is whole once it is drawn this often per pass on average, that share of one below
    backbone: str = "small_cnn"  # feature extractor f: a registered name (zoomin.nets.register_backbone) or timm:NAME, any timm model (zoomin.backbones)
    backbone_weights: str = ""  # f's starting weights when training from scratch: "" (random), a file (state dict, .pth/.safetensors) or "timm-cache" (timm's own cache; zoomin never downloads)
    attention_hidden: int = 8  # channels of the attention nets a and b
    attention_depth: int = 3  # conv layers of a and b
    dropout: float = 0.0  # dropout before g's linear layer
    topk_subtiles: int = 2  # deterministic inference: sub-tiles kept per tile (mode="topk")
    foreground: str = "none"  # mask background out of both attention maps: none, otsu_bright (ink), otsu_dark (tissue)
    evidence: bool = False  # MIL evidence heads (METHOD §10): a and b give a per-location evidence map that is the attention logits, pooled into auxiliary predictions; f gets an instance head; views standardised over the foreground
    evidence_sharpness: float = 1.0  # attention logits = sharpness x evidence (model.evidence): > 1 concentrates alpha and beta on the most evident locations
    attention_score_grad: float = 1.0  # scale of the estimators' score gradient into the attention logits (eqs 3, 9); 0: alpha and beta learn from the evidence losses only (METHOD §10)
    evidence_prior: float = 0.0  # weight of a fixed outlier score added to the stage-I evidence (zoomin.evidence.outlier_score; needs evidence): the slide's most unusual places come first from step one
    evidence_answer: bool = False  # the answer's logits add the pooled evidence of both stages to g(z) (needs evidence; zoomin.model.answer_evidence)
    evidence_topk: int = 8  # smooth maximum of the evidence pooling: the mean of the k largest foreground locations
    augment: bool = False  # training only: each patch fed to f under a random rotation / mirror (zoomin.augment)
    augment_affine: float = 0.0  # training only: each patch fed to f under a small random affine map of this strength (1: up to 15 degrees, 10% scale, 0.1 shear; zoomin.augment.affine), for objects whose orientation matters
    proposal_floor: float = 0.0  # training only: stage I draws from q = (1 - floor) alpha + floor uniform(foreground), weighted by alpha / q (unbiased; METHOD §10); 0: from alpha
    instance_topk: int = 1  # smooth maximum of the instance pooling over an image's drawn sub-tiles
    instance_pool: str = "max"  # the instance loss on the drawn sub-tiles: "max" (CE of the instance head pooled by a smooth max over the draws; with evidence) or "mean" (each draw labelled with its image's label, the per-draw CE weighted as in z: for labels most objects carry, e.g. Megapixel MNIST's majority digit; needs no evidence)
    mpp: float = 0.0  # physical units (zoomin.units): level 0 in µm per pixel — slides are read at this resolution whatever their own, and tile/subtile are pixels at it (0: the file's own pixels)
    magnification: float = 0.0  # alias of mpp as objective power (mpp = 10 / magnification)
    stage1_mpp: float = 0.0  # stage-I view resolution in µm per pixel (sets scale1 = mpp / stage1_mpp; needs mpp)
    stage2_mpp: float = 0.0  # stage-II view resolution in µm per pixel (sets scale2 = mpp / stage2_mpp; needs mpp)
    stage1_chunk: int = 256  # stage I streamed in pieces of this many view locations a side (0: one piece; zoomin.stage1)

    def __post_init__(self):
        if self.kind not in ("zoom_in", "one_stage"):
            raise ValueError(f"model.kind must be 'zoom_in' or 'one_stage', got {self.kind!r}")
        self._physical_units()
        if self.augment_affine < 0:
            raise ValueError(f"model.augment_affine must be >= 0, got {self.augment_affine}")
        if self.n_samples < 1:
            raise ValueError(f"model.n_samples must be >= 1, got {self.n_samples}")
        for name in ("scale1", "scale2"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"model.{name} must be in (0, 1], got {getattr(self, name)}")
        if self.evidence_topk < 1 or self.instance_topk < 1:
            raise ValueError("model.evidence_topk and model.instance_topk must be >= 1")
        if self.feature_output not in FEATURE_OUTPUTS:
            raise ValueError(f"model.feature_output must be one of {FEATURE_OUTPUTS}, got {self.feature_output!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"model.pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.test_pooling not in TEST_POOLINGS:
            raise ValueError(f"model.test_pooling must be one of {TEST_POOLINGS}, got {self.test_pooling!r}")
        if self.place_radius < 0 or self.place_full_rate < 0 or not 0 <= self.place_confidence <= 1:
            raise ValueError(f"model.place_radius and model.place_full_rate must be >= 0 and model.place_confidence in "
                             f"[0, 1], got {self.place_radius}, {self.place_full_rate} and {self.place_confidence}")
        if self.instance_pool not in ("max", "mean"):
            raise ValueError(f"model.instance_pool must be 'max' or 'mean', got {self.instance_pool!r}")
        if not 0 <= self.proposal_floor < 1:
            raise ValueError(f"model.proposal_floor must be in [0, 1), got {self.proposal_floor}")
        if self.evidence_answer and not self.evidence:
            raise ValueError("model.evidence_answer needs model.evidence: true (the evidence heads it adds)")
        if self.kind == "zoom_in" and self.subtile >= self.tile:
            raise ValueError(f"model.subtile ({self.subtile}) must be smaller than model.tile ({self.tile})")

    def _physical_units(self) -> None:
        """Resolve ``magnification`` into ``mpp`` and ``stage1_mpp`` / ``stage2_mpp`` into the relative
        scales the model computes with (``zoomin.units``)."""
        from .units import Units, relative_scale, to_mpp
        if self.magnification:
            mpp = to_mpp(self.magnification, Units.POWER)
            if self.mpp and abs(self.mpp - mpp) > 1e-9 * mpp:
                raise ValueError(f"model.mpp ({self.mpp}) and model.magnification ({self.magnification}x = "
                                 f"{mpp:g} µm/px) disagree; give one")
            self.mpp = mpp
        if self.mpp < 0:
            raise ValueError(f"model.mpp must be >= 0 (0: the file's own pixels), got {self.mpp}")
        for name, scale in (("stage1_mpp", "scale1"), ("stage2_mpp", "scale2")):
            value = getattr(self, name)
            if not value:
                continue
            if not self.mpp:
                raise ValueError(f"model.{name} needs model.mpp (or model.magnification): the resolution of level 0")
            if value < self.mpp:
                raise ValueError(f"model.{name} ({value} µm/px) must be at least model.mpp ({self.mpp} µm/px)")
            setattr(self, scale, relative_scale(self.mpp, value))


@dataclass
class DataConfig:
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
    max_pixels: int = 0  # memory guard: most pixels one slide read may decode (0: $ZOOMIN_MAX_PIXELS, else 2**28)


@dataclass
class TrainConfig:
    epochs: int = 10  # passes over the training set
    batch_size: int = 32  # images per optimiser step
    lr: float = 1e-3  # AdamW learning rate
    weight_decay: float = 1e-4  # AdamW weight decay
    warmup_steps: int = 0  # linear learning-rate warm-up steps
    cosine: bool = True  # cosine decay of the learning rate to 5% over all steps
    clip_grad: float = 5.0  # gradient-norm clip (0 disables)
    entropy_weight: float = 0.01  # weight of the attention entropy regulariser (METHOD §3)
    contrastive_weight: float = 0.0  # weight of the contrastive-negatives loss (METHOD §6)
    reference_class: int = 0  # the "negative" class for contrastive negatives
    evidence_weight: float = 0.0  # weight of the MIL losses on the pooled stage-I and stage-II evidence (needs model.evidence; METHOD §10)
    mixture_weight: float = 0.0  # weight of the cross-entropy of the mixture log E[softmax(g(f))] (needs model.pooling: both; zoomin.losses.mixture_loss)
    instance_weight: float = 0.0  # weight of the instance loss on the drawn sub-tiles (model.instance_pool; "max" needs model.evidence)
    annotation_weight: float = 0.0  # weight of the annotation loss (METHOD §7) on slides whose manifest row has an annotation
    amp: bool = True  # autocast on CUDA (bf16 when supported, else fp16 with a scaler)
    amp_cpu: bool = False  # bf16 autocast on CPU where oneDNN has bf16 (train.cpu_bf16_supported): 1.45x faster demo steps with AMX / AVX-512 BF16; not measured where bf16 is emulated
    device: str = "auto"  # "auto" picks cuda -> mps -> cpu
    num_workers: int = 0  # DataLoader worker processes that rasterise images
    eval_mode: str = "sample"  # test-time inference: "sample" (Monte Carlo) or "topk"
    eval_passes: int = 1  # sample mode: read this many passes out together (their mean class probability, or model.test_pooling places)
    eval_every: int = 1  # test every this many epochs (0: only after the last epoch)
    bn_recalibrate: int = 8  # before testing, re-estimate batch-norm statistics on this many training batches
    seed: int = 0  # seed of model init, sampling and data order
    threads: int = 0  # torch CPU threads (0 keeps torch's default)
    stall_epochs: int = 5  # warn once the answer (and the evidence) stays at chance this many epochs in a row (0: never)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> "Config":
        if not isinstance(d, dict):
            raise ValueError(f"{source}: expected a mapping with sections model/data/train")
        unknown = set(d) - {"model", "data", "train"}
        if unknown:
            raise ValueError(f"{source}: unknown section(s) {sorted(unknown)}; expected model, data, train")
        parts = {}
        for name, klass in (("model", ModelConfig), ("data", DataConfig), ("train", TrainConfig)):
            sec = d.get(name) or {}
            known = {f.name: f for f in dataclasses.fields(klass)}
            bad = set(sec) - set(known)
            if bad:
                raise ValueError(f"{source}: unknown key(s) in {name}: {sorted(bad)}")
            try:
                parts[name] = klass(**sec)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{source}: {e}") from None
        if parts["train"].mixture_weight and parts["model"].pooling != "both":
            raise ValueError(f"{source}: train.mixture_weight needs model.pooling: both (got {parts['model'].pooling!r})")
        return cls(**parts)

    def override(self, items: list[str], source: str = "--set") -> "Config":
        """A copy with ``SECTION.KEY=VALUE`` items applied (VALUE read as YAML: ``0.25``, ``true``,
        ``otsu_dark``), checked like a config file; a bad item is a one-line error naming it."""
        import yaml
        d = self.to_dict()
        for item in items:
            key, eq, value = item.partition("=")
            section, dot, name = key.partition(".")
            if not eq or not dot or section not in d:
                raise ValueError(f"{source} {item}: expected SECTION.KEY=VALUE, SECTION one of model, data, train")
            try:
                new = yaml.safe_load(value)
            except yaml.YAMLError:
                raise ValueError(f"{source} {item}: the value is not valid YAML") from None
            old = d[section].get(name)
            if isinstance(new, str) and isinstance(old, float):  # YAML 1.1 reads 5e-3 as a string
                try:
                    new = float(new)
                except ValueError:
                    raise ValueError(f"{source} {item}: {section}.{name} takes a number") from None
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
