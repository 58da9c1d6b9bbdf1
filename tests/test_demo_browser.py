"""A real browser on the served app: the landing result, one upload for every tab, readable maps.

``EXPLAINZOO_SCREENSHOTS=1`` (``make screenshots``) also saves the pages into
``docs/img/`` for the README.

Headless Chromium (Debian's ``chromium``, which ``make test`` installs when run
as root; or one Playwright installed) driven with the ``playwright`` package.
Skipped, saying why, only when no Chromium can be found.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "demo" / "examples"
SHOTS = ROOT / "docs" / "img"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _find_chromium() -> str | None:
    """A Chromium executable: $CHROMIUM, the system one, or Playwright's own."""
    for candidate in (
        os.environ.get("CHROMIUM"),
        shutil.which("chromium"),
        shutil.which("chromium-browser"),
        "/usr/bin/chromium",
    ):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    try:
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            bundled = p.chromium.executable_path
    except Exception:  # noqa: BLE001 - any failure here just means "no bundled browser"
        return None
    return bundled if bundled and Path(bundled).is_file() else None


pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
CHROMIUM = _find_chromium()
pytestmark = [
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="no Chromium found (install Debian's `chromium`, e.g. `make test` as root, or set $CHROMIUM)",
    ),
    # gradio's queue calls a pandas option that pandas 3 deprecates (not our code)
    pytest.mark.filterwarnings(
        "ignore:.*no_silent_downcasting:DeprecationWarning",
        "ignore:The copy keyword is deprecated:DeprecationWarning",
    ),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    from explainzoo.demo.app import build_demo, serve
    from explainzoo.demo.service import DemoService

    demo = build_demo(DemoService(["timm:tf_efficientnet_lite0"]))
    port = _free_port()
    serve(demo, "127.0.0.1", port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()


def _shot(locator, name: str) -> None:
    """Save a screenshot of ``locator`` (a page or an element) into docs/img/ when asked to."""
    if os.environ.get("EXPLAINZOO_SCREENSHOTS") == "1":
        SHOTS.mkdir(parents=True, exist_ok=True)
        kwargs = {"full_page": True} if hasattr(locator, "goto") else {}
        locator.screenshot(path=str(SHOTS / name), **kwargs)


@pytest.fixture
def page(url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(url, wait_until="domcontentloaded", timeout=60_000)
            page.locator("#explain-button").wait_for(state="visible", timeout=60_000)
            yield page
        finally:
            browser.close()


def _loaded(page, selector: str, timeout: int = 120_000) -> None:
    """Wait until the first <img> under ``selector`` has been decoded."""
    page.locator(f"{selector} img").first.wait_for(state="visible", timeout=timeout)
    page.wait_for_function(
        "(s) => { const i = document.querySelector(s + ' img'); return i && i.complete && i.naturalWidth > 0; }",
        arg=selector,
        timeout=60_000,
    )


def _colours(path: Path) -> np.ndarray:
    arr = np.asarray(Image.open(path).convert("RGB")).astype(float)
    assert min(arr.shape[:2]) >= 100
    assert arr.std() > 20, "the overlay is blank"
    return arr


def test_the_landing_page_shows_an_explained_example(page, tmp_path):
    # nothing clicked: the example and its explanation are there on arrival
    _loaded(page, "#image")
    _loaded(page, "#explain-overlay")
    _loaded(page, "#explain-raw")
    info = page.locator("#explain-info")
    info.get_by_text("Class explained").wait_for(timeout=30_000)
    assert "bn2" in info.inner_text() and "How to read it" in info.inner_text()
    assert page.locator("#explain-files").get_by_text(".npy").count() >= 1
    assert page.locator("#explain-files").get_by_text("overlay").count() >= 1
    natural = page.evaluate("() => document.querySelector('#explain-overlay img').naturalWidth")
    assert natural == 224
    page.locator("#explain-overlay img").first.screenshot(path=str(tmp_path / "overlay.png"))
    _colours(tmp_path / "overlay.png")
    page.wait_for_timeout(500)  # let the fonts and the label bars settle
    _shot(page, "landing.png")


def _run_tab(page, tab: str, button: str) -> None:
    page.get_by_role("tab", name=tab).click()
    page.locator(button).click()


def test_one_upload_reaches_every_tab(page, tmp_path):
    shot = tmp_path / "explain.png"
    overlay_shot = tmp_path / "overlay.png"
    page.locator("#image input[type=file]").set_input_files(str(EXAMPLES / "coffee.jpg"))
    _loaded(page, "#image")

    page.locator("#explain-button").click()
    page.locator("#explain-info").get_by_text("espresso").first.wait_for(timeout=120_000)
    _loaded(page, "#explain-overlay")
    page.locator("#explain-info").get_by_text("bn2").wait_for(timeout=30_000)
    natural = page.evaluate("() => document.querySelector('#explain-overlay img').naturalWidth")
    page.screenshot(path=str(shot), full_page=True)
    page.locator("#explain-overlay img").first.screenshot(path=str(overlay_shot))
    assert natural == 224
    assert shot.stat().st_size > 10_000
    arr = _colours(overlay_shot)
    # the jet colormap is there: strongly red and strongly blue pixels both occur
    red = (arr[..., 0] > 180) & (arr[..., 2] < 90)
    blue = (arr[..., 2] > 150) & (arr[..., 0] < 90)
    assert red.mean() > 0.005 and blue.mean() > 0.005

    # the same image, never uploaded again, reaches every other tab that reads one
    _run_tab(page, "Compare backbones", "#cb-button")
    page.locator("#cb-notes").get_by_text("espresso").first.wait_for(timeout=180_000)
    _loaded(page, "#compare-gallery")
    _run_tab(page, "Compare explainers", "#ce-button")
    page.locator("#ce-notes").get_by_text("class espresso").first.wait_for(timeout=180_000)
    page.wait_for_timeout(500)
    _shot(page, "compare-explainers.png")
    _run_tab(page, "Evaluate", "#ev-button")
    page.locator("#ev-notes").get_by_text("deletion / insertion steps").wait_for(timeout=300_000)
    _run_tab(page, "Activations", "#ac-button")
    page.locator("#ac-caption").get_by_text("channels of").wait_for(timeout=120_000)
    _loaded(page, "#ac-grid")
    assert page.locator(".toast-body.error, .toast-wrap .error").count() == 0


def _explain_saliency(page, clip: str, name: str, tmp_path: Path) -> np.ndarray:
    page.locator("#explain-clip input[type=number]").fill(clip)
    page.locator("#explain-clip input[type=number]").press("Enter")
    before = page.locator("#explain-info").inner_text()
    page.locator("#explain-button").click()
    page.wait_for_function(
        "(b) => { const t = document.querySelector('#explain-info').innerText;"
        " return t !== b && t.includes('saliency on'); }",
        arg=before,
        timeout=120_000,
    )
    _loaded(page, "#explain-overlay")
    page.wait_for_timeout(500)
    path = tmp_path / name
    page.locator("#explain-overlay img").first.screenshot(path=str(path))
    _shot(page.locator("#explain-overlay").locator("xpath=..").first, name)
    return np.asarray(Image.open(path).convert("RGB")).astype(float)


def test_a_saliency_map_is_clipped_to_be_readable(page, tmp_path):
    method = page.locator("#explain-method input")
    method.click()
    method.fill("saliency")
    page.get_by_role("option", name="saliency", exact=True).click()
    page.get_by_text("Colormap, opacity, clipping, options").click()
    page.locator("#explain-clip input[type=number]").wait_for(state="visible", timeout=30_000)
    raw = _explain_saliency(page, "0", "saliency-unclipped.png", tmp_path)
    clipped = _explain_saliency(page, "2", "saliency-clipped.png", tmp_path)
    assert "Clipped" in page.locator("#explain-info").inner_text()
    # jet: the map's low end is dark blue; clipping lifts most of the cat out of it
    hot = lambda a: ((a[..., 0] > 150) | (a[..., 1] > 150)).mean()  # noqa: E731 - red/yellow/green pixels
    assert hot(clipped) > hot(raw) + 0.05, (hot(raw), hot(clipped))
