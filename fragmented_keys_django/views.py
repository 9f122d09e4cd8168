"""Tag-aware page cache: ``@tagged_cache_page`` and ``TaggedCachePageMixin``.

A whole response is cached per tenant under tags resolved from the view's URL
arguments, so a registered model's save invalidates the pages that show it::

    @tagged_cache_page(600, tags=["Patient:{patient_id}"])
    def patient(request, patient_id): ...

Which responses are cached, and under which key, follows Django's own page
cache (``django.middleware.cache``, ``django.utils.cache``), reused rather
than re-derived: only ``GET`` and ``HEAD``; only status 200, non-streaming;
never a response with ``Cache-Control: private``, ``no-cache`` or
``no-store``, with ``Vary: *``, or that sets a cookie while varying on
``Cookie``; a request bearing ``Authorization`` varies on it unless the
response is ``public``; the key is Django's (``learn_cache_key`` /
``get_cache_key``: the URL, the headers named by the response's ``Vary`` and
the active language), looked up with the same two reads as ``cache_page`` (the
URL's header list, then the page). Differences, each on purpose:

* the page also depends on its tags and the tenant (the fragmented alias);
* a response whose rendering used the CSRF token (``get_token``) is not cached:
  it embeds one browser's secret;
* a view that read ``request.session`` gets ``Vary: Cookie`` before the key is
  learned (``SessionMiddleware`` adds it only after ``cache_page`` stored the
  page), so one anonymous visitor's session data never reaches another; a view
  that wrote the session is not cached;
* no ``Expires``/``max-age`` is added to the response (``cache_page`` adds
  them): a browser or proxy would keep the page after a bump, which it cannot
  hear about. Add ``@cache_control`` yourself if that staleness is acceptable;
* the page is computed inside ``get_or_set_with_tags``: tag versions are read
  before the view runs (a page computed from data older than a bump is never
  served after it), a stampede lock, and the transaction rules of
  :mod:`fragmented_keys_django.transactions`;
* ``TemplateResponse`` is rendered by the decorator (Django defers the store
  to a post-render callback; the store must happen inside
  ``get_or_set_with_tags``), so outer ``process_template_response`` hooks see
  a rendered response.

Trust boundary. The cache runs inside the view, after every middleware
(``TenantMiddleware`` and its access check, authentication) and after every
decorator placed above it (``login_required``, ``permission_required``): a
cached page is served only to a request that passed all of them. With
``per_user=True`` (the default) the page of an authenticated user
(``request.user.is_authenticated``) is an entry of that user alone; anonymous
requests share one entry per tenant (one per session if the view read it).
``per_user=False`` shares a tenant's page between every user who passes the
checks above it: only for pages that show nothing user-specific. Django's ``CacheMiddleware`` runs before the view stack
and knows neither, so it is not the way to cache authenticated pages.
"""

from __future__ import annotations

import functools
import inspect
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase
from django.utils.cache import get_cache_key as _django_cache_key
from django.utils.cache import get_max_age, has_vary_header, learn_cache_key, patch_vary_headers
from django.utils.http import parse_http_date_safe

from .conf import check_seconds, get_cache, resolve_alias
from .decorators import _MISSING, _Args, _Template
from .exceptions import InvalidTagTemplate, InvalidTimeout

__all__ = ["PageCache", "TaggedCachePageMixin", "tagged_cache_page"]

_NOT_CACHED_DIRECTIVES = ("private", "no-cache", "no-store")


class _Uncacheable(Exception):
    """Raised from the page's computation to return a response without storing it."""

    def __init__(self, response: HttpResponseBase) -> None:
        super().__init__("response not cacheable")
        self.response = response


class _SessionUse:
    """Whether the view read or wrote ``request.session`` (``SessionMiddleware``'s flags).

    ``accessed`` is cleared around the view and set back afterwards (OR-ed, so
    ``SessionMiddleware`` still adds ``Vary: Cookie``): a read by the page
    cache itself (``request.user`` loads the session) is not the view's.
    """

    def __init__(self, request: HttpRequest) -> None:
        self.session = getattr(request, "session", None)
        self.before = False
        self.read = False

    def __enter__(self) -> _SessionUse:
        if self.session is not None:
            self.before = self.session.accessed
            self.session.accessed = False
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.session is not None:
            self.read = self.session.accessed
            self.session.accessed = self.before or self.read

    @property
    def written(self) -> bool:
        return self.session is not None and bool(self.session.modified)


