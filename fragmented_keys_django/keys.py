"""Pure key building: tag version keys, tenant namespace keys, entry keys.

Every key is built from a *length-prefixed* encoding of its parts, hashed with
SHA-256, so distinct inputs never share a key: ``("User_4", "2")`` and
``("User", "4_2")`` differ, as do key ``a_b`` + group ``c`` and key ``a`` +
group ``b_c``, and tenant ids containing separators. Keys are short ASCII
without spaces or control characters, so they are safe for every Django
backend, memcached included.

Layout (``T`` = 64-bit digest of prefix and tenant, used as a Redis Cluster
hash tag so that everything one read needs sits in one slot)::

    fk:{T}:n:<digest>    tenant namespace version (bumped by clear()/invalidate_tenant)
    fk:{T}:v:<digest>    version of one tag (name, instance) in one tenant
    fk:{T}:m:<digest>    net version of one tag name in one tenant (the safety net: see net.py);
                         tenant None is the "all tenants" net version, in the public slot
    fk:{T}:e:<digest>    entry: (tenant, key, group_id, tags, epoch)
    fk:{fk-failover}:epoch   a Sentinel-managed store's failover epoch (one per store)
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

__all__ = [
    "FAILOVER_EPOCH_KEY",
    "EntryKeys",
    "TagSpec",
    "encode_parts",
    "entry_keys",
    "net_version_key",
    "set_netted_names",
    "tag_version_key",
    "tenant_key_prefix",
]

_DIGEST_CHARS = 40  # 160 bits of SHA-256


class TagSpec(NamedTuple):
    """One normalised tag: ``name``, ``instance`` and, for constant tags, a fixed version.

    A constant tag (non-empty ``constant``) takes part in the entry key but has
    no version key: it is never looked up and never bumped. A plain tuple, so
    hashing and sorting run at C speed on the read path.
    """

    name: str
    instance: str
    constant: str = ""


@dataclass(frozen=True, slots=True)
class EntryKeys:
    """Everything one read needs: the entry key and the version keys to check.

    ``version_keys[0]`` is the tenant namespace key; then the tag version keys
    in ``tags`` order (constant tags excluded); then, for each distinct netted
    tag name among the tags (see :func:`set_netted_names`), its net version in
    the tenant and its "all tenants" net version (only the latter for a global
    name or outside any tenant).
    """

    entry: str
    version_keys: tuple[str, ...]
    #: ``(entry, *version_keys)``: what one read fetches, in that order.
    read_keys: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "read_keys", (self.entry, *self.version_keys))


def encode_parts(*parts: str | int | None) -> bytes:
    """Encode *parts* injectively: each part is typed and length-prefixed."""
    out = []
    for p in parts:
        if p is None:
            out.append("n;")
        elif isinstance(p, str):
            out.append(f"s{len(p)}:{p};")
        else:
            out.append(f"i{int(p)};")
    return "".join(out).encode("utf-8", "surrogatepass")


def _digest(*parts: str | int | None) -> str:
    return hashlib.sha256(encode_parts(*parts)).hexdigest()[:_DIGEST_CHARS]


@lru_cache(maxsize=4096)
def _slot(prefix: str, tenant: str | None) -> str:
    return "fk:{" + hashlib.sha256(encode_parts("slot", prefix, tenant)).hexdigest()[:16] + "}:"


def tenant_key_prefix(prefix: str, tenant: str) -> str:
    """Return ``fk:{T}:``, the start of every key of *tenant* under alias ``PREFIX`` *prefix*.

    Entries, stampede locks, the namespace, tag and net versions of the tenant
    all start with it, and no other tenant's key does (``T`` is a digest of
    *prefix* and *tenant*). The public namespace (``None``) has one too, but it
    holds versions every tenant reads: it is never purged, so it is refused here.
    """
    if tenant is None:
        raise ValueError("the public namespace has no tenant key prefix to purge")
    return _slot(prefix, tenant)


@lru_cache(maxsize=4096)
def namespace_key(prefix: str, tenant: str | None) -> str:
    """Return the key of the tenant namespace version for (*prefix*, *tenant*)."""
    return _slot(prefix, tenant) + "n:" + _digest("n", prefix, tenant)


# Tag names whose versions are global: kept in the public namespace whatever
# the current tenant, for data that really is shared (public-schema tables).
_global_tags: frozenset[str] = frozenset()


def register_global_tag(name: str) -> None:
    """Make tag *name* global: one version for every tenant, bumped from any tenant.

    Entries stay per tenant (the tenant is still part of every entry key);
    only the tag's version is shared, so a bump of ``("Country", "FR")`` in
    any tenant, or outside any, invalidates every tenant's entries that
    depend on it. Call at start-up (``AppConfig.ready``).
    """
    global _global_tags
    if name not in _global_tags:
        _global_tags = _global_tags | {name}
        clear_memos()


def is_global_tag(name: str) -> bool:
    """Return True if tag *name* was registered as global."""
    return name in _global_tags


# Tag names covered by the safety net (the tag names of registered models,
# set by net.py; empty when the net is off): an entry with a non-constant tag
# of such a name also records that name's net versions.
_netted_names: frozenset[str] = frozenset()


def set_netted_names(names: frozenset[str] | set[str] | tuple[str, ...]) -> None:
    """Make *names* the netted tag names (the safety net's); forget memoised keys if they changed.

    Called by ``net.py`` when models are registered or unregistered and when
    ``FRAGMENTED_KEYS["SAFETY_NET"]`` changes; ``()`` turns the net's versions off.
    """
    global _netted_names
    new = frozenset(names)
    if new != _netted_names:
        _netted_names = new
        clear_memos()


def netted_names() -> frozenset[str]:
    """Return the tag names whose entries also record net versions (empty: the net is off)."""
    return _netted_names


@lru_cache(maxsize=4096)
def net_version_key(prefix: str, tenant: str | None, name: str) -> str:
    """Return the key of the net version of tag name *name* in *tenant*.

    The safety net bumps it when a statement writes a table of the model
    registered as *name*; tenant ``None`` is the "all tenants" net version
    (kept in the public slot), read by every tenant's entries of that name.
    """
    return _slot(prefix, tenant) + "m:" + _digest("m", prefix, tenant, name)


#: Inputs longer than this (characters) are not memoised: keys can carry
#: user-controlled data, and a memo of them would grow with it.
_MEMO_CHARS = 1024


def tag_version_key(prefix: str, tenant: str | None, name: str, instance: str) -> str:
    """Return the key holding the version of tag (*name*, *instance*) in *tenant*.

    A global tag's version lives in the public namespace (tenant ``None``).
    """
    if len(name) + len(instance) + len(tenant or "") <= _MEMO_CHARS:
        return _tag_version_key_memo(prefix, tenant, name, instance)
    return _tag_version_key(prefix, tenant, name, instance)


def _tag_version_key(prefix: str, tenant: str | None, name: str, instance: str) -> str:
    if name in _global_tags:
        tenant = None
    return _slot(prefix, tenant) + "v:" + _digest("v", prefix, tenant, name, instance)


_tag_version_key_memo = lru_cache(maxsize=16384)(_tag_version_key)


def entry_keys(
    prefix: str,
    tenant: str | None,
    epoch: str,
    key: str,
    group_id: str,
    tags: tuple[TagSpec, ...],
    store_keys: tuple[str, ...] = (),
) -> EntryKeys:
    """Return the entry key and the version keys for one cached value.

    *key* is the caller's key after the alias's ``KEY_FUNCTION``; *tags* must
    already be canonical (sorted, deduplicated: see ``tags.normalize_tags``).
    *store_keys* are versions every entry of the store records, appended last
    (the failover epoch of a Sentinel-managed store: :data:`FAILOVER_EPOCH_KEY`).
    Results are memoised (the hot path of repeated reads) whatever the number
    of tags, for inputs of at most :data:`_MEMO_CHARS` characters in all (their
    size is measured once, when they are first seen).
    """
    memo_key = (prefix, tenant, epoch, key, group_id, tags, store_keys)
    hit = _entry_memo.get(memo_key)
    if hit is not None:
        return hit
    made = _entry_keys(prefix, tenant, epoch, key, group_id, tags)
    if store_keys:
        made = EntryKeys(made.entry, made.version_keys + store_keys)
    size = len(key) + len(tenant or "") + len(group_id)
    if size + sum(len(t.name) + len(t.instance) for t in tags) <= _MEMO_CHARS:
        if len(_entry_memo) >= _ENTRY_MEMO_SIZE:
            _entry_memo.clear()
        _entry_memo[memo_key] = made
    return made


def _entry_keys(
    prefix: str,
    tenant: str | None,
    epoch: str,
    key: str,
    group_id: str,
    tags: tuple[TagSpec, ...],
) -> EntryKeys:
    parts: list[str | int | None] = ["e", prefix, tenant, epoch, key, group_id, len(tags)]
    vkeys = [namespace_key(prefix, tenant)]
    for t in tags:
        parts += (t.name, t.instance, t.constant)
        if not t.constant:
            vkeys.append(tag_version_key(prefix, tenant, t.name, t.instance))
    if _netted_names:
        _append_net_keys(vkeys, prefix, tenant, tags)
    return EntryKeys(_slot(prefix, tenant) + "e:" + _digest(*parts), tuple(vkeys))


def _append_net_keys(
    vkeys: list[str], prefix: str, tenant: str | None, tags: tuple[TagSpec, ...]
) -> None:
    """Append the net versions of the distinct netted names among *tags* (sorted by name)."""
    last = None
    for t in tags:
        name = t.name
        if t.constant or name == last or name not in _netted_names:
            continue
        last = name
        if tenant is not None and name not in _global_tags:
            vkeys.append(net_version_key(prefix, tenant, name))
        vkeys.append(net_version_key(prefix, None, name))


#: The failover epoch of a store whose primary can change (Sentinel): one key per store,
#: holding a token derived from the serving primary's replication id, rewritten by the
#: first connection to a new primary (``stores/redis_py.py``). Every entry of that store
#: records it (:func:`entry_keys`' *store_keys*), so a failover invalidates them all,
#: bumps the old primary acknowledged but never replicated included.
FAILOVER_EPOCH_KEY = "fk:{fk-failover}:epoch"

#: Remembered entry keys: ``(prefix, tenant, epoch, key, group_id, tags, store_keys) -> EntryKeys``.
_entry_memo: dict[tuple, EntryKeys] = {}
_ENTRY_MEMO_SIZE = 16384


def clear_memos() -> None:
    """Forget memoised keys (after registering a global tag or changing the netted names)."""
    _tag_version_key_memo.cache_clear()
    _entry_memo.clear()


def lock_key(entry_key: str) -> str:
    """Return the stampede lock key of an entry (same hash slot)."""
    return entry_key + ":lock"
