"""Tag versions in a store: read many in one round trip, bump atomically.

A version is an opaque random 62-bit int (a *token*). A bump writes a fresh
token; it never reads the old one, so concurrent bumps cannot lose each other
(each leaves a token nobody observed before it) and no version can move
"backwards" or repeat, even after the version key is evicted, deleted or the
store is flushed: a missing version is never given a default, it is treated as
"nothing cached is valid" and re-created with a fresh token. No wall-clock
time is involved.

Stores whose writes can fail silently (Django's database cache swallows
``DatabaseError``) get a read-back check: a bump is retried until the token
read back is its own, or differs from one read before the bump (a version that
was absent must read back as our own token: a concurrent creation may come
from a transaction older than the commit).
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Iterable
from typing import Any

from .exceptions import BumpFailed
from .redis_access import redis_access

__all__ = ["abump", "aensure", "bump", "ensure", "fresh_token"]

#: Write attempts on a store that drops writes (Django's database cache),
#: with jittered, growing pauses in between (about 1.3 s in all at most).
_ATTEMPTS = 10


def _backoff(attempt: int) -> float:
    """Seconds to pause before write attempt *attempt* (>= 1)."""
    return random.uniform(0.5, 1.5) * min(0.004 * 2**attempt, 0.3)


def fresh_token() -> int:
    """Return a new version token: random, positive, below 2**62."""
    return secrets.randbits(62) | 1


def _redis(store: Any) -> Any:
    return redis_access(store)


def _landed(key: str, before: dict, written: dict, after: dict) -> bool:
    """True if the bump of *key* that wrote ``written[key]`` needs no rewrite, given the read-back.

    * Gone (culled, expired): a read misses and re-creates it with a fresh token.
    * Our token, or another one when the key existed before the bump: that one
      replaced the token seen before the bump, so it was written after that
      read, which came after the commit that asked for the bump (a concurrent
      bump; creation only fills an absent key).
    * Another token when the key was absent before the bump: it may be a
      creation by a transaction that began before the commit (the database
      cache swallows the unique violation our insert then hits, and a reader
      of an older snapshot stored its value under that token): rewrite it.
    """
    if key not in after:
        return True
    now = after[key]
    if now == written[key]:
        return True
    return key in before and now != before[key]


def bump(store: Any, keys: Iterable[str], timeout: float | None, verify: bool) -> dict[str, int]:
    """Write a fresh token to every key in *keys*; return the tokens written.

    One round trip on Redis (pipelined ``SET ... PX``) and on stores whose
    writes land or raise (``set_many``). With *verify* (stores that drop
    failed writes), the tokens are read before and after and a key whose
    token did not change, or that was absent before and now holds a token
    that is not ours (see :func:`_landed`), is written again, with jittered
    backoff, up to ten times; then ``BumpFailed`` is raised. Store errors
    propagate.
    """
    keys = list(dict.fromkeys(keys))
    if not keys:
        return {}
    acc = _redis(store)
    if acc is not None:
        tokens = {k: fresh_token() for k in keys}
        acc.set_tokens(tokens, timeout)
        return tokens
    before = store.get_many(keys) if verify else {}
    pending = keys
    written: dict[str, int] = {}
    for attempt in range(_ATTEMPTS):
        if attempt:
            time.sleep(_backoff(attempt))
        tokens = {k: fresh_token() for k in pending}
        store.set_many(tokens, timeout=timeout)
        written.update(tokens)
        if not verify:
            return written
        after = store.get_many(pending)
        pending = [k for k in pending if not _landed(k, before, tokens, after)]
        if not pending:
            return written
    raise BumpFailed(f"tag version bump did not land after {_ATTEMPTS} attempts: {pending}")


async def abump(
    store: Any, keys: Iterable[str], timeout: float | None, verify: bool
) -> dict[str, int]:
    """Async twin of :func:`bump`, on the store's ``a*`` methods."""
    keys = list(dict.fromkeys(keys))
    if not keys:
        return {}
    acc = _redis(store)
    if acc is not None:
        from asgiref.sync import sync_to_async

        tokens = {k: fresh_token() for k in keys}
        await sync_to_async(acc.set_tokens, thread_sensitive=True)(tokens, timeout)
        return tokens
    before = await store.aget_many(keys) if verify else {}
    pending = keys
    written: dict[str, int] = {}
    for attempt in range(_ATTEMPTS):
        if attempt:
            await asyncio.sleep(_backoff(attempt))
        tokens = {k: fresh_token() for k in pending}
        await store.aset_many(tokens, timeout=timeout)
        written.update(tokens)
        if not verify:
            return written
        after = await store.aget_many(pending)
        pending = [k for k in pending if not _landed(k, before, tokens, after)]
        if not pending:
            return written
    raise BumpFailed(f"tag version bump did not land after {_ATTEMPTS} attempts: {pending}")


def ensure(
    store: Any,
    keys: list[str],
    found: dict[str, Any],
    timeout: float | None,
    mine: dict[str, int] | None = None,
) -> dict[str, int] | None:
    """Create the version keys of *keys* missing from *found*; return every token.

    Missing keys get a fresh token (or the one *mine* gives) with ``add``
    (atomic where the store's ``add`` is; one pipelined round trip on Redis),
    so concurrent first callers agree on one token; a caller that passed
    *mine* created the key iff its token is returned. On a store that drops
    writes, retried with backoff. Returns ``None`` when a token still cannot
    be read back: the caller must then not store its value.
    """
    mine = mine or {}
    tokens = {k: found[k] for k in keys if k in found}
    acc = _redis(store)
    if acc is not None:
        missing = {k: mine.get(k) or fresh_token() for k in keys if k not in tokens}
        tokens.update(acc.add_tokens(missing, timeout))
        return tokens if len(tokens) == len(keys) else None
    for attempt in range(_ATTEMPTS):
        if attempt:
            time.sleep(_backoff(attempt))
        retry = []
        for k in keys:
            if k in tokens:
                continue
            t = mine.get(k) or fresh_token()
            if store.add(k, t, timeout=timeout):
                tokens[k] = t
            else:
                retry.append(k)
        if retry:
            # add() refused: another caller created it, or (database cache)
            # the write was dropped. Take what is there; retry what is not.
            got = store.get_many(retry)
            tokens.update((k, got[k]) for k in retry if k in got)
        if len(tokens) == len(keys):
            return tokens
    return None


async def aensure(
    store: Any,
    keys: list[str],
    found: dict[str, Any],
    timeout: float | None,
    mine: dict[str, int] | None = None,
) -> dict[str, int] | None:
    """Async twin of :func:`ensure`."""
    mine = mine or {}
    tokens = {k: found[k] for k in keys if k in found}
    acc = _redis(store)
    if acc is not None:
        from asgiref.sync import sync_to_async

        missing = {k: mine.get(k) or fresh_token() for k in keys if k not in tokens}
        tokens.update(await sync_to_async(acc.add_tokens, thread_sensitive=True)(missing, timeout))
        return tokens if len(tokens) == len(keys) else None
    for attempt in range(_ATTEMPTS):
        if attempt:
            await asyncio.sleep(_backoff(attempt))
        retry = []
        for k in keys:
            if k in tokens:
                continue
            t = mine.get(k) or fresh_token()
            if await store.aadd(k, t, timeout=timeout):
                tokens[k] = t
            else:
                retry.append(k)
        if retry:
            got = await store.aget_many(retry)
            tokens.update((k, got[k]) for k in retry if k in got)
        if len(tokens) == len(keys):
            return tokens
    return None