class _Probe:
    """Stands in for a cache in Django's key functions: answers from *known*, records writes.

    ``get_cache_key`` and ``learn_cache_key`` read and write the URL's header
    list through ``cache.get``/``cache.set``; the probe lets their rules run
    unchanged while the I/O goes through the fragmented alias (sync or async).
    """

    def __init__(self, known: dict[str, Any] | None = None) -> None:
        self.known = known or {}
        self.asked: str | None = None
        self.written: tuple[str, Any, Any] | None = None

    def get(self, key: str, default: Any = None) -> Any:
        self.asked = key
        return self.known.get(key, default)

    def set(self, key: str, value: Any, timeout: Any = None) -> None:
        self.written = (key, value, timeout)


class _Kwargs:
    """``_Template``'s argument map for tag templates resolved from a dict (class-based views)."""

    def check(self, name: str, where: str) -> None:
        return None

    def value(self, name: str, args: tuple, kwargs: dict) -> Any:
        return kwargs.get(name, _MISSING)


def _served(response: HttpResponseBase) -> HttpResponseBase:
    """Django's ``FetchFromCacheMiddleware`` step for a hit: the ``Age`` estimate."""
    max_age = get_max_age(response)
    if max_age is not None and "Expires" in response:
        expires = parse_http_date_safe(response["Expires"])
        if expires is not None:
            response["Age"] = max(0, max_age - (expires - int(time.time())))
    return response


