"""What a public host's Gradio server exposes, closed down (applied by :func:`explainzoo.demo.app.serve`).

Gradio's defaults are made for a local tool. On a public host
:func:`lock_down` wraps the served FastAPI app in one ASGI filter that

* answers 404 to every ``/monitoring`` route (the traffic summary and
  dashboard; ``launch(enable_monitoring=False)`` turns them off too, this
  keeps them off whatever a later Gradio defaults to);
* refuses (403) a ``/queue/join`` of a helper event that is not part of the
  public API (``api_visibility`` private or undocumented: the dropdown
  updates, the example loader) unless it comes as the page sends it, with the
  component that triggers it as ``trigger_id``. Scripted calls by
  ``fn_index`` (``gradio_client`` sends no trigger) reach only the public
  endpoints, which the service checks and caps. Chained helper steps that
  only pass a result on (``.success(lambda f: f)``) keep working as sent.

Not closed, by design: ``/config`` carries the paths of files in Gradio's
cache (``/tmp/gradio/<hash>/chelsea.jpg``): the page needs them, and every
file URL (``/gradio_api/file=<path>``) spells them anyway. It carries no
other server path; point ``GRADIO_TEMP_DIR`` at a private folder to make
those say nothing (``docs/security.md``).

:func:`queue_cancel_token` gives the service (``DemoService.cancel_token``)
a token that fires when the queued event of the running request is no longer
alive: its client disconnected (Gradio marks the job dead when the event
stream closes) or sent ``/cancel`` (the job leaves the active set). Gradio
cancels only the awaiting coroutine; the worker thread keeps running until
the library's next deadline check sees the token.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["PUBLIC", "lock_down", "queue_cancel_token"]

#: The ``api_visibility`` of the events anyone may call by ``fn_index``.
PUBLIC = "public"
_MONITORING = re.compile(r"(^|/)monitoring(/|$)")
_MAX_JOIN_BODY = 8 << 20  # a join body holds FileData references, never file bytes


def queue_cancel_token() -> Callable[[], bool] | None:
    """A cancellation token for the Gradio event running in this thread (None outside one).

    True once the event is no longer alive (client gone) or no longer among
    the queue's active jobs (``/cancel``, or the server stopping it).
    """
    try:
        from gradio.context import LocalContext
    except ImportError:  # pragma: no cover - the demo extra is not installed
        return None
    blocks = LocalContext.blocks.get(None)
    event_id = LocalContext.event_id.get(None)
    queue = getattr(blocks, "_queue", None)
    if queue is None or not event_id or _find(queue, event_id) is None:
        return None  # not a queued event (a direct call, a test)

    def gone() -> bool:
        event = _find(queue, event_id)
        return event is None or not getattr(event, "alive", True)

    return gone


def _find(queue: Any, event_id: str) -> Any:
    for job in list(getattr(queue, "active_jobs", ()) or ()):
        for event in job or ():
            if getattr(event, "_id", None) == event_id:
                return event
    return None


def _private_triggers(config: Mapping[str, Any]) -> dict[int, set[Any]]:
    """fn_index of each non-public event -> the trigger ids the page sends with it."""
    deps = {d["id"]: d for d in config.get("dependencies", [])}
    out: dict[int, set[Any]] = {}
    for fid, dep in deps.items():
        if dep.get("api_visibility", PUBLIC) == PUBLIC:
            continue
        ids = {t[0] for t in dep.get("targets", []) if t and t[0] is not None}
        if not ids and dep.get("trigger_after") is not None:  # a chained step: as the page sends it
            ids = {None} | {t[0] for t in deps.get(dep["trigger_after"], {}).get("targets", []) if t}
        out[fid] = ids
    return out


class _Lockdown:
    """The ASGI filter of :func:`lock_down`."""

    def __init__(self, app: Any, blocks: Any) -> None:
        self.app = app
        self.blocks = blocks
        self._triggers: dict[int, set[Any]] | None = None

    def triggers(self) -> dict[int, set[Any]]:
        if self._triggers is None:
            self._triggers = _private_triggers(self.blocks.get_config_file())
        return self._triggers

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") == "http":
            path = scope.get("path", "")
            if _MONITORING.search(path):
                return await _deny(send, 404, "Not Found")
            if scope.get("method") == "POST" and path.endswith("/queue/join"):
                body, receive = await _read_body(receive)
                reason = self.refuse(body)
                if reason:
                    return await _deny(send, 403, reason)
        await self.app(scope, receive, send)

    def refuse(self, body: bytes) -> str | None:
        """Why a ``/queue/join`` body is refused (None: let Gradio handle it)."""
        if len(body) > _MAX_JOIN_BODY:
            return "request too large"
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            return None  # Gradio answers malformed bodies itself
        if not isinstance(data, dict):
            return None
        fn_index = data.get("fn_index")
        allowed = self.triggers().get(fn_index) if isinstance(fn_index, int) else None
        if allowed is not None and data.get("trigger_id") not in allowed:
            return "this event is not part of the public API"
        return None


async def _read_body(receive: Any) -> tuple[bytes, Any]:
    """The whole request body, and a ``receive`` that replays it to the app."""
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        size += len(chunks[-1])
        more = message.get("more_body", False) and size <= _MAX_JOIN_BODY
    body = b"".join(chunks)
    replayed = [False]

    async def replay() -> dict[str, Any]:
        if not replayed[0]:
            replayed[0] = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return body, replay


async def _deny(send: Any, status: int, detail: str) -> None:
    payload = json.dumps({"detail": detail}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def lock_down(demo: Any) -> Any:
    """Wrap the running app of a launched ``demo`` (``demo.app``) in the public-host filter.

    Idempotent; call it after ``launch`` (the filter goes around Starlette's
    built middleware stack, so it works on a running server).

    Returns:
        The filter (its :meth:`_Lockdown.refuse` is what the tests call directly).
    """
    app = demo.app
    stack = app.middleware_stack or app.build_middleware_stack()
    if not isinstance(stack, _Lockdown):
        stack = _Lockdown(stack, demo)
        app.middleware_stack = stack
    return stack
