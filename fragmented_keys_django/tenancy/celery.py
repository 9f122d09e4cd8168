"""Celery: a task runs in the tenant that enqueued it.

Three Celery signal receivers:

* ``before_task_publish`` writes the current tenant id (``None`` when there
  is none) into the message headers as ``fkd_tenant``, unless the caller
  already set that header (``task.apply_async(headers={"fkd_tenant":
  "acme"})`` targets a tenant explicitly);
* ``task_prerun`` enters that tenant: through the tenant source where it can
  (django-tenants: ``schema_context(id)``, so a task that switches schema later
  works in that schema, bumps included), else ``TenantContext.use_tenant(...)``. A
  ``None`` header names no tenant: inside the task the configured tenant
  source decides (django-tenants' ``schema_context``, omnitenant's
  ``use_tenant``), and without one the public namespace is current. So a task
  enqueued outside any tenant that writes rows in a tenant schema bumps that
  tenant's tags;
* ``task_postrun`` (sent after success and failure alike) leaves it, so the
  worker's context is back to what it was before the task: nothing leaks into
  the next task run by the same worker thread.

A message without the header (published by a process where this is not
installed) runs with the worker's context untouched.

Install with :func:`install` (idempotent; receivers have ``dispatch_uid``),
or set ``FRAGMENTED_KEYS_CELERY = True`` in settings: the app's ``ready()``
then installs it when Celery is importable. Install it in the processes that
publish *and* in the workers.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from .context import TenantContext, current_tenant_id, enter_source_tenant

__all__ = ["HEADER", "install", "install_if_available", "installed", "uninstall"]

logger = logging.getLogger("fragmented_keys_django")

#: Message header carrying the tenant id of the publisher.
HEADER = "fkd_tenant"

_UID = "fragmented_keys_django.tenancy.celery"
_lock = threading.Lock()
_installed = False
# task id -> stack of entered use_tenant() managers (a task id may re-enter
# when a task calls itself eagerly).
_active: dict[str, list[Any]] = {}


def _before_publish(sender: Any = None, headers: dict | None = None, **kwargs: Any) -> None:
    if headers is None or HEADER in headers:
        return
    headers[HEADER] = current_tenant_id()


def _header(task: Any) -> tuple[bool, str | None]:
    request = getattr(task, "request", None)
    if request is None:
        return False, None
    # Celery copies custom message headers onto the request; older versions
    # keep them in request.headers only.
    for source in (getattr(request, "headers", None) or {}, request.__dict__):
        if isinstance(source, dict) and HEADER in source:
            return True, source[HEADER]
    return False, None


def _prerun(
    sender: Any = None, task_id: str | None = None, task: Any = None, **kwargs: Any
) -> None:
    present, tenant = _header(task if task is not None else sender)
    if not present:
        return
    # In the source's own terms where it can (django-tenants: schema_context), so
    # that a task switching schema afterwards works in that schema; else ours.
    cm = (enter_source_tenant(tenant) if tenant else None) or TenantContext.use_tenant(
        tenant or None
    )
    cm.__enter__()
    _active.setdefault(task_id or "", []).append(cm)


def _postrun(sender: Any = None, task_id: str | None = None, **kwargs: Any) -> None:
    stack = _active.get(task_id or "")
    if not stack:
        return
    cm = stack.pop()
    if not stack:
        _active.pop(task_id or "", None)
    try:
        cm.__exit__(None, None, None)
    except (ValueError, RuntimeError) as exc:  # entered in another context (unusual pools)
        logger.warning("could not restore the tenant after task %s: %s; clearing it", task_id, exc)
        TenantContext.clear_all()


def install() -> None:
    """Connect the receivers (idempotent). Requires Celery."""
    global _installed
    from celery import signals

    with _lock:
        signals.before_task_publish.connect(
            _before_publish, weak=False, dispatch_uid=_UID + ":publish"
        )
        signals.task_prerun.connect(_prerun, weak=False, dispatch_uid=_UID + ":prerun")
        signals.task_postrun.connect(_postrun, weak=False, dispatch_uid=_UID + ":postrun")
        _installed = True


def uninstall() -> None:
    """Disconnect the receivers (tests)."""
    global _installed
    from celery import signals

    with _lock:
        signals.before_task_publish.disconnect(dispatch_uid=_UID + ":publish")
        signals.task_prerun.disconnect(dispatch_uid=_UID + ":prerun")
        signals.task_postrun.disconnect(dispatch_uid=_UID + ":postrun")
        _installed = False


def installed() -> bool:
    """True if :func:`install` has run (and :func:`uninstall` has not since)."""
    return _installed


def install_if_available() -> bool:
    """Install when Celery is importable; return whether it was installed."""
    try:
        import celery  # noqa: F401
    except ImportError:
        logger.warning("FRAGMENTED_KEYS_CELERY is set but celery is not installed; not installing")
        return False
    install()
    return True
