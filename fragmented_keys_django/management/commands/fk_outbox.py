"""``fk_outbox``: list the bumps kept in the outbox, or apply them (``--drain``)."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from ... import outbox
from ...invalidation import drain_outbox


class Command(BaseCommand):
    help = (
        "List the pending bumps kept in the outbox table (bumps whose store write failed, or "
        "whose process died before writing them), or apply and delete them with --drain. "
        "Exit 1 if a bump could not be applied."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--drain", action="store_true", help="Apply the pending bumps and delete them."
        )
        parser.add_argument(
            "--older-than",
            type=float,
            default=0.0,
            metavar="SECONDS",
            help="Only rows at least this old (default 0). Rows of transactions still writing "
            f"their bump are skipped anyway for {outbox.MARKER_GRACE:g} s.",
        )
        parser.add_argument(
            "--loop",
            type=float,
            default=None,
            metavar="SECONDS",
            help="With --drain: drain again every SECONDS until interrupted.",
        )
        parser.add_argument(
            "--database", action="append", default=None, help="Database alias (repeatable)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["older_than"] < 0:
            raise CommandError(f"--older-than must be >= 0 seconds, got {options['older_than']}")
        dbs = options["database"] or outbox.databases()
        if not dbs:
            raise CommandError(
                "No database has the outbox table: run `manage.py migrate fragmented_keys_django`."
            )
        if not options["drain"]:
            self._list(dbs)
            return
        while True:
            report = drain_outbox(older_than=options["older_than"], using=dbs)
            self.stdout.write(
                f"applied {report.applied} pending bump(s), {report.failed} failed, "
                f"{report.dropped} dropped (alias gone)"
            )
            for error in report.errors:
                self.stderr.write(f"  {error}")
            if options["loop"] is None:
                break
            time.sleep(options["loop"])
        if report.failed:
            raise CommandError(f"{report.failed} pending bump(s) could not be applied")

    def _list(self, dbs: list[str]) -> None:
        total = 0
        for db in dbs:
            last = 0
            while rows := outbox.pending(db, after=last):
                last = rows[-1].pk
                for row in rows:
                    total += 1
                    self.stdout.write(f"[{db}] {row.created:%Y-%m-%d %H:%M:%S} {row}")
        self.stdout.write(f"{total} pending bump(s)")
