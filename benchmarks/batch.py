"""``make bench-batch``: dataset-job throughput, measured side by side in one run.

Grad-CAM (``layer=last``) on EfficientNet-Lite0 (offline ImageNet weights) at
224, CPU, on N images (default 256: the bundled photos under crops, flips and
resizes):

* ours end to end (decode + explain + write, ``--workers 1``) against a bare
  batched forward ``F`` on preloaded tensors at the same batch size;
* against a plain loop of pytorch-grad-cam over the same batches (decode included);
* against our own per-image ``explain`` loop;
* RSS after N and after ``--rss-factor`` x N images of one job (flat memory),
  in a fresh subprocess (``/proc/self/status`` VmRSS, ``getrusage`` peak);
* the Ray engine with 1 and 2 actors at 1 thread each: the steady-state ratio
  and its fixed start-up cost;
* the wall time of ``explainzoo batch`` (a subprocess, ``--workers 1``) over
  ``--thousand`` fresh images (default 1 000).

On a shared machine the four throughput figures are measured in ``--rounds``
interleaved rounds (the order rotates each round), after one warm-up of each
(imports, first-call costs); the report gives each round's ratios and their
median, and the load average around every measurement.

Usage: ``python -m benchmarks.batch [--images 256] [--batch-size 16] [--rounds 3]
[--rss-factor 8] [--no-ray] [--no-rss] [--thousand 1000]
[--out benchmarks/RESULTS_batch.json]``. Never a timed unit test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Ray (imported lazily): usage stats off, every Ray server on 127.0.0.1 only
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import torch  # noqa: E402

BACKBONE, METHOD, LAYER = "timm:tf_efficientnet_lite0", "gradcam", "last"
ROOT = Path(__file__).resolve().parents[1]


def rss_mib(field: str = "VmRSS") -> float:
    """Resident set size (or ``VmHWM``: its peak) of this process, MiB (Linux /proc)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_mib() -> float:
    """Peak RSS of this process since its exec, MiB: ``VmHWM``.

    Not ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux carries that across
    ``execve`` from the forked copy of the parent, so in a subprocess of a
    large process it reports the parent's size.
    """
    return rss_mib("VmHWM")


def load() -> float:
    """The 1-minute load average (the machine may be shared)."""
    return round(os.getloadavg()[0], 2)


def make_images(folder: Path, n: int, seed: int = 0) -> list[Path]:
    """``n`` JPEGs from the bundled photos: random crops, flips and resizes (seeded)."""
    import random

    from PIL import Image, ImageOps

    src = sorted((ROOT / "demo" / "examples").glob("*.jpg"))
    if not src:  # pragma: no cover - the repo ships them
        raise SystemExit("no bundled photos in demo/examples")
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        with Image.open(src[i % len(src)]) as im:
            im = im.convert("RGB")
            w, h = im.size
            cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
            x0, y0 = rng.randint(0, w - cw), rng.randint(0, h - ch)
            im = im.crop((x0, y0, x0 + cw, y0 + ch))
            if rng.random() < 0.5:
                im = ImageOps.mirror(im)
            side = rng.choice((256, 320, 400, 512))
            im = im.resize((side, int(side * ch / cw)))
            p = folder / f"img{i:05d}.jpg"
            im.save(p, quality=90)
            out.append(p)
    return out


def preload(bb, paths: list[Path]) -> torch.Tensor:
    from explainzoo.backbones.images import load_image

    return torch.cat([bb.preprocess(load_image(p)) for p in paths])


def bare_forward(bb, xs: torch.Tensor, bs: int) -> float:
    """Images/s of a batched forward on preloaded tensors."""
    with torch.inference_mode():
        t0 = time.perf_counter()
        for s in range(0, len(xs), bs):
            bb.model(xs[s : s + bs])
    return len(xs) / (time.perf_counter() - t0)


