"""Tags: normalising what callers pass, and the seed's tag factories.

A tag is a ``(name, instance)`` pair whose *version* lives in the store.
Callers may give tags as ``(name, instance)`` tuples, ``(name, instance,
"constant")`` tuples, dicts (``{"tag": ..., "instance": ..., "type":
"constant", "version": ...}``) or ``fragmented-keys`` tag objects
(``StandardTag``, ``ConstantTag``, and our :class:`VersionedTag`). They are
all normalised to :class:`~fragmented_keys_django.keys.TagSpec`.
"""

from __future__ import annotations

import numbers
import uuid
from collections.abc import Iterable
from typing import Any

from fragmented_keys import ConstantTag, StandardTag
from fragmented_keys.tag.base import BaseTag

from .exceptions import InvalidTag
from .keys import TagSpec

__all__ = [
    "TagLike",
    "VersionedTag",
    "aggregate_tag",
    "constant_tag",
    "custom_tag",
    "format_tag",
    "list_tag",
    "model_tag",
    "normalize_tags",
    "parse_tag",
    "split_tag_text",
]

#: Longest tag name or instance accepted, in characters.
MAX_TAG_PART_LENGTH = 65_536

TagLike = tuple | list | dict | BaseTag


def _name(value: Any, tag: Any) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidTag(
            f"A tag name must be a non-empty string, got {value!r} in tag {tag!r:.200}. "
            f"Write tags as (name, instance), e.g. ('User', '42')."
        )
    if len(value) > MAX_TAG_PART_LENGTH:
        raise InvalidTag(
            f"A tag name must be at most {MAX_TAG_PART_LENGTH} characters, got {len(value)}."
        )
    return value


def _instance(value: Any, tag: Any) -> str:
    if isinstance(value, str):
        s = value
    elif (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, uuid.UUID):
        s = str(value)
    else:
        raise InvalidTag(
            f"A tag instance must be a string, an int or a UUID, got {type(value).__name__} "
            f"{value!r:.200} in tag {tag!r:.200}. Pass the identifier, e.g. str(obj.pk)."
        )
    if len(s) > MAX_TAG_PART_LENGTH:
        raise InvalidTag(
            f"A tag instance must be at most {MAX_TAG_PART_LENGTH} characters, got {len(s)}."
        )
    return s


def _constant(value: Any, tag: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)) or value == "":
        raise InvalidTag(
            f"A constant tag's version must be a number or a non-empty string, got {value!r} in {tag!r:.200}"
        )
    return repr(float(value)) if isinstance(value, numbers.Real) else value


def normalize_tag(tag: Any) -> TagSpec:
    """Return the :class:`TagSpec` for one tag in any accepted form; raise ``InvalidTag``."""
    if isinstance(tag, tuple | list):
        if len(tag) == 2:
            return TagSpec(_name(tag[0], tag), _instance(tag[1], tag))
        if len(tag) == 3:
            if tag[2] != "constant":
                raise InvalidTag(
                    f"A 3-tuple tag must be (name, instance, 'constant'), got {tag!r:.200}"
                )
            return TagSpec(_name(tag[0], tag), _instance(tag[1], tag), repr(1.0))
        raise InvalidTag(
            f"A tag tuple must be (name, instance) or (name, instance, 'constant'), got "
            f"{len(tag)} elements: {tag!r:.200}"
        )
    if isinstance(tag, ConstantTag):
        return TagSpec(
            _name(tag._tag, tag), _instance(tag._instance, tag), _constant(tag._version, tag)
        )
    if isinstance(tag, BaseTag):
        # StandardTag / VersionedTag: the version always comes from the store,
        # never from a value cached on the object.
        return TagSpec(_name(tag._tag, tag), _instance(tag._instance, tag))
    if isinstance(tag, dict):
        unknown = set(tag) - {"tag", "instance", "type", "version"}
        if unknown or "tag" not in tag:
            raise InvalidTag(
                f"A dict tag needs 'tag' and may have 'instance', 'type', 'version'; got keys "
                f"{sorted(map(str, tag))}"
            )
        kind = tag.get("type", "standard")
        if kind == "constant":
            return TagSpec(
                _name(tag["tag"], tag),
                _instance(tag.get("instance", ""), tag),
                _constant(tag.get("version", 1.0), tag),
            )
        if kind != "standard":
            raise InvalidTag(f"A dict tag's 'type' must be 'standard' or 'constant', got {kind!r}")
        if tag.get("version") is not None:
            raise InvalidTag(
                f"A standard tag's version lives in the store and cannot be given ({tag!r:.200}); "
                f"use type='constant' for a fixed version."
            )
        return TagSpec(_name(tag["tag"], tag), _instance(tag.get("instance", ""), tag))
    raise InvalidTag(
        f"A tag must be a (name, instance) tuple, a dict or a fragmented_keys tag, got "
        f"{type(tag).__name__}: {tag!r:.200}"
    )


