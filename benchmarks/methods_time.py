"""Time per image of every attribution method at its default options (issue #4).

    python -m benchmarks.methods_time                        # lite0 @ 224, all map methods
    python -m benchmarks.methods_time --rounds 5 --threads 1 --clock cpu
    python -m benchmarks.methods_time --methods scorecam,rise --opt rise:masks=256

EfficientNet-Lite0 with its offline ImageNet weights on skimage's ``chelsea``
(preprocessed by the backbone: 224 x 224). Every method and a plain forward
pass under ``torch.inference_mode`` (``F``) are timed interleaved in this one
process (``benchmarks.timing.time_interleaved``: every round calls each once,
rotating the order), so the ``x F`` column compares like with like even on a
shared machine. Prints a Markdown table: the median seconds per image, the
ratio to ``F`` and the class each method explained.

On a loaded machine OpenMP's spin-waiting makes multi-threaded runs erratic
(ResNet-18 forward 0.07 s -> 1.3 s when other processes hold the cores);
this script sets ``OMP_WAIT_POLICY=PASSIVE`` unless the environment already
sets it, and ``--threads 1 --clock cpu`` gives the most stable ratios.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts OpenMP

import torch  # noqa: E402

from .timing import CLOCKS, median, time_call, time_interleaved  # noqa: E402

#: The attribution methods (map output); grid methods are not timed here.
DEFAULT_METHODS = (
    "saliency", "gradcam", "gradcam_pp", "xgradcam", "layercam", "hirescam", "eigencam",
    "scorecam", "ablationcam", "smoothgrad", "integrated_gradients", "guided_backprop",
    "guided_gradcam", "occlusion", "rise",
)


def _parse_opts(pairs: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for pair in pairs:
        method, _, kv = pair.partition(":")
        key, _, value = kv.partition("=")
        if not (method and key and value):
            raise SystemExit(f"--opt takes METHOD:KEY=VALUE, got {pair!r}")
        out.setdefault(method, {})[key] = value
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="timm:tf_efficientnet_lite0")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS))
    p.add_argument("--rounds", type=int, default=3, help="timed interleaved rounds (median reported)")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    p.add_argument("--opt", action="append", default=[], help="METHOD:KEY=VALUE (repeatable)")
    args = p.parse_args(argv)

    from skimage.data import chelsea

    from explainzoo.backbones import create_backbone
    from explainzoo.explainers import create_explainer

    if args.threads:
        torch.set_num_threads(args.threads)
    bb = create_backbone(args.backbone, pretrained=True)
    x = bb.preprocess(chelsea())
    opts = _parse_opts(args.opt)
    methods = [m for m in args.methods.split(",") if m]
    explainers = {m: create_explainer(m, **opts.get(m, {})) for m in methods}
    targets: dict[str, str] = {}

    def forward() -> None:
        with torch.inference_mode():
            bb.model(x)

    def run(name: str):
        def call() -> None:
            exp = explainers[name].explain(bb, x)
            targets[name] = bb.labels[int(exp.targets[0])].split(",")[0]
        return call

    calls = {"F": forward, **{m: run(m) for m in methods}}
    clock = CLOCKS[args.clock]
    times = time_interleaved(calls, rounds=args.rounds, warmup=1,
                             clock=lambda fn, sync: time_call(fn, sync, clock))
    f = median(times["F"])
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(f"# Method time per image: {bb.name} [{bb.weights}] at {x.shape[-2]}x{x.shape[-1]}, skimage chelsea")
    print()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average {load[0]:.1f}; clock={args.clock}; "
          f"median of {args.rounds} interleaved rounds")
    print()
    print("| method | options | s / image | x F | explained class |")
    print("|---|---|---:|---:|---|")
    print(f"| F (forward, inference_mode) | | {f:.3f} | 1.0 | |")
    for m in methods:
        t = median(times[m])
        cfg = ", ".join(f"{k}={v}" for k, v in explainers[m].config.items())
        print(f"| {m} | {cfg} | {t:.3f} | {t / f:.1f} | {targets.get(m, '')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
