"""The example plugin (examples/explainzoo-example-plugin) installed, tested with the kit and listed.

The plugin goes into a throwaway venv layered over this one (a ``.pth`` file
adds this venv's site-packages, so explainzoo and torch are not reinstalled),
never into the project venv itself: tests running next to this one never see
it come and go. In that venv the plugin's own pytest runs (it uses the
contract kit), ``explainzoo list`` shows both of its entries, and afterwards
it is uninstalled and the venv removed.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ROOT / "examples" / "explainzoo-example-plugin"
DIST = "explainzoo-example-plugin"


def _run(*args: str | Path, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kw)


@pytest.fixture(scope="module")
def plugin_python(tmp_path_factory):
    """A python whose environment has the example plugin installed (editable)."""
    env_dir = tmp_path_factory.mktemp("plugin-venv") / "venv"
    venv.EnvBuilder(with_pip=False, symlinks=os.name != "nt").create(env_dir)
    py = env_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = _run(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    # processed at start-up: this venv's site dir, with its own .pth files (explainzoo's editable finder)
    lines = [f"import site; site.addsitedir({d!r})" for d in site.getsitepackages()]
    Path(purelib, "_explainzoo_project_venv.pth").write_text("\n".join(lines) + "\n")
    pip = [sys.executable, "-m", "pip", "--python", py, "--disable-pip-version-check", "-q"]
    shutil.rmtree(PLUGIN / "src" / "explainzoo_example_plugin.egg-info", ignore_errors=True)
    done = _run(*pip, "install", "--no-deps", "--no-build-isolation", "-e", PLUGIN, timeout=300)
    assert done.returncode == 0, done.stderr
    try:
        yield py
    finally:
        _run(*pip, "uninstall", "-y", DIST)
        shutil.rmtree(PLUGIN / "src" / "explainzoo_example_plugin.egg-info", ignore_errors=True)
        shutil.rmtree(PLUGIN / "build", ignore_errors=True)
        shutil.rmtree(env_dir, ignore_errors=True)


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env.update(HF_HUB_OFFLINE="1", OMP_WAIT_POLICY="PASSIVE", PYTHONDONTWRITEBYTECODE="1")
    return env


def test_plugin_own_tests_pass_with_the_kit(plugin_python):
    out = _run(plugin_python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests",
               cwd=PLUGIN, env=_env(), timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert " passed" in out.stdout and "failed" not in out.stdout and "skipped" not in out.stdout


def test_plugin_listed_by_the_cli(plugin_python):
    # `explainzoo list explainers` then `explainzoo list backbones 'tinynet:*'`, in one process (one torch import)
    code = ("from explainzoo.demo.cli import main; "
            "main(['list', 'explainers']); print('--'); main(['list', 'backbones', 'tinynet:*'])")
    out = _run(plugin_python, "-c", code, env=_env())
    assert out.returncode == 0, out.stderr
    explainers, backbones = out.stdout.split("\n--\n")
    line = next(ln for ln in explainers.splitlines() if ln.startswith("gradcam_elementwise "))
    assert "ReLU(gradient x activation)" in line
    broken = [ln for ln in out.stdout.splitlines() if ln.startswith("BROKEN")]
    assert not [ln for ln in broken if "example" in ln or "tinynet" in ln], broken
    assert {"tinynet:4", "tinynet:8", "tinynet:64"} <= set(backbones.split())


def test_this_venv_is_untouched(plugin_python):
    from explainzoo.explainers import list_explainers

    assert "gradcam_elementwise" not in list_explainers()
