"""The ``explainzoo`` command line: list, layers, explain, demo."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from explainzoo.backbones import (
    Backbone,
    ExplainzooError,
    backbone_failures,
    backbone_registry,
    create_backbone,
    family_registry,
    list_backbones,
)
from explainzoo.backbones import load_backbone as _load_backbone
from explainzoo.explainers.options import parse_pairs


def _err(msg: str) -> None:
    print(f"explainzoo: {msg}", file=sys.stderr)


def load_backbone(name: str, checkpoint: str | None = None, random_init: bool = False) -> Backbone:
    """Pretrained weights when reachable; otherwise random init with a visible warning."""
    bb, warning = _load_backbone(name, checkpoint=checkpoint, random_init=random_init)
    if warning:
        _err(f"WARNING: {warning}")
    return bb


def cmd_list(args: argparse.Namespace) -> int:
    from explainzoo.explainers import explainer_failures, explainer_registry

    # a plugin is imported in a child process first: one that exits or crashes at import is
    # listed as broken instead of ending this command
    registries = (explainer_registry,) if args.what == "explainers" else (backbone_registry, family_registry)
    for reg in registries:
        reg.set_safe(True)
    if args.what == "backbones":
        for name in list_backbones(args.pattern):
            print(name)
        backbone_registry.load_all()
        family_registry.load_all()
        failures = backbone_failures()
    else:
        classes = explainer_registry.load_all()
        names = explainer_registry.names(args.pattern)
        infos = explainer_registry.infos()
        width = max((len(n) for n in names), default=0)
        for name in names:
            if name in classes:
                line = f"{name:<{width}}  {classes[name].description}"
                if args.verbose:
                    info = infos[name]
                    line += f"  [{info.dist} {info.dist_version}]".replace(" ]", "]")
                print(line)
        failures = explainer_failures()
    for f in failures.values():
        print(f"BROKEN {f.name} (from {f.dist}): {f.error}")
        if args.verbose:
            print(f.traceback)
    return 0


def cmd_layers(args: argparse.Namespace) -> int:
    bb = create_backbone(args.backbone, pretrained=False)
    print(f"{bb.name}: input {bb.input_size[0]}x{bb.input_size[1]}")
    print("aliases:")
    for alias, path in bb.layers.items():
        f = bb.probe.formats.get(path)
        shape = f"{f.channels}x{f.size[0]}x{f.size[1]}" if f else "?"
        print(f"  {alias:<8} {path:<40} {shape}")
    print("layers with a map output (C x h x w at the input size):")
    for path in bb.map_layers():
        f = bb.probe.formats[path]
        print(f"  {path:<48} {f.channels}x{f.size[0]}x{f.size[1]} ({f.layout})")
    return 0


def read_image(path: Path) -> Any:
    """An image file decoded by the library's safe loader (one loader for CLI, demo and batch jobs).

    Raises:
        ExplainzooError: unreadable, unsupported, too large (a decompression bomb) or corrupt:
            one line naming the file.
    """
    from explainzoo.backbones.images import load_image

    try:
        return load_image(path)
    except ExplainzooError as exc:
        raise ExplainzooError(f"cannot read image {str(path)!r}: {exc}") from None


def cmd_explain(args: argparse.Namespace) -> int:
    from explainzoo.explainers import create_explainer
    from explainzoo.explainers.render import overlay, tile_grid
    from explainzoo.explainers.targets import parse as parse_target

    explainer = create_explainer(args.method, **parse_pairs(args.opt))
    image = read_image(Path(args.image))
    bb = load_backbone(args.backbone, args.checkpoint, args.random_init)
    shown = bb.preprocessing.resize_crop(image)
    x = bb.preprocessing.normalize(shown)[None]
    target = parse_target(args.target) if args.target is not None else None
    t0 = time.perf_counter()
    exp = explainer.explain(bb, x, target=target, layer=args.layer)
    dt = time.perf_counter() - t0
    if exp.maps is not None:
        img = overlay(shown, exp, cmap=args.cmap, alpha=args.alpha)
    else:
        img = tile_grid(exp, cmap=args.cmap if args.cmap != "jet" else "viridis")
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out)
    line = f"{args.method} on {bb.name} [{bb.weights}] layer={exp.layer or '-'}"
    if exp.scores is not None:
        t = int(exp.targets[0]) if exp.targets is not None else -1
        what = f"class={t} ({bb.labels[t]})" if 0 <= t < len(bb.labels) else "target"
        line += f" {what} [{exp[0].target_description}] score={float(exp.scores[0]):.3f}"
    print(f"{line} time={dt * 1000:.1f} ms -> {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    try:
        from explainzoo.demo.app import launch
    except ImportError as exc:
        raise ExplainzooError(f"the demo needs the demo extra: pip install 'explainzoo[demo]' ({exc})") from exc
    launch(host=args.host, port=args.port, backbones=args.backbones, plugins=args.plugins, report=_err)
    return 0


def cmd_space(args: argparse.Namespace) -> int:
    from explainzoo.demo.space import write_bundle

    out = write_bundle(args.folder, plugins=args.plugins, backbones=args.backbones)
    print(f"Spaces bundle -> {out} (app.py, requirements.txt, README.md, examples/, vendor/)")
    print(f"try it: GRADIO_SERVER_NAME=127.0.0.1 python {out / 'app.py'}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """A faithfulness report over images or a dataset, computed as a resumable job in OUT/job."""
    import logging

    from explainzoo.batch.evaluation import evaluate_job
    from explainzoo.demo.report import write_report
    from explainzoo.explainers.metrics import summary

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="explainzoo: %(message)s", stream=sys.stderr)
    weights = "checkpoint" if args.checkpoint else ("random" if args.random_init else "pretrained")
    ev = evaluate_job(
        args.images, args.backbones, args.methods, Path(args.output) / "job", steps=args.steps,
        sanity_steps=args.sanity_steps, sanity_images=args.sanity_images, trials=args.trials,
        box=args.box, seed=args.seed, progress=not args.quiet, weights=weights,
        checkpoint=args.checkpoint, batch_size=args.batch_size, workers=args.workers,
        device=args.device, limit=args.limit, image_size=args.image_size,
    )
    html_path, csv_path = write_report(ev, args.output)
    rows = summary(ev)
    keys = ("deletion_auc", "insertion_auc", "sanity_spearman", "sanity_ssim", "pointing")
    heads = ("del AUC", "ins AUC", "rho", "ssim", "point")
    print(f"{'backbone':<30} {'explainer':<22} " + " ".join(f"{h:>8}" for h in heads))
    for r in rows:
        txt = " ".join(f"{r[k]:>8.3f}" if r[k] is not None else f"{'-':>8}" for k in keys)
        line = f"{r['backbone']:<30} {r['explainer']:<22} {txt}"
        print(line + (f"  ERROR: {r['errors']}" if r["errors"] else ""))
    print(f"report -> {html_path}\nnumbers -> {csv_path}")
    images = {r.image for r in ev.rows}
    failed = images - {r.image for r in ev.rows if not r.error}
    if failed:  # as `explainzoo batch`: bad images never stop the job; all failing is an error
        _err(f"{len(failed)} images failed (see the error column of {csv_path})")
    return 1 if images and failed == images else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="explainzoo", description="See what an image classifier sees.")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("list", help="list backbones or explainers (and broken plugins)")
    s.add_argument("what", choices=("backbones", "explainers"))
    s.add_argument("pattern", nargs="?", default=None, help="wildcard, e.g. 'timm:*resnet*' or '*cam*'")
    s.add_argument("-v", "--verbose", action="store_true",
                   help="show each entry's distribution and version, and broken plugins' tracebacks")
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("layers", help="a backbone's layer aliases and map layers")
    s.add_argument("backbone")
    s.set_defaults(func=cmd_layers)

    s = sub.add_parser("explain", help="explain one image and write a PNG")
    s.add_argument("image")
    s.add_argument("-b", "--backbone", default="timm:tf_efficientnet_lite0")
    s.add_argument("-m", "--method", default="gradcam")
    s.add_argument("-l", "--layer", default=None, help="alias (conv1, last, stageN) or module path")
    s.add_argument("-t", "--target", default=None,
                   help="what score to explain (default: top-1): a class index or name, "
                   "'contrast:A,B', 'classes:I,J,K', 'prob:NAME', 'sigmoid:I'")
    s.add_argument("-o", "--output", default="explanation.png")
    s.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE", help="explainer option")
    s.add_argument("--cmap", default="jet")
    s.add_argument("--alpha", type=float, default=0.5)
    s.add_argument("--checkpoint", default=None, help="state dict file (.safetensors or torch)")
    s.add_argument("--random-init", action="store_true", help="skip pretrained weights")
    s.set_defaults(func=cmd_explain)

    s = sub.add_parser("demo", help="serve the Gradio app")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=7860)
    s.add_argument("--backbones", default=None, help="comma-separated backbone names to offer")
    s.add_argument(
        "--plugins",
        default=None,
        metavar="NAME[,NAME]",
        help="allow only these third-party plugins (entry or distribution names; 'none': built-ins only); "
        "refused ones are reported at start. Default: every installed plugin",
    )
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("space", help="write a Hugging Face Spaces bundle of the demo into a folder")
    s.add_argument("folder")
    s.add_argument("--plugins", default="", metavar="NAME[,NAME]",
                   help="third-party plugins the Space allows (default: built-ins only)")
    s.add_argument("--backbones", default=None, help="comma-separated backbone names to offer")
    s.set_defaults(func=cmd_space)

    s = sub.add_parser("evaluate", help="faithfulness report: deletion/insertion AUC, sanity checks",
                       description="Faithfulness numbers of every image, computed as a dataset job in "
                                   "OUTPUT/job (rerun the same command to continue it), then "
                                   "OUTPUT/report.html and OUTPUT/metrics.csv.")
    s.add_argument("images", nargs="+",
                   help="image files, folders (ImageFolder gives labels), globs, .txt/.csv lists")
    s.add_argument("-b", "--backbones", default="timm:tf_efficientnet_lite0", help="comma-separated")
    s.add_argument("-m", "--methods", default="gradcam,saliency", help="comma-separated explainers")
    s.add_argument("--box", default=None, help="x0,y0,x1,y1 in image pixels: adds the pointing game")
    s.add_argument("--steps", type=int, default=20, help="deletion/insertion steps")
    s.add_argument("--sanity-steps", type=int, default=3, help="cascading randomisation points (0: skip)")
    s.add_argument("--trials", type=int, default=2, help="random maps per image for the chance row")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--batch-size", type=int, default=16)
    s.add_argument("--sanity-images", type=int, default=1,
                   help="images (the first with a map) that get the sanity check, curves and overlays")
    s.add_argument("--workers", type=int, default=1, help="decode processes (0: in the main process)")
    s.add_argument("--device", default="auto", help="cpu, cuda or auto")
    s.add_argument("--limit", type=int, default=None, help="first N images only")
    s.add_argument("--image-size", type=int, default=None, help="run the backbones at this input size")
    s.add_argument("-o", "--output", default="report", help="output folder (the job is in OUTPUT/job)")
    s.add_argument("--checkpoint", default=None, help="state dict file (.safetensors or torch)")
    s.add_argument("--random-init", action="store_true", help="skip pretrained weights")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=cmd_evaluate)
    from explainzoo.batch.cli import add_parser as add_batch_parser
    add_batch_parser(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ExplainzooError as exc:
        _err(str(exc))
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
