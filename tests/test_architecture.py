"""Dependencies flow demo -> explainers -> backbones only; the core has no PIL/matplotlib."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"backbones": 0, "explainers": 1, "demo": 2}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


@pytest.mark.parametrize("folder", list(LAYERS))
def test_no_upward_imports(folder):
    files = sorted((ROOT / folder).glob("*.py"))
    assert files
    for f in files:
        for mod in _imports(f):
            parts = mod.split(".")
            if parts[0] == "explainzoo" and len(parts) > 1 and parts[1] in LAYERS:
                assert LAYERS[parts[1]] <= LAYERS[folder], f"{f.name} imports {mod}"


def test_core_is_tensors_only():
    for folder in ("backbones", "explainers"):
        for f in (ROOT / folder).glob("*.py"):
            if f.name == "render.py":
                continue
            mods = _imports(f)
            assert not any(m.split(".")[0] in ("PIL", "matplotlib", "gradio") for m in mods), f


def test_wheel_contains_the_three_packages_and_entry_points(tmp_path):
    import subprocess
    import sys
    import zipfile

    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        check=True,
    )
    (wheel,) = tmp_path.glob("explainzoo-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for pkg in ("backbones", "explainers", "demo"):
        assert f"explainzoo/{pkg}/__init__.py" in names
    eps = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(eps).decode()
    assert "[explainzoo.explainers]" in text and "gradcam = explainzoo.explainers.cam:GradCAM" in text
    assert "[explainzoo.backbones]" in text and "explainzoo = explainzoo.demo.cli:main" in text
