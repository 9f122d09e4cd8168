"""Which cache tags a change of a row bumps (given to ``ModelTagManager`` in ``apps.py``).

A tag is ``(name, instance)``. The tenant is implicit: a bump made while
tenant *acme* is current only reaches acme's entries.

* ``("Hospital", n)``: everything showing hospital *n*; ``("Hospital", "")``:
  every hospital (the list at ``/hospitals/``).
* ``("Patient", n)``: everything showing patient *n* (its page);
  ``("Patient", "")``: every patient.
* ``("HospitalPatients", n)``: the patient list of hospital *n*.

Instances are the tenant-local ``number`` (the id in URLs), not the primary key.
Bumps wait for the commit and are dropped on rollback. ``QuerySet.update()``
and ``bulk_create()`` send no signals: bump with ``ModelTagManager.invalidate_bulk``.
"""

from __future__ import annotations

from typing import Any

from .models import Hospital


def hospital_tags(sender: Any, instance: Any, update_fields: Any = None) -> list[tuple[str, Any]]:
    return [("Hospital", instance.number), ("Hospital", "")]


def patient_tags(sender: Any, instance: Any, update_fields: Any = None) -> list[tuple[str, Any]]:
    tags: list[tuple[str, Any]] = [("Patient", instance.number), ("Patient", "")]
    # The list of its hospital, and of the one it left if it moved.
    hospital_ids = {instance.hospital_id, getattr(instance, "_loaded_hospital_id", None)} - {None}
    numbers = Hospital.objects.filter(pk__in=hospital_ids).values_list("number", flat=True)
    tags += [("HospitalPatients", n) for n in numbers]
    return tags
