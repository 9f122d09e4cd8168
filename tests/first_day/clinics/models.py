from django.db import models


class Clinic(models.Model):
    name = models.CharField(max_length=100)
    tenant = models.CharField(max_length=100, blank=True)

    def __str__(self) -> str:
        return self.name
