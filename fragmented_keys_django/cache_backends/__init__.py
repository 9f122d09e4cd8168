"""Import path of the seed package, kept so its ``CACHES`` settings work verbatim."""

from ..backend import FragmentedKeysCacheBackend

__all__ = ["FragmentedKeysCacheBackend"]
