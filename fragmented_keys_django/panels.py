"""A django-debug-toolbar panel: the tagged reads, writes and bumps of one request.

Add it to the toolbar's panels (django-debug-toolbar must be installed: the
``debug-toolbar`` extra; importing this module without it raises
``ImportError``, and nothing else in the package imports it)::

    DEBUG_TOOLBAR_PANELS = [
        *debug_toolbar.settings.PANELS_DEFAULTS,
        "fragmented_keys_django.panels.FragmentedKeysPanel",
    ]

For each request it lists, in order: every tagged read (``get_with_tags``,
``get_or_set_with_tags``, hence ``@tagged_cache``, ``{% tagged_cache %}`` and
``tagged_cache_page``) with its alias, tenant, key, tags and hit or miss; every
tagged write (``entry_stored``; "at commit" when it waits for the
transaction); and every bump and tenant flush the request sent (``tags_bumped``,
``tenant_flushed``: sent when the bump landed, after the commit for bumps made
inside a transaction). Times are milliseconds: *at* since the panel saw the
request, and for a miss that was computed and stored, *computed in* (from the
miss to the store: the computation and the write).

It listens to the package's signals (:mod:`fragmented_keys_django.signals`)
while at least one request is being recorded, and records only the events of
the request in whose context (thread, task or ``sync_to_async`` hop) they
happen. Reads of ``get_many_with_tags`` are listed without their tags.
"""

from __future__ import annotations

import threading
import time
from contextvars import ContextVar
from typing import Any

from debug_toolbar.panels import Panel
from django.core.handlers.asgi import ASGIRequest
from django.utils.translation import gettext_lazy as _

from .signals import cache_hit, cache_missed, entry_stored, tags_bumped, tenant_flushed

__all__ = ["FragmentedKeysPanel"]


class _Recording:
    """The events of one request (appended from whatever thread serves it)."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.events: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def add(self, **event: Any) -> dict[str, Any]:
        event["at"] = round((time.perf_counter() - self.started) * 1000, 3)
        event.setdefault("computed_ms", None)
        with self.lock:
            self.events.append(event)
        return event


_recording: ContextVar[_Recording | None] = ContextVar("fkd_toolbar_recording", default=None)


def _tags(tags: Any) -> str:
    return ", ".join(f"{t[0]}:{t[1]}" if t[1] else str(t[0]) for t in tags or ())


def _on_read(hit: bool) -> Any:
    def receiver(sender: Any, alias: str, tenant: Any, key: Any, tags: Any = (), **kw: Any) -> None:
        rec = _recording.get()
        if rec is not None:
            rec.add(
                op="hit" if hit else "miss",
                alias=alias,
                tenant=tenant,
                key=str(key),
                tags=_tags(tags),
            )

    return receiver


def _on_stored(sender: Any, alias: str, tenant: Any, key: Any, tags: Any = (), **kw: Any) -> None:
    rec = _recording.get()
    if rec is None:
        return
    event = rec.add(
        op="stored at commit" if kw.get("deferred") else "stored",
        alias=alias,
        tenant=tenant,
        key=str(key),
        tags=_tags(tags),
    )
    with rec.lock:  # the miss this write answers: how long the computation took
        for earlier in reversed(rec.events[:-1]):
            if (earlier["op"], earlier["alias"], earlier["tenant"], earlier["key"]) == (
                "miss",
                alias,
                tenant,
                event["key"],
            ):
                if earlier["computed_ms"] is None:
                    earlier["computed_ms"] = round(event["at"] - earlier["at"], 3)
                break


def _on_bump(sender: Any, alias: str, tenant: Any, tags: Any = (), **kw: Any) -> None:
    rec = _recording.get()
    if rec is not None:
        rec.add(op="bump", alias=alias, tenant=tenant, key="", tags=_tags(tags))


def _on_flush(sender: Any, alias: str, tenant: Any, **kw: Any) -> None:
    rec = _recording.get()
    if rec is not None:
        rec.add(op="tenant flush", alias=alias, tenant=tenant, key="", tags="")


_RECEIVERS = (
    (cache_hit, _on_read(True), "fkd-toolbar:hit"),
    (cache_missed, _on_read(False), "fkd-toolbar:miss"),
    (entry_stored, _on_stored, "fkd-toolbar:stored"),
    (tags_bumped, _on_bump, "fkd-toolbar:bump"),
    (tenant_flushed, _on_flush, "fkd-toolbar:flush"),
)
_listening = 0
_listening_lock = threading.Lock()


class FragmentedKeysPanel(Panel):
    """The request's tagged reads and writes (key, tags, tenant, hit or miss, time) and bumps."""

    title = _("Fragmented keys")
    template = "fragmented_keys_django/panel.html"
    is_async = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._recording = _Recording()
        self._listens = False

    @property
    def nav_subtitle(self) -> str:
        stats = self.get_stats()
        return (
            f"{stats.get('hits', 0)} hits, {stats.get('misses', 0)} misses, "
            f"{stats.get('bumps', 0)} bumps"
        )

    def enable_instrumentation(self) -> None:
        """Listen to the package's signals (once per process while any request is recorded)."""
        global _listening
        if self._listens:
            return
        with _listening_lock:
            if _listening == 0:
                for signal, receiver, uid in _RECEIVERS:
                    signal.connect(receiver, weak=False, dispatch_uid=uid)
            _listening += 1
        self._listens = True

    def disable_instrumentation(self) -> None:
        """Stop listening when no other request is being recorded."""
        global _listening
        if not self._listens:
            return
        with _listening_lock:
            _listening -= 1
            if _listening == 0:
                for signal, _receiver, uid in _RECEIVERS:
                    signal.disconnect(dispatch_uid=uid)
        self._listens = False

    def process_request(self, request: Any) -> Any:
        """Run the rest of the stack with this request's recording current."""
        if isinstance(request, ASGIRequest):
            return self._aprocess_request(request)
        token = _recording.set(self._recording)
        try:
            return super().process_request(request)
        finally:
            _recording.reset(token)

    async def _aprocess_request(self, request: Any) -> Any:
        token = _recording.set(self._recording)
        try:
            return await super().process_request(request)
        finally:
            _recording.reset(token)

    def generate_stats(self, request: Any, response: Any) -> None:
        """Record the events (JSON-friendly, for the toolbar's store)."""
        with self._recording.lock:
            events = [dict(e) for e in self._recording.events]
        for event in events:
            event["tenant"] = "(public)" if event["tenant"] is None else str(event["tenant"])
        ops = [e["op"] for e in events]
        self.record_stats(
            {
                "events": events,
                "hits": ops.count("hit"),
                "misses": ops.count("miss"),
                "writes": ops.count("stored") + ops.count("stored at commit"),
                "bumps": ops.count("bump") + ops.count("tenant flush"),
            }
        )
