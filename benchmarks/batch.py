"""``make bench-batch``: dataset-job throughput, measured side by side in one run.

Grad-CAM on EfficientNet-Lite0 (offline ImageNet weights) at 224, CPU, on N
images (default 256: the bundled photos under crops, flips and resizes):

* ours end to end (decode + explain + write, ``--workers 1``) against a bare
  batched forward ``F`` on preloaded tensors at the same batch size;
* against a plain loop of pytorch-grad-cam over the same batches (decode included);
* against our own per-image ``explain`` loop;
* RSS after N and after 8N images of one job (flat memory);
* the Ray engine with 1 and 2 actors at 1 thread each, and its fixed start-up cost.

Usage: ``python -m benchmarks.batch [--images 256] [--batch-size 16] [--no-ray] [--no-rss]
[--out benchmarks/RESULTS_batch.json]``. Never a timed unit test.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import torch  # noqa: E402

BACKBONE, METHOD, LAYER = "timm:tf_efficientnet_lite0", "gradcam", "last"


def rss_mib() -> float:
    """Resident set size of this process, MiB (Linux /proc)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def make_images(folder: Path, n: int) -> list[Path]:
    """``n`` JPEGs from the bundled photos: random crops, flips and resizes (seeded)."""
    import random

    from PIL import Image, ImageOps

    src = sorted((Path(__file__).resolve().parents[1] / "demo" / "examples").glob("*.jpg"))
    if not src:  # pragma: no cover - the repo ships them
        raise SystemExit("no bundled photos in demo/examples")
    rng = random.Random(0)
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


def bare_forward(bb, paths: list[Path], bs: int) -> float:
    """Images/s of a batched forward on preloaded tensors."""
    from explainzoo.backbones.images import load_image

    xs = torch.cat([bb.preprocess(load_image(p)) for p in paths])
    with torch.inference_mode():
        bb.model(xs[:bs])  # warm-up
        t0 = time.perf_counter()
        for s in range(0, len(xs), bs):
            bb.model(xs[s : s + bs])
    return len(xs) / (time.perf_counter() - t0)


def ours(paths_dir: Path, out: Path, bs: int, **kw) -> tuple[float, object]:
    from explainzoo.batch import run_batch

    rep = run_batch([str(paths_dir)], [BACKBONE], [METHOD], out, batch_size=bs, html=False,
                    layer=LAYER, **kw)
    return rep.images / rep.seconds, rep


def grad_cam_loop(bb, paths: list[Path], bs: int) -> float:
    """Images/s of pytorch-grad-cam over the same batches, decode included."""
    from pytorch_grad_cam import GradCAM

    from explainzoo.backbones.images import load_image

    layer = bb.module(bb.resolve_layer(LAYER))
    cam = GradCAM(model=bb.model, target_layers=[layer])
    t0 = time.perf_counter()
    for s in range(0, len(paths), bs):
        x = torch.cat([bb.preprocess(load_image(p)) for p in paths[s : s + bs]])
        cam(input_tensor=x, targets=None)
    return len(paths) / (time.perf_counter() - t0)


def per_image_loop(bb, paths: list[Path]) -> float:
    from explainzoo.backbones.images import load_image
    from explainzoo.explainers import explain

    t0 = time.perf_counter()
    for p in paths:
        explain(METHOD, bb, bb.preprocess(load_image(p)), layer=LAYER)
    return len(paths) / (time.perf_counter() - t0)


def rss_run(folder: Path, out: Path, n: int, bs: int) -> dict[str, float]:
    """RSS after the first ``n`` and after all images of one job."""
    from explainzoo.batch import run_batch

    marks: dict[str, float] = {}
    done = [0]

    def step(k: int) -> None:
        done[0] += k
        if "after_first" not in marks and done[0] >= n:
            marks["after_first"] = rss_mib()

    rep = run_batch([str(folder)], [BACKBONE], [METHOD], out, batch_size=bs, html=False, workers=1,
                    progress=step, layer=LAYER)
    marks["after_all"] = rss_mib()
    marks["images"] = rep.images
    marks["seconds"] = rep.seconds
    return marks


def ray_runs(folder: Path, tmp: Path, bs: int) -> dict[str, float]:
    import ray

    from explainzoo.batch import run_batch

    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    init_s = time.perf_counter() - t0
    out: dict[str, float] = {"ray_init_s": init_s}
    try:
        tiny = tmp / "tiny"
        tiny.mkdir()
        for p in sorted(folder.glob("*.jpg"))[:2]:
            (tiny / p.name).write_bytes(p.read_bytes())
        rep = run_batch([str(tiny)], [BACKBONE], [METHOD], tmp / "ray_tiny", engine="ray", actors=1,
                        batch_size=bs, html=False, layer=LAYER)
        out["ray_fixed_s"] = init_s + rep.seconds
        for actors in (1, 2):
            rep = run_batch([str(folder)], [BACKBONE], [METHOD], tmp / f"ray{actors}", engine="ray",
                            actors=actors, batch_size=bs, html=False, layer=LAYER)
            out[f"ray_{actors}_actor_img_s"] = rep.images / rep.seconds
    finally:
        ray.shutdown()
    out["ray_2_over_1"] = out["ray_2_actor_img_s"] / out["ray_1_actor_img_s"]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--no-ray", action="store_true")
    ap.add_argument("--no-rss", action="store_true")
    ap.add_argument("--out", default=str(Path(__file__).with_name("RESULTS_batch.json")))
    args = ap.parse_args(argv)
    from explainzoo.batch import JobSpec, build_backbone

    bs, n = args.batch_size, args.images
    res: dict[str, object] = {"images": n, "batch_size": bs, "threads": torch.get_num_threads(),
                              "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        paths = make_images(tmp / "imgs", n)
        bb = build_backbone(JobSpec([], [BACKBONE], [METHOD]), BACKBONE)
        res["weights"] = bb.weights
        res["F_img_s"] = bare_forward(bb, paths, bs)
        res["ours_img_s"], _ = ours(tmp / "imgs", tmp / "job", bs, workers=1)
        res["gradcam_lib_img_s"] = grad_cam_loop(bb, paths, bs)
        res["per_image_img_s"] = per_image_loop(bb, paths[: max(16, n // 4)])
        res["ours_over_F"] = res["ours_img_s"] / res["F_img_s"]
        res["ours_over_gradcam_lib"] = res["ours_img_s"] / res["gradcam_lib_img_s"]
        res["ours_over_per_image"] = res["ours_img_s"] / res["per_image_img_s"]
        print(json.dumps(res, indent=1), flush=True)
        if not args.no_rss:
            big = tmp / "big"
            big.mkdir()
            for k in range(8):  # 8n files: the same pixels under new names
                for p in paths:
                    os.link(p, big / f"c{k}_{p.name}")
            res["rss"] = rss_run(big, tmp / "job_big", n, bs)
            res["rss_ratio"] = res["rss"]["after_all"] / res["rss"]["after_first"]
            res["seconds_per_1000_images"] = 1000 * res["rss"]["seconds"] / res["rss"]["images"]
            print(json.dumps(res["rss"], indent=1), flush=True)
        if not args.no_ray:
            res.update(ray_runs(tmp / "imgs", tmp, bs))
    Path(args.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
