"""``TenantMiddleware``: run each request inside its tenant.

Configured by ``settings.FRAGMENTED_KEYS_MIDDLEWARE``::

    FRAGMENTED_KEYS_MIDDLEWARE = {
        # request -> tenant id or None: a callable, a dotted path to a function
        # or resolver class, or {"CLASS": ..., "OPTIONS": {...}}.
        # TENANT_ID_RESOLVER (seed 002's name) is accepted as an alias.
        "RESOLVER": {"CLASS": "fragmented_keys_django.tenancy.resolvers.SubdomainResolver",
                     "OPTIONS": {"base_domain": "example.com"}},
        # Routes that need no tenant: a dotted view path, a route pattern
        # ("api/health/"), or a url name ("health", "ops:health").
        "WHITELIST_ROUTES": {"ops:health"},
        # Does a resolved tenant id exist? A callable (tenant_id) -> bool, a
        # dotted path to one, a collection of ids, or None (any id is accepted).
        "TENANTS": "myproject.tenants.exists",
        # A view (request) -> response for unresolvable/unknown tenants, or
        # None for a plain 404.
        "UNKNOWN_TENANT_RESPONSE": None,
    }

For each request the middleware

1. runs a whitelisted route (matched with ``django.urls.resolve`` on the path
   as received, or by path; a trailing ``*`` makes an entry a prefix, as in
   ``"admin/*"``) inside ``use_tenant(None)``: the public namespace (or the
   tenant a configured tenant source reports);
2. otherwise asks the resolver for a tenant id; no id, an invalid id, or an
   id ``TENANTS`` rejects gets a 404 (or ``UNKNOWN_TENANT_RESPONSE``) and the
   view never runs, so a request is never served from the public namespace by
   accident;
3. sets ``request.tenant_id`` and runs the rest of the stack inside
   ``TenantContext.use_tenant(tenant_id)``.

Place it before any middleware that uses the cache (``UpdateCacheMiddleware``,
``FetchFromCacheMiddleware``, sessions on a cache backend): those must run
inside the tenant. The system check ``fragmented_keys_django.E016`` reports
Django's cache middlewares placed before it.

It works in WSGI and ASGI stacks (``sync_capable`` and ``async_capable``);
under ASGI the ``TENANTS`` check, when synchronous, runs in a thread
(``sync_to_async``) since it usually queries the database. A streaming
response's iterator is consumed after the middleware returns, outside the
tenant: compute tenant-dependent content before returning it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from asgiref.sync import async_to_sync, iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, HttpResponseNotFound
from django.urls import Resolver404, resolve

from ..conf import import_dotted
from ..exceptions import ConfigurationError, InvalidTenant
from .context import TenantContext, tenant_id_of
from .resolvers import HeaderResolver, load_resolver

__all__ = [
    "MIDDLEWARE_PATH",
    "MiddlewareSettings",
    "TenantMiddleware",
    "get_middleware_settings",
    "middleware_problems",
]

MIDDLEWARE_PATH = "fragmented_keys_django.tenancy.middleware.TenantMiddleware"
SETTING = "FRAGMENTED_KEYS_MIDDLEWARE"
KNOWN_KEYS = (
    "RESOLVER",
    "TENANT_ID_RESOLVER",
    "WHITELIST_ROUTES",
    "TENANTS",
    "TENANT_ACCESS",
    "UNKNOWN_TENANT_RESPONSE",
)

NO_TENANT = "no-tenant"
UNKNOWN_TENANT = "unknown-tenant"
FORBIDDEN_TENANT = "forbidden-tenant"


@dataclass(frozen=True)
class MiddlewareSettings:
    """Parsed ``FRAGMENTED_KEYS_MIDDLEWARE``."""

    resolver: Callable[[HttpRequest], Any]
    whitelist: frozenset[str]
    tenants: Any  # None, a callable (tid) -> bool (maybe async), or a collection of ids
    unknown_response: Callable[..., Any] | None
    #: ``TENANT_ACCESS``: may this request act as this tenant? (request, tid) -> bool, or None.
    access: Callable[..., Any] | None = None

    def is_whitelisted(self, request: HttpRequest) -> bool:
        """True if the request matches ``WHITELIST_ROUTES``.

        An entry names a dotted view path, a route pattern or a url name
        (matched with ``django.urls.resolve`` on the path as received), or,
        starting with ``/``, the path itself. A trailing ``*`` makes it a
        prefix, of the kind its shape names: with a ``/``, of route patterns
        (``"admin/*"``); else with a ``:``, of url names (``"admin:*"``: the
        ``admin`` namespace); else with a ``.``, of dotted view paths
        (``"myapp.views.*"``); else of route patterns (``"health*"``); starting
        with ``/``, of paths (``"/static/*"``). So a route prefix never
        whitelists a view by its url name.
        """
        if not self.whitelist:
            return False
        path = request.path_info
        if path in self.whitelist or path.startswith(self.path_prefixes):
            return True
        try:
            match = resolve(path, getattr(request, "urlconf", None))
        except Resolver404:
            return False
        wl = self.whitelist
        names = (match._func_path, match.route, match.view_name)
        if any(name in wl for name in names):
            return True
        views, routes, url_names = self.prefixes
        return (
            bool(views and match._func_path.startswith(views))
            or bool(routes and match.route.startswith(routes))
            or bool(url_names and (match.view_name or "").startswith(url_names))
        )

    @cached_property
    def prefixes(self) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
        """``WHITELIST_ROUTES`` prefixes (entries ending in ``*``): (view paths, routes, url names)."""
        found: tuple[list[str], list[str], list[str]] = ([], [], [])
        for e in self.whitelist:
            if not e.endswith("*") or e.startswith("/"):
                continue
            prefix = e[:-1]
            # A route pattern may hold ":" or "." ("<int:pk>/", "v1.0/"): "/" decides first.
            route = "/" in prefix or not (":" in prefix or "." in prefix)
            kind = 1 if route else 2 if ":" in prefix else 0
            found[kind].append(prefix)
        return (tuple(found[0]), tuple(found[1]), tuple(found[2]))

    @cached_property
    def path_prefixes(self) -> tuple[str, ...]:
        """The prefixes of ``WHITELIST_ROUTES`` path entries ending in ``*``."""
        return tuple(e[:-1] for e in self.whitelist if e.endswith("*") and e.startswith("/"))

    def resolve_tenant(self, request: HttpRequest) -> str | None:
        """Return the resolver's tenant id, or ``None`` when it gives none or an invalid one."""
        found = self.resolver(request)
        return _tenant_id(found)

    async def aresolve_tenant(self, request: HttpRequest) -> str | None:
        found = self.resolver(request)
        if inspect.isawaitable(found):
            found = await found
        return _tenant_id(found)

    def exists(self, tenant_id: str) -> bool:
        tenants = self.tenants
        if tenants is None:
            return True
        if callable(tenants):
            if iscoroutinefunction(tenants):
                return bool(async_to_sync(tenants)(tenant_id))
            return bool(tenants(tenant_id))
        return tenant_id in tenants

    def allowed(self, request: HttpRequest, tenant_id: str) -> bool:
        """Return ``TENANT_ACCESS(request, tenant_id)`` (True when no check is configured)."""
        check = self.access
        if check is None:
            return True
        if iscoroutinefunction(check):
            return bool(async_to_sync(check)(request, tenant_id))
        return bool(check(request, tenant_id))

    async def aallowed(self, request: HttpRequest, tenant_id: str) -> bool:
        """Async twin of :meth:`allowed`; a sync check runs in a thread (it may query the database)."""
        check = self.access
        if check is None:
            return True
        if iscoroutinefunction(check):
            return bool(await check(request, tenant_id))
        return bool(await sync_to_async(check, thread_sensitive=True)(request, tenant_id))

    async def aexists(self, tenant_id: str) -> bool:
        tenants = self.tenants
        if tenants is None:
            return True
        if callable(tenants):
            if iscoroutinefunction(tenants):
                return bool(await tenants(tenant_id))
            return bool(await sync_to_async(tenants, thread_sensitive=True)(tenant_id))
        return tenant_id in tenants