_MEMO_SIZE = 4096
_memo: dict[tuple, tuple[TagSpec, ...]] = {}

# TagSpec(name, instance) without the namedtuple's Python-level __new__: the
# fast path builds one per tag on every tagged call.
_new_spec = tuple.__new__


def normalize_tags(tags: Iterable[Any] | None) -> tuple[TagSpec, ...]:
    """Return *tags* as a sorted, de-duplicated tuple of :class:`TagSpec`.

    Order does not matter: ``[a, b]`` and ``[b, a]`` address the same entry.
    Raises ``InvalidTag`` for a bad tag, or when *tags* is a string or a single
    tuple instead of a list of tags.
    """
    if tags is None:
        return ()
    if type(tags) is list:
        # Fast path: a list of (str, str | int) pairs, the common case; results
        # for inputs seen before are remembered (bounded).
        memo_key = tuple(tags)
        try:
            hit = _memo.get(memo_key)
        except TypeError:  # unhashable (dict tags): normalised below, not remembered
            hit = None
        if hit is not None:
            return hit
        out = []
        all_str = True
        for t in tags:
            if type(t) is not tuple or len(t) != 2 or type(t[0]) is not str or not t[0]:
                break
            inst = t[1]
            if type(inst) is int:
                inst = str(inst)
                all_str = False
            elif type(inst) is not str:
                break
            if len(t[0]) > MAX_TAG_PART_LENGTH or len(inst) > MAX_TAG_PART_LENGTH:
                break
            out.append(_new_spec(TagSpec, (t[0], inst, "")))
        else:
            result = tuple(sorted(set(out)))
            if len(_memo) >= _MEMO_SIZE:
                _memo.clear()
            # Only all-string inputs are remembered: a str equals only a str, so
            # a remembered answer is never given to an input that must be refused
            # (("User", True) == ("User", 1), but never == ("User", "1")).
            if all_str and sum(len(t.instance) for t in result) <= 512:
                _memo[memo_key] = result
            return result
    if isinstance(tags, str | bytes | dict) or (
        isinstance(tags, tuple) and len(tags) in (2, 3) and isinstance(tags[0], str)
    ):
        raise InvalidTag(
            f"tags must be a list of tags, got {tags!r:.200}. Wrap a single tag in a list: "
            f"[('User', '42')]."
        )
    return tuple(sorted({normalize_tag(t) for t in tags}))


# -- tags written as text ------------------------------------------------------


def split_tag_text(text: str) -> tuple[str, str | None]:
    """Split *text* into its tag name and the text after the name's colon (``None``: no colon).

    The name ends at the first colon that no backslash escapes; in the name,
    ``\\:`` is a colon and ``\\\\`` a backslash (any other backslash is
    kept as written). The rest is returned unchanged. Used by
    :func:`parse_tag` and by ``@tagged_cache`` templates, so both read a
    tag's text the same way.
    """
    name = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n and text[i + 1] in ":\\":
            name.append(text[i + 1])
            i += 2
            continue
        if ch == ":":
            return "".join(name), text[i + 1 :]
        name.append(ch)
        i += 1
    return "".join(name), None


def parse_tag(text: str) -> tuple[str, str]:
    """Return the ``(name, instance)`` tag written as *text*: the one text form of a tag.

    ``"User:42"`` is ``("User", "42")``; ``"Review:org:42"`` is ``("Review",
    "org:42")`` (the name ends at the first colon, the instance keeps the
    others); ``"User"`` is the model-wide tag ``("User", "")``; a colon or
    backslash inside a *name* is escaped with a backslash:
    ``"Review\\:org:42"`` is ``("Review:org", "42")``. :func:`format_tag` writes
    any tag in this form. Management commands (``--tag``) and ``@tagged_cache``
    templates read tags with this rule. Raises ``InvalidTag`` for an empty
    name or a non-string.
    """
    if not isinstance(text, str):
        raise InvalidTag(f"A tag written as text must be a string, got {text!r:.200}")
    name, instance = split_tag_text(text)
    spec = normalize_tag((name, instance or ""))
    return spec.name, spec.instance


