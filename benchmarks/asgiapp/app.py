"""The benchmark's views and ASGI application: one cache read per request, by each system.

* ``/none/``: no cache at all (the floor: Django's ASGI handler and uvicorn);
* ``/django-redis/``: django-redis ``aget`` of a 1 KB value;
* ``/tagged/``: ``aget_with_tags`` of the same value with one tag;
* ``/decorated/``: a ``@tagged_cache`` ``async def`` hit.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "asgiapp.settings")

from django.core.asgi import get_asgi_application

application = get_asgi_application()

from django.core.cache import caches  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402

from fragmented_keys_django import tagged_cache  # noqa: E402

VALUE = b"v" * 1024
TAGS = [("User", "1")]


async def none(request):
    return HttpResponse(VALUE)


async def django_redis(request):
    return HttpResponse(await caches["redis"].aget("asgi:plain"))


async def tagged(request):
    return HttpResponse(await caches["fragmented"].aget_with_tags("asgi:tagged", TAGS))


@tagged_cache(timeout=3600, tags=["User:{uid}"], cache_name="fragmented")
async def profile(uid):
    return VALUE


async def decorated(request):
    return HttpResponse(await profile(1))


def prepare() -> None:
    """Store the values every view reads (run once, before the load)."""
    caches["redis"].set("asgi:plain", VALUE, timeout=3600)
    caches["fragmented"].set_with_tags("asgi:tagged", VALUE, TAGS)


urlpatterns = [
    path("none/", none),
    path("django-redis/", django_redis),
    path("tagged/", tagged),
    path("decorated/", decorated),
]