def _tenant_id(found: Any) -> str | None:
    if found is None:
        return None
    try:
        return tenant_id_of(found)
    except InvalidTenant:
        return None


def middleware_problems(
    raw: Any, *, installed: bool
) -> tuple[list[tuple[str, str, str]], dict[str, Any]]:
    """Check ``FRAGMENTED_KEYS_MIDDLEWARE``; return ``(problems, parsed parts)``.

    Each problem is ``(check id, message, hint)``. Used by the system checks
    and by the middleware (which raises on the first problem).
    """
    problems: list[tuple[str, str, str]] = []
    parts: dict[str, Any] = {}
    if raw is None:
        if installed:
            problems.append(
                (
                    "fragmented_keys_django.E011",
                    f"{MIDDLEWARE_PATH} is in MIDDLEWARE but settings.{SETTING} is not set.",
                    f"Set {SETTING} = {{'RESOLVER': ...}} (e.g. "
                    f"'fragmented_keys_django.tenancy.resolvers.HeaderResolver').",
                )
            )
        return problems, parts
    if not isinstance(raw, Mapping):
        problems.append(
            (
                "fragmented_keys_django.E010",
                f"settings.{SETTING} must be a dict, got {type(raw).__name__}.",
                "",
            )
        )
        return problems, parts
    unknown = sorted(set(raw) - set(KNOWN_KEYS))
    if unknown:
        problems.append(
            (
                "fragmented_keys_django.E010",
                f"settings.{SETTING} has unknown keys {unknown}.",
                f"Known keys: {', '.join(KNOWN_KEYS)}.",
            )
        )
    # resolver
    if "RESOLVER" in raw and "TENANT_ID_RESOLVER" in raw:
        problems.append(
            (
                "fragmented_keys_django.E011",
                f"settings.{SETTING} sets both RESOLVER and TENANT_ID_RESOLVER.",
                "TENANT_ID_RESOLVER is an alias of RESOLVER: keep one.",
            )
        )
    elif "RESOLVER" not in raw and "TENANT_ID_RESOLVER" not in raw:
        problems.append(
            (
                "fragmented_keys_django.E011",
                f"settings.{SETTING} has no RESOLVER.",
                "Set RESOLVER to a callable request -> tenant id, a dotted path, or "
                "{'CLASS': ..., 'OPTIONS': {...}}.",
            )
        )
    else:
        key = "RESOLVER" if "RESOLVER" in raw else "TENANT_ID_RESOLVER"
        try:
            parts["resolver"] = load_resolver(raw[key], f"{SETTING}[{key!r}]")
        except ConfigurationError as exc:
            problems.append(("fragmented_keys_django.E012", str(exc), ""))
    # whitelist
    wl = raw.get("WHITELIST_ROUTES", ())
    if (
        isinstance(wl, str)
        or not isinstance(wl, Collection)
        or not all(isinstance(x, str) and x for x in wl)
    ):
        problems.append(
            (
                "fragmented_keys_django.E013",
                f"settings.{SETTING}['WHITELIST_ROUTES'] must be a set of non-empty strings "
                f"(dotted view paths, route patterns, url names or /paths), got {wl!r}.",
                "A bare string is not a set: write {'health'}, not 'health'.",
            )
        )
    elif bad := sorted(e for e in wl if "*" in e[:-1] or e in ("*", "/*")):
        problems.append(
            (
                "fragmented_keys_django.E013",
                f"settings.{SETTING}['WHITELIST_ROUTES'] has {bad}: '*' may only end an entry, "
                f"as a prefix ('admin/*', 'admin:*', '/static/*'), and cannot stand alone "
                f"(every route would run without a tenant).",
                "Write the prefix before the '*'.",
            )
        )
    else:
        parts["whitelist"] = frozenset(wl)
    # tenants
    tenants = raw.get("TENANTS")
    try:
        parts["tenants"] = _load_tenants(tenants)
    except ConfigurationError as exc:
        problems.append(("fragmented_keys_django.E014", str(exc), ""))
    # access check
    try:
        parts["access"] = _load_access(raw.get("TENANT_ACCESS"))
    except ConfigurationError as exc:
        problems.append(("fragmented_keys_django.E017", str(exc), ""))
    resolver = parts.get("resolver")
    if isinstance(resolver, HeaderResolver) and parts.get("access", 1) is None:
        problems.append(
            (
                "fragmented_keys_django.W011",
                f"settings.{SETTING}['RESOLVER'] is {resolver!r} and no TENANT_ACCESS check is "
                f"set: any client can pick any tenant by sending the {resolver.header} header, "
                f"and every query, cached fragment and cached page then trusts that tenant.",
                "Set TENANT_ACCESS to a callable (request, tenant_id) -> bool (e.g. is the user a "
                "member of that tenant?). If only a trusted proxy sets the header (it strips the "
                "client's), say so by silencing fragmented_keys_django.W011.",
            )
        )
    # unknown tenant response
    view = raw.get("UNKNOWN_TENANT_RESPONSE")
    try:
        parts["unknown_response"] = _load_view(view)
    except ConfigurationError as exc:
        problems.append(("fragmented_keys_django.E015", str(exc), ""))
    return problems, parts


