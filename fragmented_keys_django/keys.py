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

On a Redis Cluster store (``slots=True``: the alias's store has hash slots) the
versions every tenant shares are kept as one copy per hash slot, so that a
tenant's read stays one single-slot ``MGET``::

    fk:{S}:g:<digest>    a global tag's version, the copy of slot S
    fk:{S}:a:<digest>    an "all tenants" net version, the copy of slot S

``S`` is the hash tag of slot S (:func:`slot_tag`): a read in tenant T uses the
copy of T's slot. A bump of such a version deletes its copy in every slot
(:func:`slot_copies`); a read that finds its copy missing re-creates it with a
fresh token, as any missing version.

A tenant spread over N hash slots of a cluster (``TENANT_SLOTS``, ``shards=N``)
has the hash tag ``T.N.j`` for its slot j: an entry with tags lives in slot
:func:`shard_of` of its digest with its own copy of every version it records;
a bump names slot 0's version and is written in every slot
(:func:`tenant_slot_keys`).
"""

from __future__ import annotations

import binascii
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
    "slot_copies",
    "slot_tag",
    "tag_version_key",
    "tenant_key_prefix",
    "tenant_key_prefixes",
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
def _slot(prefix: str, tenant: str | None, shards: int = 1, shard: int = 0) -> str:
    tag = hashlib.sha256(encode_parts("slot", prefix, tenant)).hexdigest()[:16]
    if shards > 1 and tenant is not None:
        tag = f"{tag}.{shards}.{shard}"  # slot *shard* of the tenant's *shards*
    return "fk:{" + tag + "}:"


def shard_of(digest: str, shards: int) -> int:
    """Return which of a tenant's *shards* hash slots holds the entry of *digest* (hex)."""
    return int(digest[:8], 16) % shards if shards > 1 else 0


def tenant_slot_keys(key: str) -> list[str] | None:
    """Return *key* in each of its tenant's hash slots, or ``None`` for a key of one slot.

    *key* is a version key built with ``shards=N`` (N > 1): ``fk:{T.N.0}:...``;
    the result is the same version in slots ``T.N.0`` to ``T.N.(N-1)``: what a
    bump of it must write.
    """
    if not key.startswith("fk:{"):
        return None
    end = key.find("}", 4)
    parts = key[4:end].split(".") if end > 0 else ()
    if len(parts) != 3 or parts[2] != "0" or not parts[1].isdigit():
        return None
    head, tail = "fk:{" + parts[0] + "." + parts[1] + ".", key[end:]
    return [head + str(j) + tail for j in range(int(parts[1]))]


#: Hash slots of a Redis Cluster.
SLOTS = 16384


def hash_slot(key: str) -> int:
    """Return the Redis Cluster hash slot of *key* (CRC16/XMODEM of its hash tag, mod 16384)."""
    data = key.encode("utf-8", "surrogatepass")
    start = data.find(b"{")
    if start >= 0:
        end = data.find(b"}", start + 1)
        if end > start + 1:
            data = data[start + 1 : end]
    return binascii.crc_hqx(data, 0) % SLOTS


@lru_cache(maxsize=1)
def _slot_tags() -> tuple[str, ...]:
    """One short hash tag per slot: ``_slot_tags()[s]`` hashes to slot *s* (found once per process)."""
    tags: list[str | None] = [None] * SLOTS
    left, n = SLOTS, 0
    while left:
        tag = format(n, "x")
        slot = binascii.crc_hqx(tag.encode(), 0) % SLOTS
        if tags[slot] is None:
            tags[slot] = tag
            left -= 1
        n += 1
    return tuple(tags)  # type: ignore[arg-type]


def slot_tag(slot: int) -> str:
    """Return a hash tag (text without braces) whose keys live in hash slot *slot* (0..16383).

    Tags are at most 6 hex digits, so they never equal a tenant's (16 digits).
    """
    return _slot_tags()[slot]


def _copy_key(
    kind: str, prefix: str, tenant: str | None, digest: str, shards: int = 1, shard: int = 0
) -> str:
    """The copy, in *tenant*'s hash slot, of a shared version (*kind* ``g`` or ``a``)."""
    tenant_slot = hash_slot(_slot(prefix, tenant, shards, shard))
    return "fk:{" + slot_tag(tenant_slot) + "}:" + kind + ":" + digest


def slot_copies(key: str) -> list[str] | None:
    """Return every slot's copy of the shared version *key*, or ``None`` if *key* is not one.

    *key* is one copy (``fk:{S}:g:<digest>`` or ``fk:{S}:a:<digest>``, as built
    with ``slots=True``); the result holds the same version's copy in each of
    the 16384 slots, in slot order.
    """
    end = key.find("}:", 4)
    if not key.startswith("fk:{") or end < 0 or key[end + 2 : end + 4] not in ("g:", "a:"):
        return None
    tail = key[end + 1 :]
    return ["fk:{" + tag + "}" + tail for tag in _slot_tags()]


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


def tenant_key_prefixes(prefix: str, tenant: str, shards: int = 1) -> list[str]:
    """Return every prefix *tenant*'s keys start with: :func:`tenant_key_prefix`, and with
    *shards* > 1 (a tenant spread over hash slots of a cluster, ``TENANT_SLOTS``) the
    prefix ``fk:{T.N.j}:`` of each of its slots j. Raises ``ValueError`` for ``None``."""
    first = tenant_key_prefix(prefix, tenant)
    return (
        [first, *(_slot(prefix, tenant, shards, j) for j in range(shards))]
        if shards > 1
        else [first]
    )


@lru_cache(maxsize=4096)
def namespace_key(prefix: str, tenant: str | None, shards: int = 1, shard: int = 0) -> str:
    """Return the key of the tenant namespace version for (*prefix*, *tenant*).

    *shards* > 1: the tenant's keys are spread over that many hash slots (a
    Redis Cluster store's ``TENANT_SLOTS``); the key is the one in slot *shard*.
    """
    return _slot(prefix, tenant, shards, shard) + "n:" + _digest("n", prefix, tenant)


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
def net_version_key(
    prefix: str,
    tenant: str | None,
    name: str,
    slots: bool = False,
    reader: str | None = None,
    shards: int = 1,
    shard: int = 0,
) -> str:
    """Return the key of the net version of tag name *name* in *tenant*.

    The safety net bumps it when a statement writes a table of the model
    registered as *name*; tenant ``None`` is the "all tenants" net version
    (kept in the public slot), read by every tenant's entries of that name.
    With *slots* (a Redis Cluster store) the "all tenants" version is the copy
    in the slot of tenant *reader* (see the module docstring). *shards* and
    *shard*: as for :func:`namespace_key` (of *tenant*, or of *reader*).
    """
    if slots and tenant is None:
        return _copy_key("a", prefix, reader, _digest("m", prefix, None, name), shards, shard)
    return _slot(prefix, tenant, shards, shard) + "m:" + _digest("m", prefix, tenant, name)


#: Inputs longer than this (characters) are not memoised: keys can carry
#: user-controlled data, and a memo of them would grow with it.
_MEMO_CHARS = 1024


def tag_version_key(
    prefix: str,
    tenant: str | None,
    name: str,
    instance: str,
    slots: bool = False,
    shards: int = 1,
    shard: int = 0,
) -> str:
    """Return the key holding the version of tag (*name*, *instance*) in *tenant*.

    A global tag's version lives in the public namespace (tenant ``None``); with
    *slots* (a Redis Cluster store) it is that version's copy in *tenant*'s
    hash slot (see the module docstring). *shards* and *shard*: as for
    :func:`namespace_key`.
    """
    if len(name) + len(instance) + len(tenant or "") <= _MEMO_CHARS:
        return _tag_version_key_memo(prefix, tenant, name, instance, slots, shards, shard)
    return _tag_version_key(prefix, tenant, name, instance, slots, shards, shard)


def _tag_version_key(
    prefix: str,
    tenant: str | None,
    name: str,
    instance: str,
    slots: bool = False,
    shards: int = 1,
    shard: int = 0,
) -> str:
    if name in _global_tags:
        digest = _digest("v", prefix, None, name, instance)
        if slots:
            return _copy_key("g", prefix, tenant, digest, shards, shard)
        return _slot(prefix, None) + "v:" + digest
    tail = "v:" + _digest("v", prefix, tenant, name, instance)
    return _slot(prefix, tenant, shards, shard) + tail


_tag_version_key_memo = lru_cache(maxsize=16384)(_tag_version_key)


def entry_keys(
    prefix: str,
    tenant: str | None,
    epoch: str,
    key: str,
    group_id: str,
    tags: tuple[TagSpec, ...],
    slots: bool = False,
    shards: int = 1,
    store_keys: tuple[str, ...] = (),
) -> EntryKeys:
    """Return the entry key and the version keys for one cached value.

    *key* is the caller's key after the alias's ``KEY_FUNCTION``; *tags* must
    already be canonical (sorted, deduplicated: see ``tags.normalize_tags``).
    *store_keys* are versions every entry of the store records, appended last
    (the failover epoch of a Sentinel-managed store: :data:`FAILOVER_EPOCH_KEY`).
    Results are memoised (the hot path of repeated reads) whatever the number
    of tags, for inputs of at most :data:`_MEMO_CHARS` characters in all (their
    size is measured once, when they are first seen). With *slots* (a Redis
    Cluster store) the shared versions are their copies in *tenant*'s slot.
    With *shards* > 1 (``TENANT_SLOTS``) the entry and every version it
    records live in one of the tenant's *shards* slots, chosen by the entry's
    digest (:func:`shard_of`); an entry without tags (Django's plain API,
    whose ``set_many`` writes many in one script) in the first one.
    """
    memo_key = (prefix, tenant, epoch, key, group_id, tags, slots, shards, store_keys)
    hit = _entry_memo.get(memo_key)
    if hit is not None:
        return hit
    made = _entry_keys(prefix, tenant, epoch, key, group_id, tags, slots, shards)
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
    slots: bool = False,
    shards: int = 1,
) -> EntryKeys:
    parts: list[str | int | None] = ["e", prefix, tenant, epoch, key, group_id, len(tags)]
    for t in tags:
        parts += (t.name, t.instance, t.constant)
    digest = _digest(*parts)
    if tenant is None:
        shards = 1
    j = shard_of(digest, shards) if tags else 0  # untagged entries: the first slot
    vkeys = [namespace_key(prefix, tenant, shards, j)]
    for t in tags:
        if not t.constant:
            vkeys.append(tag_version_key(prefix, tenant, t.name, t.instance, slots, shards, j))
    if _netted_names:
        _append_net_keys(vkeys, prefix, tenant, tags, slots, shards, j)
    return EntryKeys(_slot(prefix, tenant, shards, j) + "e:" + digest, tuple(vkeys))


