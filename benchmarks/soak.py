"""Soak the running demo, and measure its heaviest allowed request per backbone (issue 11).

Two modes, never a unit test (too slow)::

    python -m benchmarks.soak soak [--requests 1000] [--clients 4] [--backbones ...]
    python -m benchmarks.soak heaviest [--backbones ...]

``soak`` serves the app (the public-hosting settings of
:func:`explainzoo.demo.app.serve`) in a child process and sends mixed
requests from ``--clients`` ``gradio_client`` threads: Explain with cheap and
costly methods, Compare explainers, Filters, Activations, Evaluate, plus a few
requests that must be refused (over a cap). It reports the server's RSS at
start and end, after every tenth of the requests (``rss_trace_mb``: a plateau
or a climb) and its highest sample, p50 / p99 latency, errors (other than the
expected refusals) and busy / 503 answers; progress goes to stderr.

``heaviest`` runs, for each offered backbone in its own process, the
costliest request the demo allows on it: every costly method with its
cost options at their caps, lowered by the request budget
(:func:`explainzoo.demo.budget.fit_budget`) exactly as the service lowers a
default, and reports the time and the RSS growth (peak resident memory during
the request minus before it; the peak is reset per request through
``/proc/self/clear_refs``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parents[1] / "demo" / "examples"
#: The heaviest methods: gradient passes (memory) and forward passes (work).
HEAVY = ("smoothgrad", "integrated_gradients", "rise", "scorecam", "occlusion")


def _status(field: str, pid: int | str = "self") -> int:
    """A ``/proc/<pid>/status`` field in bytes (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # not Linux or not allowed: the peak is then since start
        pass


# --------------------------------------------------------------------------- heaviest request


def heaviest_one(name: str, methods: tuple[str, ...] = HEAVY) -> list[dict[str, Any]]:
    """In this process: the heaviest allowed request of each of ``methods`` on ``name``."""
    from explainzoo.demo import budget
    from explainzoo.demo.policy import _bounds
    from explainzoo.demo.service import DemoService
    from explainzoo.explainers import create_explainer, explainer_class
    from explainzoo.explainers.deadline import acquire

    svc = DemoService([name], cache_size=1)
    image = str(EXAMPLES / "chelsea.jpg")
    svc.explain(image, name, "gradcam")  # load, probe, warm
    lb = svc.load(name)
    rows = []
    for method in methods:
        if method not in svc.explainer_names("map"):
            continue
        cls = explainer_class(method)
        caps: dict[str, Any] = {}
        for key, o in cls.options.items():
            cap, floor = _bounds(svc.limits, key, o, cls)
            if floor is not None:
                caps[key] = floor
            elif cap is not None and isinstance(o.default, int):
                caps[key] = cap
        caps = svc.parse_options(method, caps)
        with acquire(lb.backbone.lock, lb.backbone.name):
            opts = budget.fit_budget(method, caps, (), lb.backbone, lb.profile, None, svc.limits)
        given = {k: v for k, v in opts.items() if cls.options[k].cost}
        cost = create_explainer(method, **opts).estimate(lb.backbone)
        _reset_peak()
        before = _status("VmRSS")
        t0 = time.perf_counter()
        error = None
        try:
            svc.explain(image, name, method, options=given)
        except Exception as exc:  # noqa: BLE001 - reported
            error = f"{type(exc).__name__}: {exc}"
        seconds = time.perf_counter() - t0
        rows.append({
            "backbone": name, "method": method, "options": given, "passes": cost.passes,
            "batch": cost.batch, "seconds": round(seconds, 2),
            "rss_growth_mb": round((_status("VmHWM") - before) / 2**20, 1), "error": error,
        })
    return rows


def heaviest(backbones: list[str], methods: tuple[str, ...] = HEAVY) -> list[dict[str, Any]]:
    """:func:`heaviest_one` for each backbone, each in a fresh process."""
    rows = []
    for name in backbones:
        out = subprocess.run(
            [sys.executable, "-m", "benchmarks.soak", "_heaviest_one", name, "--methods", ",".join(methods)],
            capture_output=True, text=True, check=False,
        )
        if out.returncode != 0:
            rows.append({"backbone": name, "error": out.stderr.strip().splitlines()[-1:]})
            continue
        rows.extend(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


# --------------------------------------------------------------------------- soak


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(backbones: list[str], port: int) -> subprocess.Popen:
    code = (
        "from explainzoo.demo.app import launch; "
        f"launch(port={port}, backbones={backbones!r}, concurrency_limit=2, queue_size=64)"
    )
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _wait(url: str, proc: subprocess.Popen, timeout: float = 600) -> None:
    import httpx

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"the demo exited with {proc.returncode}")
        try:
            if httpx.get(url + "config", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError("the demo did not start in time")


def _requests(backbones: list[str]) -> list[tuple[str, tuple[Any, ...], bool]]:
    """The request mix: (api_name, args, expected to be refused)."""
    from gradio_client import handle_file

    img = [handle_file(str(EXAMPLES / n)) for n in ("chelsea.jpg", "coffee.jpg")]
    out: list[tuple[str, tuple[Any, ...], bool]] = []
    for b in backbones:
        for i, m in enumerate(("gradcam", "saliency", "layercam", "eigencam", "smoothgrad", "rise")):
            out.append(("/explain", (img[i % 2], b, m, "default", "top-1", "jet", 0.5, ""), False))
        out.append(("/explain", (img[0], b, "smoothgrad", "default", "top-1", "jet", 0.5, "samples=32"), False))
        pair = ["gradcam", "saliency"]
        out.append(("/compare_explainers", (img[1], b, pair, "default", "jet", 0.5, False), False))
        out.append(("/filters", (b, "conv1"), False))
        out.append(("/activations", (img[0], b, "stage2", 16, "viridis"), False))
        out.append(("/evaluate", (img[1], [b], ["gradcam"], 4, 0), False))
        out.append(("/explain", (img[0], b, "rise", "default", "top-1", "jet", 0.5, "masks=100000"), True))
    return out


def _milestones(trace: list[tuple[int, int]], n: int, parts: int = 10) -> dict[int, int]:
    """Server RSS (MB) after every ``n / parts`` requests: a plateau or a climb."""
    step = max(1, n // parts)
    return {done: rss for done, rss in trace if done % step == 0 or done == n}


def soak(n: int, clients: int, backbones: list[str], seed: int = 0) -> dict[str, Any]:
    """Serve the app, send ``n`` mixed requests from ``clients`` threads, return the figures."""
    from gradio_client import Client

    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    proc = _serve(backbones, port)
    try:
        _wait(url, proc)
        mix = _requests(backbones)
        rng = random.Random(seed)
        jobs = [rng.choice(mix) for _ in range(n)]
        lat: list[float] = []
        counts = {"ok": 0, "refused": 0, "errors": 0, "busy_or_503": 0}
        samples: list[str] = []
        lock = threading.Lock()
        Client(url, verbose=False).predict(*mix[0][1], api_name=mix[0][0])  # warm every path once
        rss_start = _status("VmRSS", proc.pid)
        trace: list[tuple[int, int]] = []  # (requests done, server RSS MB) after each request

        def worker(k: int) -> None:
            client = Client(url, verbose=False, download_files=f"/tmp/explainzoo-soak-{os.getpid()}-{k}")
            for api, args, refused in jobs[k::clients]:
                t0 = time.perf_counter()
                try:
                    client.predict(*args, api_name=api)
                    kind = "ok"
                except Exception as exc:  # noqa: BLE001 - counted
                    text = str(exc)
                    busy = "busy" in text or "503" in text or "queue is full" in text.lower()
                    policy = refused or "budget" in text or "cap of" in text  # a refusal by the hosting policy
                    kind = "busy_or_503" if busy else ("refused" if policy else "errors")
                    if kind == "errors" and len(samples) < 5:
                        samples.append(f"{api}: {text[:200]}")
                with lock:
                    lat.append(time.perf_counter() - t0)
                    counts[kind] += 1
                    trace.append((len(lat), round(_status("VmRSS", proc.pid) / 2**20)))
                    if len(lat) % max(1, n // 20) == 0:  # progress on stderr: the figures go to stdout
                        print(f"{len(lat)}/{n} requests, server RSS {trace[-1][1]} MB, {counts}", file=sys.stderr)

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        q = statistics.quantiles(lat, n=100)
        return {
            "requests": n, "clients": clients, "backbones": backbones, "wall_s": round(wall, 1),
            "rss_start_mb": round(rss_start / 2**20), "rss_end_mb": round(_status("VmRSS", proc.pid) / 2**20),
            "p50_s": round(q[49], 3), "p99_s": round(q[98], 3), **counts, "error_samples": samples,
            "rss_trace_mb": _milestones(trace, n), "rss_max_mb": max(r for _, r in trace),
        }
    finally:
        proc.terminate()
        proc.wait(30)


def main(argv: list[str] | None = None) -> int:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.soak")
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("soak")
    s.add_argument("--requests", type=int, default=1000)
    s.add_argument("--clients", type=int, default=4)
    s.add_argument("--backbones", default="timm:tf_efficientnet_lite0,vgg11_ref")
    h = sub.add_parser("heaviest")
    h.add_argument("--backbones", default=None, help="comma-separated (default: the curated list)")
    one = sub.add_parser("_heaviest_one")
    one.add_argument("name")
    for q in (h, one):
        q.add_argument("--methods", default=",".join(HEAVY), help="comma-separated costly methods")
    args = p.parse_args(argv)
    if args.mode == "_heaviest_one":
        print(json.dumps(heaviest_one(args.name, tuple(args.methods.split(",")))))
        return 0
    if args.mode == "heaviest":
        from explainzoo.backbones import CURATED

        names = args.backbones.split(",") if args.backbones else list(CURATED)
        result: Any = heaviest(names, tuple(args.methods.split(",")))
    else:
        result = soak(args.requests, args.clients, args.backbones.split(","))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
