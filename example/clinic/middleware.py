"""Tenant resolution from the Host header, and an ``X-Cache`` header for curious clients."""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.http.request import split_domain_port

from fragmented_keys_django import TenantContext
from fragmented_keys_django.signals import cache_hit, cache_missed


class TenantMiddleware:
    """``acme.clinic.test`` -> tenant ``acme``; the request runs inside ``use_tenant``.

    Every cache read and write, and every tag bump made while handling the
    request, then lands in that tenant's namespace. An unknown host gets a 404.
    (Sync middleware: a streaming response would be consumed after the tenant
    is left; this project has none.)
    """

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        self.tenant_by_host = {conf["host"]: tid for tid, conf in settings.TENANTS.items()}

    def __call__(self, request: HttpRequest) -> HttpResponse:
        domain, _port = split_domain_port(request.get_host())
        tenant_id = self.tenant_by_host.get(domain)
        if tenant_id is None:
            return JsonResponse(
                {
                    "error": f"no tenant at host {domain!r}",
                    "tenant_hosts": sorted(self.tenant_by_host),
                },
                status=404,
            )
        request.tenant_id = tenant_id
        with TenantContext.use_tenant(tenant_id):
            return self.get_response(request)


# Cache lookups of the request being handled, recorded from the library's signals.
_lookups: ContextVar[list[str] | None] = ContextVar("clinic_cache_lookups", default=None)


def _record(outcome: str) -> Any:
    def receiver(sender: Any, **kwargs: Any) -> None:
        lookups = _lookups.get()
        if lookups is not None:
            lookups.append(outcome)

    return receiver


def connect_cache_signals() -> None:
    cache_hit.connect(_record("HIT"), weak=False, dispatch_uid="clinic:x-cache:hit")
    cache_missed.connect(_record("MISS"), weak=False, dispatch_uid="clinic:x-cache:miss")


class CacheStatusMiddleware:
    """Adds ``X-Cache: HIT`` / ``MISS`` (one word per tagged cache lookup made by the view)."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        token = _lookups.set([])
        try:
            response = self.get_response(request)
            lookups = _lookups.get()
        finally:
            _lookups.reset(token)
        if lookups:
            response["X-Cache"] = ", ".join(lookups)
        return response
