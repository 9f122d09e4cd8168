"""Probabilistic early recomputation ("XFetch") and loader errors on the miss path."""

from __future__ import annotations

import asyncio

import pytest
from django.db import DatabaseError

from fragmented_keys_django import TenantContext, tagged_cache
from fragmented_keys_django.keys import lock_key
from fragmented_keys_django.tags import normalize_tags

#: Every ``frag`` test runs through the sync API and through the async one (tests/conftest.py).
BOTH_APIS = True

TAGS = [("User", "1")]
# XFetch recomputes a hit when compute_seconds * beta * -ln(U) >= the time left (60 s).
# A loader here computes in ~1 µs: with beta 1e9 that missed with U > 0.94 (a 6% flake);
# with 1e15 it needs U > 1 - 6e-7.
BETA = 1e15


class Loader:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        return f"v{self.calls}"


def test_live_entries_are_recomputed_early_when_beta_is_high(frag):
    loader = Loader()
    with TenantContext.use_tenant("acme"):
        assert (
            frag.get_or_set_with_tags("hot", loader, TAGS, timeout=60, early_recompute=BETA) == "v1"
        )
        # With a huge beta the expiry always looks imminent: each hit recomputes.
        assert (
            frag.get_or_set_with_tags("hot", loader, TAGS, timeout=60, early_recompute=BETA) == "v2"
        )
        assert loader.calls == 2
        # The recomputed value is stored and served to plain readers.
        assert frag.get_with_tags("hot", TAGS) == "v2"
        # Without beta, a hit is a hit.
        assert frag.get_or_set_with_tags("hot", loader, TAGS, timeout=60) == "v2"
        assert loader.calls == 2


def test_early_recomputation_yields_to_the_lock_holder(frag):
    loader = Loader()
    with TenantContext.use_tenant("acme"):
        frag.get_or_set_with_tags("hot", loader, TAGS, timeout=60, early_recompute=BETA)
        _, ek = frag._keys("hot", normalize_tags(TAGS), "", None, False)
        store = frag.store_for()
        assert store.add(lock_key(ek.entry), 1, timeout=30)
        # Someone else holds the lock: keep serving the live value, do not recompute.
        assert (
            frag.get_or_set_with_tags("hot", loader, TAGS, timeout=60, early_recompute=BETA) == "v1"
        )
        assert loader.calls == 1


def test_entries_without_expiry_are_never_recomputed_early(frag):
    loader = Loader()
    with TenantContext.use_tenant("acme"):
        frag.get_or_set_with_tags("forever", loader, TAGS, timeout=None, early_recompute=BETA)
        assert (
            frag.get_or_set_with_tags("forever", loader, TAGS, timeout=None, early_recompute=BETA)
            == "v1"
        )


def test_async_early_recompute(frag):
    calls = [0]

    async def loader():
        calls[0] += 1
        return calls[0]

    async def main():
        with TenantContext.use_tenant("acme"):
            a = await frag.aget_or_set_with_tags(
                "h", loader, TAGS, timeout=60, early_recompute=BETA
            )
            b = await frag.aget_or_set_with_tags(
                "h", loader, TAGS, timeout=60, early_recompute=BETA
            )
            c = await frag.aget_or_set_with_tags("h", loader, TAGS, timeout=60)
            return a, b, c

    assert asyncio.run(main()) == (1, 2, 2)


def test_decorator_passes_early_recompute(frag):
    calls = []

    @tagged_cache(timeout=60, tags=["User:{uid}"], early_recompute=BETA)
    def hot(uid):
        calls.append(uid)
        return len(calls)

    with TenantContext.use_tenant("acme"):
        assert (hot(1), hot(1)) == (1, 2)


@pytest.mark.parametrize("error", [DatabaseError("db down in the loader"), OSError("disk")])
def test_a_loader_error_propagates_and_releases_the_lock(frag, error):
    def failing():
        raise error

    with TenantContext.use_tenant("acme"):
        with pytest.raises(type(error), match=str(error)):
            frag.get_or_set_with_tags("k", failing, TAGS, timeout=60)
        # The lock was released: the next caller computes at once.
        assert frag.get_or_set_with_tags("k", lambda: "ok", TAGS, timeout=60) == "ok"
