"""The config reference page, docs/config.md, generated from the config dataclasses: each field's
type, default and one-line comment (``zoomin/config.py``), its choices, range and the rules it
takes part in (``zoomin.config_check``), and the longer explanations in ``HELP``.

``python -m zoomin.configdoc`` writes the page; ``--check`` exits 1 when it is stale."""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import sys
import tokenize
from pathlib import Path

from . import config as C
from .config_check import CHOICES, LEGACY, OLD_RESOLUTION, RANGES, SETTING_OF, _range_text

PAGE = Path(__file__).resolve().parent.parent / "docs" / "config.md"
CLASSES = C.SECTION_CLASSES
INTRO = {
    "model": "What the network is: its two stages, the feature net `f`, the attention nets `a` and `b`, the classifier "
             "`g`, and what it trains on. A resume refuses another model section (except `backbone_weights`).",
    "data": "What it learns from: the built-in Megapixel MNIST, or slides listed in a manifest CSV.",
    "train": "How it learns: the optimiser, the losses' weights, precision and when it tests.",
    "readout": "The model's answer for an image (`zoomin.readout.answer`): what the trainer's test scores, what "
               "`zoomin predict` writes (`--passes` replaces `passes`), what the explorer shows beside the pass it "
               "draws, and what the benchmarks compare. A resume may change it.",
}
HELP = {
    "model.feature_output": "`l2` makes every feature unit-length, as ATS normalises them, so that no patch outweighs "
                            "the others in `z` (`zoomin.nets.feature_output`).",
    "model.estimate": "What eq 3 / eq 5 average over the draws while training: `features` (the paper: logits = "
                      "`g(E[f])`), `probabilities` (each patch classified, logits = `log E[softmax(g(f))]`: every patch a "
                      "bounded vote; `zoomin.model.probability_logits`) or `both` (trained on `g(E[f])` plus "
                      "`train.mixture_weight` x the mixture's cross-entropy; answered by the mixture under "
                      "`readout.method: auto`).",
    "model.backbone": "A name registered with `zoomin.nets.register_backbone`, or `timm:NAME` for any timm model "
                      "(`zoomin.backbones`).",
    "model.backbone_weights": "Used when training from scratch: `\"\"` (random), a state-dict file (.pth / .safetensors), "
                              "or `timm-cache` (timm's own cache; zoomin never downloads).",
    "model.evidence": "MIL evidence heads (method §10): `a` and `b` give a per-location evidence map that is the attention "
                      "logits, pooled into auxiliary predictions (`train.evidence_weight`); `f` gets an instance head; "
                      "views are standardised over the foreground.",
    "model.evidence_sharpness": "> 1 concentrates alpha and beta on the most evident locations.",
    "model.attention_score_grad": "The score gradient of eqs 3 and 9 into the attention logits is scaled by this; 0: "
                                  "alpha and beta learn from the evidence losses only (method §10).",
    "model.evidence_prior": "A fixed outlier score (`zoomin.evidence.outlier_score`) is added with this weight: the "
                            "slide's most unusual places come first from step one.",
    "model.evidence_prior_whiten": "The outlier score is the Mahalanobis distance in the slide's own colours "
                                   "(`zoomin.evidence.whitening`) instead of the norm of the standardised channels: a "
                                   "colour off the slide's usual mix stands out as much as a darker or paler one.",
    "model.evidence_answer": "The answer's class logits are `g(z)` (or the mixture) plus the pooled stage-I evidence and, "
                             "for two stages, the stage-II evidence of the drawn tiles (`zoomin.model.answer_evidence`): a "
                             "product of the experts, so a model whose evidence ranks the slides cannot answer against it.",
    "model.count_filled": "The counts take the foreground's colours and every pixel inside the tissue's outline (stage "
                          "I's foreground closed over two locations, its holes filled, `zoomin.counts.outline`): a pale "
                          "patch inside the tissue, lighter than the glass threshold, is counted. `zoomin doctor` probes "
                          "both and sets it when it counts better.",
    "model.count_peaks": "Beside each chosen colour cell's count over the slide, one feature a lesion class: "
                         "`log(1 + n)` of the most pixels of its chosen cells at any one stage-I location "
                         "(`CountHead.peaks`). A lesion that is one compact patch in colours the tissue also "
                         "has scattered elsewhere stands out there and not in the totals. `zoomin doctor` probes "
                         "it where the cells count best and sets it when it counts better.",
    "model.count_answer": "The answer's class logits are the stain counts' alone (method §10.7); `g(z)` plus the pooled "
                          "evidence is kept as `Trace.stages_logits` and still trained. `zoomin doctor` sets it when the "
                          "counts separate the classes and no stage-I resolution does.",
    "model.augment_affine": "1: up to 15 degrees, 10% scale, 0.1 shear (`zoomin.augment.affine`); for objects whose "
                            "orientation matters.",
    "model.proposal_floor": "Draws are weighted by alpha / q, so the estimate stays unbiased (method §10); 0: from alpha.",
    "model.instance_pool": "`max`: the instance head's cross-entropy pooled by a smooth maximum over the draws (needs "
                           "`model.evidence`). `mean`: each draw labelled with its image's label, its cross-entropy weighted "
                           "by its weight in `z` as the forward pass computed it (`Trace.draw_weights`): for labels most "
                           "objects carry, e.g. Megapixel MNIST's majority digit.",
    "model.mpp": "Physical units (`zoomin.units`): slides are read at this resolution whatever their own, and "
                 "`tile` / `subtile` are pixels at it.",
    "model.stage1_units": "`baseline`: `stage1_resolution` is the scale `s1` of level 0 (in (0, 1]); `mpp` / `power`: "
                          "the view's µm per pixel / objective power (needs `model.mpp`; `s1` = `model.mpp` / the view's µm "
                          "per pixel); `px`: "
                          "`s1` per image so the view's longer side has that many pixels (stage I costs the same on any "
                          "size). Earlier versions' `scale1`, `view_size` and `stage1_mpp` are read as this pair.",
    "model.stage2_units": "`baseline`: `stage2_resolution` is the scale `s2` of level 0 (in (0, 1]); `mpp` / `power`: the "
                          "view's µm per pixel / objective power (needs `model.mpp`). Earlier versions' `scale2` and `stage2_mpp` are read as this pair.",
    "train.amp_cpu": "Faster steps on CPUs with AMX / AVX-512 BF16; not measured where bf16 is emulated.",
    "train.evidence_weight": "The MIL losses on the pooled stage-I and stage-II evidence (method §10).",
    "train.mixture_weight": "The cross-entropy of the mixture `log E[softmax(g(f))]` (`zoomin.losses.mixture_loss`).",
    "train.instance_weight": "The instance head exists with `model.evidence: true` or `model.instance_pool: mean`.",
    "train.stall_epochs": "Chance: the largest class's share of the epoch's training labels, plus two binomial standard "
                          "deviations (at least 0.05); with evidence heads the evidence must be at chance too "
                          "(`zoomin.train.stalled`). The warning is one line on stderr and in `metrics.json`'s `warnings`; "
                          "it adds the last held-out AUC of those epochs when that is 0.75 or more (`zoomin.train.stall_message`).",
    "train.eval_every": "The test reads the model's answer as the `readout` section defines it.",
    "readout.method": "`features`: each pass `softmax(g(z))`, the passes' mean. `mixture`: each pass the mixture "
                      "`E[softmax(g(f))]` of its patches' own class probabilities under `g` (a model trained on "
                      "features can be read so), the passes' mean. `auto`: as trained (`features` for `model.estimate: "
                      "features`, else `mixture`). `places`: for labels that count objects (Megapixel MNIST's majority "
                      "digit): the draws of all passes are grouped into places (draws closer than `place_radius`), "
                      "and each place the reader is sure of (`place_confidence`) casts one vote; not for labels meaning "
                      "\"some object present\", where one place should decide (`zoomin.readout`).",
    "readout.mode": "`topk` keeps the N most attended tiles and `subtiles` sub-tiles of each, renormalised "
                    "(a truncation, not an unbiased estimate): one pass, `passes` stays 1.",
    "readout.subtiles": "Only `mode: topk` reads it: stage II keeps this many of each kept tile's most attended "
                        "sub-tiles.",
    "readout.passes": "Each pass redraws from the same stage I; the passes are read out together as `method` says.",
    "readout.place_radius": "Draws whose patch centres are closer than this are one place (chained); 0: half the side "
                            "of the patches fed to `f`.",
    "readout.place_confidence": "A place's class probabilities are the mean of its draws'; it votes when the largest is "
                                "at least this.",
    "readout.place_full_rate": "A place's vote is whole once it is drawn this often per pass on average, that share of one "
                               "below: the places a few stray draws visit stay small as the passes grow.",
}


