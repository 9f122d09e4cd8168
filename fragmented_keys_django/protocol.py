"""The cache protocol, written once: read and decode, stamped write, ``add``, fill a miss.

Every operation here is a generator of *steps* (see :mod:`.drivers`): it
yields store requests (``("read", keys, entries)``, ``("stamp", ...)``, one
round trip each, named after :class:`~.stores.base.StoreAdapter` methods) and
the drivers' own steps (sleep, compute the caller's value, run code in the
caller's transaction thread), and returns its result. The sync backend runs
them with :func:`.drivers.run` on a sync adapter, the async one with
:func:`.drivers.arun` on an async adapter: the same requests, so the same
round trips, in both.

How an entry is kept. Every value is stored under a stable *entry key*
together with the versions (*tokens*) it was computed under: the tenant's
namespace version, one per tag, and the safety net's (see :mod:`.keys`). A
read fetches the entry and those versions in one round trip and serves the
value only if every recorded token equals the current one (:func:`decode`);
a missing version never matches. A write stamps the entry with the versions
current when it lands (atomically, in one script, on Redis), or read before
the value was computed (a miss), so a value computed from data older than a
bump is never served after it.

An entry computed while other tagged entries were read (a nested cache, see
:mod:`.deps`) also holds those entries' version keys and the tokens they were
read at (a :class:`~.deps.Dependencies`, the envelope's last item): it is
served only if they hold too (:func:`check_held`).

Store errors raised by a request are thrown back into the steps at their
``yield``: the steps that survive one (the stampede lock, a fill's write)
report it through their *failed* callback (logged and counted by the
backend) and go on; the others let it propagate to the backend, which
handles the outage in one place.
"""

from __future__ import annotations

import math
import pickle
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import metrics
from .conf import BackendOptions
from .deps import Frame, remember, remembered
from .drivers import COMPUTE, IN_TRANSACTION, SLEEP, Steps
from .exceptions import UnpicklableValue, ValueTooLarge
from .keys import EntryKeys, lock_key
from .stores import AsyncStoreAdapter, StoreAdapter
from .transactions import WriteMode
from .versions import _backoff, ensure_steps, fresh_token

__all__ = [
    "MISSING",
    "check_held",
    "compute",
    "decode",
    "decode_env",
    "decode_steps",
    "delete_steps",
    "fill_steps",
    "held",
    "incr_steps",
    "recompute_early",
    "set_many_steps",
    "store_steps",
    "touch_steps",
    "write_tokens",
]

#: Returned by :func:`wait_steps` when no value came.
MISSING = object()
_MISS = (False, None)

Adapter = StoreAdapter | AsyncStoreAdapter
#: Reports a store error the steps survive: ``failed(exc, operation=None)``.
Failed = Callable[..., None]


def decode_env(env: Any, versions: Sequence[Any]) -> tuple[bool, Any]:
    """Return ``(hit, value)``: *env* is an entry read, *versions* the current tokens in order.

    A hit needs an envelope whose recorded tokens equal *versions*, one for
    one (a missing version, ``None``, never matches). An envelope that holds
    dependencies is a miss here: only :func:`check_held` can tell.
    """
    if type(env) is not tuple or len(env) not in (2, 4):  # 4: with early-recompute meta
        return _MISS
    recorded = env[0]
    if type(recorded) is not list:
        recorded = list(recorded)  # a tuple: an envelope of the generic adapter
    if recorded != versions:
        return _MISS
    return True, env[1]


def decode(values: list[Any]) -> tuple[bool, Any]:
    """Return ``(hit, value)`` from the values of a read of ``EntryKeys.read_keys``."""
    return decode_env(values[0], values[1:])


def held(env: Any) -> Any:
    """Return the dependencies ``(keys, tokens)`` an envelope holds, or ``None``."""
    return env[-1] if type(env) is tuple and len(env) in (3, 5) else None


