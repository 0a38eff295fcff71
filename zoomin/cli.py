"""Command line: ``zoomin demo | train | predict | config | doctor | synth-slides | manifest | explore`` (also
``python -m zoomin``, and ``torchrun --nproc_per_node=W -m zoomin train|predict`` for W processes).

Errors are one line naming the file and the problem, with a non-zero exit; ``--debug`` shows the
traceback. Hostile inputs and their messages: docs/reliability.md.

Exit codes: 0 done; 1 ``predict``: no slide predicted; 2 an error (a bad config, file or argument);
3 ``predict``: some slides failed (each named on stderr; the others' rows are written); 130
interrupted."""
from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from pathlib import Path

from .errors import one_line



class _OldSpelling(argparse.Action):
    """Stores the value; a flag's old spelling (its last option string) also prints a one-line notice."""

    def __call__(self, parser, namespace, values, option_string=None):
        if option_string == self.option_strings[-1] and len(self.option_strings) > 1:
            print(f"zoomin: note: {option_string} is now {self.option_strings[0]}", file=sys.stderr)
        setattr(namespace, self.dest, values)

def _packaged_config(name: str):
    from .config import Config
    with resources.as_file(resources.files("zoomin") / "configs" / name) as path:
        return Config.from_yaml(path)


def _callbacks(specs: list[str]) -> list:
    """``--callback MODULE:NAME``: NAME imported from MODULE and called with no arguments gives the
    callback (an object with ``on_step(trainer)`` / ``on_fit_end(trainer)``, see ``zoomin.train``)."""
    import importlib
    callbacks = []
    for spec in specs:
        module, _, name = spec.partition(":")
        if not module or not name:
            raise ValueError(f"--callback {spec}: expected MODULE:NAME")
        try:
            factory = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"--callback {spec}: cannot import it ({e})") from None
        callbacks.append(factory())
    return callbacks


def _fit(cfg, args) -> int:
    """Train with the command's --epochs/--resume/--quiet/--callback and print the headline metrics."""
    from .train import Trainer
    cfg = cfg.override(args.overrides)
    if args.epochs:
        cfg.train.epochs = args.epochs
    from .distributed import is_main
    if cfg.data.task == "manifest":  # slides: streamed stage I (in-memory canvases train faster with glibc's own)
        from .allocator import steady
        steady()
    trainer = Trainer(cfg, args.out, progress=not args.quiet and is_main(), callbacks=_callbacks(args.callback))
    metrics = trainer.fit(resume=args.resume)
    keys = ("test_accuracy", "test_auc", "epochs", "seconds_per_epoch", "device", "processes")
    if is_main():
        shown = {k: metrics[k] for k in keys if metrics.get(k) is not None}
        if shown.get("processes") == 1:
            del shown["processes"]
        print(json.dumps(shown))
    return 0


def cmd_demo(args) -> int:
    cfg = _packaged_config("demo.yaml").override(args.overrides)
    print(f"zoomin demo: Megapixel MNIST {cfg.data.canvas}x{cfg.data.canvas}, {cfg.model.kind}, "
          f"N={cfg.model.n_samples}, {args.epochs or cfg.train.epochs} epochs -> {Path(args.out)}", flush=True)
    return _fit(cfg, args)


def cmd_train(args) -> int:
    from .config import Config
    if args.config:
        cfg = Config.from_yaml(args.config)
    elif args.manifest:
        cfg = _packaged_config("slides.yaml")
    else:
        raise ValueError("zoomin train needs --config YAML, --manifest CSV, or both")
    if args.manifest:
        cfg.data.task, cfg.data.manifest = "manifest", args.manifest
    return _fit(cfg, args)


def cmd_synth_slides(args) -> int:
    from .synth import synth_slides
    manifest = synth_slides(args.out, args.n, args.size, seed=args.seed, tile=args.tile, aperio=args.svs,
                            progress=not args.quiet, appearance=args.appearance, roi_ratio=args.roi_ratio,
                            distractors=args.distractors, annotations=not args.no_annotations, mpp=args.mpp)
    print(manifest)
    return 0


NONE_PREDICTED, SOME_FAILED = 1, 3  # zoomin predict's exit codes when slides failed (module doc)


