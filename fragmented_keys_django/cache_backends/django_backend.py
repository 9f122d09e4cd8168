"""``fragmented_keys_django.cache_backends.django_backend.FragmentedKeysCacheBackend``.

The seed README's ``CACHES`` snippet names this path; it is the same class as
``fragmented_keys_django.FragmentedKeysCacheBackend``.
"""

from ..backend import FragmentedKeysCacheBackend

__all__ = ["FragmentedKeysCacheBackend"]
