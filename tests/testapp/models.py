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


# -- Safety net (tests/test_safety_net.py) ------------------------------------------


class NetVisit(models.Model):
    """A visit whose hospital is set to NULL when the hospital is deleted: a signal-less UPDATE."""

    hospital = models.ForeignKey(
        Hospital, null=True, on_delete=models.SET_NULL, related_name="net_visits"
    )
    note = models.CharField(max_length=100, default="")
