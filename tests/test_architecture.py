"""The repo root is the architecture: one-way dependencies, small modules and functions.

Dependencies flow demo -> batch -> explainers -> backbones only; the core has no
PIL/matplotlib (except rendering and the image decoder); no module is over 500
lines and no function over 80 lines outside tests.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"backbones": 0, "explainers": 1, "batch": 2, "demo": 3}
#: Folders whose size the limits below apply to (tests are exempt).
SOURCE_FOLDERS = ("backbones", "explainers", "batch", "demo", "benchmarks")
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80
#: Core modules that may use PIL: rendering, and the decoder of untrusted files.
PIL_ALLOWED = {"explainers/render.py", "backbones/images.py", "backbones/preprocess.py"}


def _sources(folder: str) -> list[Path]:
    return sorted(p for p in (ROOT / folder).rglob("*.py") if "__pycache__" not in p.parts)


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
    files = _sources(folder)
    if not files and folder == "batch":
        pytest.skip("no batch/ package yet")
    assert files
    for f in files:
        for mod in _imports(f):
            parts = mod.split(".")
            if parts[0] == "explainzoo" and len(parts) > 1 and parts[1] in LAYERS:
                assert LAYERS[parts[1]] <= LAYERS[folder], f"{f.relative_to(ROOT)} imports {mod}"


def test_core_is_tensors_only():
    for folder in ("backbones", "explainers"):
        for f in _sources(folder):
            if str(f.relative_to(ROOT)) in PIL_ALLOWED:
                continue
            mods = _imports(f)
            assert not any(m.split(".")[0] in ("PIL", "matplotlib", "gradio") for m in mods), f


def _long_functions(path: Path, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                out.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({length} lines)")
    return out


def test_modules_and_functions_are_small():
    too_long, functions = [], []
    for folder in SOURCE_FOLDERS:
        for f in _sources(folder):
            n = len(f.read_text().splitlines())
            if n > MAX_MODULE_LINES:
                too_long.append(f"{f.relative_to(ROOT)} ({n} lines)")
            functions += _long_functions(f)
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines: {too_long}"
    assert not functions, f"functions over {MAX_FUNCTION_LINES} lines: {functions}"


def test_the_limits_test_can_fail(tmp_path):
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    (tmp_path / "m.py").write_text(f"def f():\n{body}\n")
    assert _long_functions(tmp_path / "m.py", tmp_path) == [f"m.py:1 f ({MAX_FUNCTION_LINES + 1} lines)"]


def test_wheel_contains_the_packages_and_entry_points(tmp_path):
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
    # every subpackage of the source tree ships (a missing [tool.setuptools] packages entry would drop it)
    for folder in SOURCE_FOLDERS[:-1]:
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.relative_to(ROOT / folder).as_posix()
            assert f"explainzoo/{folder}/{rel}" in names, f"{folder}/{rel} is not in the wheel"
    eps = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(eps).decode()
    assert "[explainzoo.explainers]" in text and "gradcam = explainzoo.explainers.cam:GradCAM" in text
    assert "[explainzoo.backbones]" in text and "explainzoo = explainzoo.demo.cli:main" in text