def _append_net_keys(
    vkeys: list[str],
    prefix: str,
    tenant: str | None,
    tags: tuple[TagSpec, ...],
    slots: bool = False,
    shards: int = 1,
    shard: int = 0,
) -> None:
    """Append the net versions of the distinct netted names among *tags* (sorted by name)."""
    last = None
    for t in tags:
        name = t.name
        if t.constant or name == last or name not in _netted_names:
            continue
        last = name
        if tenant is not None and name not in _global_tags:
            vkeys.append(net_version_key(prefix, tenant, name, False, None, shards, shard))
        vkeys.append(net_version_key(prefix, None, name, slots, tenant, shards, shard))


#: The failover epoch of a store whose primary can change (Sentinel): one key per store,
#: holding a token derived from the serving primary's replication id, rewritten by the
#: first connection to a new primary (``stores/redis_py.py``). Every entry of that store
#: records it (:func:`entry_keys`' *store_keys*), so a failover invalidates them all,
#: bumps the old primary acknowledged but never replicated included.
FAILOVER_EPOCH_KEY = "fk:{fk-failover}:epoch"

#: Remembered entry keys:
#: ``(prefix, tenant, epoch, key, group_id, tags, slots, shards, store_keys) -> EntryKeys``.
_entry_memo: dict[tuple, EntryKeys] = {}
_ENTRY_MEMO_SIZE = 16384


def clear_memos() -> None:
    """Forget memoised keys (after registering a global tag or changing the netted names)."""
    _tag_version_key_memo.cache_clear()
    _entry_memo.clear()


def lock_key(entry_key: str) -> str:
    """Return the stampede lock key of an entry (same hash slot)."""
    return entry_key + ":lock"