def format_tag(name: str, instance: str = "") -> str:
    """Return the text form of tag ``(name, instance)``, which :func:`parse_tag` reads back.

    A colon or backslash in *name* is escaped; ``instance == ""`` writes the
    name alone.
    """
    escaped = name.replace("\\", "\\\\").replace(":", "\\:")
    return f"{escaped}:{instance}" if instance else escaped


class VersionedTag(StandardTag):
    """A ``fragmented-keys`` ``StandardTag`` whose version lives in a fragmented alias.

    Returned by :func:`model_tag`, :func:`list_tag`, :func:`aggregate_tag` and
    :func:`custom_tag`, so the seed's ``StandardKey(...).get_key_str()``
    examples keep working, but with our semantics: the version is read from
    the current tenant's namespace, ``increment()`` is an atomic bump to a
    never-repeating version, and no version is cached on the object. Prefer the
    ``*_with_tags`` methods: ``StandardKey`` reads versions one round trip per tag.
    """

    def __init__(self, tag: str, instance: str | int = "", alias: str | None = None) -> None:
        spec = TagSpec(_name(tag, (tag, instance)), _instance(instance, (tag, instance)))
        super().__init__(spec.name, spec.instance, version=None, handler=None, prefix="")
        self._alias = alias

    def _backend(self) -> Any:
        from .conf import get_cache, resolve_alias

        return get_cache(resolve_alias(self._alias))

    def get_tag_name(self) -> str:
        """Return the key of this tag's version in the current tenant."""
        return self._backend().tag_version_key(self._tag, self._instance)

    def get_tag_version(self) -> int:  # type: ignore[override]
        """Return the current version token (an int), creating it if it is missing."""
        return self._backend().current_tag_version(self._tag, self._instance)

    def set_tag_version(self, version: float, update: bool = False) -> None:
        """Refuse to write a chosen version: versions must never repeat.

        ``update=False`` is a no-op (no version is cached on the object).
        """
        if update:
            raise InvalidTag(
                "Setting a tag version by hand could repeat an earlier version and revive stale "
                "entries; call increment() (a bump) instead."
            )

    def increment(self) -> None:
        """Bump the tag in the current tenant (atomic; the new version never repeats)."""
        self._backend().invalidate_tags([(self._tag, self._instance)])

    def reset_tag_version(self) -> None:
        """Same as :meth:`increment`."""
        self.increment()

    def delegate_cache_query(self, group: str) -> bool:
        """Return False: ``StandardKey`` must ask :meth:`get_tag_version`, which is exact."""
        return False

    def get_cache_handler(self) -> Any:
        """Return a ``fragmented-keys`` ``CacheHandler`` over this tag's store."""
        from .handlers import DjangoCacheHandler

        return DjangoCacheHandler(self._alias)

    def __repr__(self) -> str:
        return f"VersionedTag({self._tag!r}, {self._instance!r})"


def model_tag(model_name: str, instance_id: str | int) -> VersionedTag:
    """Return the tag of one model instance, e.g. ``model_tag("User", 42)``.

    Matches what ``ModelTagManager`` bumps when that instance is saved.
    """
    return VersionedTag(model_name, instance_id)


def list_tag(list_name: str, scope_id: str | int) -> VersionedTag:
    """Return the tag of a collection scoped to an owner, e.g. ``list_tag("Review", "org:42")``."""
    return VersionedTag(list_name, scope_id)


def aggregate_tag(metric_name: str, filter_hash: str | int) -> VersionedTag:
    """Return the tag of a computed statistic, e.g. ``aggregate_tag("Stats", "daily_42")``."""
    return VersionedTag(metric_name, filter_hash)


def custom_tag(tag_name: str, instance_value: str | int) -> VersionedTag:
    """Return a tag for any other invalidation pattern."""
    return VersionedTag(tag_name, instance_value)


def constant_tag(tag_name: str, instance_value: str | int, version: float = 1.0) -> ConstantTag:
    """Return a tag with a fixed version: part of the key, never looked up or bumped."""
    spec = TagSpec(
        _name(tag_name, tag_name), _instance(instance_value, tag_name), _constant(version, tag_name)
    )
    return ConstantTag(spec.name, spec.instance, version=float(version))
