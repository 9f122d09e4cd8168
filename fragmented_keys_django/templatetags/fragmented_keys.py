"""``{% tagged_cache %}``: Django's ``{% cache %}`` with tags, per tenant.

Usage (load the library with ``{% load fragmented_keys %}``)::

    {% tagged_cache 600 sidebar request.user.pk tags="Project:{project.pk}" %}
        ... expensive fragment ...
    {% endtagged_cache %}

Arguments, as for Django's ``{% cache %}`` (``django/templatetags/cache.py``):

* the timeout in seconds (a number, a variable, or ``None`` for forever);
* the fragment name, a literal (not a variable; quotes around it are dropped);
* any number of *vary-on* values (variables or literals): each distinct list
  of values is its own entry, as with ``{% cache %}``. ``vary=value`` is the
  same thing written as a keyword;
* ``tags=...``, repeatable: a tag template such as ``"Project:{project.pk}"``
  (placeholders are template variables, resolved with the template language's
  own dot lookups; a model instance stands for its primary key; the part
  before the first placeholder is the tag's name, as in ``@tagged_cache``),
  or a variable holding a tag ``("Project", 7)``, a template string, or a list
  of either;
* ``using="alias"``: a fragmented alias, or the store alias one wraps (default:
  the project's fragmented alias).

The fragment is rendered once and served until a tag of it is bumped (a
registered model saved, ``invalidate_tags``), the tenant is flushed, or the
timeout passes. Reads and writes go through the backend's
``get_or_set_with_tags``: one round trip on a hit, the tag versions read before
the fragment renders, a stampede lock, and the transaction rules of
:mod:`fragmented_keys_django.transactions` (inside a transaction that wrote a
registered model, the fragment is rendered and not cached). Entries are per
tenant, like every entry of the fragmented alias.

Errors are raised, never rendered as empty output: ``TemplateSyntaxError`` for
a malformed tag, a non-integer timeout, an unknown ``using`` alias or an
unknown variable in the timeout; ``InvalidTagTemplate`` for a tag template
whose placeholder names a missing variable; ``InvalidTag`` for a value that is
not a tag.
"""

from __future__ import annotations

import hashlib
from typing import Any

from django import template
from django.db import models
from django.template import Context, Node, NodeList, TemplateSyntaxError, VariableDoesNotExist
from django.template.base import FilterExpression, Parser, Token, Variable

from ..conf import MAX_TIMEOUT, check_seconds, get_cache, resolve_alias
from ..decorators import _formatter, _Template
from ..exceptions import ConfigurationError, InvalidTag, InvalidTagTemplate
from ..keys import encode_parts

__all__ = ["TaggedCacheNode", "do_tagged_cache", "fragment_key", "register"]

register = template.Library()

_TAG = "tagged_cache"
_CSRF_USED = "CSRF_COOKIE_NEEDS_UPDATE"


def fragment_key(fragment_name: str, vary_on: list[Any] | None = None) -> str:
    """Return the cache key of a ``{% tagged_cache %}`` fragment (before tags and tenant).

    Like Django's ``make_template_fragment_key``, but each vary-on value is
    encoded with its type and length, so distinct lists never share a key
    (Django's joins ``str(value) + ":"``: ``["a:b", "c"]`` and ``["a", "b:c"]``
    collide, as do ``None`` and ``"None"``); shaped like Django's
    (``template.cache.<name>.<digest>``). The entry key also holds the tags
    and the tenant, so pass the same tags to ``delete_with_tags(fragment_key(
    name, vary_on), tags)`` to delete one fragment by hand (rarely needed:
    bump a tag instead).
    """
    parts = [f"{type(v).__module__}.{type(v).__qualname__}:{v}" for v in vary_on or ()]
    digest = hashlib.sha256(encode_parts(fragment_name, *parts)).hexdigest()
    return f"template.cache.{fragment_name}.{digest}"  # Django's shape, readable in the panel