def _load_tenants(spec: Any) -> Any:
    where = f"settings.{SETTING}['TENANTS']"
    if spec is None:
        return None
    if isinstance(spec, str):
        spec = import_dotted(spec, where)
    if callable(spec):
        return spec
    if isinstance(spec, Collection) and not isinstance(spec, (str, bytes, Mapping)):
        return frozenset(spec)
    raise ConfigurationError(
        f"{where} must be None, a callable (tenant_id) -> bool, a dotted path to one, or a set of "
        f"tenant ids; got {spec!r}."
    )


def _load_callable(spec: Any, key: str, shape: str) -> Callable[..., Any] | None:
    """``None``, or the callable *spec* names (itself or a dotted path); *shape* for the error."""
    where = f"settings.{SETTING}[{key!r}]"
    if spec is None:
        return None
    if isinstance(spec, str):
        spec = import_dotted(spec, where)
    if not callable(spec):
        raise ConfigurationError(f"{where} must be {shape} or a dotted path to one, got {spec!r}.")
    return spec


def _load_access(spec: Any) -> Callable[..., Any] | None:
    return _load_callable(
        spec, "TENANT_ACCESS", "a callable (request, tenant_id) -> bool (sync or async)"
    )


def _load_view(spec: Any) -> Callable[..., Any] | None:
    return _load_callable(spec, "UNKNOWN_TENANT_RESPONSE", "a view (request) -> response")