def ours(paths_dir: Path, out: Path, bs: int, **kw) -> tuple[float, object]:
    """Images/s of one ``run_batch`` job (its own seconds: open, decode, explain, write)."""
    from explainzoo.batch import run_batch

    rep = run_batch([str(paths_dir)], [BACKBONE], [METHOD], out, batch_size=bs, html=False,
                    layer=LAYER, **kw)
    return rep.images / rep.seconds, rep


def grad_cam_loop(cam, bb, paths: list[Path], bs: int) -> float:
    """Images/s of pytorch-grad-cam over the same batches, decode included."""
    from explainzoo.backbones.images import load_image

    t0 = time.perf_counter()
    for s in range(0, len(paths), bs):
        x = torch.cat([bb.preprocess(load_image(p)) for p in paths[s : s + bs]])
        cam(input_tensor=x, targets=None)
    return len(paths) / (time.perf_counter() - t0)


def per_image_loop(bb, paths: list[Path]) -> float:
    """Images/s of our ``explain`` called once per image, decode included."""
    from explainzoo.backbones.images import load_image
    from explainzoo.explainers import explain

    t0 = time.perf_counter()
    for p in paths:
        explain(METHOD, bb, bb.preprocess(load_image(p)), layer=LAYER)
    return len(paths) / (time.perf_counter() - t0)


def throughput_rounds(tmp: Path, paths: list[Path], bs: int, rounds: int, per_image_n: int) -> dict:
    """F, ours, pytorch-grad-cam and the per-image loop, interleaved over ``rounds``."""
    from pytorch_grad_cam import GradCAM

    from explainzoo.batch import JobSpec, build_backbone

    bb = build_backbone(JobSpec([], [BACKBONE], [METHOD]), BACKBONE)
    xs = preload(bb, paths)
    cam = GradCAM(model=bb.model, target_layers=[bb.module(bb.resolve_layer(LAYER))])
    # warm-up of each (imports, allocator, first-call costs), on a 16-image job
    warm = tmp / "warm"
    warm.mkdir()
    for p in paths[:bs]:
        os.link(p, warm / p.name)
    bare_forward(bb, xs[:bs], bs)
    ours(warm, tmp / "job_warm", bs, workers=1)
    grad_cam_loop(cam, bb, paths[:bs], bs)
    per_image_loop(bb, paths[:4])

    runs = {
        "F": lambda r: bare_forward(bb, xs, bs),
        "ours": lambda r: ours(tmp / "imgs", tmp / f"job{r}", bs, workers=1)[0],
        "gradcam_lib": lambda r: grad_cam_loop(cam, bb, paths, bs),
        "per_image": lambda r: per_image_loop(bb, paths[:per_image_n]),
    }
    names = list(runs)
    per_round: list[dict] = []
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        rec: dict = {"order": order, "load": {}}
        for name in order:
            before = load()
            rec[name] = runs[name](r)
            rec["load"][name] = [before, load()]
            print(f"round {r} {name}: {rec[name]:.2f} img/s (load {rec['load'][name]})", flush=True)
        rec["ours_over_F"] = rec["ours"] / rec["F"]
        rec["ours_over_gradcam_lib"] = rec["ours"] / rec["gradcam_lib"]
        rec["ours_over_per_image"] = rec["ours"] / rec["per_image"]
        per_round.append(rec)
    med = {f"{k}_img_s": statistics.median(rec[k] for rec in per_round) for k in names}
    ratios = {k: statistics.median(rec[k] for rec in per_round)
              for k in ("ours_over_F", "ours_over_gradcam_lib", "ours_over_per_image")}
    return {"rounds": per_round, **med, **ratios, "per_image_images": per_image_n, "weights": bb.weights}


