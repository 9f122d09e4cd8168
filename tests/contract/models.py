# Vendored from Django 5.2.19, tests/cache/models.py, unmodified apart from
# this header. Copyright (c) Django Software Foundation and individual
# contributors; BSD-3-Clause, full text in DJANGO_LICENSE beside this file.
# Its app is tests.contract (label "cache", as in Django's suite; apps.py).
from django.db import models
from django.utils import timezone


def expensive_calculation():
    expensive_calculation.num_runs += 1
    return timezone.now()


class Poll(models.Model):
    question = models.CharField(max_length=200)
    answer = models.CharField(max_length=200)
    pub_date = models.DateTimeField("date published", default=expensive_calculation)
