"""Tenant resolvers: find the tenant id of an HTTP request.

A resolver is any callable ``resolver(request) -> str | None``; ``None`` means
"no tenant could be found" (the middleware then answers 404, never the public
namespace). Built-ins:

* :class:`HostResolver`: the whole host through a mapping, or the host's
  first label (``acme.example.com`` -> ``acme``);
* :class:`SubdomainResolver`: the label in front of a base domain;
* :class:`HeaderResolver`: a request header (``X-Tenant``);
* :class:`PathResolver`: the first URL path segment, optionally stripped from
  ``request.path_info`` so the URLconf does not see it;
* any callable, or a dotted path to one (seed 002's ``TENANT_ID_RESOLVER``),
  through :func:`load_resolver`.

Resolvers must be cheap and side-effect free (they run on every request, in the
event loop for async requests); to check that a tenant *exists* use the
middleware's ``TENANTS`` option, which runs in a thread for async requests.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from django.http import HttpRequest
from django.http.request import split_domain_port

from ..conf import import_dotted
from ..exceptions import ConfigurationError

__all__ = [
    "HeaderResolver",
    "HostResolver",
    "PathResolver",
    "SubdomainResolver",
    "TenantResolver",
    "load_resolver",
    "request_host",
]


@runtime_checkable
class TenantResolver(Protocol):
    """What the middleware calls: ``resolver(request) -> tenant id or None``."""

    def __call__(self, request: HttpRequest) -> str | None: ...


def request_host(request: HttpRequest) -> str:
    """Return the request's host, lowercased, without port or trailing dot.

    Uses ``request.get_host()``, so ``ALLOWED_HOSTS`` is enforced: a host not
    allowed raises ``DisallowedHost`` (Django answers 400).
    """
    domain, _port = split_domain_port(request.get_host())
    return domain.rstrip(".").lower()


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


class HostResolver:
    """Tenant from the request host.

    ``HostResolver({"acme.example.com": "acme", "shop.acme.test": "acme"})``
    maps full hosts (case-insensitive, port ignored) to tenant ids; an unknown
    host resolves to ``None``. ``HostResolver(first_label=True)`` takes the
    first DNS label of the host (``acme.example.com`` -> ``acme``); a bare
    one-label host (``localhost``) or an IP address resolves to ``None``.
    Labels listed in *exclude* (default ``www``) never name a tenant.
    """

    def __init__(
        self,
        mapping: Mapping[str, str] | None = None,
        *,
        first_label: bool = False,
        exclude: tuple[str, ...] | list[str] = ("www",),
    ) -> None:
        if (mapping is None) == (not first_label):
            raise ConfigurationError(
                "HostResolver needs either a mapping {host: tenant_id} or first_label=True (not both)."
            )
        self.mapping = (
            None if mapping is None else {k.rstrip(".").lower(): v for k, v in mapping.items()}
        )
        self.first_label = first_label
        self.exclude = frozenset(x.lower() for x in exclude)

    def __call__(self, request: HttpRequest) -> str | None:
        host = request_host(request)
        if self.mapping is not None:
            return self.mapping.get(host)
        if _is_ip(host):
            return None
        labels = host.split(".")
        if len(labels) < 2 or not labels[0] or labels[0] in self.exclude:
            return None
        return labels[0]

    def __repr__(self) -> str:
        mode = "first_label=True" if self.first_label else f"{len(self.mapping or {})} hosts"
        return f"HostResolver({mode})"


class SubdomainResolver:
    """Tenant from the label in front of *base_domain*: ``acme.example.com`` -> ``acme``.

    The host must be exactly one label under *base_domain* (port ignored,
    case-insensitive); the bare base domain, deeper subdomains
    (``a.b.example.com``), other domains and labels in *exclude* (default
    ``www``) resolve to ``None``.
    """

    def __init__(
        self, base_domain: str, *, exclude: tuple[str, ...] | list[str] = ("www",)
    ) -> None:
        base = base_domain.strip().strip(".").lower()
        if not base:
            raise ConfigurationError(
                "SubdomainResolver(base_domain) needs a domain, e.g. 'example.com'."
            )
        self.base_domain = base
        self._suffix = "." + base
        self.exclude = frozenset(x.lower() for x in exclude)

    def __call__(self, request: HttpRequest) -> str | None:
        host = request_host(request)
        if not host.endswith(self._suffix):
            return None
        label = host[: -len(self._suffix)]
        if not label or "." in label or label in self.exclude:
            return None
        return label

    def __repr__(self) -> str:
        return f"SubdomainResolver({self.base_domain!r})"


class HeaderResolver:
    """Tenant from a request header (default ``X-Tenant``); missing or blank -> ``None``."""

    def __init__(self, header: str = "X-Tenant") -> None:
        if not header or not isinstance(header, str):
            raise ConfigurationError(f"HeaderResolver(header) needs a header name, got {header!r}.")
        self.header = header

    def __call__(self, request: HttpRequest) -> str | None:
        value = request.headers.get(self.header)
        if value is None:
            return None
        value = value.strip()
        return value or None

    def __repr__(self) -> str:
        return f"HeaderResolver({self.header!r})"


class PathResolver:
    """Tenant from the first segment of the URL path: ``/acme/orders/`` -> ``acme``.

    With ``strip=True`` the segment is removed from ``request.path_info``
    (``/acme/orders/`` -> ``/orders/``), so the URLconf is written without it;
    ``request.path`` keeps the full path, as with a ``SCRIPT_NAME`` mount, and
    ``request.tenant_path_prefix`` holds the removed prefix (``/acme``). A
    path with no segment (``/``) resolves to ``None``. Segments listed in
    *exclude* never name a tenant.
    """

    def __init__(self, strip: bool = False, *, exclude: tuple[str, ...] | list[str] = ()) -> None:
        self.strip = bool(strip)
        self.exclude = frozenset(exclude)

    def __call__(self, request: HttpRequest) -> str | None:
        path = request.path_info or "/"
        rest = path.lstrip("/")
        segment, _, tail = rest.partition("/")
        if not segment or segment in self.exclude:
            return None
        if self.strip:
            request.path_info = "/" + tail
            request.tenant_path_prefix = "/" + segment  # type: ignore[attr-defined]
        return segment

    def __repr__(self) -> str:
        return f"PathResolver(strip={self.strip})"


def load_resolver(spec: Any, where: str = "RESOLVER") -> Callable[[HttpRequest], Any]:
    """Return the resolver callable that *spec* names.

    *spec* is a callable (a resolver instance or a function), a dotted path to
    a function or to a resolver class (instantiated with no arguments), or a
    dict ``{"CLASS": "dotted.path", "OPTIONS": {...keyword arguments}}``.
    Raises ``ConfigurationError`` when it cannot be imported or is not callable.
    """
    if isinstance(spec, Mapping):
        unknown = set(spec) - {"CLASS", "OPTIONS"}
        if "CLASS" not in spec or unknown:
            raise ConfigurationError(
                f"{where} as a dict must be {{'CLASS': 'dotted.path', 'OPTIONS': {{...}}}}, got keys {sorted(spec)}."
            )
        cls = import_dotted(spec["CLASS"], where)
        options = spec.get("OPTIONS") or {}
        if not isinstance(options, Mapping):
            raise ConfigurationError(
                f"{where}['OPTIONS'] must be a dict of keyword arguments, got {options!r}."
            )
        try:
            return cls(**options)
        except TypeError as exc:
            raise ConfigurationError(f"{where}: {spec['CLASS']}(**OPTIONS) failed: {exc}") from exc
    if isinstance(spec, str):
        obj = import_dotted(spec, where)
        if isinstance(obj, type):
            try:
                obj = obj()
            except TypeError as exc:
                raise ConfigurationError(
                    f"{where} names the class {spec!r}, which needs arguments: {exc}. Use "
                    f"{{'CLASS': {spec!r}, 'OPTIONS': {{...}}}} or a dotted path to an instance."
                ) from exc
        spec = obj
    if isinstance(spec, type):
        try:
            spec = spec()
        except TypeError as exc:
            raise ConfigurationError(
                f"{where}: the class {spec.__name__} needs arguments: {exc}"
            ) from exc
    if not callable(spec):
        raise ConfigurationError(
            f"{where} must be a callable request -> tenant id, a dotted path to one, or "
            f"{{'CLASS': ..., 'OPTIONS': ...}}; got {spec!r}."
        )
    return spec
