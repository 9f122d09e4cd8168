"""``@tagged_cache``: cache a function's result under tags resolved from its arguments.

All bookkeeping (signature, templates, argument positions) is done once at
decoration time; a call only looks its arguments up and makes one
``get_or_set_with_tags`` call (one round trip on a hit).
"""

from __future__ import annotations

import datetime
import decimal
import enum
import functools
import hashlib
import inspect
import marshal
import pathlib
import string
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from django.db import models

from .conf import check_beta, check_seconds, get_cache, resolve_alias
from .exceptions import InvalidTagTemplate, InvalidTimeout
from .tags import split_tag_text

__all__ = ["tagged_cache"]

F = TypeVar("F", bound=Callable[..., Any])
_formatter = string.Formatter()
_MISSING = object()
_RESOLVED_SIZE = 1024  # remembered (key, tags) per decorated function


def _root(field_name: str) -> str:
    for i, ch in enumerate(field_name):
        if ch in ".[":
            return field_name[:i]
    return field_name


class _Args:
    """Looks up a parameter's value from ``(args, kwargs)`` without ``inspect`` per call."""

    def __init__(self, func: Callable[..., Any], sig: inspect.Signature) -> None:
        self.func = func
        self.sig = sig
        self.params = sig.parameters
        self.positions: dict[str, int] = {}
        self.defaults: dict[str, Any] = {}
        self.var_kw = any(p.kind is p.VAR_KEYWORD for p in self.params.values())
        for i, p in enumerate(self.params.values()):
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
                self.positions[p.name] = i
            if p.default is not p.empty:
                self.defaults[p.name] = p.default

    def check(self, name: str, where: str) -> None:
        unknown = name not in self.params or self.params[name].kind in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        )
        if unknown and not (self.var_kw and name not in self.params):
            raise InvalidTagTemplate(
                f"{where} names {name!r}, which is not a parameter of "
                f"{self.func.__qualname__}{self.sig}. Use one of: {', '.join(self.params)}."
            )

    def value(self, name: str, args: tuple, kwargs: dict) -> Any:
        if name in kwargs:
            return kwargs[name]
        pos = self.positions.get(name)
        if pos is not None and pos < len(args):
            return args[pos]
        return self.defaults.get(name, _MISSING)


class _Template:
    """A tag template such as ``"User:{user_id}"`` or ``"Org:{user.org_id}"``."""

    def __init__(self, template: str, argmap: _Args) -> None:
        if not isinstance(template, str) or not template:
            raise InvalidTagTemplate(f"A tag template must be a non-empty string, got {template!r}")
        try:
            chunks = list(_formatter.parse(template))  # validates the braces
        except ValueError as exc:
            raise InvalidTagTemplate(f"Tag template {template!r} is malformed: {exc}") from exc
        self.template = template
        # The tag name is read as parse_tag() reads any tag: up to the first
        # unescaped colon of the literal text before the first placeholder.
        first = next((i for i, c in enumerate(chunks) if c[1] is not None), len(chunks))
        head = "".join(c[0] for c in chunks[: first + 1])
        self.name, rest = split_tag_text(head)
        if not self.name:
            raise InvalidTagTemplate(
                f"Tag template {template!r} has no tag name before its first placeholder; "
                f"write it as 'Name:{{param}}'."
            )
        if rest is None and first < len(chunks):
            raise InvalidTagTemplate(
                f"Tag template {template!r} has a placeholder in its tag name: the name ends "
                f"at the first colon, so write it as {self.name + ':{...}'!r}."
            )
        self.parts = []
        if first < len(chunks):
            _, field, spec, conv = chunks[first]
            tail = [(rest or "", field, spec, conv), *chunks[first + 1 :]]
        else:
            tail = [(rest, None, None, None)] if rest else []
        for literal, field, spec, conv in tail:
            if field is not None:
                if not field:
                    raise InvalidTagTemplate(
                        f"Tag template {template!r} has an empty placeholder {{}}"
                    )
                argmap.check(_root(field), f"Tag template {template!r}")
            self.parts.append((literal, field, spec, conv))
        # The common "Name:{param}": one plain placeholder and nothing else.
        only = self.parts[0] if len(self.parts) == 1 else None
        self.simple = (
            only[1]
            if only is not None
            and not only[0]
            and only[1]
            and only[1] == _root(only[1])
            and not only[2]
            and not only[3]
            else None
        )

    def instance(self, argmap: _Args, args: tuple, kwargs: dict) -> str:
        simple = self.simple
        if simple is not None:  # fast path: "Name:{param}"
            value = argmap.value(simple, args, kwargs)
            kind = type(value)
            if kind is str:
                return value
            if kind is int:
                return str(value)
        out = []
        for literal, field, spec, conv in self.parts:
            out.append(literal)
            if field is None:
                continue
            root = _root(field)
            base = argmap.value(root, args, kwargs)
            if base is _MISSING:
                raise InvalidTagTemplate(
                    f"Tag template {self.template!r}: argument {root!r} was not passed and has no default"
                )
            try:
                value, _ = _formatter.get_field(field, (), {root: base})
            except (AttributeError, LookupError, TypeError) as exc:
                raise InvalidTagTemplate(
                    f"Tag template {self.template!r}: cannot resolve {{{field}}} from {base!r:.100}: {exc}"
                ) from exc
            if isinstance(value, models.Model):
                value = value.pk
            if conv:
                value = _formatter.convert_field(value, conv)
            out.append(_formatter.format_field(value, spec or ""))
        return "".join(out)


