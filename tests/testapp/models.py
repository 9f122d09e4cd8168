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
