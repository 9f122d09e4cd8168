"""A deliberately naive wrapper, used only to check the contract harness.

``FKD_CONTRACT_WRAPPER=tests.contract.passthrough_backend.PassthroughCache``
runs the contract suite against this instead of FragmentedKeysCacheBackend:
if a case fails here too, the harness (not the backend) is at fault.
"""

from django.core.cache import caches
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache


class PassthroughCache(BaseCache):
    def __init__(self, location, params):
        super().__init__(params)
        self._cache_name = params["CACHE_NAME"]

    @property
    def _store(self):
        return caches[self._cache_name]

    def _key(self, key, version):
        key = self.make_and_validate_key(key, version=version)
        return key

    def _timeout(self, timeout):
        return self.default_timeout if timeout is DEFAULT_TIMEOUT else timeout

    def add(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        return self._store.add(self._key(key, version), value, self._timeout(timeout))

    def get(self, key, default=None, version=None):
        return self._store.get(self._key(key, version), default)

    def set(self, key, value, timeout=DEFAULT_TIMEOUT, version=None):
        self._store.set(self._key(key, version), value, self._timeout(timeout))

    def touch(self, key, timeout=DEFAULT_TIMEOUT, version=None):
        return self._store.touch(self._key(key, version), self._timeout(timeout))

    def delete(self, key, version=None):
        return bool(self._store.delete(self._key(key, version)))

    def has_key(self, key, version=None):
        return self._store.has_key(self._key(key, version))

    def incr(self, key, delta=1, version=None):
        return self._store.incr(self._key(key, version), delta)

    def clear(self):
        self._store.clear()