def check_held(
    env: tuple, versions: Sequence[Any], fetched: Mapping[str, Any], entry: str
) -> Steps:
    """Steps: ``(hit, value)`` of envelope *env*, which holds dependencies.

    *versions* are its own version tokens as read; *fetched* the values of
    the dependency keys read with it (the ones :func:`.deps.remembered` knew).
    Keys it holds that were not fetched are read now (one more round trip: the
    first read of such an entry in a process, or after its dependencies
    changed); they are remembered for the next read of *entry*.
    """
    if list(env[0]) != list(versions):
        return _MISS
    keys, tokens = env[-1]
    missing = tuple(k for k in keys if k not in fetched)
    if missing:
        got = yield "read", missing, 0
        fetched = {**fetched, **dict(zip(missing, got, strict=True))}
    if remembered(entry) != keys:
        remember(entry, tuple(keys))
    for key, token in zip(keys, tokens, strict=True):
        if fetched[key] != token:
            return _MISS
    return True, env[1]


def decode_steps(ek: EntryKeys, values: list[Any], extra: tuple[str, ...] = ()) -> Steps:
    """Steps: ``(hit, value)`` of a read of ``(*ek.read_keys, *extra)`` (*extra*: remembered dependency keys).

    No request unless the entry holds dependencies not fetched with it.
    """
    env = values[0]
    if type(env) is tuple and len(env) in (3, 5):
        n = len(ek.read_keys)
        fetched = dict(zip(extra, values[n:], strict=True)) if extra else {}
        return (yield from check_held(env, values[1:n], fetched, ek.entry))
    return decode_env(env, values[1 : len(ek.read_keys)] if extra else values[1:])


def recompute_early(env: tuple, beta: float) -> bool:
    """XFetch (probabilistic early expiration): recompute before expiry, the likelier the closer.

    *env* is ``(tokens, value, expiry, compute_seconds[, dependencies])``; the test is
    ``now - compute_seconds * beta * ln(U) >= expiry`` with ``U`` uniform in (0, 1].
    """
    if len(env) not in (4, 5) or env[2] <= 0:
        return False
    return time.time() - env[3] * beta * math.log(1.0 - random.random()) >= env[2]


def name_unpicklable(key: Any, value: Any, exc: BaseException | None) -> None:
    """Raise ``UnpicklableValue`` naming *key* if *value* cannot be pickled (the cause: *exc*)."""
    try:
        pickle.dumps(value, pickle.HIGHEST_PROTOCOL)
    except Exception as pexc:
        raise UnpicklableValue(
            f"The value for cache key {key!r} cannot be pickled ({type(value).__name__}: {pexc}). "
            f"Cache plain data (dicts, lists, model instances), not open files, locks or lambdas."
        ) from (exc if exc is not None else pexc)


def _writing(items: Sequence[tuple[Any, Any]], request: tuple) -> Steps:
    """Send write *request*; an error that is not a store's is checked against pickle.

    A value that cannot be pickled raises ``UnpicklableValue`` naming its key
    (*items*: ``(key, value)`` pairs); store errors pass through untouched.
    """
    try:
        return (yield request)
    except Exception as exc:
        if not isinstance(exc, (ValueTooLarge, *metrics.store_errors())):
            for key, value in items:
                name_unpicklable(key, value, exc)
        raise


# -- versions and writes ------------------------------------------------------------


def write_tokens(
    adapter: Adapter,
    version_keys: tuple[str, ...],
    version_timeout: float | None,
    versions: list[Any] | None = None,
) -> Steps:
    """Steps: return the current tokens of *version_keys*, creating missing ones; ``None`` if impossible.

    *versions* are their values from a read already made (else read now).
    """
    if versions is None:
        versions = yield "read", version_keys, 0
    if None not in versions:
        return versions
    got = yield from ensure_steps(
        adapter, list(version_keys), dict(zip(version_keys, versions, strict=True)), version_timeout
    )
    return None if got is None else [got[k] for k in version_keys]


