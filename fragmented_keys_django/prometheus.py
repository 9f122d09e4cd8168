"""Prometheus metrics of the cache (the ``prometheus`` extra), fed by the package's signals.

Installed by the app when ``settings.FRAGMENTED_KEYS["PROMETHEUS"]`` is true
(the ``prometheus`` extra: ``prometheus-client``), and installed again,
or removed, whenever that setting changes (``override_settings``): nothing to
reset by hand. Off (the default), nothing here is imported by the read path and
no receiver is connected, so a read pays only the ``receivers`` check it
always made.

Every metric has an ``alias`` label, and a ``tenant`` label when
``FRAGMENTED_KEYS["PROMETHEUS_TENANT_LABELS"]`` is true (one series per
tenant: mind the cardinality); the public namespace's tenant is ``""``:

* ``fragmented_keys_cache_hits_total``, ``fragmented_keys_cache_misses_total``:
  tagged reads (``get_with_tags``, ``get_many_with_tags`` per key,
  ``get_or_set_with_tags``, hence ``@tagged_cache`` and ``{% tagged_cache %}``);
* ``fragmented_keys_bumps_total`` (``kind``: ``tags`` or ``flush``): landed
  bumps and tenant flushes; ``fragmented_keys_bumped_tags_total``: tags in them;
* ``fragmented_keys_stampede_waits_total``, ``fragmented_keys_early_recomputes_total``;
* ``fragmented_keys_store_errors_total`` (``operation``): survived store errors;
* ``fragmented_keys_bypassed_reads_total`` (``reason``: ``bump_pending``,
  ``transaction``, ``breaker_open``);
* ``fragmented_keys_retry_backlog``: failed bumps this process keeps for retry
  (a gauge; ``multiprocess_mode="livesum"``: the sum over live processes);
* ``fragmented_keys_outbox_backlog`` (``database``): outbox rows older than
  ``outbox.MARKER_GRACE`` seconds, read from the database at scrape time by
  :class:`OutboxCollector`, every process's.

Under gunicorn with ``PROMETHEUS_MULTIPROC_DIR`` set, every worker writes its
values there and :func:`metrics_view` (or any exporter built on
``prometheus_client.multiprocess.MultiProcessCollector``) sums them; see
``docs/operations.md``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from . import signals
from .exceptions import ConfigurationError

__all__ = ["CacheMetrics", "OutboxCollector", "configure", "installed", "metrics_view"]

_HELP = {
    "cache_hits": "Tagged reads served from the cache.",
    "cache_misses": "Tagged reads that missed.",
    "bumps": "Landed bumps of tags (kind=tags) and tenant flushes (kind=flush).",
    "bumped_tags": "Tags in landed bumps.",
    "stampede_waits": "Misses that waited for another caller computing the value.",
    "early_recomputes": "Live entries recomputed before their expiry (EARLY_RECOMPUTE).",
    "store_errors": "Store errors survived (logged and answered with a fallback).",
    "bypassed_reads": "Reads that did not use the cache (bump pending, transaction, breaker).",
}

# The one installed CacheMetrics (or none): replaced by configure() on setting_changed.
_installed: list[CacheMetrics] = []


class CacheMetrics:
    """The package's Prometheus metrics in *registry*, fed by its signals once :meth:`connect`-ed.

    *registry*: a ``prometheus_client.CollectorRegistry`` (default: the global
    ``REGISTRY``). *tenant_labels* (bool): add a ``tenant`` label to every
    metric. Raises ``ConfigurationError`` when ``prometheus_client`` is not
    installed.
    """

    def __init__(self, registry: Any = None, *, tenant_labels: bool = False) -> None:
        try:
            from prometheus_client import REGISTRY, Counter, Gauge
        except ImportError as exc:
            raise ConfigurationError(
                "settings.FRAGMENTED_KEYS['PROMETHEUS'] is True but prometheus_client is not "
                "installed: pip install 'prometheus-client>=0.20' (the package's [prometheus] extra), "
                "or set it to False"
            ) from exc
        self.registry = REGISTRY if registry is None else registry
        self.tenant_labels = bool(tenant_labels)
        base = ("alias", "tenant") if self.tenant_labels else ("alias",)
        self._metrics: list[Any] = []

        def counter(name: str, extra: tuple[str, ...] = ()) -> Any:
            made = Counter(
                f"fragmented_keys_{name}", _HELP[name], (*base, *extra), registry=self.registry
            )
            self._metrics.append(made)
            return made

        self.hits = counter("cache_hits")
        self.misses = counter("cache_misses")
        self.bumps = counter("bumps", ("kind",))
        self.bumped_tags = counter("bumped_tags")
        self.stampede_waits = counter("stampede_waits")
        self.early_recomputes = counter("early_recomputes")
        self.store_errors = counter("store_errors", ("operation",))
        self.bypassed_reads = counter("bypassed_reads", ("reason",))
        self.retry_backlog = Gauge(
            "fragmented_keys_retry_backlog",
            "Failed bumps kept for retry by this process (livesum: by all live processes).",
            base,
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self._metrics.append(self.retry_backlog)
        self.outbox = OutboxCollector(tenant_labels=self.tenant_labels)
        self.registry.register(self.outbox)
        self._metrics.append(self.outbox)
        # (metric, labels) -> child: labels() validates and locks on every call.
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        self._siblings = {self.hits: self.misses, self.misses: self.hits}
        # (alias, tenant) -> pending retries, summed per alias without tenant labels.
        self._per_tenant: dict[tuple[str, str | None], int] = {}
        self._receivers = [
            (signals.cache_hit, self._on_hit),
            (signals.cache_missed, self._on_miss),
            (signals.tags_bumped, self._on_bump),
            (signals.tenant_flushed, self._on_flush),
            (signals.stampede_waited, self._on_wait),
            (signals.recomputed_early, self._on_recompute),
            (signals.store_failed, self._on_error),
            (signals.cache_bypassed, self._on_bypass),
            (signals.retry_backlog_changed, self._on_backlog),
        ]

    def child(self, metric: Any, alias: str, tenant: str | None, *extra: str) -> Any:
        """Return *metric*'s series for *alias*, *tenant* (dropped without tenant labels), *extra*."""
        labels = (alias, tenant or "", *extra) if self.tenant_labels else (alias, *extra)
        key = (metric, labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
            sibling = self._siblings.get(metric)
            if sibling is not None:
                # Hits and misses appear together, so hits / (hits + misses) is
                # defined for a series that has only ever hit (or missed).
                sibling.labels(*labels)
        return found

    # -- receivers (run in the caller's thread: a dict lookup and an increment) ----------

    def _on_hit(self, sender: Any, alias: str, tenant: str | None, **kw: Any) -> None:
        self.child(self.hits, alias, tenant).inc()

    def _on_miss(self, sender: Any, alias: str, tenant: str | None, **kw: Any) -> None:
        self.child(self.misses, alias, tenant).inc()

    def _on_bump(self, sender: Any, alias: str, tenant: str | None, tags: Any, **kw: Any) -> None:
        self.child(self.bumps, alias, tenant, "tags").inc()
        if tags:
            self.child(self.bumped_tags, alias, tenant).inc(len(tags))

    def _on_flush(self, sender: Any, alias: str, tenant: str | None, **kw: Any) -> None:
        self.child(self.bumps, alias, tenant, "flush").inc()

    def _on_wait(self, sender: Any, alias: str, tenant: str | None, **kw: Any) -> None:
        self.child(self.stampede_waits, alias, tenant).inc()

    def _on_recompute(self, sender: Any, alias: str, tenant: str | None, **kw: Any) -> None:
        self.child(self.early_recomputes, alias, tenant).inc()

    def _on_error(
        self, sender: Any, alias: str, tenant: str | None, operation: str, **kw: Any
    ) -> None:
        self.child(self.store_errors, alias, tenant, operation).inc()

    def _on_bypass(
        self, sender: Any, alias: str, tenant: str | None, reason: str, **kw: Any
    ) -> None:
        self.child(self.bypassed_reads, alias, tenant, reason).inc()

    def _on_backlog(
        self, sender: Any, alias: str, tenant: str | None, pending: int, **kw: Any
    ) -> None:
        # Without tenant labels, one alias's series sums its tenants: set from the total.
        if self.tenant_labels:
            self.child(self.retry_backlog, alias, tenant).set(pending)
        else:
            self._per_tenant[(alias, tenant)] = pending
            total = sum(n for (a, _), n in self._per_tenant.items() if a == alias)
            self.child(self.retry_backlog, alias, None).set(total)

    # -- life cycle -------------------------------------------------------------------

    def connect(self) -> None:
        """Connect the receivers; publish the retry backlog as it is now."""
        from .invalidation import _retrier

        for signal, receiver in self._receivers:
            signal.connect(receiver, weak=False, dispatch_uid=f"fkd-prometheus:{id(signal)}")
        _retrier.publish(everything=True)

    def disconnect(self) -> None:
        """Disconnect the receivers and remove the metrics from the registry."""
        for signal, _receiver in self._receivers:
            signal.disconnect(dispatch_uid=f"fkd-prometheus:{id(signal)}")
        for metric in self._metrics:
            self.registry.unregister(metric)


class OutboxCollector:
    """A ``prometheus_client`` collector: the outbox backlog, read from the database at scrape time.

    ``fragmented_keys_outbox_backlog{database, alias[, tenant]}``: rows older
    than ``outbox.MARKER_GRACE`` seconds (bumps not landed in time; markers of
    live transactions are younger). One ``SELECT ... GROUP BY`` per database
    with the outbox table per scrape. Register it in the registry you expose
    (:func:`metrics_view` does).
    """

    def __init__(self, *, tenant_labels: bool = False) -> None:
        self.tenant_labels = tenant_labels

    def describe(self) -> list[Any]:
        return []  # collected only at scrape time: no database query at registration

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        from . import metrics, outbox

        labels = ["database", "alias", "tenant"] if self.tenant_labels else ["database", "alias"]
        family = GaugeMetricFamily(
            "fragmented_keys_outbox_backlog",
            "Outbox rows older than MARKER_GRACE seconds (bumps that did not land in time).",
            labels=labels,
        )
        for db in outbox.databases():
            try:
                rows = outbox.backlog(db, outbox.MARKER_GRACE)
            except Exception as exc:  # the database is down: no sample, logged and counted
                metrics.record_error("-", None, "outbox_backlog", exc, what="outbox")
                continue
            sums: dict[tuple[str, ...], int] = {}
            for (alias, tenant), n in rows.items():
                key = (db, alias, tenant or "") if self.tenant_labels else (db, alias)
                sums[key] = sums.get(key, 0) + n
            for key, n in sums.items():
                family.add_metric(list(key), n)
        yield family


def configure() -> None:
    """Install or remove :class:`CacheMetrics` as ``settings.FRAGMENTED_KEYS`` says.

    Called when the app is ready and when ``FRAGMENTED_KEYS`` changes. Raises
    ``ConfigurationError`` when ``PROMETHEUS`` is true and ``prometheus_client``
    is missing.
    """
    from .conf import project_settings

    conf = project_settings()
    while _installed:
        _installed.pop().disconnect()
    if conf["PROMETHEUS"]:
        made = CacheMetrics(tenant_labels=conf["PROMETHEUS_TENANT_LABELS"])
        made.connect()
        _installed.append(made)


def installed() -> CacheMetrics | None:
    """Return the installed :class:`CacheMetrics`, or ``None`` when ``PROMETHEUS`` is off."""
    return _installed[0] if _installed else None


def metrics_view(request: Any) -> Any:
    """A Django view exposing the metrics in Prometheus' text format (multiprocess-aware).

    With ``PROMETHEUS_MULTIPROC_DIR`` set (gunicorn), the values of every
    process are read from that directory (``MultiProcessCollector``) plus the
    outbox backlog; otherwise the global ``REGISTRY``. Protect the URL (staff
    only, or an internal port) as any metrics endpoint.
    """
    from django.http import HttpResponse
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    registry = REGISTRY
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        from .conf import project_settings

        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        registry.register(
            OutboxCollector(tenant_labels=project_settings()["PROMETHEUS_TENANT_LABELS"])
        )
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
