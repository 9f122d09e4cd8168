"""``Item`` is registered with ``ModelTagManager`` (see ``apps.py``); ``PlainItem`` is not.

They are the same table layout, so saving one against the other measures what
the registration adds to a save.
"""

from django.db import models


class _Row(models.Model):
    name = models.CharField(max_length=100)
    counter = models.IntegerField(default=0)

    class Meta:
        abstract = True


class Item(_Row):
    pass


class PlainItem(_Row):
    pass
