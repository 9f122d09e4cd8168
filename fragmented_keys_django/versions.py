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
read back differs from the one read before the bump.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any

from .exceptions import BumpFailed

__all__ = ["bump", "ensure", "fresh_token"]

_BUMP_ATTEMPTS = 5


def fresh_token() -> int:
    """Return a new version token: random, positive, below 2**62."""
    return secrets.randbits(62) | 1


def bump(store: Any, keys: Iterable[str], timeout: float | None, verify: bool) -> dict[str, int]:
    """Write a fresh token to every key in *keys*; return the tokens written.

    One round trip (``set_many``) on stores whose writes land or raise. With
    *verify*, the tokens are read before and after (three round trips) and a
    key whose token did not change is written again, up to five times; then
    ``BumpFailed`` is raised. Store errors propagate.
    """
    keys = list(dict.fromkeys(keys))
    if not keys:
        return {}
    from .redis_access import redis_access

    acc = redis_access(store)
    if acc is not None:  # SET ... PX pipelined: one round trip, lands or raises
        tokens = {k: fresh_token() for k in keys}
        acc.set_tokens(tokens, timeout)
        return tokens
    before = store.get_many(keys) if verify else {}
    pending = keys
    written: dict[str, int] = {}
    for _ in range(_BUMP_ATTEMPTS):
        tokens = {k: fresh_token() for k in pending}
        store.set_many(tokens, timeout=timeout)
        written.update(tokens)
        if not verify:
            return written
        after = store.get_many(pending)
        # A token differing from the one seen before the bump was written after
        # that read, so after the commit that asked for the bump: good enough.
        pending = [k for k in pending if k in after and after[k] == before.get(k)]
        if not pending:
            return written
    raise BumpFailed(f"tag version bump did not land after {_BUMP_ATTEMPTS} attempts: {pending}")


def ensure(
    store: Any, keys: list[str], found: dict[str, Any], timeout: float | None
) -> dict[str, int] | None:
    """Create the version keys of *keys* missing from *found*; return every token.

    Missing keys get a fresh token with ``add`` (atomic where the store's
    ``add`` is), so concurrent first readers agree on one token. Returns
    ``None`` when a token still cannot be read back (evicted again, or a store
    that drops writes): the caller must then not store its value.
    """
    tokens = {k: found[k] for k in keys if k in found}
    from .redis_access import redis_access

    acc = redis_access(store)
    if acc is not None:
        missing = {k: fresh_token() for k in keys if k not in tokens}
        tokens.update(acc.add_tokens(missing, timeout))
        return tokens if len(tokens) == len(keys) else None
    retry = []
    for k in keys:
        if k in tokens:
            continue
        t = fresh_token()
        if store.add(k, t, timeout=timeout):
            tokens[k] = t
        else:
            retry.append(k)
    if retry:
        got = store.get_many(retry)
        for k in retry:
            if k not in got:
                return None
            tokens[k] = got[k]
    return tokens


async def abump(
    store: Any, keys: Iterable[str], timeout: float | None, verify: bool
) -> dict[str, int]:
    """Async twin of :func:`bump`, on the store's ``a*`` methods."""
    keys = list(dict.fromkeys(keys))
    if not keys:
        return {}
    before = await store.aget_many(keys) if verify else {}
    pending = keys
    written: dict[str, int] = {}
    for _ in range(_BUMP_ATTEMPTS):
        tokens = {k: fresh_token() for k in pending}
        await store.aset_many(tokens, timeout=timeout)
        written.update(tokens)
        if not verify:
            return written
        after = await store.aget_many(pending)
        pending = [k for k in pending if k in after and after[k] == before.get(k)]
        if not pending:
            return written
    raise BumpFailed(f"tag version bump did not land after {_BUMP_ATTEMPTS} attempts: {pending}")


async def aensure(
    store: Any, keys: list[str], found: dict[str, Any], timeout: float | None
) -> dict[str, int] | None:
    """Async twin of :func:`ensure`."""
    tokens = {k: found[k] for k in keys if k in found}
    retry = []
    for k in keys:
        if k in tokens:
            continue
        t = fresh_token()
        if await store.aadd(k, t, timeout=timeout):
            tokens[k] = t
        else:
            retry.append(k)
    if retry:
        got = await store.aget_many(retry)
        for k in retry:
            if k not in got:
                return None
            tokens[k] = got[k]
    return tokens
