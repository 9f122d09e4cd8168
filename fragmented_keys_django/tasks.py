"""Celery tasks (optional: Celery is not a dependency).

``drain_outbox`` applies the bumps left in the outbox by processes that died
before writing them (see ``docs/operations.md``); schedule it with Celery beat::

    CELERY_BEAT_SCHEDULE = {
        "drain-cache-outbox": {
            "task": "fragmented_keys_django.tasks.drain_outbox",
            "schedule": 10.0,
        },
    }

Celery's ``autodiscover_tasks()`` finds this module in ``INSTALLED_APPS``.
"""

from __future__ import annotations

from typing import Any

from . import invalidation


def drain(older_than: float = 0.0) -> dict[str, Any]:
    """Drain the outbox once; return ``{"applied", "failed", "dropped", "errors"}``.

    Raises ``RuntimeError`` when a bump could not be applied (its row stays:
    the task fails visibly in Celery and the next run tries again).
    """
    report = invalidation.drain_outbox(older_than=older_than)
    result = {
        "applied": report.applied,
        "failed": report.failed,
        "dropped": report.dropped,
        "errors": report.errors,
    }
    if report.failed:
        raise RuntimeError(f"{report.failed} pending bump(s) could not be applied: {result}")
    return result


try:
    from celery import shared_task
except ImportError:  # Celery not installed: the plain function above still works
    drain_outbox = None
else:
    drain_outbox = shared_task(name="fragmented_keys_django.tasks.drain_outbox")(drain)
