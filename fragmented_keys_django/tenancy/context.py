"""The current tenant, carried by a ``ContextVar``.

Each thread and each asyncio task sees its own tenant; ``asgiref``'s
``sync_to_async`` and ``async_to_sync`` copy the context, so the tenant follows
a call across them. The API follows django-omnitenant's ``TenantContext``
(``use_tenant``, ``get_tenant``, ``push_tenant``, ``pop_tenant``,
``clear_all``), with tenants given either as string ids or as objects with a
``tenant_id`` attribute.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any, TypeVar

from ..exceptions import InvalidTenant

__all__ = [
    "MAX_TENANT_ID_LENGTH",
    "TenantContext",
    "current_tenant_id",
    "set_tenant_source",
    "tenant_id_of",
]

#: Longest tenant id accepted, in characters. Keys are hashed, so the limit
#: guards memory and logs rather than key length.
MAX_TENANT_ID_LENGTH = 65_536

F = TypeVar("F", bound=Callable[..., Any])

_UNSET: Any = object()

# A tenant id (str), or (tenant as given, normalised tenant id); _UNSET = no
# tenant set by use_tenant()/push_tenant(), or use_tenant(None): ask the
# configured source (none configured: the public namespace).
_current: ContextVar[Any] = ContextVar("fkd_tenant", default=_UNSET)

# Zero-argument callables returning (tenant, tenant id) or None, consulted when
# no use_tenant() is in effect (django-tenants' connection, omnitenant's
# TenantContext...). Set from settings by ``set_tenant_source``.
_source: Callable[[], Any] | None = None


def set_tenant_source(source: Callable[[], Any] | None) -> None:
    """Install *source*, a zero-argument callable returning the current tenant or ``None``.

    It is consulted when no ``use_tenant(tenant)`` names a tenant (outside any,
    or inside ``use_tenant(None)``), so an explicit tenant always wins and
    "no tenant" never hides the one the source reports. ``None`` removes it.
    """
    global _source
    _source = source


def _from_source() -> tuple[Any, str] | None:
    tenant = _source() if _source is not None else None
    return None if tenant is None else (tenant, tenant_id_of(tenant))


def _get() -> tuple[Any, str] | None:
    cur = _current.get()
    if type(cur) is str:
        return (cur, cur)
    if cur is _UNSET:
        return None if _source is None else _from_source()
    return cur


# Tokens of push_tenant() calls, so pop_tenant() can restore the outer tenant.
_pushed: ContextVar[tuple[Token, ...]] = ContextVar("fkd_tenant_pushed", default=())


def tenant_id_of(tenant: Any) -> str:
    """Return the tenant id of *tenant*: a ``str`` id, or an object's ``tenant_id``.

    Raises :class:`~fragmented_keys_django.exceptions.InvalidTenant` when the
    id is empty, not a string, or longer than ``MAX_TENANT_ID_LENGTH``.
    """
    if type(tenant) is str:
        tid = tenant
    elif isinstance(tenant, str):
        tid = str(tenant)
    else:
        tid = getattr(tenant, "tenant_id", None)
        if tid is None:
            raise InvalidTenant(
                f"A tenant must be a string id or an object with a `tenant_id` attribute, "
                f"got {type(tenant).__name__}: {tenant!r:.200}. Pass the id, e.g. "
                f"TenantContext.use_tenant(str(tenant.pk))."
            )
        if not isinstance(tid, str):
            raise InvalidTenant(
                f"tenant.tenant_id must be a string, got {type(tid).__name__}: {tid!r:.200}. "
                f"Convert it (str(...)) or give the tenant a string `tenant_id`."
            )
    if not tid:
        raise InvalidTenant("A tenant id must not be empty; use None for the public namespace.")
    if len(tid) > MAX_TENANT_ID_LENGTH:
        raise InvalidTenant(
            f"A tenant id must be at most {MAX_TENANT_ID_LENGTH} characters, got "
            f"{len(tid)} (starts {tid[:40]!r}). Use a shorter, stable identifier."
        )
    return tid


def write_tenant_id(using: str | None) -> Any:
    """Return the tenant whose rows a write on connection *using* changes, if the source says.

    ``...`` when the tenant source cannot tell (no source, or one without
    ``of_connection``): then the current tenant is the write's. With
    django-tenants it is the connection's schema (``None``: public).
    """
    of_connection = getattr(_source, "of_connection", None)
    if of_connection is None:
        return ...
    tenant = of_connection(using)
    return None if tenant is None else tenant_id_of(tenant)


def enter_source_tenant(tenant_id: str) -> Any:
    """A context manager making *tenant_id* current through the source (``None`` if it cannot)."""
    enter = getattr(_source, "enter", None)
    return None if enter is None else enter(tenant_id)


def current_tenant_id() -> str | None:
    """Return the current tenant id, or ``None`` outside any tenant (public)."""
    cur = _current.get()
    if type(cur) is str:
        return cur
    if cur is _UNSET:
        if _source is None:
            return None
        cur = _from_source()
    return None if cur is None else cur[1]


class _UseTenant:
    """Context manager and decorator returned by ``TenantContext.use_tenant``."""

    __slots__ = ("_token", "_value")

    def __init__(self, tenant: Any) -> None:
        if type(tenant) is str and tenant and len(tenant) <= MAX_TENANT_ID_LENGTH:
            self._value = tenant  # fast path: a plain id is stored as itself
        elif tenant is None:
            self._value = _UNSET  # no tenant of ours: the source (if any) decides
        else:
            self._value = (tenant, tenant_id_of(tenant))
        self._token: Token | None = None

    def __enter__(self) -> Any:
        if self._token is not None:
            raise RuntimeError("use_tenant() context is not re-entrant; create a new one")
        value = self._value
        self._token = _current.set(value)
        if type(value) is tuple:
            return value[0]
        return None if value is _UNSET else value

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        _current.reset(self._token)
        self._token = None

    async def __aenter__(self) -> Any:
        return self.__enter__()

    async def __aexit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.__exit__(exc_type, exc, tb)

    def __call__(self, func: F) -> F:
        value = self._value
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                token = _current.set(value)
                try:
                    return await func(*args, **kwargs)
                finally:
                    _current.reset(token)

            return awrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            token = _current.set(value)
            try:
                return func(*args, **kwargs)
            finally:
                _current.reset(token)

        return wrapper  # type: ignore[return-value]


class TenantContext:
    """The current tenant, per thread and per asyncio task.

    Usage::

        with TenantContext.use_tenant("acme"):
            caches["fragmented"].set("k", 1)    # lives in acme's namespace

        @TenantContext.use_tenant(tenant)       # also a decorator, sync or async
        def job(): ...

    ``use_tenant(None)`` leaves any tenant named by an outer ``use_tenant``:
    the configured tenant source decides (django-tenants' schema, omnitenant's
    tenant), and without one the public namespace is current.
    """

    #: ``use_tenant(tenant)``: a context manager / decorator making *tenant* current.
    #:
    #: *tenant* is a string id, an object with a ``tenant_id`` attribute, or
    #: ``None`` (no tenant named: the tenant source decides, else the public
    #: namespace). Nesting restores the outer tenant on
    #: exit. Raises ``InvalidTenant`` at once for a bad id. (The class itself,
    #: not a wrapper function: entering a tenant is on every request's path.)
    use_tenant = _UseTenant

    @staticmethod
    def get_tenant() -> Any:
        """Return the current tenant as it was given, or ``None``."""
        cur = _get()
        return None if cur is None else cur[0]

    @staticmethod
    def get_tenant_id() -> str | None:
        """Return the current tenant id (``str``), or ``None`` outside any tenant."""
        return current_tenant_id()

    @staticmethod
    def push_tenant(tenant: Any) -> None:
        """Make *tenant* current until the matching ``pop_tenant()`` (omnitenant API)."""
        value = _UseTenant(tenant)._value
        _pushed.set((*_pushed.get(), _current.set(value)))

    @staticmethod
    def pop_tenant() -> None:
        """Restore the tenant that was current before the last ``push_tenant()``.

        A no-op when nothing was pushed, as in django-omnitenant.
        """
        stack = _pushed.get()
        if stack:
            _current.reset(stack[-1])
            _pushed.set(stack[:-1])

    @staticmethod
    def clear_all() -> None:
        """Leave every tenant set with ``use_tenant``/``push_tenant`` (the source, if any, applies)."""
        _pushed.set(())
        _current.set(_UNSET)