class PageCache:
    """Caches whole responses of one view in a fragmented alias (see the module docstring).

    *timeout*: seconds an entry lives (``None``: until a bump or a flush).
    *per_user*: key an authenticated user's pages by user (default ``True``).
    *cache*: a fragmented alias, or the store alias one wraps (default: the
    project's fragmented alias). *key_prefix*: as ``cache_page``'s. Used by
    :func:`tagged_cache_page` and :class:`TaggedCachePageMixin`.
    """

    def __init__(
        self,
        timeout: float | None,
        *,
        per_user: bool = True,
        cache: str | None = None,
        key_prefix: str | None = None,
    ) -> None:
        self.timeout = check_seconds(timeout, "tagged_cache_page timeout", error=InvalidTimeout)
        self.per_user = per_user
        self.cache = cache
        self.key_prefix = key_prefix or ""

    def backend(self) -> Any:
        """The fragmented alias's backend."""
        return get_cache(resolve_alias(self.cache))

    # -- keys ---------------------------------------------------------------

    def _header_key(self, request: HttpRequest) -> str:
        probe = _Probe()
        _django_cache_key(request, self.key_prefix, "GET", cache=probe)
        assert probe.asked is not None
        return probe.asked

    def _page_key(self, request: HttpRequest, method: str, headers: Any, user: str) -> str:
        probe = _Probe()
        probe.known = {self._header_key(request): [] if headers is None else headers}
        key = _django_cache_key(request, self.key_prefix, method, cache=probe)
        return f"{key}|{user}" if user else key

    def _user(self, user: Any) -> str:
        if not self.per_user or user is None or not getattr(user, "is_authenticated", False):
            return ""
        return f"user={user._meta.label_lower}:{user.pk}"

    # -- Django's rules ---------------------------------------------------------

    def _check(
        self, request: HttpRequest, response: HttpResponseBase, session: _SessionUse
    ) -> None:
        """Raise ``_Uncacheable`` unless Django's page cache would store *response*.

        A view that read the session gets ``Vary: Cookie`` before the key is
        learned (what ``SessionMiddleware`` adds after the page is stored), so
        each session has its own entry; one that wrote it is not stored.
        """
        if response.streaming or response.status_code != 200:
            raise _Uncacheable(response)
        if session.written:
            raise _Uncacheable(response)  # the visitor's cookie is set after the view
        if session.read:
            patch_vary_headers(response, ("Cookie",))
        if response.cookies and has_vary_header(response, "Cookie"):
            raise _Uncacheable(response)
        cache_control = response.get("Cache-Control", "").lower()
        if any(d in cache_control for d in _NOT_CACHED_DIRECTIVES):
            raise _Uncacheable(response)
        if has_vary_header(response, "*"):
            raise _Uncacheable(response)
        if request.META.get("CSRF_COOKIE_NEEDS_UPDATE"):
            raise _Uncacheable(response)  # the page holds this browser's CSRF token
        if request.headers.get("Authorization") and "public" not in cache_control:
            patch_vary_headers(response, ("Authorization",))
        render = getattr(response, "render", None)
        if callable(render) and not getattr(response, "is_rendered", True):
            render()

    def _learn(self, request: HttpRequest, response: HttpResponseBase) -> tuple[str, tuple]:
        probe = _Probe()
        key = learn_cache_key(request, response, self.timeout, self.key_prefix, cache=probe)
        assert probe.written is not None
        return key, probe.written

    # -- sync -----------------------------------------------------------------

    def serve(
        self, request: HttpRequest, view: Callable[[], HttpResponseBase], tags: Sequence[Any]
    ) -> HttpResponseBase:
        """Return the cached page for *request*, or call *view* and cache its response.

        *tags*: the page's tags (any form ``normalize_tags`` accepts). Raises
        what the view raises, and ``InvalidTag`` for bad tags.
        """
        if request.method not in ("GET", "HEAD"):
            return view()
        backend = self.backend()
        headers = backend.get(self._header_key(request))
        user = self._user(getattr(request, "user", None)) if self.per_user else ""
        if request.method == "HEAD" and headers is not None:
            hit = backend.get_with_tags(self._page_key(request, "GET", headers, user), tags)
            if hit is not None:
                return _served(hit)
        key = self._page_key(request, request.method, headers, user)

        def compute() -> HttpResponseBase:
            with _SessionUse(request) as session:
                response = view()
            self._check(request, response, session)
            learned, header_entry = self._learn(request, response)
            backend.set(*header_entry)
            if (f"{learned}|{user}" if user else learned) != key:
                raise _Uncacheable(response)  # its Vary headers changed: stored next time
            return response

        try:
            return _served(backend.get_or_set_with_tags(key, compute, tags, timeout=self.timeout))
        except _Uncacheable as exc:
            return exc.response

    # -- async ----------------------------------------------------------------

    async def aserve(
        self, request: HttpRequest, view: Callable[[], Any], tags: Sequence[Any]
    ) -> Any:
        """Async twin of :meth:`serve`: *view* returns an awaitable response."""
        if request.method not in ("GET", "HEAD"):
            return await view()
        backend = self.backend()
        headers = await backend.aget(self._header_key(request))
        user = ""
        if self.per_user:
            auser = getattr(request, "auser", None)
            user = self._user(
                await auser() if auser is not None else getattr(request, "user", None)
            )
        if request.method == "HEAD" and headers is not None:
            hit = await backend.aget_with_tags(self._page_key(request, "GET", headers, user), tags)
            if hit is not None:
                return _served(hit)
        key = self._page_key(request, request.method, headers, user)

        async def compute() -> HttpResponseBase:
            with _SessionUse(request) as session:
                response = await view()
            self._check(request, response, session)
            learned, header_entry = self._learn(request, response)
            await backend.aset(*header_entry)
            if (f"{learned}|{user}" if user else learned) != key:
                raise _Uncacheable(response)
            return response

        try:
            return _served(
                await backend.aget_or_set_with_tags(key, compute, tags, timeout=self.timeout)
            )
        except _Uncacheable as exc:
            return exc.response


def _templates(tags: Any, argmap: Any, where: str) -> list[_Template]:
    if isinstance(tags, str):
        raise InvalidTagTemplate(
            f"{where}: tags must be a list of templates, got the string {tags!r}; wrap it in a list"
        )
    return [_Template(t, argmap) for t in tags or ()]