_cache: tuple[Any, MiddlewareSettings] | None = None


def get_middleware_settings() -> MiddlewareSettings:
    """Return the parsed ``FRAGMENTED_KEYS_MIDDLEWARE`` (re-parsed when the setting object changes)."""
    global _cache
    from django.conf import settings

    raw = getattr(settings, SETTING, None)
    cached = _cache
    if cached is not None and cached[0] is raw:
        return cached[1]
    problems, parts = middleware_problems(raw, installed=True)
    errors = [p for p in problems if ".E" in p[0]]  # warnings (W011) do not stop the middleware
    if errors:
        check_id, message, hint = errors[0]
        raise ConfigurationError(f"{message} {hint} ({check_id})".replace("  ", " "))
    parsed = MiddlewareSettings(
        resolver=parts["resolver"],
        whitelist=parts["whitelist"],
        tenants=parts["tenants"],
        unknown_response=parts["unknown_response"],
        access=parts["access"],
    )
    _cache = (raw, parsed)
    return parsed


def _default_unknown(request: HttpRequest, reason: str) -> HttpResponse:
    if reason == FORBIDDEN_TENANT:
        response: HttpResponse = HttpResponseForbidden(
            "Forbidden: this request may not act as this tenant.",
            content_type="text/plain; charset=utf-8",
        )
        response["X-Tenant-Error"] = reason
        return response
    if reason == NO_TENANT:
        text = "Not Found: no tenant could be resolved for this request."
    else:
        text = "Not Found: unknown tenant."
    response = HttpResponseNotFound(text, content_type="text/plain; charset=utf-8")
    response["X-Tenant-Error"] = reason
    return response


