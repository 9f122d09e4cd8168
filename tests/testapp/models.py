from django.db import models

from fragmented_keys_django import CacheAwareManager


class Hospital(models.Model):
    name = models.CharField(max_length=100)


class Patient(models.Model):
    name = models.CharField(max_length=100)
    hospital = models.ForeignKey(
        Hospital, null=True, on_delete=models.CASCADE, related_name="patients"
    )
    objects = CacheAwareManager()


class Doctor(models.Model):
    name = models.CharField(max_length=100)
    patients = models.ManyToManyField(Patient, related_name="doctors")


class Note(models.Model):
    """A row of a shared-database tenant: its tenant id is a column."""

    tenant_id = models.CharField(max_length=100)
    text = models.CharField(max_length=100)
    objects = CacheAwareManager()


# -- write paths of "Exact everywhere" (tests/test_write_paths.py) ------------------------------


class Item(models.Model):
    name = models.CharField(max_length=100, unique=True)
    qty = models.IntegerField(default=0)
    objects = CacheAwareManager()


class ItemProxy(Item):
    class Meta:
        proxy = True


class Place(models.Model):
    name = models.CharField(max_length=100)
    objects = CacheAwareManager()


class Restaurant(Place):
    serves = models.CharField(max_length=100, default="")


class Org(models.Model):
    name = models.CharField(max_length=100)


def fallback_org():
    """``on_delete=SET(fallback_org)``: the org named "fallback", if any."""
    return Org.objects.filter(name="fallback").first()


class Review(models.Model):
    """A shared table whose tenant is the referenced org (``tenant_field="org"``)."""

    org = models.ForeignKey(Org, null=True, on_delete=models.SET_NULL, related_name="reviews")
    text = models.CharField(max_length=100)
    objects = CacheAwareManager()


class Badge(models.Model):
    org = models.ForeignKey(
        Org, null=True, default=None, on_delete=models.SET_DEFAULT, related_name="badges"
    )


class Sticker(models.Model):
    org = models.ForeignKey(
        Org, null=True, on_delete=models.SET(fallback_org), related_name="stickers"
    )


# -- Safety net (tests/test_safety_net.py) ------------------------------------------


class NetVisit(models.Model):
    """A visit whose hospital is set to NULL when the hospital is deleted: a signal-less UPDATE."""

    hospital = models.ForeignKey(
        Hospital, null=True, on_delete=models.SET_NULL, related_name="net_visits"
    )
    note = models.CharField(max_length=100, default="")