def store_steps(
    adapter: Adapter,
    ek: EntryKeys,
    key: Any,
    value: Any,
    timeout: Any,
    version_timeout: float | None,
    add: bool = False,
) -> Steps:
    """Steps: store *value* stamped with the versions current now; return True if stored.

    On a store that ``stamps`` (Redis): one script call, atomic, ``add``
    included (even over an invalidated entry). Elsewhere: read the versions,
    create the missing ones, write; an ``add`` over an invalidated entry
    deletes it first.
    """
    if adapter.stamps:
        fresh = [fresh_token() for _ in ek.version_keys]
        request = ("stamp", ek.entry, ek.version_keys, value, timeout, version_timeout, fresh, add)
        done = yield from _writing(((key, value),), request)
        if done is None:  # an add met an entry holding dependencies: live only if they hold
            if (yield from decode_steps(ek, (yield "read", ek.read_keys, 1)))[0]:
                return False
            request = (*request[:-1], False)  # it is dead: write over it
            done = yield from _writing(((key, value),), request)
        return done
    if add:
        values = yield "read", ek.read_keys, 1
        if (yield from decode_steps(ek, values))[0]:
            return False
        tokens = yield from write_tokens(adapter, ek.version_keys, version_timeout, values[1:])
        if tokens is None:
            return False
        if values[0] is not None:
            yield "delete", ek.entry
    else:
        tokens = yield from write_tokens(adapter, ek.version_keys, version_timeout)
        if tokens is None:
            return False
    request = ("write", ek.entry, (tokens, value), timeout, add)
    return bool((yield from _writing(((key, value),), request)))


def set_many_steps(
    adapter: Adapter,
    entries: Mapping[str, Any],
    vkeys: tuple[str, ...],
    data: Mapping[Any, Any],
    timeout: Any,
    version_timeout: float | None,
) -> Steps:
    """Steps: store ``{entry: data[key]}`` for *entries* ``{entry: key}``, stamped with *vkeys*.

    *vkeys* are the versions plain entries record (the tenant namespace, and
    the store's failover epoch if it has one). Returns the keys that failed
    (Django's ``set_many`` contract).
    """
    items = [(k, data[k]) for k in entries.values()]
    if adapter.stamps:
        values = {e: data[k] for e, k in entries.items()}
        fresh = [fresh_token() for _ in vkeys]
        yield from _writing(items, ("stamp_many", values, vkeys, timeout, version_timeout, fresh))
        return []
    tokens = yield from write_tokens(adapter, vkeys, version_timeout)
    if tokens is None:
        return list(data)
    envelopes = {e: (tokens, data[k]) for e, k in entries.items()}
    try:
        failed = yield from _writing(items, ("set_many", envelopes, timeout))
    except ValueTooLarge as exc:  # the others are written: the call fails for those only
        exc.result = [entries[e] for e in exc.failed]
        raise
    return [entries[e] for e in failed or ()]


def delete_steps(adapter: Adapter, ek: EntryKeys) -> Steps:
    """Steps: delete *ek*'s entry; return True only if a live entry was deleted."""
    values = yield "read", ek.read_keys, 1
    if values[0] is None:
        return False
    live = (yield from decode_steps(ek, values))[0]
    deleted = yield "delete", ek.entry
    return bool(live and deleted)


def touch_steps(adapter: Adapter, ek: EntryKeys, timeout: Any) -> Steps:
    """Steps: set a new expiry on *ek*'s live entry; return False if it has none."""
    values = yield "read", ek.read_keys, 1
    if not (yield from decode_steps(ek, values))[0]:
        return False
    return bool((yield "touch", ek.entry, timeout))


def incr_steps(
    adapter: Adapter,
    ek: EntryKeys,
    key: Any,
    delta: int,
    timeout: Any,
    suspect: Callable[[], bool],
) -> Steps:
    """Steps: add *delta* to *ek*'s live value; raise ``ValueError`` if it has none (or *suspect()*).

    As Django's ``BaseCache.incr``: a read then a write, not atomic.
    """
    values = yield "read", ek.read_keys, 1
    hit, value = yield from decode_steps(ek, values)
    if not hit or suspect():  # suspect: a bump pending, the value untrusted
        raise ValueError(f"Key '{key}' not found")
    new = value + delta
    deps = held(values[0])  # kept: the new value depends on what the old one did
    yield "write", ek.entry, (values[1:], new, *(() if deps is None else (deps,))), timeout, False
    return new


# -- filling a miss: the stampede lock and early recomputation -------------------------


