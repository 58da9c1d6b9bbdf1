"""`explainzoo evaluate`: a self-contained HTML report and a CSV of the numbers."""

from __future__ import annotations

import csv

import pytest
from PIL import Image

from explainzoo.demo.cli import main


@pytest.fixture()
def cat_png(tmp_path, chelsea):
    path = tmp_path / "chelsea.png"
    Image.fromarray(chelsea).resize((225, 150)).save(path)
    return path


@pytest.mark.slow
def test_evaluate_writes_html_and_csv(tmp_path, cat_png, capsys):
    out = tmp_path / "report"
    rc = main([
        "evaluate", str(cat_png), "-b", "timm:tf_efficientnet_lite0", "-m", "gradcam,saliency",
        "--steps", "4", "--sanity-steps", "2", "--trials", "1", "--box", "40,10,200,150",
        "-o", str(out), "-q",
    ])
    assert rc == 0
    html = (out / "report.html").read_text(encoding="utf-8")
    rows = list(csv.DictReader((out / "metrics.csv").open(encoding="utf-8")))
    assert [r["explainer"] for r in rows] == ["gradcam", "saliency", "random"]
    for r in rows:
        assert r["error"] == ""
        for key in ("deletion_auc", "insertion_auc", "sanity_spearman", "sanity_ssim", "pointing"):
            assert 0.0 <= abs(float(r[key])) <= 1.0
    gradcam = rows[0]
    assert f"{float(gradcam['deletion_auc']):.3f}" in html
    assert f"{float(gradcam['insertion_auc']):.3f}" in html
    assert "data:image/png;base64," in html and "random" in html
    assert "src='http" not in html  # self-contained
    printed = capsys.readouterr().out
    assert "gradcam" in printed and "report.html" in printed


def test_evaluate_rejects_a_bad_box(tmp_path, cat_png, capsys):
    rc = main(["evaluate", str(cat_png), "--box", "1,2,3", "-o", str(tmp_path / "r"), "-q"])
    assert rc == 2
    assert "--box" in capsys.readouterr().err


def test_evaluate_one_gives_rows_and_a_figure():
    """The demo's piece, on a tiny hand-built net (no pretrained weights needed)."""
    import numpy as np

    from explainzoo.backbones import Backbone, Preprocessing
    from explainzoo.demo.report import evaluate_one, faithfulness_caption
    from explainzoo.explainers import explain

    from .test_metrics import RegionNet

    bb = Backbone(
        "region", RegionNet(), Preprocessing(input_size=(16, 16), crop_pct=1.0), ["region", "other"],
        aliases={"conv1": "features", "last": "features"},
    )
    image = (np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)
    rows, fig = evaluate_one(image, [bb], ["saliency"], steps=1000, sanity_steps=1)
    assert [r["explainer"] for r in rows] == ["saliency", "random"]
    assert all(r["errors"] == "" and r["deletion_auc"] is not None for r in rows)
    assert fig.size[0] > 100 and fig.mode == "RGB"
    again, _ = evaluate_one(image, [bb], ["saliency"], steps=1000, sanity_steps=1)
    assert again == rows
    x = bb.preprocess(image)
    caption = faithfulness_caption(bb, x, explain("saliency", bb, x), steps=4)
    assert caption.startswith("deletion AUC ") and "random" in caption


def test_evaluate_over_a_folder_runs_as_a_job_and_resumes(tmp_path, monkeypatch, capsys):
    """A folder (ImageFolder, one corrupt file) -> rows for every image; a rerun explains nothing again."""
    pytest.importorskip("pyarrow")
    from explainzoo.batch import load_results
    from explainzoo.explainers.base import Explainer

    from .test_batch import make_photos

    photos = make_photos(tmp_path / "photos")
    out = tmp_path / "report"
    argv = ["evaluate", str(photos), "-b", "timm:resnet18", "--random-init", "--image-size", "64",
            "-m", "gradcam,saliency", "--steps", "3", "--sanity-steps", "1", "--trials", "2",
            "--box", "10,5,80,60", "--workers", "0", "-o", str(out), "-q"]
    assert main(argv) == 0
    rows = list(csv.DictReader((out / "metrics.csv").open(encoding="utf-8")))
    names = list(dict.fromkeys(r["image"] for r in rows))
    assert names == ["cat/astronaut.png", "cat/chelsea.jpg", "cup/broken.jpg", "cup/coffee.jpg", "cup/rocket.jpg"]
    assert [r["explainer"] for r in rows] == ["gradcam", "saliency", "random"] * 5
    for r in rows:
        if r["image"] == "cup/broken.jpg":
            assert r["error"] and r["deletion_auc"] == ""
            continue
        assert r["error"] == ""
        assert 0.0 <= float(r["deletion_auc"]) <= 1.0 and 0.0 <= float(r["insertion_auc"]) <= 1.0
        assert float(r["pointing"]) in (0.0, 0.5, 1.0)
        # the costly sanity check: the first image only (the default --sanity-images 1)
        assert (r["sanity_spearman"] != "") == (r["image"] == "cat/astronaut.png")
    job = load_results(out / "job")
    assert len(job) == 10 and job.manifest["spec"]["metrics"] == ["deletion", "insertion", "pointing"]
    gradcam = job.frame[(job.frame["method"] == "gradcam") & job.frame["error"].isna()]
    by_image = {r["image"]: r for r in rows if r["explainer"] == "gradcam"}
    for _, rec in gradcam.iterrows():  # the report's numbers are the job's
        assert float(by_image[rec["relpath"]]["deletion_auc"]) == pytest.approx(rec["deletion_auc"])
    first_csv = (out / "metrics.csv").read_text(encoding="utf-8")

    calls: list[str] = []
    explain = Explainer.explain

    def counting(self, *args, **kwargs):
        calls.append(type(self).__name__)
        return explain(self, *args, **kwargs)

    monkeypatch.setattr(Explainer, "explain", counting)
    assert main(argv) == 0
    assert calls == []  # every row and every sanity number came from OUT
    assert (out / "metrics.csv").read_text(encoding="utf-8") == first_csv
    manifest = load_results(out / "job").manifest
    assert len(manifest["runs"]) == 2 and manifest["runs"][-1]["rows_written"] == 0
    # another job in the same OUT is refused, in one line
    capsys.readouterr()
    assert main([*argv[:-3], "--steps", "5", "-o", str(out), "-q"]) == 2
    err = capsys.readouterr().err
    assert "different job" in err and "metric_steps" in err and err.count("\n") == 1