def cmd_predict(args) -> int:
    from .predict import predict
    from .distributed import is_main
    written, failed = predict(args.checkpoint, args.inputs, args.out, args.heatmaps, passes=args.passes,
                              seed=args.seed, progress=not args.quiet, max_pixels=args.max_pixels,
                              explore=args.explore, prefetch=args.prefetch, resume=args.resume,
                              fallback_mpp=args.fallback_mpp)
    if is_main():
        print(f"{written} slide(s) predicted -> {args.out}" + (f"; {failed} skipped (see above)" if failed else ""))
    return 0 if not failed else NONE_PREDICTED if not written else SOME_FAILED


def cmd_config(args) -> int:
    """Print the effective config (every field, defaults included) of a YAML file, a packaged config,
    a checkpoint or a run folder, with ``--set`` applied."""
    import yaml
    print(yaml.safe_dump(effective_config(args.source).override(args.overrides).to_dict(), sort_keys=False), end="")
    return 0


def effective_config(source: str | None):
    """The ``Config`` of ``source``: None (the defaults), a YAML file, a packaged config's name
    (``demo.yaml``), a checkpoint, or a run folder (its checkpoint.pt)."""
    from .config import Config
    if not source:
        return Config()
    path = Path(source)
    if path.is_dir() and not (path / "checkpoint.pt").is_file() and (path / "metrics.json").is_file():
        import json  # a run whose first checkpoint is not written yet: the config its metrics.json states
        return Config.from_dict(json.loads((path / "metrics.json").read_text()).get("config") or {},
                                source=str(path / "metrics.json"), warn=False, rules=False)
    if path.is_dir():
        path = path / "checkpoint.pt"
    if path.suffix in (".yaml", ".yml"):
        if not path.exists() and (resources.files("zoomin") / "configs" / path.name).is_file():
            return _packaged_config(path.name)
        return Config.from_yaml(path)
    from .checkpoint import load_checkpoint
    ck = load_checkpoint(path)
    if not isinstance(ck, dict) or not isinstance(ck.get("config"), dict):
        raise ValueError(f"{path}: not a zoomin checkpoint (no config in it)")
    return Config.from_dict(ck["config"], source=str(path), warn=False, rules=False)  # as its trainer wrote it


def cmd_doctor(args) -> int:
    from .config import Config
    from .doctor import COUNT_CANDIDATES, diagnose
    cfg = Config.from_yaml(args.config) if args.config else _packaged_config("slides.yaml")
    cfg = cfg.override(args.overrides)
    cfg.data.task, cfg.data.manifest = "manifest", str(Path(args.manifest).resolve())
    candidates = [float(c) for c in args.candidates.split(",")]
    counted = COUNT_CANDIDATES if args.count_candidates is None else \
        [float(c) for c in args.count_candidates.split(",") if c.strip()]
    recommended, _ = diagnose(cfg, candidates, steps=args.steps, seed=args.seed, count_candidates=counted)
    recommended.to_yaml(args.out)
    print(f"wrote {args.out}: zoomin train --config {args.out} --manifest {args.manifest} --out RUN")
    return 0


def cmd_manifest(args) -> int:
    from .data.native import build_manifest
    print(build_manifest(args.dataset, args.root, args.out))
    return 0


def cmd_explore(args) -> int:
    """Serve the explorer app until Ctrl-C (a clean stop: exit 0)."""
    from .viz.app import check_address, outlines, serve, session_for, url
    check_address(args.address, args.allow_remote)  # before the model is loaded
    server = serve(session_for(args.checkpoint, args.inputs, args.fallback_mpp), args.address, args.port, args.seed,
                   args.allow_remote, outlines(args.inputs))
    where = url(server, args.address)
    print(f"zoomin explore: serving {where} (Ctrl-C stops it)", flush=True)
    if args.open:
        import webbrowser
        webbrowser.open(where)
    try:
        server.io_loop.start()  # panel's SIGINT handler stops the loop (and a KeyboardInterrupt, if it comes first)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    print("zoomin explore: stopped", file=sys.stderr)
    return 0