def rss_child(folder: str, out: str, every: int, bs: int) -> None:
    """In a fresh process: one job over ``folder``; VmRSS every ``every`` images, as JSON."""
    from explainzoo.batch import run_batch

    marks: list[list[float]] = [[0, rss_mib()]]
    done = [0]
    nxt = [every]

    def step(k: int) -> None:
        done[0] += k
        if done[0] >= nxt[0]:
            marks.append([done[0], rss_mib()])
            nxt[0] += every

    t0 = time.perf_counter()
    rep = run_batch([folder], [BACKBONE], [METHOD], out, batch_size=bs, html=False, workers=1,
                    progress=step, layer=LAYER)
    wall = time.perf_counter() - t0
    print(json.dumps({"marks": marks, "after_all": rss_mib(), "peak": peak_rss_mib(),
                      "images": rep.images, "rows": rep.rows, "seconds": rep.seconds, "wall": wall}))


def rss_run(tmp: Path, paths: list[Path], factor: int, bs: int) -> dict:
    """RSS after the first N and after all ``factor`` x N images of one job (a subprocess)."""
    big = tmp / "big"
    big.mkdir()
    for k in range(factor):  # factor x N files: the same pixels under new names
        for p in paths:
            os.link(p, big / f"c{k}_{p.name}")
    n = len(paths)
    before = load()
    cmd = [sys.executable, "-m", "benchmarks.batch", "--rss-child", str(big), str(tmp / "job_big"),
           str(n), "--batch-size", str(bs)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True)
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["load"] = [before, load()]
    first = next(v for k, v in res["marks"] if k >= n)
    last = res["marks"][-1][1]
    res["after_first"] = first
    res["after_last_mark"] = last
    res["ratio"] = last / first
    res["max_over_first"] = max(v for k, v in res["marks"] if k >= n) / first
    return res


def ray_runs(folder: Path, tmp: Path, bs: int, rounds: int) -> dict:
    """1 and 2 actors (1 thread each) on a local 2-CPU Ray: steady rate and fixed cost.

    Each actor count runs a small job (``2 * bs`` images, so that both actors
    get work: its whole time is the cost of a job that is nearly all start-up)
    and the full job. The steady rate is the compute phase of the full job
    (the images after the first rows reach the driver, over that time), the
    fixed cost the full job's time beyond its images at that rate (actor
    start-up: a fresh Python importing torch and timm and building the
    backbone, the decode workers, the Ray Data pipeline). ``ray.init`` is timed
    apart. (Not the difference of the two jobs: start-up under contention
    varies more between them than the images cost.)
    """
    import ray

    from explainzoo.batch import run_batch

    def job(src: Path, out: Path, actors: int) -> dict:
        stamps: list[tuple[float, int]] = []
        before = load()
        t0 = time.perf_counter()
        rep = run_batch([str(src)], [BACKBONE], [METHOD], out, engine="ray", actors=actors,
                        batch_size=bs, html=False, layer=LAYER,
                        progress=lambda k: stamps.append((time.perf_counter() - t0, k)))
        total = time.perf_counter() - t0
        rec = {"actors": actors, "images": rep.images, "rows": rep.rows, "seconds": total,
               "first_rows_s": stamps[0][0] if stamps else None, "job_img_s": rep.images / total,
               "load": [before, load()]}
        if len(stamps) > 2:  # compute phase: the images after the first rows, over their time
            rec["steady_img_s"] = sum(k for _, k in stamps[1:]) / (stamps[-1][0] - stamps[0][0])
            rec["fixed_s"] = total - rep.images / rec["steady_img_s"]
        print(f"ray {actors} actor(s): {rec}", flush=True)
        return rec

    small = tmp / "ray_small"
    small.mkdir()
    for p in sorted(folder.glob("*.jpg"))[: 2 * bs]:
        os.link(p, small / p.name)
    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    out: dict = {"ray_init_s": time.perf_counter() - t0}
    try:
        node = ray.nodes()[0]["NodeManagerAddress"]
        out["ray_node_address"] = node
        if node != "127.0.0.1":
            raise SystemExit(f"Ray bound to {node}, not 127.0.0.1: stopping")
        plan = [(1, small), (2, small), (1, folder), (2, folder)]
        plan += [(a, f) for a, f in reversed(plan)] * (rounds - 1)
        out["runs"] = [dict(job(f, tmp / f"ray_{i}_{a}", a), job_kind="small" if f == small else "full")
                       for i, (a, f) in enumerate(plan)]
    finally:
        ray.shutdown()
    for a in (1, 2):
        full = [r for r in out["runs"] if r["actors"] == a and r["job_kind"] == "full"]
        small = [r for r in out["runs"] if r["actors"] == a and r["job_kind"] == "small"]
        out[f"ray_{a}_actor_steady_img_s"] = statistics.median(r["steady_img_s"] for r in full)
        out[f"ray_{a}_actor_job_img_s"] = statistics.median(r["job_img_s"] for r in full)
        out[f"ray_{a}_actor_fixed_s"] = statistics.median(r["fixed_s"] for r in full)
        out[f"ray_{a}_actor_small_job_s"] = statistics.median(r["seconds"] for r in small)
    out["ray_2_over_1"] = out["ray_2_actor_steady_img_s"] / out["ray_1_actor_steady_img_s"]
    out["ray_2_over_1_whole_job"] = out["ray_2_actor_job_img_s"] / out["ray_1_actor_job_img_s"]
    return out