def take_lock(adapter: Adapter, lkey: str, lock_timeout: float) -> Steps:
    """Steps: take the stampede lock *lkey*; return True if this caller holds it.

    The lock is a token created like a missing version (:func:`.versions.ensure_steps`):
    this caller holds it iff its own token is the one stored. So an ``add``
    that a store dropped (the database cache under SQLite contention) is
    retried rather than taken for a lock held by someone else.
    """
    token = fresh_token()
    got = yield from ensure_steps(adapter, [lkey], {}, lock_timeout, {lkey: token})
    return got is not None and got[lkey] == adapter.token(token)


def unlock(lkey: str, failed: Failed) -> Steps:
    """Steps: release a stampede lock; a store error is reported (the lock expires anyway)."""
    try:
        yield "delete", lkey
    except metrics.store_errors() as exc:
        failed(exc, "stampede_unlock")


def wait_steps(ek: EntryKeys, options: BackendOptions) -> Steps:
    """Steps: poll for the entry another caller is computing; :data:`MISSING` if it does not come.

    Stops early when the lock is gone and no live entry was stored (the
    holder failed, or could not store): waiting longer would gain nothing.
    """
    deadline = time.monotonic() + min(options.stampede_wait, options.stampede_lock_timeout)
    keys = (*ek.read_keys, lock_key(ek.entry))
    while time.monotonic() < deadline:
        yield SLEEP, options.stampede_poll
        values = yield "read", keys, 1
        hit, value = yield from decode_steps(ek, values[:-1])
        if hit:
            return value
        if values[-1] is None:
            # The holder writes the entry, then drops the lock; a store whose
            # get_many is not one snapshot may show the lock gone before the
            # entry: look once more.
            hit, value = yield from decode_steps(ek, (yield "read", ek.read_keys, 1))
            return value if hit else MISSING
    return MISSING


def put_checked(ek: EntryKeys, key: Any, envelope: tuple, timeout: Any, verify: bool) -> Steps:
    """Steps: write *envelope*; on a store that drops failed writes (*verify*), read back and retry.

    Django's database cache swallows ``DatabaseError`` (SQLite "database is
    locked" under contention): without this a stampede's one computed value
    could be lost and every waiter would compute again.
    """
    request = ("write", ek.entry, envelope, timeout, False)
    yield from _writing(((key, envelope[1]),), request)
    if not verify or timeout == 0:
        return
    for attempt in range(1, 8):
        if (yield "read", (ek.entry,), 1)[0] is not None:
            return  # landed (or another writer's entry is there: fine too)
        yield SLEEP, _backoff(attempt)
        yield from _writing(((key, envelope[1]),), request)