class TenantMiddleware:
    """Resolve the request's tenant and run the rest of the stack inside it (sync and async)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        if get_response is None:
            raise ValueError("get_response must be provided.")
        self.get_response = get_response
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)
        get_middleware_settings()  # fail at start-up on a bad configuration

    def __repr__(self) -> str:
        return f"<{type(self).__qualname__} get_response={self.get_response!r}>"

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        conf = get_middleware_settings()
        if conf.is_whitelisted(request):
            request.tenant_id = None  # type: ignore[attr-defined]
            with TenantContext.use_tenant(None):
                return self.get_response(request)
        tenant = conf.resolve_tenant(request)
        if tenant is None:
            return self._unknown(conf, request, NO_TENANT, None)
        if not conf.exists(tenant):
            return self._unknown(conf, request, UNKNOWN_TENANT, tenant)
        if not conf.allowed(request, tenant):  # before the view, so before any cached page
            return self._unknown(conf, request, FORBIDDEN_TENANT, tenant)
        request.tenant_id = tenant  # type: ignore[attr-defined]
        with TenantContext.use_tenant(tenant):
            return self.get_response(request)

    async def __acall__(self, request: HttpRequest) -> Any:
        conf = get_middleware_settings()
        if conf.is_whitelisted(request):
            request.tenant_id = None  # type: ignore[attr-defined]
            with TenantContext.use_tenant(None):
                return await self.get_response(request)
        tenant = await conf.aresolve_tenant(request)
        if tenant is None:
            return await self._aunknown(conf, request, NO_TENANT, None)
        if not await conf.aexists(tenant):
            return await self._aunknown(conf, request, UNKNOWN_TENANT, tenant)
        if not await conf.aallowed(request, tenant):
            return await self._aunknown(conf, request, FORBIDDEN_TENANT, tenant)
        request.tenant_id = tenant  # type: ignore[attr-defined]
        with TenantContext.use_tenant(tenant):
            return await self.get_response(request)

    @staticmethod
    def _mark(request: HttpRequest, reason: str, tenant: str | None) -> None:
        request.tenant_id = None  # type: ignore[attr-defined]
        request.tenant_error = reason  # type: ignore[attr-defined]
        request.unknown_tenant_id = tenant  # type: ignore[attr-defined]

    def _unknown(
        self, conf: MiddlewareSettings, request: HttpRequest, reason: str, tenant: str | None
    ) -> Any:
        self._mark(request, reason, tenant)
        view = conf.unknown_response
        if view is None:
            return _default_unknown(request, reason)
        if iscoroutinefunction(view):
            return async_to_sync(view)(request)
        return view(request)

    async def _aunknown(
        self, conf: MiddlewareSettings, request: HttpRequest, reason: str, tenant: str | None
    ) -> Any:
        self._mark(request, reason, tenant)
        view = conf.unknown_response
        if view is None:
            return _default_unknown(request, reason)
        if iscoroutinefunction(view):
            return await view(request)
        return await sync_to_async(view, thread_sensitive=True)(request)
