"""``explainzoo batch``: the dataset job on the command line (a thin wrapper of run_batch)."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from explainzoo.explainers.options import parse_pairs


def _batch_size(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--batch-size takes N or auto, got {value!r}") from None


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``batch`` on the ``explainzoo`` sub-command parser."""
    s = subparsers.add_parser(
        "batch", help="explain a whole dataset into Parquet shards (resumable; local or Ray)",
        description="Explain every image with every backbone and method. Rows go to OUT/results/*.parquet; "
                    "rerun the same command to continue after a crash.",
    )
    s.add_argument("inputs", nargs="+",
                   help="image files, folders (ImageFolder gives labels), globs, .txt/.csv lists")
    s.add_argument("-b", "--backbones", default="timm:tf_efficientnet_lite0", help="comma-separated")
    s.add_argument("-m", "--methods", default="gradcam", help="comma-separated map methods")
    s.add_argument("-o", "--output", required=True, help="job folder (OUT)")
    s.add_argument("-l", "--layer", default=None, help="alias (last, stageN) or module path, for layer methods")
    s.add_argument("-t", "--target", default=None, help="top1 (default), label, a class index or a name")
    s.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE", help="explainer option")
    s.add_argument("--metrics", default="", help="comma-separated: deletion,insertion,pointing")
    s.add_argument("--box", default=None, help="x0,y0,x1,y1 in image pixels, for the pointing metric")
    s.add_argument("--metric-steps", type=int, default=20, help="deletion/insertion steps")
    s.add_argument("--overlays", action="store_true", help="also write OUT/overlays/<backbone>/<method>/*.png")
    s.add_argument("--device", default="auto", help="cpu, cuda or auto")
    s.add_argument("--batch-size", type=_batch_size, default=16, help="N or auto (grows on CUDA)")
    s.add_argument("--workers", type=int, default=1, help="decode processes (0: in the main process)")
    s.add_argument("--limit", type=int, default=None, help="first N images only")
    s.add_argument("--image-size", type=int, default=None, help="run the backbones at this input size")
    s.add_argument("--checkpoint", default=None, help="state dict file (.safetensors or torch)")
    s.add_argument("--random-init", action="store_true", help="skip pretrained weights")
    s.add_argument("--seed", type=int, default=0, help="seed of random inits and random baselines")
    s.add_argument("--shard-rows", type=int, default=512, help="rows per Parquet shard")
    s.add_argument("--engine", choices=("local", "ray"), default="local")
    s.add_argument("--ray-address", default=None, help="auto or ray://HOST:10001 (default: start a local Ray)")
    s.add_argument("--actors", type=int, default=None, help="Ray actors (default: one per CPU or GPU)")
    s.add_argument("--extend", action="store_true", help="add inputs, backbones or methods to an existing job")
    s.add_argument("--no-html", action="store_true", help="skip OUT/index.html")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    s.set_defaults(func=run)
    return s


def run(args: argparse.Namespace) -> int:
    """Run the job; 0 unless every image failed (1). Errors before work raise ExplainzooError."""
    from .api import run_batch

    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="explainzoo: %(message)s", stream=sys.stderr)
    weights = "checkpoint" if args.checkpoint else ("random" if args.random_init else "pretrained")
    report = run_batch(
        args.inputs, args.backbones, args.methods, args.output,
        extend=args.extend, progress=not args.quiet, html=not args.no_html,
        layer=args.layer, target=args.target, options=parse_pairs(args.opt), metrics=args.metrics,
        metric_steps=args.metric_steps, box=args.box, weights=weights, checkpoint=args.checkpoint,
        image_size=args.image_size, seed=args.seed, limit=args.limit, engine=args.engine,
        device=args.device, batch_size=args.batch_size, workers=args.workers,
        shard_rows=args.shard_rows, overlays=args.overlays, ray_address=args.ray_address,
        actors=args.actors,
    )
    print(f"{report.images} images, {report.rows} rows ({report.written} new) in {report.seconds:.1f} s "
          f"-> {report.out}")
    if report.images_failed:
        print(f"{report.images_failed} images failed (see the error column; load_results(OUT).errors())")
    return 1 if report.all_failed else 0