def thousand(tmp: Path, n: int, bs: int) -> dict:
    """``explainzoo batch`` over ``n`` fresh images, ``--workers 1``: the whole command's wall time."""
    folder = tmp / "thousand"
    make_images(folder, n, seed=1)
    exe = Path(sys.executable).with_name("explainzoo")
    cmd = [str(exe) if exe.exists() else "explainzoo", "batch", str(folder), "-o", str(tmp / "job_thousand"),
           "-b", BACKBONE, "-m", METHOD, "-l", LAYER, "--workers", "1", "--batch-size", str(bs), "-q"]
    before = load()
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    manifest = json.loads((tmp / "job_thousand" / "manifest.json").read_text())
    return {"images": n, "command": " ".join(cmd[1:]), "wall_s": wall, "img_s": n / wall,
            "counts": manifest.get("counts"), "load": [before, load()]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the throughput figures")
    ap.add_argument("--per-image", type=int, default=None, help="images of the per-image loop (default N/2)")
    ap.add_argument("--rss-factor", type=int, default=8, help="RSS after N vs after this x N images")
    ap.add_argument("--ray-rounds", type=int, default=1)
    ap.add_argument("--thousand", type=int, default=1000, help="images of the timed CLI job (0: skip)")
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--no-rss", action="store_true")
    ap.add_argument("--no-throughput", action="store_true")
    ap.add_argument("--rss-child", nargs=3, metavar=("FOLDER", "OUT", "EVERY"), help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(Path(__file__).with_name("RESULTS_batch.json")))
    args = ap.parse_args(argv)
    if args.rss_child:
        folder, out, every = args.rss_child
        rss_child(folder, out, int(every), args.batch_size)
        return 0

    bs, n = args.batch_size, args.images
    res: dict = {"images": n, "batch_size": bs, "threads": torch.get_num_threads(),
                 "cpus": os.cpu_count(), "torch": torch.__version__, "load_start": load(),
                 "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    outp = Path(args.out)

    def save() -> None:
        outp.write_text(json.dumps(res, indent=1))

    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        paths = make_images(tmp / "imgs", n)
        if not args.no_throughput:
            res.update(throughput_rounds(tmp, paths, bs, args.rounds, args.per_image or max(16, n // 2)))
            save()
        if not args.no_rss:
            res["rss"] = rss_run(tmp, paths, args.rss_factor, bs)
            res["rss_ratio"] = res["rss"]["ratio"]
            print(json.dumps(res["rss"]), flush=True)
            save()
        if not args.no_ray:
            res["ray"] = ray_runs(tmp / "imgs", tmp, bs, args.ray_rounds)
            save()
        if args.thousand:
            res["thousand"] = thousand(tmp, args.thousand, bs)
            print(json.dumps(res["thousand"]), flush=True)
    res["load_end"] = load()
    res["total_s"] = time.perf_counter() - t_all
    save()
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
