"""Options of a ``FragmentedKeysCacheBackend`` alias, parsed once and checked.

A ``CACHES`` entry accepts Django's usual keys (``TIMEOUT``, ``KEY_PREFIX``,
``VERSION``, ``KEY_FUNCTION``, ``OPTIONS``), the seed package's ``CACHE_NAME``,
``PREFIX`` and ``EPOCH``, and our own knobs inside ``OPTIONS``. Unknown names
raise ``ConfigurationError`` (a typo must not be silently ignored).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
from dataclasses import dataclass
from typing import Any

from .exceptions import ConfigurationError

__all__ = [
    "BACKEND_PATHS",
    "MAX_TIMEOUT",
    "BackendOptions",
    "check_beta",
    "check_seconds",
    "get_cache_epoch",
    "set_cache_epoch",
]

#: Import paths under which the backend may appear in ``CACHES[...]["BACKEND"]``.
BACKEND_PATHS = frozenset(
    {
        "fragmented_keys_django.FragmentedKeysCacheBackend",
        "fragmented_keys_django.backend.FragmentedKeysCacheBackend",
        "fragmented_keys_django.cache_backends.django_backend.FragmentedKeysCacheBackend",
    }
)

# Top-level keys of a CACHES entry that we understand (Django's and the seed's).
_TOP_LEVEL = frozenset(
    {
        "BACKEND",
        "LOCATION",
        "TIMEOUT",
        "KEY_PREFIX",
        "VERSION",
        "KEY_FUNCTION",
        "OPTIONS",
        "CACHE_NAME",
        "PREFIX",
        "EPOCH",
        # Legacy lowercase spellings Django's BaseCache still reads.
        "timeout",
        "max_entries",
        "cull_frequency",
    }
)

# OPTIONS keys and their defaults.
_OPTION_DEFAULTS: dict[str, Any] = {
    "TENANT_REQUIRED": False,
    "VERSION_TIMEOUT": 30 * 24 * 3600,
    "STRICT": False,
    "STAMPEDE_LOCK": True,
    "STAMPEDE_LOCK_TIMEOUT": 30,
    "STAMPEDE_WAIT": 5.0,
    "STAMPEDE_POLL": 0.02,
    "VERIFY_BUMPS": None,
    "TENANT_STORES": None,
    "TENANT_CONFIG_URL": None,
    "TENANT_CONFIG_RECHECK": 1.0,
    "SHARED": False,
    "EARLY_RECOMPUTE": None,
    # Seconds a store that failed is skipped (every call fails fast) before the
    # retry thread probes it again; see invalidation._Retrier.
    "CIRCUIT_BREAKER": 1.0,
    # The store adapter class (or its dotted path), called with each store of the
    # alias; None: chosen by what the store is (see fragmented_keys_django.stores).
    "STORE_ADAPTER": None,
    # True: the shared Redis store keeps a failover epoch (stores/failover.py), for a
    # primary whose endpoint moves on failover; None: only Sentinel stores keep one.
    "FAILOVER_EPOCH": None,
    # Hash slots a tenant's keys are spread over on a Redis Cluster store: a dict
    # {tenant_id: N}, or a callable (tenant_id) -> N (or its dotted path); N = 1 for others.
    "TENANT_SLOTS": None,
}

#: The most hash slots one tenant may span (``TENANT_SLOTS``): each bump writes to all.
MAX_TENANT_SLOTS = 64

# Stores whose set/set_many either lands or raises; others get read-back checks.
_RELIABLE_STORES = (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.redis.RedisCache",
    "django.core.cache.backends.memcached.PyMemcacheCache",
    "django.core.cache.backends.memcached.PyLibMCCache",
    "django.core.cache.backends.filebased.FileBasedCache",
    "django_redis.cache.RedisCache",
)

_global_epoch = "1.0"


def set_cache_epoch(epoch: float | int | str) -> None:
    """Set the process-wide epoch; every composite key built afterwards changes.

    Follows the seed package's ``set_cache_epoch``: raising the epoch strands
    every earlier entry at once (they expire by TTL).
    """
    global _global_epoch
    _global_epoch = _epoch_str(epoch, "set_cache_epoch(epoch)")


def get_cache_epoch() -> str:
    """Return the process-wide epoch, as the string that enters keys."""
    return _global_epoch


def _epoch_str(value: Any, where: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
        raise ConfigurationError(f"{where} must be a number or string, got {value!r}")
    if isinstance(value, numbers.Real):
        return repr(float(value))
    if not value:
        raise ConfigurationError(f"{where} must not be empty")
    return value


def _unknown(kind: str, alias: str, name: str, known: frozenset[str] | dict) -> ConfigurationError:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ConfigurationError(
        f"CACHES[{alias!r}] has an unknown {kind} {name!r}.{hint} Known: {', '.join(sorted(known))}."
    )


#: The longest timeout accepted anywhere (entries, versions, locks, polls), in
#: seconds: 10 years. Every supported store keeps it: memcached's absolute
#: 32-bit expiry (until 2106), the database cache's ``datetime`` (year 9999),
#: Redis's 64-bit milliseconds. Longer ones are refused with a ``ValueError``;
#: ``None`` means "never expire".
MAX_TIMEOUT = 10 * 365 * 24 * 3600


def check_seconds(
    value: Any,
    where: str,
    *,
    allow_none: bool = True,
    allow_negative: bool = False,
    error: type[Exception] = ConfigurationError,
) -> Any:
    """Return *value* if it is a usable number of seconds; raise *error* naming *where* if not.

    The one check of every timeout and duration of the package (call
    arguments, ``CACHES`` entries, ``OPTIONS``, ``@tagged_cache``), the same
    whatever the store: a real number (not ``bool``), finite, at most
    :data:`MAX_TIMEOUT` seconds away from zero, not negative unless
    *allow_negative* (Django's "expire at once"), or ``None`` (never expire)
    when *allow_none*. *error* is ``ConfigurationError`` for settings and
    ``InvalidTimeout`` (a ``ValueError``) for arguments.
    """
    never = " or None (never expire)" if allow_none else ""
    if value is None:
        if allow_none:
            return None
        raise error(f"{where} must be a number of seconds, got None")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if allow_negative:
            raise error(f"{where} must be a number of seconds{never}, got {value!r}")
        raise error(f"{where} must be a non-negative number of seconds{never}, got {value!r}")
    if not math.isfinite(value):
        raise error(
            f"{where} must be a finite number of seconds{never}, got {value!r}"
            + ("; use None to never expire" if allow_none and value > 0 else "")
        )
    if value < 0 and not allow_negative:
        raise error(
            f"{where} must be a non-negative number of seconds{never}, got {value!r}"
            "; use 0 not to keep the value"
        )
    if abs(value) > MAX_TIMEOUT:
        raise error(
            f"{where} = {value!r} is beyond the longest timeout every store can keep "
            f"({MAX_TIMEOUT} seconds, 10 years)"
            + ("; use None to never expire" if allow_none else "")
        )
    return value


def check_beta(value: Any, where: str, *, error: type[Exception] = ConfigurationError) -> Any:
    """Return the XFetch *beta* (``EARLY_RECOMPUTE``, ``early_recompute=``) as a float, or ``None``.

    A positive finite number (not ``bool``) or ``None`` (off); anything else
    raises *error* naming *where* and the value.
    """
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise error(
            f"{where} must be a positive finite number (XFetch beta, e.g. 1.0) or None (off), "
            f"got {value!r}"
        )
    return float(value)


def _seconds(value: Any, where: str, *, allow_none: bool = True) -> float | None:
    return check_seconds(value, where, allow_none=allow_none)


def _positive(value: Any, where: str) -> float | None:
    seconds = _seconds(value, where)
    if seconds == 0:
        raise ConfigurationError(
            f"{where} must be a positive number of seconds or None (never expire), got 0: "
            f"versions that expire at once would make nothing cacheable"
        )
    return seconds


def _beta(value: Any, where: str) -> float | None:
    return check_beta(value, where)


def _adapter_class(value: Any, where: str) -> Any:
    """The store adapter class named by *value* (a class or a dotted path), or ``None``."""
    if value is None:
        return None
    cls = import_dotted(value, where) if isinstance(value, str) else value
    if not callable(cls):
        raise ConfigurationError(
            f"{where} must be a store adapter class or its dotted path (see "
            f"fragmented_keys_django.stores.StoreAdapter), got {value!r}"
        )
    return cls


def _tenant_slots(value: Any, where: str) -> Any:
    """``TENANT_SLOTS`` checked: ``None``, a dict of tenant ids to counts, or a callable."""
    if value is None:
        return None
    if isinstance(value, str):
        value = import_dotted(value, where)
    if isinstance(value, dict):
        for tenant, n in value.items():
            _slot_count(n, f"{where}[{tenant!r}]")
        return dict(value)
    if callable(value):
        return value
    raise ConfigurationError(
        f"{where} must be a dict {{tenant_id: number of hash slots}} or a callable "
        f"(tenant_id) -> int (or its dotted path), got {value!r}"
    )


def _slot_count(n: Any, where: str) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_TENANT_SLOTS:
        raise ConfigurationError(
            f"{where} must be an int from 1 to {MAX_TENANT_SLOTS} (hash slots of the tenant), "
            f"got {n!r}"
        )
    return n


def _url(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigurationError(f"{where} must be a redis:// URL or None, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class BackendOptions:
    """Parsed options of one fragmented alias. Build with :meth:`from_params`."""

    alias: str
    cache_name: str
    prefix: str
    epoch: str | None
    tenant_required: bool
    version_timeout: float | None
    strict: bool
    stampede_lock: bool
    stampede_lock_timeout: float
    stampede_wait: float
    stampede_poll: float
    verify_bumps: bool | None
    tenant_stores: Any
    tenant_config_url: str | None
    tenant_config_recheck: float
    shared: bool
    early_recompute: float | None
    circuit_breaker: float
    store_adapter: Any = None
    failover_epoch: bool | None = None
    #: The store has Redis Cluster hash slots (its BACKEND class says ``hash_slots = True``):
    #: versions shared by every tenant are kept as one copy per slot (see :mod:`.keys`).
    slot_copies: bool = False
    #: ``TENANT_SLOTS``: ``None``, ``{tenant_id: N}`` or a callable; see :meth:`shards_for`.
    tenant_slots: Any = None

    def shards_for(self, tenant: str | None) -> int:
        """Return how many hash slots *tenant*'s keys are spread over (1 unless ``TENANT_SLOTS``).

        Raises ``ConfigurationError`` if a ``TENANT_SLOTS`` callable returns
        something else than an int from 1 to ``MAX_TENANT_SLOTS``.
        """
        spread = self.tenant_slots
        if spread is None or tenant is None:
            return 1
        if type(spread) is dict:
            return spread.get(tenant, 1)
        where = f"CACHES[{self.alias!r}]['OPTIONS']['TENANT_SLOTS']({tenant!r})"
        return _slot_count(spread(tenant), where)

    @classmethod
    def from_params(cls, alias: str, location: str, params: dict[str, Any]) -> BackendOptions:
        """Parse and check a ``CACHES`` entry; raise ``ConfigurationError`` on any mistake."""
        for name in params:
            if name not in _TOP_LEVEL:
                raise _unknown("key", alias, name, _TOP_LEVEL)
        if location:
            raise ConfigurationError(
                f"CACHES[{alias!r}] sets LOCATION={location!r}, but a fragmented alias wraps "
                f"another alias instead of owning a connection. Define the store as its own "
                f"alias and set CACHE_NAME to it."
            )
        cache_name = params.get("CACHE_NAME", "default")
        if not isinstance(cache_name, str) or not cache_name:
            raise ConfigurationError(
                f"CACHES[{alias!r}]['CACHE_NAME'] must name another cache alias, got {cache_name!r}"
            )
        prefix = params.get("PREFIX", "")
        if not isinstance(prefix, str):
            raise ConfigurationError(
                f"CACHES[{alias!r}]['PREFIX'] must be a string, got {prefix!r}"
            )
        epoch = params.get("EPOCH")
        if epoch is not None:
            epoch = _epoch_str(epoch, f"CACHES[{alias!r}]['EPOCH']")
        timeout = params.get("TIMEOUT", params.get("timeout"))
        if "TIMEOUT" in params or "timeout" in params:
            _seconds(timeout, f"CACHES[{alias!r}]['TIMEOUT']")
        options = params.get("OPTIONS", {}) or {}
        if not isinstance(options, dict):
            raise ConfigurationError(
                f"CACHES[{alias!r}]['OPTIONS'] must be a dict, got {options!r}"
            )
        for name in options:
            if name not in _OPTION_DEFAULTS:
                raise _unknown("OPTIONS key", alias, name, frozenset(_OPTION_DEFAULTS))
        o = {**_OPTION_DEFAULTS, **options}
        where = f"CACHES[{alias!r}]['OPTIONS']"
        for flag in ("TENANT_REQUIRED", "STRICT", "STAMPEDE_LOCK", "SHARED"):
            if not isinstance(o[flag], bool):
                raise ConfigurationError(
                    f"{where}[{flag!r}] must be True or False, got {o[flag]!r}"
                )
        if o["VERIFY_BUMPS"] is not None and not isinstance(o["VERIFY_BUMPS"], bool):
            raise ConfigurationError(
                f"{where}['VERIFY_BUMPS'] must be True, False or None (auto), got {o['VERIFY_BUMPS']!r}"
            )
        if o["FAILOVER_EPOCH"] not in (None, True):
            raise ConfigurationError(
                f"{where}['FAILOVER_EPOCH'] must be True (keep a failover epoch on the Redis "
                f"store) or None (only on Sentinel stores, where it cannot be turned off), "
                f"got {o['FAILOVER_EPOCH']!r}"
            )
        if o["TENANT_SLOTS"] is not None and (o["SHARED"] or o["TENANT_STORES"] is not None):
            raise ConfigurationError(
                f"{where}: TENANT_SLOTS (a tenant spread over hash slots of a Redis Cluster "
                f"store) excludes SHARED and TENANT_STORES."
            )
        if o["SHARED"] and (o["TENANT_REQUIRED"] or o["TENANT_STORES"] is not None):
            raise ConfigurationError(
                f"{where}: SHARED=True (one namespace for every tenant) excludes TENANT_REQUIRED "
                f"and TENANT_STORES."
            )
        return cls(
            alias=alias,
            cache_name=cache_name,
            prefix=prefix,
            epoch=epoch,
            tenant_required=o["TENANT_REQUIRED"],
            version_timeout=_positive(o["VERSION_TIMEOUT"], f"{where}['VERSION_TIMEOUT']"),
            strict=o["STRICT"],
            stampede_lock=o["STAMPEDE_LOCK"],
            stampede_lock_timeout=_seconds(
                o["STAMPEDE_LOCK_TIMEOUT"], f"{where}['STAMPEDE_LOCK_TIMEOUT']", allow_none=False
            ),
            stampede_wait=_seconds(
                o["STAMPEDE_WAIT"], f"{where}['STAMPEDE_WAIT']", allow_none=False
            ),
            stampede_poll=_seconds(
                o["STAMPEDE_POLL"], f"{where}['STAMPEDE_POLL']", allow_none=False
            )
            or 0.001,
            verify_bumps=o["VERIFY_BUMPS"],
            tenant_stores=o["TENANT_STORES"],
            tenant_config_url=_url(o["TENANT_CONFIG_URL"], f"{where}['TENANT_CONFIG_URL']"),
            shared=o["SHARED"],
            early_recompute=_beta(o["EARLY_RECOMPUTE"], f"{where}['EARLY_RECOMPUTE']"),
            tenant_config_recheck=_seconds(
                o["TENANT_CONFIG_RECHECK"], f"{where}['TENANT_CONFIG_RECHECK']", allow_none=False
            ),
            circuit_breaker=_seconds(
                o["CIRCUIT_BREAKER"], f"{where}['CIRCUIT_BREAKER']", allow_none=False
            ),
            store_adapter=_adapter_class(o["STORE_ADAPTER"], f"{where}['STORE_ADAPTER']"),
            failover_epoch=o["FAILOVER_EPOCH"],
            tenant_slots=_tenant_slots(o["TENANT_SLOTS"], f"{where}['TENANT_SLOTS']"),
        )


def store_is_reliable(backend_path: str) -> bool:
    """Return True if *backend_path* is a store whose writes land or raise.

    Django's database cache swallows ``DatabaseError`` on writes, so a bump
    written there is read back and retried.
    """
    return backend_path in _RELIABLE_STORES


def alias_options(alias: str) -> BackendOptions:
    """Return the parsed options of fragmented alias *alias*: ``settings.CACHES`` read once.

    The one place raw ``CACHES`` entries of fragmented aliases are parsed
    (the backend, the bumps, the tenant stores and the checks ask here);
    remembered per process until ``CACHES`` changes. Raises
    ``ConfigurationError`` for a bad entry, ``KeyError`` for an unknown alias.
    """
    hit = _options.get(alias)
    if hit is None:
        from django.conf import settings

        conf = settings.CACHES[alias]
        params = {k: v for k, v in conf.items() if k not in ("BACKEND", "LOCATION")}
        hit = BackendOptions.from_params(alias, conf.get("LOCATION", ""), params)
        store = settings.CACHES.get(hit.cache_name) or {}
        if _has_hash_slots(store.get("BACKEND")):
            hit = dataclasses.replace(hit, slot_copies=True)
        elif hit.tenant_slots is not None:
            raise ConfigurationError(
                f"CACHES[{alias!r}]['OPTIONS']['TENANT_SLOTS'] spreads tenants over hash slots "
                f"of a Redis Cluster, but CACHE_NAME {hit.cache_name!r} is not a cluster store "
                f"(fragmented_keys_django.cache_backends.redis_cluster.RedisClusterCache). "
                f"Remove TENANT_SLOTS or point CACHE_NAME at a cluster store."
            )
        _options[alias] = hit
    return hit


def _has_hash_slots(backend_path: Any) -> bool:
    """True if the Django cache class at *backend_path* keeps keys in Redis Cluster hash slots.

    Decided by what the class says (``hash_slots = True``, subclasses
    included); a path that cannot be imported says nothing here (the store's
    own construction reports it).
    """
    if not isinstance(backend_path, str):
        return False
    from django.utils.module_loading import import_string

    try:
        cls = import_string(backend_path)
    except ImportError:
        return False
    return bool(getattr(cls, "hash_slots", False))


# alias_options() answers, forgotten when CACHES changes.
_options: dict[str, BackendOptions] = {}


def fragmented_aliases() -> list[str]:
    """Return the ``CACHES`` aliases whose BACKEND is ``FragmentedKeysCacheBackend``.

    Read once per process (every bump asks), until ``CACHES`` changes.
    """
    found = _fragmented
    if found is None:
        from django.conf import settings

        aliases = settings.CACHES.items()
        found = [a for a, c in aliases if c.get("BACKEND") in BACKEND_PATHS]
        _remember_aliases(found)
    return list(found)


_fragmented: list[str] | None = None


def _remember_aliases(found: list[str] | None) -> None:
    global _fragmented
    _fragmented = found


def alias_of(params: dict[str, Any]) -> str:
    """Best effort: find the ``CACHES`` alias whose entry produced *params*."""
    from django.conf import settings

    for alias, conf in settings.CACHES.items():
        if conf.get("BACKEND") not in BACKEND_PATHS:
            continue
        rest = {k: v for k, v in conf.items() if k not in ("BACKEND", "LOCATION")}
        if rest == params:
            return alias
    return "<fragmented>"


_default_alias: str | None = None


def set_default_alias(alias: str | None) -> None:
    """Make *alias* the fragmented alias used when none is named (``None`` resets)."""
    global _default_alias
    _default_alias = alias
    _resolved.clear()


def resolve_alias(name: str | None = None) -> str:
    """Return the fragmented alias to use for *name*.

    *name* may be a fragmented alias, or the store alias a fragmented alias
    wraps (the seed's ``cache_name="default"``). ``None`` means the project's
    fragmented alias: the one set by ``configure_fragmented_keys``, else the
    only (or first) fragmented alias in ``CACHES``.
    """
    if name is None and _default_alias is not None:
        return _default_alias
    hit = _resolved.get(name)
    if hit is not None:
        return hit
    alias = _resolve_alias(name)
    _resolved[name] = alias
    return alias


# resolve_alias() answers, forgotten when CACHES changes.
_resolved: dict[str | None, str] = {}


def _resolve_alias(name: str | None) -> str:
    from django.conf import settings

    caches_conf = settings.CACHES
    frag = fragmented_aliases()
    if name is None:
        if not frag:
            raise ConfigurationError(
                "No cache alias uses fragmented_keys_django.FragmentedKeysCacheBackend. Add one, e.g. "
                "CACHES['fragmented'] = {'BACKEND': 'fragmented_keys_django.FragmentedKeysCacheBackend', "
                "'CACHE_NAME': 'default'}."
            )
        return frag[0]
    if name in frag:
        return name
    if name not in caches_conf:
        raise ConfigurationError(f"cache_name={name!r} is not an alias in settings.CACHES.")
    for alias in frag:
        if caches_conf[alias].get("CACHE_NAME", "default") == name:
            return alias
    raise ConfigurationError(
        f"cache_name={name!r} is a plain cache alias and no fragmented alias wraps it. Add "
        f"{{'BACKEND': 'fragmented_keys_django.FragmentedKeysCacheBackend', 'CACHE_NAME': {name!r}}} "
        f"to CACHES, or name the fragmented alias."
    )


def forget_choices(setting: str) -> None:
    """Forget this module's cached choices after *setting* changed (``override_settings``).

    ``FRAGMENTED_KEYS``: the default alias and tenant source are installed
    again; ``CACHES``: resolved aliases are forgotten. Called by the
    ``setting_changed`` receiver in ``apps.py``, which resets the other
    modules' state too.
    """
    global _default_alias
    if setting == "FRAGMENTED_KEYS":
        set_default_alias(None)
        apply_project_settings()
    if setting in ("CACHES", "FRAGMENTED_KEYS"):
        _resolved.clear()
    if setting == "CACHES":
        _options.clear()
        _remember_aliases(None)
    if setting == "CACHES" and _default_alias is not None:
        from django.conf import settings

        if _default_alias not in settings.CACHES:
            _default_alias = None


# -- project-wide settings: settings.FRAGMENTED_KEYS ---------------------------

_PROJECT_DEFAULTS: dict[str, Any] = {
    # Where the current tenant comes from when no use_tenant() is in effect:
    # "fragmented_keys_django" (ours only), "django_tenants", "omnitenant", or a
    # dotted path to a zero-argument callable returning a tenant or None.
    "TENANT_SOURCE": "fragmented_keys_django",
    # The fragmented alias used when none is named (default: the first one).
    "DEFAULT_ALIAS": None,
    # Keep bumps in the database outbox until they land (outbox.py); False keeps
    # failed bumps in process memory only.
    "OUTBOX": True,
    # The safety net (net.py): writes to registered models' tables that send no
    # signal invalidate the model's entries. False: precise bumps only.
    "SAFETY_NET": True,
    # Prometheus metrics (prometheus.py, the "prometheus" extra): off by default.
    "PROMETHEUS": False,
    # A "tenant" label on every Prometheus metric: one series per tenant.
    "PROMETHEUS_TENANT_LABELS": False,
}

_BUILTIN_SOURCES = {
    "fragmented_keys_django": None,
    "django_tenants": "fragmented_keys_django.tenancy.sources.django_tenants_tenant",
    "omnitenant": "fragmented_keys_django.tenancy.sources.omnitenant_tenant",
}


def project_settings() -> dict[str, Any]:
    """Return ``settings.FRAGMENTED_KEYS`` merged over the defaults; raise on unknown keys."""
    from django.conf import settings

    given = getattr(settings, "FRAGMENTED_KEYS", {}) or {}
    if not isinstance(given, dict):
        raise ConfigurationError(f"settings.FRAGMENTED_KEYS must be a dict, got {given!r}")
    for name in given:
        if name not in _PROJECT_DEFAULTS:
            close = difflib.get_close_matches(name, list(_PROJECT_DEFAULTS), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ConfigurationError(
                f"settings.FRAGMENTED_KEYS has an unknown key {name!r}.{hint} "
                f"Known: {', '.join(sorted(_PROJECT_DEFAULTS))}."
            )
    return {**_PROJECT_DEFAULTS, **given}


def apply_project_settings() -> None:
    """Install the tenant source and default alias from ``settings.FRAGMENTED_KEYS``."""

    from .tenancy.context import set_tenant_source

    conf = project_settings()
    source = conf["TENANT_SOURCE"]
    path = _BUILTIN_SOURCES.get(source, source) if isinstance(source, str) else source
    if path is None:
        set_tenant_source(None)
    elif isinstance(path, str):
        set_tenant_source(import_dotted(path, "settings.FRAGMENTED_KEYS['TENANT_SOURCE']"))
    elif callable(path):
        set_tenant_source(path)
    else:
        raise ConfigurationError(
            f"settings.FRAGMENTED_KEYS['TENANT_SOURCE'] must be a name, a dotted path or a callable, got {source!r}"
        )
    if conf["DEFAULT_ALIAS"] is not None:
        if conf["DEFAULT_ALIAS"] not in fragmented_aliases():
            raise ConfigurationError(
                f"settings.FRAGMENTED_KEYS['DEFAULT_ALIAS'] = {conf['DEFAULT_ALIAS']!r} is not a "
                f"FragmentedKeysCacheBackend alias in CACHES; fragmented aliases: {fragmented_aliases()}"
            )
        set_default_alias(conf["DEFAULT_ALIAS"])


def get_cache(alias: str) -> Any:
    """Return the cache backend of *alias* from Django's cache handler.

    Like ``django.core.cache.caches[alias]``, but immune to projects that
    replace ``django.core.cache.caches`` with a wrapper whose ``[]`` returns
    cached *values* (django-omnitenant's cache patch does): the wrapped
    handler is used then.
    """
    global _handler
    handler = _handler
    if handler is None:
        from django.core import cache as django_cache
        from django.core.cache import CacheHandler

        handler = django_cache.caches
        if not isinstance(handler, CacheHandler):
            handler = getattr(handler, "_handler", handler)
        _handler = handler
    return handler[alias]


_handler: Any = None


def import_dotted(path: Any, where: str) -> Any:
    """Import the object at dotted *path*; raise ``ConfigurationError`` naming *where* if it fails."""
    from django.utils.module_loading import import_string

    if not isinstance(path, str) or not path:
        raise ConfigurationError(f"{where} must be a dotted path, got {path!r}.")
    try:
        return import_string(path)
    except ImportError as exc:
        raise ConfigurationError(
            f"{where} names {path!r}, which cannot be imported: {exc}"
        ) from exc