class _NotStored(Exception):
    """Leaves the loader with a rendering that must not be cached (it holds a CSRF token)."""

    def __init__(self, rendered: str) -> None:
        super().__init__("fragment not stored")
        self.rendered = rendered


class _AnyName:
    """``_Template``'s argument map for templates whose names are resolved at render time."""

    def check(self, name: str, where: str) -> None:
        return None


class _ContextTemplate:
    """A tag template whose placeholders are template variables (``"Project:{project.pk}"``)."""

    def __init__(self, text: str) -> None:
        parsed = _Template(text, _AnyName())  # the same syntax as @tagged_cache's templates
        self.text = text
        self.name = parsed.name
        self.parts = [
            (literal, None if field is None else Variable(field), spec, conv)
            for literal, field, spec, conv in parsed.parts
        ]

    def resolve(self, context: Context) -> tuple[str, str]:
        out = []
        for literal, var, spec, conv in self.parts:
            out.append(literal)
            if var is None:
                continue
            try:
                value = var.resolve(context)
            except VariableDoesNotExist as exc:
                raise InvalidTagTemplate(
                    f"{{% {_TAG} %}} tag template {self.text!r}: {{{var.var}}} is not in the "
                    f"template context ({exc}). Pass it to the template, or fix the name."
                ) from exc
            if isinstance(value, models.Model):
                value = value.pk
            if conv:
                value = _formatter.convert_field(value, conv)
            out.append(_formatter.format_field(value, spec or ""))
        return (self.name, "".join(out))


# Templates given through variables, parsed once per distinct string.
_parsed: dict[str, _ContextTemplate] = {}


def _template_of(text: str) -> _ContextTemplate:
    hit = _parsed.get(text)
    if hit is None:
        if len(_parsed) >= 1024:
            _parsed.clear()
        hit = _parsed[text] = _ContextTemplate(text)
    return hit


def _tags_of(value: Any, context: Context) -> list[Any]:
    """Tags from one resolved ``tags=`` value: a template, a tag, or a list of either."""
    if isinstance(value, str):
        return [_template_of(value).resolve(context)]
    if isinstance(value, (list, set, frozenset)):
        out: list[Any] = []
        for item in value:
            out += _tags_of(item, context) if isinstance(item, str) else [item]
        return out
    if value is None or value == "":
        raise InvalidTag(
            f"{{% {_TAG} %}} got tags={value!r}: a tag template such as 'Project:{{project.pk}}', "
            f"a tag ('Project', 7) or a list of them was expected (is the variable in the context?)."
        )
    return [value]  # a tuple, dict or tag object: normalize_tags checks it