def _training_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, default=0, help="override train.epochs")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", dest="overrides",
                   help="override one config field, e.g. --set model.n_samples=16 --set train.lr=0.005; repeatable")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--quiet", action="store_true", help="no progress bars (one line per epoch still)")
    p.add_argument("--callback", action="append", default=[], metavar="MODULE:NAME",
                   help="install a training callback: NAME from the importable MODULE, called with no arguments, "
                        "gives an object with on_step(trainer) and/or on_fit_end(trainer); repeatable")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="zoomin", description="The Zoom-In network: two-stage attention sampling.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("demo", help="train the two-stage model on built-in Megapixel MNIST and report test accuracy")
    d.add_argument("--out", default="runs/demo", help="output folder (metrics.json, checkpoint.pt)")
    _training_args(d)
    d.set_defaults(func=cmd_demo)
    t = sub.add_parser("train", help="train a model from a YAML config")
    t.add_argument("--config", default=None, help="YAML with sections model, data, train")
    t.add_argument("--manifest", default=None,
                   help="train on the slides of this CSV (defaults: zoomin/configs/slides.yaml unless --config)")
    t.add_argument("--out", required=True, help="output folder (metrics.json, checkpoint.pt)")
    _training_args(t)
    t.set_defaults(func=cmd_train)
    s = sub.add_parser("synth-slides", help="write synthetic pyramidal slides with tiny lesions and a manifest")
    s.add_argument("--n", type=int, required=True, help="number of slides")
    s.add_argument("--size", type=int, required=True, help="slide side in level-0 pixels")
    s.add_argument("--out", required=True, help="output folder (slides, lesion GeoJSON, manifest.csv)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--tile", type=int, default=512, help="TIFF tile side (the reader keeps per-tile state: fewer, larger tiles cost less memory)")
    s.add_argument("--svs", action="store_true", help="Aperio-SVS-style files (OpenSlide reads them as Aperio)")
    s.add_argument("--appearance", default="plain",
                   help="lesion look: plain purple ellipses (easy), or ones to learn from slide labels: nuclei (crowded "
                        "dark nuclei), colour (stain shift), texture (fibres), giant_cells, mixed (one of those per "
                        "lesion), or a comma-separated list of those kinds (e.g. nuclei,colour)")
    s.add_argument("--roi-ratio", type=float, default=None,
                   help="total lesion area / slide area, e.g. 0.0005 (default: 0.2-0.4%% of the side in radius for "
                        "plain, 0.0005 otherwise)")
    s.add_argument("--distractors", type=int, default=0,
                   help="lesion-like cells per slide, negatives too (single giant cells, dark spots, pairs of nuclei)")
    s.add_argument("--mpp", type=float, default=None, help="microns per pixel (default 0.25 for plain, 1.0 otherwise)")
    s.add_argument("--no-annotations", action="store_true",
                   help="manifest without the annotation column (slide labels only; outlines are still written)")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_synth_slides)
    q = sub.add_parser("predict", help="class probabilities (and attention heatmaps) for slides",
                       epilog="exit codes: 0 every slide predicted; 1 none; 3 some failed (named on stderr, the "
                              "others written); 2 an error before any slide")
    q.add_argument("--checkpoint", required=True, help="checkpoint.pt written by zoomin train/demo")
    q.add_argument("--out", required=True, help="predictions CSV: slide_id, p_0.., prediction, seconds")
    q.add_argument("--heatmaps", default=None, help="folder for per-slide PNG, GeoJSON (QuPath) and DSA JSON")
    q.add_argument("--passes", type=int, default=None,
                   help="sampled passes read out per slide (default: the checkpoint's readout.passes)")
    q.add_argument("--seed", type=int, default=0, help="sampling seed (each slide's draws depend on it and its id only)")
    q.add_argument("--max-pixels", type=int, default=0,
                   help="memory guard: most pixels one read may decode (default: the checkpoint's data.max_pixels, "
                        "else $ZOOMIN_MAX_PIXELS, else 2**28)")
    q.add_argument("--explore", default=None,
                   help="folder for one offline explorer HTML per slide (needs the 'viz' extra)")
    q.add_argument("--slide-mpp", "--mpp", dest="fallback_mpp", type=float, default=None, action=_OldSpelling,
                   help="the slides' own pixel size in µm/px when the files do not state it (a manifest's mpp column "
                        "wins; not model.mpp, the resolution slides are read at). --mpp: the old spelling")
    q.add_argument("--prefetch", type=int, default=1, metavar="N",
                   help="slides opened and decoded ahead while the model runs: N + 1 slides in threads that take turns "
                        "on one compute lane, one slide's reads overlapping another's compute (0: one slide after another)")
    q.add_argument("--resume", action="store_true",
                   help="keep the complete rows of an existing --out CSV and predict only the other slides")
    q.add_argument("--quiet", action="store_true", help="no progress bar")
    q.add_argument("inputs", nargs="+", help="slide files and/or manifest CSVs")
    q.set_defaults(func=cmd_predict)

    c = sub.add_parser("config", help="print the effective config (defaults included) of a run, checkpoint or YAML")
    c.add_argument("source", nargs="?", default=None,
                   help="a YAML file, a packaged config (demo.yaml), a checkpoint, or a run folder (default: the defaults)")
    c.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", dest="overrides",
                   help="override one config field; repeatable")
    c.set_defaults(func=cmd_config)

    dr = sub.add_parser("doctor", help="probe at which stage-I resolution a manifest's labels can be learnt and "
                                       "write the recommended config")
    dr.add_argument("manifest", help="manifest CSV (only its training rows are read)")
    dr.add_argument("--out", required=True, help="the recommended config (YAML) to write")
    dr.add_argument("--config", default=None, help="the config to start from (default: the packaged slides.yaml)")
    dr.add_argument("--candidates", default="16,8,4", help="stage-I resolutions to probe, µm per view pixel")
    dr.add_argument("--steps", type=int, default=60, help="training steps of each fold's evidence-only probe")
    dr.add_argument("--count-candidates", default=None, help="µm per pixel to probe the stain counts at "
                    "(model.count_mpp), comma-separated (default: 2,1, zoomin.doctor.COUNT_CANDIDATES); empty: none")
    dr.add_argument("--seed", type=int, default=0)
    dr.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", dest="overrides",
                    help="override one config field of the starting config; repeatable")
    dr.set_defaults(func=cmd_doctor)

    x = sub.add_parser("explore", help="serve the explorer as a local web app: pick a slide, see the model's "
                                       "answer and what it looked at")
    x.add_argument("checkpoint", help="checkpoint.pt written by zoomin train/demo")
    x.add_argument("inputs", nargs="+", help="slide files, folders of slides and/or manifest CSVs")
    x.add_argument("--address", default="127.0.0.1", help="address to listen on (default: loopback only)")
    x.add_argument("--port", type=int, default=0, help="port (default 0: a free one; the URL is printed)")
    x.add_argument("--seed", type=int, default=0, help="sampling seed (the answer is zoomin predict's with it)")
    x.add_argument("--slide-mpp", dest="fallback_mpp", type=float, default=None,
                   help="the slides' own pixel size in µm/px when the files do not state it (as zoomin predict)")
    x.add_argument("--allow-remote", action="store_true",
                   help="allow an --address other machines can reach (the page shows your slides and runs your model)")
    x.add_argument("--open", action="store_true", help="open the page in the default web browser")
    x.set_defaults(func=cmd_explore)

    m = sub.add_parser("manifest", help="a zoomin manifest CSV from a data set's raw download (see data_manifests/)")
    m.add_argument("dataset", help="camelyon16, colon_cancer, fmow, needle_camelyon or traffic_signs")
    m.add_argument("root", help="the data set's folder, as downloaded")
    m.add_argument("out", help="manifest CSV to write (lesion/box outlines go next to it)")
    m.set_defaults(func=cmd_manifest)

    return p


def _one_line_warnings(shown):
    """``warnings.showwarning`` that prints our deprecation warnings (a config key of an earlier
    version) as one line on stderr, and passes every other warning to ``shown``."""
    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, FutureWarning) and "deprecated" in str(message):
            print(f"zoomin: warning: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)
    return show


def main(argv=None) -> int:
    import warnings
    from .distributed import close
    args = parser().parse_args(argv)
    if args.func is cmd_predict:
        from .allocator import steady
        steady()
    shown = warnings.showwarning
    warnings.showwarning = _one_line_warnings(shown)
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("zoomin: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if args.debug:
            raise
        print(f"zoomin: error: {one_line(e)}", file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = shown
        close()


if __name__ == "__main__":
    sys.exit(main())