def comments(klass) -> dict[str, str]:
    """Each field's trailing comment in the source of ``klass``."""
    out, first = {}, {}
    for tok in tokenize.generate_tokens(io.StringIO(inspect.getsource(klass)).readline):
        row = tok.start[0]
        if tok.type == tokenize.NAME and row not in first:
            first[row] = tok.string
        elif tok.type == tokenize.COMMENT and row in first:
            out.setdefault(first[row], tok.string.lstrip("#").strip())
    return {f.name: out.get(f.name, "") for f in dataclasses.fields(klass)}


def _default(f) -> str:
    value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return f"`{value!r}`" if isinstance(value, str) else f"`{str(value).lower() if isinstance(value, bool) else value}`"


def _rules(name: str) -> list[str]:
    out = []
    if name in CHOICES:
        out.append("one of " + ", ".join(f"`{c}`" for c in CHOICES[name]))
    if name in RANGES:
        out.append(_range_text(RANGES[name]))
    if name in SETTING_OF:
        switch, on = SETTING_OF[name]
        out.append(f"only with `{switch}: {'true' if on is True else on}`")
    old = [o for o, (new, _) in LEGACY.items() if new == name]
    if old:
        out.append("was " + ", ".join(f"`{o}`" for o in old))
    return out


def render() -> str:
    """docs/config.md."""
    lines = ["# Config reference", "",
             "Generated from `zoomin/config.py` by `python -m zoomin.configdoc` (a test fails when it is stale). A "
             "config is YAML with the sections below; every field has a default. Every section is checked when a "
             "config is loaded (`zoomin train --config`, `--set SECTION.KEY=VALUE`, `Config.from_yaml`, "
             "`Config.from_dict`): an unknown key, a value of the wrong type, outside its choices or range, or a "
             "broken rule between fields is a one-line error naming the field, before any data is read. "
             "`zoomin config [YAML | CHECKPOINT | RUN] [--set ...]` prints the effective config, defaults included.",
             "", "Rules between fields:", "",
             "- `train.mixture_weight` needs `model.estimate: both`; `train.evidence_weight` needs `model.evidence: true`; "
             "`train.instance_weight` needs an instance head (`model.evidence: true` or `model.instance_pool: mean`).",
             "- A setting of a switch that is off is an error: " + "; ".join(
                 ", ".join(f"`{k}`" for k, sv in SETTING_OF.items() if sv == (s, v))
                 + f" need{'s' * (list(SETTING_OF.values()).count((s, v)) == 1)} `{s}: {'true' if v is True else v}`"
                 for s, v in dict.fromkeys(SETTING_OF.values())) + ".",
             "- `readout.passes` > 1 needs `readout.mode: sample`.",
             "- Each stage's resolution is one (value, units) pair (`model.stage1_resolution` / `stage1_units`, "
             "`model.stage2_resolution` / `stage2_units`); physical units need `model.mpp`, and are at most as fine as it; "
             "`model.mpp` and `model.magnification` must agree.",
             "- `train.reference_class` is a class below `model.num_classes`; Megapixel MNIST's `data.n_target` is a "
             "strict majority of `data.n_digits`.",
             "- Keys of earlier versions are read as today's with a warning (checkpoints silently): "
             + ", ".join(f"`{o}` -> `{n}`" for o, (n, _) in LEGACY.items())
             + " (`test_pooling` values: `\"\"` -> `auto`, `probabilities` -> `mixture`); "
             + ", ".join(f"`{o}` -> `model.stage{st}_resolution` with `stage{st}_units: {u}`" for o, (st, u) in OLD_RESOLUTION.items())
             + "; giving a key both ways is an error.", ""]
    for section, klass in CLASSES.items():
        lines += [f"## {section}", "", INTRO[section], ""]
        notes = comments(klass)
        for f in dataclasses.fields(klass):
            name = f"{section}.{f.name}"
            kind = f.type if isinstance(f.type, str) else f.type.__name__
            facts = ", ".join([kind, f"default {_default(f)}"] + _rules(name))
            text = notes[f.name]
            more = f"{'' if text.endswith('.') else '.'} {HELP[name]}" if name in HELP else ""
            lines.append(f"- **`{f.name}`** ({facts}): {text}{more}")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m zoomin.configdoc", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=PAGE, help="where to write the page (default: docs/config.md)")
    p.add_argument("--check", action="store_true", help="exit 1 when the page differs from what would be written")
    args = p.parse_args(argv)
    text = render()
    if args.check:
        same = args.out.is_file() and args.out.read_text(encoding="utf-8") == text
        if not same:
            print(f"{args.out} is stale: run python -m zoomin.configdoc", file=sys.stderr)
        return 0 if same else 1
    args.out.write_text(text, encoding="utf-8")
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
