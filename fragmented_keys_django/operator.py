"""What the operator page of the Django admin (:mod:`.admin`) shows of a tenant's cache.

* :func:`hit_ratio`: from the Prometheus metrics (:mod:`.prometheus`) when
  ``FRAGMENTED_KEYS["PROMETHEUS"]`` is on: every process's with
  ``PROMETHEUS_MULTIPROC_DIR`` (gunicorn), else this process's; per tenant with
  ``PROMETHEUS_TENANT_LABELS``, else the alias's. ``None`` when off: the page
  adds nothing to the read path.
* :func:`recent_bumps`: the last :data:`RECENT` bumps and tenant flushes that
  landed **in this process** (the ``tags_bumped`` and ``tenant_flushed``
  signals), kept in a bounded ring once :func:`listen` was called (the admin
  does, when it loads). Other processes' bumps are not in it: with several
  workers, "recent" means "recently, through this worker" (a bump made on the
  page itself always is).
* :func:`retry_backlog`: failed bumps this process keeps for retry, and outbox
  rows older than ``outbox.MARKER_GRACE`` seconds (any process's).
"""

from __future__ import annotations

import os
import threading
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.utils import timezone

from . import invalidation, outbox
from .signals import tags_bumped, tenant_flushed

__all__ = [
    "RECENT",
    "Backlog",
    "HitRatio",
    "RecentBump",
    "hit_ratio",
    "listen",
    "recent_bumps",
    "retry_backlog",
]

#: How many landed bumps the ring keeps (all aliases and tenants together).
RECENT = 200


@dataclass(frozen=True)
class RecentBump:
    """A bump (``kind="tags"``, with its ``tags``) or tenant flush (``kind="flush"``) that landed."""

    when: datetime
    alias: str
    tenant: str | None
    kind: str
    tags: tuple


@dataclass(frozen=True)
class HitRatio:
    """Tagged hits and misses counted by the Prometheus metrics.

    ``scope``: ``"tenant"`` (tenant labels on) or ``"alias"`` (every tenant
    of the alias); ``processes``: ``"all processes"`` (multiprocess mode) or
    ``"this process"``.
    """

    hits: float
    misses: float
    scope: str
    processes: str

    @property
    def ratio(self) -> float | None:
        """Hits / reads, from 0.0 to 1.0; ``None`` before any read."""
        total = self.hits + self.misses
        return self.hits / total if total else None

    @property
    def percent(self) -> int | None:
        """:attr:`ratio` in whole percent."""
        ratio = self.ratio
        return None if ratio is None else round(100 * ratio)


@dataclass(frozen=True)
class Backlog:
    """``process``: failed bumps this process retries; ``outbox``: outbox rows past the grace period."""

    process: int
    outbox: int


# Bounded, so nothing to reset: a reader filters by alias and tenant.
_recent: deque[RecentBump] = deque(maxlen=RECENT)
_recent_lock = threading.Lock()


def _on_bump(sender: Any, alias: str, tenant: str | None, tags: Any = (), **kw: Any) -> None:
    with _recent_lock:
        _recent.append(RecentBump(timezone.now(), alias, tenant, "tags", tuple(tags)))


def _on_flush(sender: Any, alias: str, tenant: str | None, **kw: Any) -> None:
    with _recent_lock:
        _recent.append(RecentBump(timezone.now(), alias, tenant, "flush", ()))


def listen() -> None:
    """Keep landed bumps in the ring from now on (idempotent; a receiver runs per bump only)."""
    tags_bumped.connect(_on_bump, weak=False, dispatch_uid="fkd-operator:bump")
    tenant_flushed.connect(_on_flush, weak=False, dispatch_uid="fkd-operator:flush")


def recent_bumps(alias: str, tenant: str | None, limit: int = 20) -> list[RecentBump]:
    """Return up to *limit* bumps of *tenant* on *alias* that landed in this process, newest first."""
    with _recent_lock:
        found = [b for b in _recent if b.alias == alias and b.tenant == tenant]
    return found[::-1][:limit]


def hit_ratio(alias: str, tenant: str | None) -> HitRatio | None:
    """Return the tagged hits and misses of *tenant* on *alias*, or ``None`` without Prometheus."""
    from . import prometheus

    metrics = prometheus.installed()
    if metrics is None:
        return None
    registry: Any = metrics.registry
    processes = "this process"
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=directory)
        processes = "all processes"
    labels = {"alias": alias}
    if metrics.tenant_labels:
        labels["tenant"] = tenant or ""

    def get(name: str) -> float:
        return registry.get_sample_value(f"fragmented_keys_{name}_total", labels) or 0.0

    scope = "tenant" if metrics.tenant_labels else "alias"
    return HitRatio(get("cache_hits"), get("cache_misses"), scope, processes)


def retry_backlog(alias: str, tenant: str | None) -> Backlog:
    """Return the retry backlog of *tenant* on *alias* (one query per database with the outbox)."""
    process = invalidation._retrier.pending_by_tenant().get((alias, tenant), 0)
    rows = sum(
        outbox.backlog(db, outbox.MARKER_GRACE).get((alias, tenant), 0) for db in outbox.databases()
    )
    return Backlog(process, rows)