def tagged_cache_page(
    timeout: float | None,
    *,
    tags: Sequence[str] | Callable[..., Any] = (),
    per_user: bool = True,
    cache: str | None = None,
    key_prefix: str | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Cache a view's responses per tenant, invalidated when any of its tags is bumped.

    Django's ``cache_page(timeout, cache=..., key_prefix=...)`` with tags:

    * *timeout*: seconds a page is kept (``None``: until a bump or a flush).
    * *tags*: templates such as ``"Patient:{patient_id}"`` resolved from the
      view's arguments (the URL's kwargs; ``{request.user.pk}`` works too; a
      model instance stands for its pk; checked against the view's signature
      when the view is decorated), or a callable ``(request, *args, **kwargs)
      -> tags``.
    * *per_user*: see the module docstring (trust boundary).
    * *cache*, *key_prefix*: as ``cache_page``'s; *cache* is a fragmented
      alias or the store alias one wraps.

    Works on sync and async function views, and on class-based views through
    ``method_decorator(tagged_cache_page(...), name="dispatch")`` (or use
    :class:`TaggedCachePageMixin`). Raises ``InvalidTagTemplate`` at decoration
    time for a template naming an unknown parameter, ``InvalidTimeout`` for a
    bad timeout.
    """
    page = PageCache(timeout, per_user=per_user, cache=cache, key_prefix=key_prefix)

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        if callable(tags):
            resolver = tags
        else:
            argmap = _Args(view, inspect.signature(view))
            templates = _templates(tags, argmap, f"tagged_cache_page on {view.__qualname__}")

            def resolver(*args: Any, **kwargs: Any) -> list[tuple[str, str]]:
                return [(t.name, t.instance(argmap, args, kwargs)) for t in templates]

        if iscoroutinefunction(view):

            async def _aview(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                return await page.aserve(
                    request,
                    lambda: view(request, *args, **kwargs),
                    resolver(request, *args, **kwargs),
                )

            wrapper = functools.wraps(view)(_aview)
            markcoroutinefunction(wrapper)
        else:

            def _view(request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
                return page.serve(
                    request,
                    lambda: view(request, *args, **kwargs),
                    resolver(request, *args, **kwargs),
                )

            wrapper = functools.wraps(view)(_view)
        wrapper.page_cache = page  # type: ignore[attr-defined]
        return wrapper

    return decorate


class TaggedCachePageMixin:
    """Class-based-view support for the page cache.

    Put it after every access mixin and before ``View`` in the bases
    (``class V(LoginRequiredMixin, TaggedCachePageMixin, DetailView)``): its
    ``dispatch`` serves a cached page without calling the ones after it. A
    class with an ``AccessMixin`` (``LoginRequiredMixin``,
    ``PermissionRequiredMixin``, ``UserPassesTestMixin``) after it raises
    ``TypeError`` when it is defined.

    Class attributes: ``cache_timeout`` (seconds, ``None``: until a bump),
    ``cache_tags`` (templates resolved from the URL's kwargs, ``self.kwargs``,
    plus ``{request...}``), ``cache_per_user`` (default ``True``),
    ``cache_alias`` and ``cache_key_prefix``. Override :meth:`get_cache_tags`
    for tags computed otherwise. Sync and async views.
    """

    cache_timeout: float | None = 600
    cache_tags: Sequence[str] = ()
    cache_per_user: bool = True
    cache_alias: str | None = None
    cache_key_prefix: str | None = None

    request: HttpRequest
    kwargs: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # No import of django.contrib.auth (it needs the app installed): without the
        # module loaded, no base can be one of its mixins.
        mixins = sys.modules.get("django.contrib.auth.mixins")
        mro = cls.__mro__
        after = mro[mro.index(TaggedCachePageMixin) + 1 :]
        guards = [
            k
            for k in after
            if mixins is not None
            and issubclass(k, mixins.AccessMixin)
            and k is not mixins.AccessMixin
        ]
        if guards:
            raise TypeError(
                f"{cls.__qualname__}: TaggedCachePageMixin comes before {guards[0].__name__} in "
                f"the bases, so a cached page would be served before the access check runs. "
                f"Put the access mixins first: class {cls.__name__}({guards[0].__name__}, "
                f"TaggedCachePageMixin, ...)."
            )

    @classmethod
    def _page_cache(cls) -> tuple[PageCache, list[_Template]]:
        built = cls.__dict__.get("_fkd_page_cache")
        if built is None:
            page = PageCache(
                cls.cache_timeout,
                per_user=cls.cache_per_user,
                cache=cls.cache_alias,
                key_prefix=cls.cache_key_prefix,
            )
            built = (page, _templates(cls.cache_tags, _Kwargs(), f"{cls.__qualname__}.cache_tags"))
            cls._fkd_page_cache = built  # type: ignore[attr-defined]
        return built

    def get_cache_tags(self) -> list[Any]:
        """Return the page's tags: ``cache_tags`` resolved from ``self.kwargs`` and the request."""
        _, templates = self._page_cache()
        values = {"request": self.request, **self.kwargs}
        return [(t.name, t.instance(_Kwargs(), (), values)) for t in templates]

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Any:
        page, _ = self._page_cache()
        parent = super().dispatch  # type: ignore[misc]
        if getattr(self, "view_is_async", False):
            return page.aserve(
                request, lambda: parent(request, *args, **kwargs), self.get_cache_tags()
            )
        return page.serve(request, lambda: parent(request, *args, **kwargs), self.get_cache_tags())