_SCALARS = frozenset({str, int, float, bool, bytes, type(None)})
#: Standard value types whose ``repr`` is their value (no memory address).
_VALUE_TYPES = (
    decimal.Decimal,
    uuid.UUID,
    datetime.date,
    datetime.time,
    datetime.timedelta,
    pathlib.PurePath,
)


# Subclasses of builtin scalars (not enums) count as their builtin value; the
# base class's own conversion ignores an overriding __str__/__int__.
_BUILTIN_VALUE: dict[type, Callable[[Any], Any]] = {
    str: str.__str__,
    int: int.__int__,
    float: float.__float__,
    bytes: bytes.__bytes__,
}


def _function_key(func: Callable[..., Any]) -> str:
    """The key base of a decorated function: its dotted name, made unique where that is not.

    Lambdas share the name ``<lambda>``, and the functions a factory returns
    share ``factory.<locals>.name`` while closing over different values: for
    those, the function's code (a digest of its bytecode) and the stable
    identity of each value it closes over join the name. A closed-over value
    without a stable identity raises ``TypeError`` naming it (pass
    ``key_name=``, or decorate a module-level function taking it as an argument).
    """
    name = f"{func.__module__}.{func.__qualname__}"
    if "<lambda>" not in func.__qualname__ and "<locals>" not in func.__qualname__:
        return name
    code = getattr(func, "__code__", None)
    if code is None:
        return name
    parts: list[Any] = [hashlib.sha256(marshal.dumps(code)).hexdigest()[:16]]
    for var, cell in zip(code.co_freevars, getattr(func, "__closure__", None) or (), strict=False):
        try:
            value = cell.cell_contents
        except ValueError:  # not bound yet (a recursive helper): its name is enough
            parts.append((var, None))
            continue
        if callable(value) and not isinstance(value, type):
            parts.append(
                (var, f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', '')}")
            )
            continue
        parts.append((var, _identity(value, f"{var} (closed over by {func.__qualname__})")))
    return f"{name}:{hashlib.sha256(repr(parts).encode()).hexdigest()[:16]}"


def _qualname(kind: type) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def _identity(value: Any, where: str) -> Any:
    """Return *value*'s stable identity: a nested tuple of builtin scalars.

    Two arguments share a cache entry exactly when their identities are equal:

    * ``str``, ``int``, ``float``, ``bool``, ``bytes``, ``None``: by type and value
      (``1``, ``1.0``, ``True`` and ``"1"`` differ);
    * ``Decimal``, ``UUID``, dates, times, ``timedelta``, paths: by type and value;
    * enum members: by enum class and member name;
    * model instances: by model label and primary key (an unsaved instance has none);
    * lists, tuples (named tuples by class), sets, frozensets, dicts: by type and
      the identities of their items (sets and dicts in a canonical order);
    * classes: by module and qualified name;
    * any object with a ``__cache_key__()`` method: by class and the identity of
      what the method returns.

    Anything else (whose ``repr`` may hold a memory address, which Python
    reuses) raises ``TypeError`` naming *where* and the fixes.
    """
    kind = type(value)
    if kind in _SCALARS:
        return (kind.__name__, value)
    if value is _MISSING:  # not passed and no default: the call itself will fail
        return ("missing",)
    hook = getattr(kind, "__cache_key__", None)
    if hook is not None and not isinstance(value, type):
        return ("key", _qualname(kind), _identity(hook(value), f"{where}.__cache_key__()"))
    if isinstance(value, enum.Enum):
        return ("enum", _qualname(kind), value.name)
    if isinstance(value, models.Model):
        if value.pk is None:
            raise TypeError(
                f"@tagged_cache: argument {where} is an unsaved {value._meta.label} (no primary "
                f"key), which has no stable identity. Save it first, or leave it out of the key "
                f"with vary_on=[...]."
            )
        return ("model", value._meta.label, _identity(value.pk, f"{where}.pk"))
    for base, plain in _BUILTIN_VALUE.items():  # subclasses: their builtin value
        if isinstance(value, base):
            return (_qualname(kind), plain(value))
    if isinstance(value, _VALUE_TYPES):
        return (_qualname(kind), repr(value))
    if isinstance(value, (list, tuple)):
        name = kind.__name__ if kind in (list, tuple) else _qualname(kind)
        return (name, tuple(_identity(v, f"{where}[{i}]") for i, v in enumerate(value)))
    if isinstance(value, (set, frozenset)):
        items = sorted((_identity(v, f"{where} (an item)") for v in value), key=repr)
        return ("set", tuple(items))
    if isinstance(value, dict):
        pairs = sorted(
            (
                (_identity(k, f"{where} (a key)"), _identity(v, f"{where}[{k!r:.40}]"))
                for k, v in value.items()
            ),
            key=repr,
        )
        return ("dict", tuple(pairs))
    if isinstance(value, type) and "<locals>" not in value.__qualname__:
        return ("class", _qualname(value))
    raise TypeError(
        f"@tagged_cache: argument {where} is a {_qualname(kind)}, which has no stable "
        f"identity: its repr may hold a memory address, which Python reuses, so two different "
        f"objects could share a cached result. Give {kind.__qualname__} a __cache_key__(self) "
        f"method returning what identifies it (e.g. return (self.pk,)), or leave it out of the "
        f"key with vary_on=[...] (attribute paths work: vary_on=['{where.split('.')[0]}.id'])."
    )


def tagged_cache(
    timeout: float | None = 3600,
    tags: Sequence[str] | None = None,
    vary_on: Sequence[str] | None = None,
    version: str | int | None = None,
    key_name: str | None = None,
    cache_name: str | None = None,
    early_recompute: float | None = None,
) -> Callable[[F], F]:
    """Cache the decorated function's result, invalidated when any of its tags is bumped.

    Follows the seed's ``@tagged_cache``:

    * *timeout*: seconds to keep a result (``None``: forever). Default 3600.
    * *tags*: templates such as ``"User:{user_id}"``, ``"Org:{user.org_id}"``
      or ``"Dashboard"`` (a tag with instance ``""``), resolved from the
      call's arguments, defaults included. A model instance resolves to its pk.
    * *vary_on*: the parameters (or attribute paths, ``"self.region"``) whose
      values select an entry. When omitted, **every** argument does (the seed
      shared one entry across arguments not listed; we do not).
      ``vary_on=[]`` shares one entry. Values count by their stable identity
      (see :func:`_identity`: scalars and containers by value, model
      instances by label and pk, enum members, classes, and objects with a
      ``__cache_key__()`` method); any other value raises ``TypeError`` at
      call time, naming the parameter, so two calls with different
      arguments never share an entry.
    * *version*: part of the key; change it to drop old entries on deploy.
    * *key_name*: key base name (default ``module.qualname``).
    * *cache_name*: a fragmented alias, or the store alias one wraps; default
      the project's fragmented alias.
    * *early_recompute*: XFetch ``beta`` for hot keys (see
      ``get_or_set_with_tags``); default the alias's ``EARLY_RECOMPUTE`` option.

    A template or ``vary_on`` entry naming an unknown parameter raises
    ``InvalidTagTemplate`` at decoration time. ``async def`` functions get an
    async wrapper (the coroutine's result is cached, never the coroutine).
    The wrapper carries ``.invalidate(*args, **kwargs)`` (delete the entry for
    those arguments), ``.key(*args, **kwargs)`` (its store key) and
    ``.tags(*args, **kwargs)`` (the resolved tags).
    """
    check_seconds(timeout, "@tagged_cache(timeout=...)", error=InvalidTimeout)
    check_beta(early_recompute, "@tagged_cache(early_recompute=...)", error=InvalidTimeout)
    if isinstance(tags, str):
        raise InvalidTagTemplate(
            f"tags must be a list of templates, got the string {tags!r}; wrap it in a list"
        )
    if isinstance(vary_on, str):
        raise InvalidTagTemplate(
            f"vary_on must be a list of parameter names, got the string {vary_on!r}"
        )

    def decorate(func: F) -> F:
        sig = inspect.signature(func)
        argmap = _Args(func, sig)
        templates = [_Template(t, argmap) for t in tags or ()]
        if vary_on is None:
            vary = [n for n, p in sig.parameters.items()]
        else:
            vary = list(vary_on)
            for name in vary:
                argmap.check(_root(name), "vary_on")
        base = key_name or _function_key(func)
        if version is not None:
            base = f"{base}:v{version}"
        var_kinds = {n: p.kind for n, p in sig.parameters.items()}
        plain = [
            name
            for name in vary
            if _root(name) == name
            and var_kinds.get(name)
            not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        ]
        all_plain = len(plain) == len(vary)

        def resolve(args: tuple, kwargs: dict) -> tuple[str, list[tuple[str, str]]]:
            tag_list = [(t.name, t.instance(argmap, args, kwargs)) for t in templates]
            if all_plain:  # fast path: named parameters only
                value_of = argmap.value
                parts = [(name, _identity(value_of(name, args, kwargs), name)) for name in vary]
                return (f"{base}|{parts!r}" if parts else base), tag_list
            parts = []
            for name in vary:
                root = _root(name)
                kind = var_kinds.get(root)
                if kind is inspect.Parameter.VAR_POSITIONAL:
                    value: Any = args[len(argmap.positions) :]
                elif kind is inspect.Parameter.VAR_KEYWORD:
                    value = {k: v for k, v in kwargs.items() if k not in sig.parameters}
                else:
                    value = argmap.value(root, args, kwargs)
                    if value is _MISSING:
                        value = None  # not passed and no default: the call itself will fail
                    if root != name:
                        value, _ = _formatter.get_field(name, (), {root: value})
                parts.append((name, _identity(value, name)))
            key = base if not parts else f"{base}|{parts!r}"
            return key, tag_list

        # Calls with only short str/int positional arguments (the usual
        # ``item_summary(42)``) reuse their resolved key and tags: for such
        # arguments the result depends on the values alone. Exact types only:
        # True == 1 and 1.0 == 1 must not share an entry with 1.
        resolved: dict[tuple, tuple[str, list[tuple[str, str]]]] = {}

        def resolve_call(args: tuple, kwargs: dict) -> tuple[str, list[tuple[str, str]]]:
            if not kwargs:
                for a in args:
                    kind = type(a)
                    if not (kind is int or (kind is str and len(a) <= 256)):
                        break
                else:
                    hit = resolved.get(args)
                    if hit is None:
                        hit = resolve(args, kwargs)
                        if len(resolved) >= _RESOLVED_SIZE:
                            resolved.clear()
                        resolved[args] = hit
                    return hit
            return resolve(args, kwargs)

        def backend() -> Any:
            return get_cache(resolve_alias(cache_name))

        t = timeout

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def awrapper(*args: Any, **kwargs: Any) -> Any:
                key, tag_list = resolve_call(args, kwargs)
                return await backend().aget_or_set_with_tags(
                    key,
                    lambda: func(*args, **kwargs),
                    tag_list,
                    timeout=t,
                    early_recompute=early_recompute,
                )

            wrapper: Any = awrapper
        else:

            @functools.wraps(func)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                key, tag_list = resolve_call(args, kwargs)
                return get_cache(resolve_alias(cache_name)).get_or_set_with_tags(
                    key,
                    lambda: func(*args, **kwargs),
                    tag_list,
                    timeout=t,
                    early_recompute=early_recompute,
                )

        def invalidate(*args: Any, **kwargs: Any) -> bool:
            """Delete the cached entry for these arguments; return True if one was deleted."""
            key, tag_list = resolve(args, kwargs)
            return backend().delete_with_tags(key, tag_list)

        def key(*args: Any, **kwargs: Any) -> str:
            """Return the store key of the entry for these arguments (current tenant)."""
            from .tags import normalize_tags

            k, tag_list = resolve(args, kwargs)
            b = backend()
            return b._keys(k, normalize_tags(tag_list), "", None, False)[1].entry

        def tags_of(*args: Any, **kwargs: Any) -> list[tuple[str, str]]:
            """Return the ``(name, instance)`` tags the call with these arguments depends on."""
            return resolve(args, kwargs)[1]

        wrapper.invalidate = invalidate
        wrapper.key = key
        wrapper.tags = tags_of
        wrapper.cache_name = cache_name
        return wrapper  # type: ignore[no-any-return]

    return decorate