class TaggedCacheNode(Node):
    """The compiled ``{% tagged_cache %}`` block."""

    def __init__(
        self,
        nodelist: NodeList,
        timeout: FilterExpression,
        fragment_name: str,
        vary_on: list[FilterExpression],
        tags: list[_ContextTemplate | FilterExpression],
        using: FilterExpression | None,
    ) -> None:
        self.nodelist = nodelist
        self.timeout = timeout
        self.fragment_name = fragment_name
        self.vary_on = vary_on
        self.tags = tags
        self.using = using

    def _timeout(self, context: Context) -> int | None:
        # A missing variable resolves to "" (string_if_invalid), as in {% cache %}: an error.
        value = self.timeout.resolve(context)
        if value is None:
            return None
        try:
            seconds = float(value)
        except (ValueError, TypeError) as exc:
            raise TemplateSyntaxError(
                f"{_TAG!r} tag got a non-integer timeout value: {value!r} (seconds, or None for "
                f"no expiry)"
            ) from exc
        try:
            return int(check_seconds(seconds, f"{_TAG!r} tag timeout", error=ValueError))
        except (ValueError, OverflowError) as exc:
            raise TemplateSyntaxError(
                f"{_TAG!r} tag got a bad timeout value: {value!r} (a finite number of seconds "
                f"up to {MAX_TIMEOUT}, or None for no expiry): {exc}"
            ) from exc

    def _backend(self, context: Context) -> Any:
        name = None if self.using is None else self.using.resolve(context)
        try:
            return get_cache(resolve_alias(name))
        except ConfigurationError as exc:
            raise TemplateSyntaxError(
                f"Invalid cache name specified for the {_TAG!r} tag: {name!r}. {exc}"
            ) from exc

    def render(self, context: Context) -> str:
        timeout = self._timeout(context)
        backend = self._backend(context)
        vary_on = [var.resolve(context) for var in self.vary_on]
        tags: list[Any] = []
        for tag in self.tags:
            if isinstance(tag, _ContextTemplate):
                tags.append(tag.resolve(context))
            else:
                tags += _tags_of(tag.resolve(context, ignore_failures=True), context)
        request = getattr(context, "request", None) or context.get("request")
        meta = getattr(request, "META", None)

        def render() -> str:
            if meta is None:
                return self.nodelist.render(context)
            # Django's get_token() sets this flag: cleared while the fragment renders,
            # it tells whether the fragment itself holds the visitor's CSRF token.
            had = meta.pop(_CSRF_USED, None)
            try:
                rendered = self.nodelist.render(context)
                used = meta.get(_CSRF_USED)
            finally:
                if had:
                    meta[_CSRF_USED] = had
            if used:
                raise _NotStored(rendered)  # never served to another visitor
            return rendered

        try:
            return backend.get_or_set_with_tags(
                fragment_key(self.fragment_name, vary_on), render, tags, timeout=timeout
            )
        except _NotStored as kept:
            return kept.rendered


@register.tag(_TAG)
def do_tagged_cache(parser: Parser, token: Token) -> TaggedCacheNode:
    """Cache the enclosed template fragment per tenant, invalidated by its tags' bumps.

    ``{% tagged_cache timeout fragment_name [vary_on ...] [tags=...]... [using="alias"] %}``
    ... ``{% endtagged_cache %}``; see the module docstring.
    """
    nodelist = parser.parse((f"end{_TAG}",))
    parser.delete_first_token()
    bits = token.split_contents()
    if len(bits) < 3:
        raise TemplateSyntaxError(
            f"{bits[0]!r} tag requires at least 2 arguments: a timeout (seconds) and a fragment "
            f'name, e.g. {{% {_TAG} 600 sidebar tags="Project:{{project.pk}}" %}}.'
        )
    fragment_name = bits[2]
    if (
        len(fragment_name) >= 2
        and fragment_name[0] == fragment_name[-1]
        and fragment_name[0] in "\"'"
    ):
        fragment_name = fragment_name[1:-1]
    vary_on: list[FilterExpression] = []
    tags: list[_ContextTemplate | FilterExpression] = []
    using = None
    for bit in bits[3:]:
        name, sep, value = bit.partition("=")
        if not sep or not name.isidentifier():
            vary_on.append(parser.compile_filter(bit))
            continue
        if not value:
            raise TemplateSyntaxError(f"{bits[0]!r} tag: {name}= has no value.")
        if name == "tags":
            expr = parser.compile_filter(value)
            literal = expr.var if isinstance(expr.var, str) and not expr.filters else None
            if literal is not None:
                try:
                    tags.append(_ContextTemplate(literal))
                except InvalidTagTemplate as exc:
                    raise TemplateSyntaxError(f"{bits[0]!r} tag: {exc}") from exc
            else:
                tags.append(expr)
        elif name == "vary":
            vary_on.append(parser.compile_filter(value))
        elif name == "using":
            if using is not None:
                raise TemplateSyntaxError(f"{bits[0]!r} tag: using= is given twice.")
            using = parser.compile_filter(value)
        else:
            raise TemplateSyntaxError(
                f"{bits[0]!r} tag got an unknown keyword argument {name!r}; it accepts tags=, "
                f"vary= and using=."
            )
    return TaggedCacheNode(
        nodelist, parser.compile_filter(bits[1]), fragment_name, vary_on, tags, using
    )
