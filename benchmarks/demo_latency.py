"""Latency of one Explain call through the Gradio API vs the same call in Python.

    python -m benchmarks.demo_latency                 # 20 interleaved rounds
    python -m benchmarks.demo_latency --rounds 50 --backbone vgg11_ref --method saliency

Serves the demo in this process (same settings as ``explainzoo demo``) on a
free localhost port, then times, interleaved in one run:

* ``api``: ``gradio_client`` ``predict(..., api_name="/explain")``: upload the
  photo, queue, run, encode the PNGs, download the overlay;
* ``service``: ``DemoService.explain`` on the same file, the work the server
  does for that request (decode, preprocess, top-5, explain, render);
* ``library``: the bare ``explain(method, bb, x)`` on the preprocessed tensor.

Prints the median of each and the ratios (the API's overhead over the same
work done directly).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from .timing import median, time_interleaved  # noqa: E402

PHOTO = Path(__file__).resolve().parents[1] / "demo" / "examples" / "chelsea.jpg"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.demo_latency")
    p.add_argument("--backbone", default="timm:tf_efficientnet_lite0")
    p.add_argument("--method", default="gradcam")
    p.add_argument("--image", default=str(PHOTO))
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args(argv)

    from gradio_client import Client, handle_file
    from PIL import Image

    from explainzoo.demo.app import build_demo, serve
    from explainzoo.demo.service import DemoService
    from explainzoo.explainers import create_explainer

    t0 = time.perf_counter()
    service = DemoService([args.backbone])
    demo = build_demo(service)
    port = _free_port()
    serve(demo, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    client = Client(f"http://127.0.0.1:{port}/", verbose=False)
    ready = time.perf_counter() - t0
    try:
        bb = service.load(args.backbone).backbone
        with Image.open(args.image) as im:
            x = bb.preprocess(im.convert("RGB"))
        explainer = create_explainer(args.method)

        def api() -> object:
            return client.predict(
                handle_file(args.image),
                args.backbone,
                args.method,
                "default",
                "top-1",
                "jet",
                0.5,
                "",
                api_name="/explain",
            )

        def direct_service() -> object:
            return service.explain(args.image, args.backbone, args.method)

        def library() -> object:
            return explainer.explain(bb, x)

        times = time_interleaved(
            {"api": api, "service": direct_service, "library": library},
            rounds=args.rounds,
            warmup=args.warmup,
        )
    finally:
        demo.close()

    med = {name: median(ts) for name, ts in times.items()}
    print(
        f"demo latency: {args.method} on {args.backbone}, {args.rounds} interleaved rounds, "
        f"torch threads {__import__('torch').get_num_threads()}, {os.cpu_count()} CPUs "
        f"(app built and served in {ready:.1f} s)"
    )
    for name, label in [
        ("api", "gradio_client /explain (upload, queue, run, PNGs, download)"),
        ("service", "DemoService.explain (decode, top-5, explain, render)"),
        ("library", f"explain('{args.method}', bb, x) alone"),
    ]:
        ts = times[name]
        spread = f"(min {min(ts) * 1000:.1f}, max {max(ts) * 1000:.1f})"
        print(f"  {name:<8} median {med[name] * 1000:8.1f} ms  {spread}  {label}")
    overhead = (med["api"] - med["service"]) * 1000
    print(f"  api / service = {med['api'] / med['service']:.2f}x   api - service = {overhead:.1f} ms")
    print(f"  api / library = {med['api'] / med['library']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
