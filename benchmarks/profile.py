"""Profile one explainer call with torch.profiler (how the misses in RESULTS.md were found).

    python -m benchmarks.profile --backbone timm:resnet50 --method gradcam --batch 1
    python -m benchmarks.profile --backbone timm:resnet50 --method gradcam --library torchcam

Prints the time split of ours (or a library) next to F, the top operators by
self CPU time, and the Python-level overhead (wall time minus time inside
torch operators).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402

from . import rivals as R  # noqa: E402
from .baselines import forward_impl, make_batch  # noqa: E402
from .config import PRETRAINED  # noqa: E402
from .timing import median, time_interleaved  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile")
    p.add_argument("--backbone", default="timm:tf_efficientnet_lite0")
    p.add_argument("--method", default="gradcam")
    p.add_argument("--library", default="ours", help="ours or a library name")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--calls", type=int, default=5)
    p.add_argument("--rows", type=int, default=25)
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from explainzoo.backbones import create_backbone
    from explainzoo.explainers import create_explainer, explainer_class

    bb = create_backbone(args.backbone, pretrained=args.backbone in PRETRAINED)
    bb.model.eval()
    x = make_batch(bb, args.batch, torch.device("cpu"))
    with torch.no_grad():
        targets = bb.model(x).argmax(dim=1)
    cls = explainer_class(args.method)
    explainer = create_explainer(args.method)
    layer = bb.resolve_layer(cls.default_layer) if cls.uses_layer else None
    if args.library == "ours":
        tl = targets.tolist()

        def fn() -> object:
            return explainer.explain(bb, x, target=tl, layer=layer).maps
    else:
        cell = R.Cell(bb, R.rival_copy(bb.model), x, targets, layer or bb.resolve_layer("last"),
                      dict(explainer.config))
        impls, skipped = R.rival_impls(args.method, cell, R.available_libraries())
        match = [i for i in impls if i.library == args.library]
        if not match:
            raise SystemExit(f"{args.library} has no {args.method} here: {skipped}")
        fn = match[0].call
    f = forward_impl(bb.model, x).call
    tt = time_interleaved({"F": f, "impl": fn}, args.calls, warmup=2)
    print(f"{args.library} {args.method} on {args.backbone} N={args.batch}: "
          f"{median(tt['impl']) * 1000:.1f} ms vs F {median(tt['F']) * 1000:.1f} ms "
          f"({median(tt['impl']) / median(tt['F']):.2f}x F)")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(args.calls):
            fn()
        wall = (time.perf_counter() - t0) / args.calls
    ka = prof.key_averages()
    print(ka.table(sort_by="self_cpu_time_total", row_limit=args.rows))
    inside = sum(e.self_cpu_time_total for e in ka) / 1e3 / args.calls
    print(f"per call: wall {wall * 1000:.1f} ms (under the profiler), in torch ops {inside:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
