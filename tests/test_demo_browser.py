"""A real browser on the served app: upload a photo, click Explain, see the overlay.

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

EXAMPLES = Path(__file__).resolve().parents[1] / "demo" / "examples"
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


def test_upload_explain_and_see_the_overlay(url, tmp_path):
    from playwright.sync_api import sync_playwright

    shot = tmp_path / "explain.png"
    overlay_shot = tmp_path / "overlay.png"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.goto(url, wait_until="domcontentloaded", timeout=60_000)
            page.locator("#explain-button").wait_for(state="visible", timeout=60_000)

            page.locator("#ex-image input[type=file]").set_input_files(str(EXAMPLES / "chelsea.jpg"))
            page.locator("#ex-image img").first.wait_for(state="visible", timeout=60_000)

            page.locator("#explain-button").click()
            overlay = page.locator("#explain-overlay img").first
            overlay.wait_for(state="visible", timeout=120_000)
            page.wait_for_function(
                "() => { const i = document.querySelector('#explain-overlay img');"
                " return i && i.complete && i.naturalWidth > 0; }",
                timeout=60_000,
            )
            page.locator("#explain-info").get_by_text("bn2").wait_for(timeout=30_000)
            natural = page.evaluate("() => document.querySelector('#explain-overlay img').naturalWidth")
            page.screenshot(path=str(shot), full_page=True)
            overlay.screenshot(path=str(overlay_shot))
        finally:
            browser.close()

    assert natural == 224
    assert shot.stat().st_size > 10_000
    arr = np.asarray(Image.open(overlay_shot).convert("RGB")).astype(float)
    assert min(arr.shape[:2]) >= 100
    assert arr.std() > 20, "the overlay is blank"
    # the jet colormap is there: strongly red and strongly blue pixels both occur
    red = (arr[..., 0] > 180) & (arr[..., 2] < 90)
    blue = (arr[..., 2] > 150) & (arr[..., 0] < 90)
    assert red.mean() > 0.005 and blue.mean() > 0.005
