"""docs/plugins.md: every ```python block runs, in order, in one namespace, in a temporary folder.

The page's pytest functions (``test_*`` decorated with ``parametrize_with_checks``)
are then run over their parameters, and its TOML blocks must parse and name
entry-point groups explainzoo reads.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "plugins.md"
GROUPS = ("explainzoo.explainers", "explainzoo.backbones", "explainzoo.backbone_families")


def _blocks(lang: str) -> list[tuple[int, str]]:
    """(line number, code) of every fenced block in ``lang``."""
    text = DOC.read_text(encoding="utf-8")
    out = []
    for m in re.finditer(rf"^```{lang}\n(.*?)^```$", text, flags=re.S | re.M):
        out.append((text.count("\n", 0, m.start()) + 2, m.group(1)))
    return out


def test_every_python_block_runs(tmp_path, monkeypatch):
    blocks = _blocks("python")
    assert len(blocks) >= 8
    monkeypatch.chdir(tmp_path)
    ns: dict = {"__name__": "docs_plugins"}
    for line, code in blocks:
        try:
            exec(compile(code, f"{DOC}:{line}", "exec"), ns)  # the docs are ours
        except Exception as exc:
            pytest.fail(f"docs/plugins.md block at line {line} failed: {type(exc).__name__}: {exc}")
    tests = [v for k, v in ns.items() if k.startswith("test_") and callable(v)]
    assert tests, "the page shows a pytest function using parametrize_with_checks"
    for fn in tests:
        (mark,) = [m for m in getattr(fn, "pytestmark", []) if m.name == "parametrize"]
        for params in mark.args[1]:
            fn(*params)
    assert (tmp_path / "wide16.pt").exists()  # the blocks ran in the temporary folder


def test_toml_blocks_parse_and_name_real_groups():
    tomllib = pytest.importorskip("tomllib")
    blocks = _blocks("toml")
    assert blocks
    for line, code in blocks:
        data = tomllib.loads(code)
        for group in data["project"]["entry-points"]:
            assert group in GROUPS, (line, group)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    assert set(GROUPS) <= set(project), "explainzoo registers its own built-ins in every group"