def fill_steps(
    adapter: Adapter,
    ek: EntryKeys,
    key: Any,
    default: Any,
    values: list[Any],
    hit: bool,
    mode: Any,
    using: str | None,
    *,
    timeout: Any,
    seconds: float | None,
    beta: float | None,
    options: BackendOptions,
    verify: bool,
    failed: Failed,
    defer: Callable[..., None],
    waited: Callable[[], None] | None = None,
    frame: Frame | None = None,
) -> Steps:
    """Steps: after a read (*values*: the entry and its own versions) that missed (or a hit due for early recomputation), fill it.

    Returns ``(value, how, tokens)``: ``how`` is ``"stored"``, ``"deferred"``
    (stored at the commit of *using*, by *defer*), ``"computed"`` (not
    stored) or ``"served"`` (another caller's value, or the live one);
    *tokens* are the entry's own versions the value was computed under
    (``None`` when unknown: not read, or served by another caller). *mode* is
    the transaction's :class:`~.transactions.WriteMode` (``NOW`` outside one).
    *seconds* is how long the entry lives (``None``: forever or unknown), for
    early recomputation (*beta*). *frame* (:mod:`.deps`) records the tagged
    reads of the computation: stored with the entry, which is not stored when
    the frame is broken.

    With a callable *default* and the stampede lock on, one caller takes the
    lock and computes; others wait for its value (``STAMPEDE_WAIT``), then
    compute anyway (*waited()* is called when a caller starts waiting). The
    versions are read before the value is computed. The loader's own
    exceptions propagate after the lock is released.
    """
    lkey = lock_key(ek.entry)
    if hit:
        # Early recomputation: only outside transactions (a value computed
        # inside one is stored at its commit, if ever), and only by whoever
        # takes the lock; the others keep serving the live value.
        value = values[0][1]
        if mode is not WriteMode.NOW:
            return value, "served", values[1:]
        try:
            if not (yield from take_lock(adapter, lkey, options.stampede_lock_timeout)):
                return value, "served", values[1:]
        except metrics.store_errors() as exc:
            failed(exc)
            return value, "served", values[1:]
        return (
            yield from _compute_and_store(
                ek, key, default, values[1:], True, timeout, seconds, beta, verify, failed, frame
            )
        )
    if mode is WriteMode.BYPASS:
        return (yield from compute(default, frame)), "computed", None
    locked = False
    try:
        if callable(default) and options.stampede_lock:
            locked = yield from take_lock(adapter, lkey, options.stampede_lock_timeout)
            if not locked:
                if waited is not None:
                    waited()
                got = yield from wait_steps(ek, options)
                if got is not MISSING:
                    return got, "served", None
        tokens = yield from write_tokens(
            adapter, ek.version_keys, options.version_timeout, values[1:]
        )
    except metrics.store_errors() as exc:
        failed(exc)
        tokens = None
    if mode is WriteMode.NOW and tokens is not None:
        return (
            yield from _compute_and_store(
                ek, key, default, tokens, locked, timeout, seconds, beta, verify, failed, frame
            )
        )
    how = "computed"
    try:
        value = yield from compute(default, frame)  # its errors are the caller's
        if tokens is not None and mode is WriteMode.DEFER and not (frame and frame.broken):
            # Inside a transaction: store after the commit, nothing on rollback.
            envelope = _with_deps((tokens, value), frame, ek, tokens)
            yield IN_TRANSACTION, defer, key, ek, envelope, timeout, using
            how = "deferred"
    finally:
        if locked:
            yield from unlock(lkey, failed)
    return value, how, tokens


def compute(default: Any, frame: Frame | None = None) -> Steps:
    """Steps: the caller's value: *default* called (and awaited, async) if callable.

    *frame* is current while it runs (see :mod:`.deps`).
    """
    if callable(default):
        return (yield COMPUTE, default, frame)
    return default


def _with_deps(envelope: tuple, frame: Frame | None, ek: EntryKeys, tokens: Sequence[Any]) -> tuple:
    """*envelope* with the dependencies *frame* recorded (unchanged when none)."""
    if frame is None or not frame.deps:
        return envelope
    deps = frame.dependencies(ek.version_keys, tokens)
    if deps is None:
        return envelope
    remember(ek.entry, deps[0])  # this process reads them with the entry from now on
    return (*envelope, deps)


def _compute_and_store(
    ek: EntryKeys,
    key: Any,
    default: Any,
    tokens: list[Any],
    locked: bool,
    timeout: Any,
    seconds: float | None,
    beta: float | None,
    verify: bool,
    failed: Failed,
    frame: Frame | None = None,
) -> Steps:
    """Steps: compute *default*, store it stamped with *tokens* (read before), release the lock.

    Returns ``(value, how, tokens)`` as :func:`fill_steps`. The loader's own
    exceptions propagate (a ``DatabaseError`` it raises is the caller's, not a
    store outage); store errors are reported. The lock is released in the
    write's own round trip where the store allows. A value whose *frame*
    broke is not stored (see :mod:`.deps`).
    """
    lkey = lock_key(ek.entry)
    how = "computed"
    try:
        started = time.monotonic()
        value = yield from compute(default, frame)
        if frame is not None and frame.broken:
            return value, how, tokens
        envelope: tuple = (tokens, value)
        if beta and seconds:
            envelope = (tokens, value, time.time() + seconds, time.monotonic() - started)
        envelope = _with_deps(envelope, frame, ek, tokens)
        try:
            if locked and not verify:
                request = ("write_unlock", ek.entry, envelope, timeout, lkey)
                yield from _writing(((key, value),), request)
                locked = False  # released with the write
            else:
                yield from put_checked(ek, key, envelope, timeout, verify)
            how = "stored"
        except (ValueTooLarge, *metrics.store_errors()) as exc:  # the value is still returned
            failed(exc)
    finally:
        if locked:
            yield from unlock(lkey, failed)
    return value, how, tokens
