"""The Gradio app: the tabs of ``demo/tabs/`` wired to :class:`~explainzoo.demo.service.DemoService`.

``build_demo(service)`` only assembles: the one image of the whole app
above the tabs, then each tab module (``demo/tabs/*.py``), which owns its
layout, handlers and events; the logic is in the gradio-free service, the
hosting policy in ``demo/policy.py``, the plugin allowlist in
``demo/allowlist.py``. The page opens with an example already explained
(:func:`landing_result`: computed once, when the app is built, and set as
the Explain tab's initial outputs, not recomputed per page load). Library errors a person can
fix (:class:`~explainzoo.backbones.ExplainzooError`) become ``gr.Error`` messages.

Safe to host publicly (see :func:`serve`): the library's image loader decodes
uploads (Gradio never does), ``max_file_size`` is set, the queue is bounded and
every model-running event shares one concurrency group, uploads older than an
hour are deleted, result PNGs go to a private ``mkdtemp`` folder, and there is
no ``share=True``, no ``allowed_paths`` and no flagging. Every endpoint checks
its inputs server-side (the library validates, the policy caps).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import gradio as gr

from explainzoo.backbones import ExplainzooError
from explainzoo.backbones.images import MAX_FILE_BYTES

from .allowlist import refused_notice, restrict_plugins
from .exposure import lock_down, queue_cancel_token
from .files import CACHE_TTL_S, example_images, png_file, uploaded_image
from .memory import limit_arenas
from .results import ExplainResult
from .service import DemoService, configure_offline_hub
from .tabs import CONCURRENCY_ID, TABS, TabContext
from .tabs.common import shared_image

__all__ = [
    "CONCURRENCY_ID",
    "build_demo",
    "example_images",
    "landing_result",
    "launch",
    "png_file",
    "serve",
    "uploaded_image",
]

logger = logging.getLogger(__name__)


def landing_result(service: DemoService, examples: list[str]) -> ExplainResult | None:
    """The explanation the page opens with: the first example, default backbone and method.

    None (an empty Explain tab) when there is no example or it cannot be
    explained; the reason is logged, the app still starts.
    """
    if not examples:
        return None
    names = service.explainer_names("map")
    method = "gradcam" if "gradcam" in names else (names[0] if names else None)
    if method is None:
        return None
    try:
        return service.explain(examples[0], service.default_backbone, method)
    except ExplainzooError as exc:
        logger.warning("no landing explanation: %s", exc)
        return None


def build_demo(service: DemoService, *, concurrency_limit: int = 2, landing: bool = True) -> gr.Blocks:
    """The Blocks app: the shared image, then one tab per module of
    :data:`~explainzoo.demo.tabs.TABS` (does not launch it).

    Args:
        service: the gradio-free logic; its default backbone is loaded here
            (the layer and class choices come from it).
        concurrency_limit: how many model-running events run at once (they all
            share the concurrency group :data:`CONCURRENCY_ID`).
        landing: open with the first example explained (:func:`landing_result`,
            computed here, once).
    """
    service.cancel_token = queue_cancel_token  # a request whose client has gone is cancelled
    ctx = TabContext(service, concurrency_limit)
    if landing:
        ctx.landing = landing_result(service, ctx.examples)
    with gr.Blocks(title="explainzoo", analytics_enabled=False, delete_cache=(CACHE_TTL_S, CACHE_TTL_S)) as demo:
        gr.Markdown(
            "# explainzoo\nSee what an image classifier sees: saliency and class activation maps, "
            "filters and activations, on any backbone of the zoo. Example photos: scikit-image "
            "sample data (CC0 / public domain)."
        )
        broken = service.broken_plugins()
        if broken:
            gr.Markdown(
                "Some explainer plugins failed to load and are hidden: "
                + "; ".join(f"`{k}` ({v})" for k, v in broken.items())
            )
        shared_image(ctx)
        for tab in TABS:
            with gr.Tab(tab.TITLE):
                tab.build(ctx)
    return demo


def serve(
    demo: gr.Blocks,
    host: str = "127.0.0.1",
    port: int = 7860,
    *,
    queue_size: int = 64,
    concurrency_limit: int = 2,
    prevent_thread_lock: bool = False,
    quiet: bool = False,
) -> gr.Blocks:
    """Queue and launch ``demo`` with the public-hosting settings.

    Bounded queue (``queue_size`` waiting requests), ``max_file_size`` equal to
    the image loader's cap, no share link, no ``allowed_paths``, no MCP
    server, no server-side rendering, errors other than ``gr.Error`` not
    shown to the client. glibc's malloc arenas are capped at 2 unless
    ``MALLOC_ARENA_MAX`` is set (:mod:`.memory`: RSS that plateaus instead of
    keeping every worker thread's peak).
    """
    limit_arenas(2)
    demo.queue(max_size=queue_size, default_concurrency_limit=concurrency_limit)
    demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        max_file_size=MAX_FILE_BYTES,
        show_error=False,
        prevent_thread_lock=prevent_thread_lock,
        quiet=quiet,
        mcp_server=False,
        ssr_mode=False,
        pwa=False,
        inbrowser=False,
        footer_links=["api"],
        enable_monitoring=False,
    )
    lock_down(demo)  # no /monitoring, no private helper events by fn_index (demo/exposure.py)
    return demo


def launch(
    host: str = "127.0.0.1",
    port: int = 7860,
    backbones: str | Sequence[str] | None = None,
    *,
    cache_size: int = 8,
    queue_size: int = 64,
    concurrency_limit: int = 2,
    prevent_thread_lock: bool = False,
    on_ready: Callable[[float], None] | None = None,
    plugins: str | Sequence[str] | None = None,
    report: Callable[[str], None] | None = None,
) -> gr.Blocks:
    """Build the service and the app, then serve it (what ``explainzoo demo`` runs).

    Args:
        host, port: where to listen (default http://127.0.0.1:7860).
        backbones: comma-separated names (or a list) to offer; None offers
            :data:`~explainzoo.backbones.CURATED`.
        cache_size: backbones kept loaded.
        queue_size: requests that may wait in the queue.
        concurrency_limit: model-running events at once.
        prevent_thread_lock: return once serving (tests) instead of blocking.
        on_ready: called with the seconds from this call to a served page.
        plugins: the third-party plugins allowed (:mod:`.allowlist`): None
            allows every installed one, ``""`` none (built-ins only).
        report: called with each start-up notice (refused plugins); default:
            a warning in the log.
    """
    t0 = time.perf_counter()
    configure_offline_hub()
    refused = restrict_plugins(plugins)
    for line in refused_notice(plugins, refused):
        (report or logger.warning)(line)
    service = DemoService(backbones, cache_size=cache_size)
    demo = build_demo(service, concurrency_limit=concurrency_limit)
    try:
        serve(
            demo,
            host,
            port,
            queue_size=queue_size,
            concurrency_limit=concurrency_limit,
            prevent_thread_lock=True,
        )
    except OSError as exc:
        raise ExplainzooError(f"cannot serve the demo on {host}:{port} ({exc}); pick another --port") from exc
    elapsed = time.perf_counter() - t0
    logger.info("explainzoo demo ready on http://%s:%d in %.1f s", host, port, elapsed)
    if on_ready is not None:
        on_ready(elapsed)
    if not prevent_thread_lock:
        demo.block_thread()
    return demo
