"""Registers ``Item`` with the installed ``fragmented_keys_django`` (ours or 0.2.1: same API)."""

from django.apps import AppConfig


class BenchAppConfig(AppConfig):
    name = "benchapp"
    default_auto_field = "django.db.models.AutoField"

    def ready(self) -> None:
        from fragmented_keys_django import ModelTagManager

        from .models import Item

        ModelTagManager.register_model(Item, tag_name="Item")
