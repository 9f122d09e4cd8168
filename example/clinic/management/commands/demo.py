"""``manage.py demo``: a scripted walkthrough of tag-versioned, per-tenant caching.

Resets the database (and the cache stores), seeds three tenants whose ids
overlap on purpose, then drives the project through Django's whole request
stack with ``django.test.Client`` (middleware, URL routing, views) and checks
every expectation. Exit status 0 when all hold, 1 otherwise.

acme and globex share the store of ``CACHES["default"]``; initech's
``Tenant.config["cache_config"]`` gives it a store of its own (another
database-cache table, or another Redis database), which the walkthrough then
moves, live, by saving initech's ``Tenant`` row.

Per-tenant counts come from the library's signals (``cache_hit``,
``cache_missed``, ``tags_bumped``, ``tenant_flushed``); the per-request
HIT/MISS comes from the ``X-Cache`` header set by ``CacheStatusMiddleware``.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from django.conf import settings
from django.core.cache import caches
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.core.management.commands.createcachetable import Command as CreateCacheTable
from django.db import connections, transaction
from django.test import Client
from django.utils.module_loading import import_string

from fragmented_keys_django import TenantContext
from fragmented_keys_django.signals import cache_hit, cache_missed, tags_bumped, tenant_flushed
from fragmented_keys_django.tenancy.stores import CONFIG_VERSION_KEY, resolve_tenant_config

from clinic.models import Hospital, Patient, Tenant

# Same ids in both tenants, different people: isolation shows in the data.
SEED = {
    "acme": {
        "hospitals": {1: "Acme General", 2: "Acme Children's"},
        "patients": [
            (1, 1, "Alice Archer", "asthma"),
            (2, 1, "Bob Baker", ""),
            (3, 2, "Carol Chen", ""),
            (4, 2, "Dan Diaz", "follow-up in May"),
        ],
    },
    "globex": {
        "hospitals": {1: "Globex Memorial", 2: "Globex Riverside"},
        "patients": [
            (1, 1, "Gina Gomez", "diabetes type 2"),
            (2, 1, "Hank Hill", ""),
            (3, 2, "Ivy Ito", ""),
            (4, 2, "Jack Jones", ""),
        ],
    },
    "initech": {
        "hospitals": {1: "Initech Central", 2: "Initech North"},
        "patients": [
            (1, 1, "Peter Gibbons", "stress"),
            (2, 1, "Milton Waddams", "misplaced stapler"),
            (3, 2, "Samir Nagheenanajar", ""),
            (4, 2, "Michael Bolton", ""),
        ],
    },
}
OWN_STORE = "initech"  # the tenant with a cache store of its own


def own_store(version: int) -> dict[str, Any]:
    """initech's ``cache_config``: its own store (version 1), then the one it moves to (2)."""
    if settings.REDIS_URL:
        # Another database of the same Redis; KEY_PREFIX and OPTIONS come from "default".
        url = urlsplit(settings.REDIS_URL)
        db = int(url.path.strip("/") or 0) + version
        return {"LOCATION": urlunsplit(url._replace(path=f"/{db}"))}
    table = "initech_cache" if version == 1 else f"initech_cache_v{version}"
    return {"BACKEND": "django.core.cache.backends.db.DatabaseCache", "LOCATION": table}


def build_store(cache_config: dict[str, Any]) -> Any:
    """A store built from *cache_config* as the library builds it (merged over "default")."""
    _, merged = resolve_tenant_config(OWN_STORE, cache_config, settings.CACHES["default"])
    params = {k: v for k, v in merged.items() if k not in ("BACKEND", "LOCATION")}
    return import_string(merged["BACKEND"])(merged["LOCATION"], params)


def where(store: Any) -> str:
    """``table <name>`` for a database cache, ``Redis DB <n>`` for django-redis."""
    table = getattr(store, "_table", None)
    if table is not None:
        return f"table {table}"
    return f"Redis DB {urlsplit(str(store._server)).path.strip('/') or 0}"


def entries(store: Any) -> int:
    """Rows of a database-cache table, or keys under our KEY_PREFIX in a Redis database."""
    table = getattr(store, "_table", None)
    if table is None:
        return len(store.keys("*"))
    connection = connections["default"]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {connection.ops.quote_name(table)}")
        return cursor.fetchone()[0]


HOSPITALS = "/hospitals/"
H1_PATIENTS = "/hospitals/1/patients/"
PATIENT_1 = "/patients/1/"
CARD_1 = "/patients/1/card/"  # @tagged_cache_page: the whole response
HOSPITAL_1 = "/hospitals/1/"  # {% tagged_cache %}: the patient list fragment
READS = [HOSPITALS, H1_PATIENTS, PATIENT_1]


class _Rollback(Exception):
    pass


@dataclass
class TenantStats:
    requests: int = 0
    hits: int = 0
    misses: int = 0
    bumps: int = 0
    flushes: int = 0
    ms: float = 0.0
    header_hits: int = 0
    header_misses: int = 0


class Command(BaseCommand):
    help = "Reset the example database, seed three tenants and run the cache walkthrough."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stats: dict[Any, TenantStats] = defaultdict(TenantStats)
        self.failures: list[str] = []
        self.checked = 0
        self.bumped: list[tuple[Any, tuple]] = []
        self.frag = caches["fragmented"]
        self.clients = {t: Client(HTTP_HOST=c["host"]) for t, c in settings.TENANTS.items()}

        self.say(
            "fragmented_keys_django demo: tenants acme + globex + initech, one shared SQLite database"
        )
        store = self.reset()
        self.say(f"shared store: {store}")
        self.seed()
        self.say(
            "seeded: each tenant has hospitals 1-2 and patients 1-4 (same ids, different people);\n"
            f"        initech's Tenant.config['cache_config'] names its own store: "
            f"{where(build_store(own_store(1)))}"
        )
        receivers = self.connect_signals()
        try:
            self.walkthrough()
        finally:
            for signal, receiver in receivers:
                signal.disconnect(receiver)
        self.report()
        if self.failures:
            self.say(f"FAILED: {len(self.failures)} of {self.checked} expectations")
            for failure in self.failures:
                self.say(f"  - {failure}")
            raise CommandError("the demo's expectations did not hold (see above)")
        self.say(f"OK: all {self.checked} expectations held")

    # -- setup ---------------------------------------------------------------

    def reset(self) -> str:
        """Start from an empty database and empty stores; describe the shared store."""
        name = Path(settings.DATABASES["default"]["NAME"])
        connections.close_all()
        for path in (name, name.with_name(name.name + "-journal")):
            path.unlink(missing_ok=True)
        call_command("migrate", verbosity=0, interactive=False)
        conf = settings.CACHES["default"]
        if conf["BACKEND"] == "django_redis.cache.RedisCache":
            try:
                caches["default"].delete_pattern("*")  # only keys under our KEY_PREFIX
                for version in (1, 2):  # initech's own databases (same KEY_PREFIX)
                    build_store(own_store(version)).delete_pattern("*")
            except Exception as exc:
                raise CommandError(f"cannot reach Redis at {conf['LOCATION']}: {exc}") from exc
            return (
                f"Redis at {conf['LOCATION']} (django_redis; keys '{conf['KEY_PREFIX']}:*' cleared)"
            )
        call_command("createcachetable", verbosity=0)  # the tables of CACHES aliases only
        self.create_table(own_store(1))
        try:
            shown = name.relative_to(Path.cwd())
        except ValueError:
            shown = name
        return f"database cache (DatabaseCache, table {conf['LOCATION']!r}) on SQLite {shown}"

    @staticmethod
    def create_table(cache_config: dict[str, Any]) -> None:
        """Create a tenant's database-cache table (``createcachetable`` skips non-CACHES ones)."""
        if not settings.REDIS_URL:
            command = CreateCacheTable()
            command.verbosity = 0  # set by handle(), which we skip
            command.create_table("default", cache_config["LOCATION"], dry_run=False)

    def seed(self) -> None:
        for tenant, conf in settings.TENANTS.items():
            config = {"cache_config": own_store(1)} if tenant == OWN_STORE else {}
            Tenant.objects.create(tenant_id=tenant, name=conf["name"], config=config)
        for tenant, data in SEED.items():
            with TenantContext.use_tenant(tenant), transaction.atomic():
                hospitals = {
                    n: Hospital.objects.create(number=n, name=name)
                    for n, name in data["hospitals"].items()
                }
                for n, hospital, name, notes in data["patients"]:
                    Patient.objects.create(
                        number=n, hospital=hospitals[hospital], name=name, notes=notes
                    )

    def connect_signals(self) -> list[tuple[Any, Any]]:
        def on_hit(sender: Any, alias: str, tenant: Any, **kw: Any) -> None:
            self.stats[tenant].hits += 1

        def on_miss(sender: Any, alias: str, tenant: Any, **kw: Any) -> None:
            self.stats[tenant].misses += 1

        def on_bump(sender: Any, alias: str, tenant: Any, tags: tuple, **kw: Any) -> None:
            self.stats[tenant].bumps += 1
            self.bumped.append((tenant, tags))

        def on_flush(sender: Any, alias: str, tenant: Any, **kw: Any) -> None:
            self.stats[tenant].flushes += 1

        pairs = [
            (cache_hit, on_hit),
            (cache_missed, on_miss),
            (tags_bumped, on_bump),
            (tenant_flushed, on_flush),
        ]
        for signal, receiver in pairs:
            signal.connect(receiver, weak=False)
        self.prom_before = self.prometheus_counts()
        return pairs

    def prometheus_counts(self) -> dict[Any, tuple[float, ...]]:
        """{tenant: (hits, misses, bumps, flushes)} from prometheus_client's registry, if on."""
        from fragmented_keys_django import prometheus

        if prometheus.installed() is None:
            return {}
        from prometheus_client import REGISTRY

        def get(name: str, tenant: Any, **more: str) -> float:
            labels = {"alias": "fragmented", "tenant": tenant or "", **more}
            return REGISTRY.get_sample_value(f"fragmented_keys_{name}", labels) or 0.0

        return {
            tenant: (
                get("cache_hits_total", tenant),
                get("cache_misses_total", tenant),
                get("bumps_total", tenant, kind="tags"),
                get("bumps_total", tenant, kind="flush"),
            )
            for tenant in [None, *settings.TENANTS]
        }

    # -- helpers -------------------------------------------------------------

    def say(self, line: str = "") -> None:
        self.stdout.write(line)

    def expect(self, ok: bool, what: str) -> bool:
        self.checked += 1
        if not ok:
            self.failures.append(what)
        return ok

    def request(self, tenant: str, method: str, path: str, data: dict | None = None) -> Any:
        client = self.clients[tenant]
        start = perf_counter()
        response = client.get(path) if method == "GET" else client.post(path, data or {})
        stats = self.stats[tenant]
        stats.ms += (perf_counter() - start) * 1000
        stats.requests += 1
        outcome = response.headers.get("X-Cache", "")
        stats.header_hits += outcome.split(", ").count("HIT")
        stats.header_misses += outcome.split(", ").count("MISS")
        self.expect(
            response.status_code == 200,
            f"{tenant} {method} {path}: status {response.status_code}",
        )
        return response

    def reads(
        self, tenant: str, expected: dict[str, str], note: str = "", quiet: bool = False
    ) -> dict[str, Any]:
        """GET each path in *expected*, check HIT/MISS, print one line; return the responses."""
        parts, responses = [], {}
        for path, want in expected.items():
            response = self.request(tenant, "GET", path)
            got = response.headers.get("X-Cache", "-")
            self.expect(got == want, f"{tenant} GET {path}: expected {want}, got {got}")
            parts.append(f"{path} {got}")
            responses[path] = response
        if not quiet:
            self.say(f"   {tenant:<7} " + "  ".join(parts) + (f"  {note}" if note else ""))
        return responses

    def bumps_since(self, mark: int) -> str:
        tags = [t for _, tags in self.bumped[mark:] for t in tags]
        return ", ".join(f"{n}:{i}" if i else n for n, i in tags) or "(none)"

    def version(self, tenant: str, tag: str, instance: Any = "") -> int:
        with TenantContext.use_tenant(tenant):
            return self.frag.get_tag_version(tag, instance)

    def show_store(self, tenant: str) -> Any:
        """Print the store the fragmented alias uses for *tenant*; return it."""
        store = self.frag.store_for(tenant)
        alias = self.frag.tenant_stores.store_alias(tenant)
        self.say(f"   {tenant:<7} store {alias!r:<10} {type(store).__name__}, {where(store)}")
        return store

    # -- the walkthrough -----------------------------------------------------

    def walkthrough(self) -> None:
        all_miss = dict.fromkeys(READS, "MISS")
        all_hit = dict.fromkeys(READS, "HIT")

        self.say("1. cold reads: every entry is computed")
        for tenant, data in SEED.items():
            got = self.reads(tenant, all_miss)
            names = [h["name"] for h in json.loads(got[HOSPITALS].content)["hospitals"]]
            self.expect(
                names == list(data["hospitals"].values()),
                f"{tenant} /hospitals/ lists {names}",
            )

        self.say("2. warm reads: served from the cache")
        for tenant in SEED:
            self.reads(tenant, all_hit)

        new_name = "Alice Archer-Smith"
        self.say(f"3. acme edits patient 1 (POST {PATIENT_1}, saved in transaction.atomic())")
        mark = len(self.bumped)
        globex_before = self.version("globex", "Patient", 1)
        acme_before = self.version("acme", "Patient", 1)
        self.request("acme", "POST", PATIENT_1, {"name": new_name, "notes": "penicillin allergy"})
        self.say(f"   bumped after commit, in acme only: {self.bumps_since(mark)}")
        tenants = {t for t, _ in self.bumped[mark:]}
        self.expect(tenants == {"acme"}, f"the edit bumped tags in tenants {tenants or '{}'}")
        self.expect(self.version("acme", "Patient", 1) != acme_before, "acme Patient:1 not bumped")
        self.expect(
            self.version("globex", "Patient", 1) == globex_before,
            "acme's edit changed globex's Patient:1 version",
        )
        got = self.reads(
            "acme",
            {PATIENT_1: "MISS", H1_PATIENTS: "MISS", HOSPITALS: "HIT"},
            "(page + list recomputed; hospital list untouched)",
        )
        self.expect(new_name in got[PATIENT_1].content.decode(), "acme page lacks the edit")
        names = [p["name"] for p in json.loads(got[H1_PATIENTS].content)["patients"]]
        self.expect(new_name in names, f"acme hospital 1 list shows {names}")
        self.reads("globex", {PATIENT_1: "HIT", H1_PATIENTS: "HIT"}, "(globex stays warm)")

        self.say(f"4. isolation: same URL {PATIENT_1}, same key and tag, one entry per tenant")
        got = {t: self.reads(t, {PATIENT_1: "HIT"}, quiet=True)[PATIENT_1] for t in SEED}
        pages = {t: r.content.decode() for t, r in got.items()}
        self.expect(new_name in pages["acme"], f"acme {PATIENT_1} lacks {new_name!r}")
        self.expect(
            "Gina Gomez" in pages["globex"] and "Alice" not in pages["globex"],
            f"globex {PATIENT_1} is not Gina Gomez's page",
        )
        self.expect("Peter Gibbons" in pages["initech"], f"initech {PATIENT_1} is not Peter's page")
        self.say(f'   acme -> "{new_name}", globex -> "Gina Gomez", initech -> "Peter Gibbons"')

        self.say("5. acme renames hospital 2 (ORM save inside use_tenant('acme'))")
        mark = len(self.bumped)
        with TenantContext.use_tenant("acme"), transaction.atomic():
            hospital = Hospital.objects.current().get(number=2)
            hospital.name = "Acme Children's Hospital"
            hospital.save()
        self.say(f"   bumped after commit: {self.bumps_since(mark)}")
        got = self.reads("acme", {HOSPITALS: "MISS"}, "(model-wide tag 'Hospital' bumped)")
        self.expect(
            b"Acme Children's Hospital" in got[HOSPITALS].content, "acme list shows the old name"
        )
        self.reads("globex", {HOSPITALS: "HIT"})

        self.say("6. globex flushes its cache (POST /admin-ops/flush/): one namespace bump")
        self.request("globex", "POST", "/admin-ops/flush/")
        self.reads("globex", all_miss)
        self.reads("acme", all_hit)

        self.say("7. acme saves patient 1 in transaction.atomic(), then an error rolls it back")
        acme_bumps = self.stats["acme"].bumps
        before = self.version("acme", "Patient", 1)
        try:
            with TenantContext.use_tenant("acme"), transaction.atomic():
                patient = Patient.objects.current().get(number=1)
                patient.name = "ROLLED BACK"
                patient.save()
                raise _Rollback
        except _Rollback:
            self.stdout.write("   (the error rolled the transaction back, as intended)")
        unchanged = self.version("acme", "Patient", 1) == before
        self.expect(unchanged, "a rolled-back save changed acme's Patient:1 version")
        self.expect(self.stats["acme"].bumps == acme_bumps, "a rolled-back save sent tags_bumped")
        got = self.reads("acme", {PATIENT_1: "HIT"})
        self.expect(
            new_name in got[PATIENT_1].content.decode()
            and "ROLLED BACK" not in got[PATIENT_1].content.decode(),
            "acme page shows rolled-back data",
        )
        self.say(
            f"   Patient:1 version {'unchanged' if unchanged else 'CHANGED'}, "
            f'no bump sent; page still "{new_name}"'
        )

        self.own_store()
        self.live_config_change()
        self.page_and_fragment()

        # Totals from the signals must agree with what the responses said.
        expected_bumps = {"acme": 3, OWN_STORE: 1}
        expected_flushes = {"globex": 1}
        for tenant in SEED:
            s = self.stats[tenant]
            self.expect(
                (s.hits, s.misses) == (s.header_hits, s.header_misses),
                f"{tenant}: signals counted {s.hits} hits/{s.misses} misses, "
                f"responses said {s.header_hits}/{s.header_misses}",
            )
            self.expect(s.bumps == expected_bumps.get(tenant, 0), f"{tenant}: {s.bumps} bump(s)")
            self.expect(
                s.flushes == expected_flushes.get(tenant, 0), f"{tenant}: {s.flushes} flush(es)"
            )
        others = [t for t in self.stats if t not in SEED]
        self.expect(not others, f"cache activity outside the tenants: {others}")

    def own_store(self) -> None:
        self.say("8. stores: initech's Tenant row names its own; acme and globex share 'default'")
        shared = self.frag.store_for(None)
        stores = {t: self.show_store(t) for t in SEED}
        own = stores[OWN_STORE]
        self.expect(
            all(stores[t] is shared for t in SEED if t != OWN_STORE),
            "a tenant left the shared store",
        )
        self.expect(own is not shared and where(own) != where(shared), "initech has no own store")
        # A new entry of each kind of tenant: where do the rows land?
        for tenant, home, other in ((OWN_STORE, own, shared), ("acme", shared, own)):
            before = entries(home), entries(other)
            self.reads(tenant, {"/patients/2/": "MISS"}, quiet=True)
            grew, other_grew = entries(home) - before[0], entries(other) - before[1]
            self.expect(grew > 0 and other_grew == 0, f"{tenant}'s entry landed elsewhere")
            self.say(
                f"   {tenant:<7} /patients/2/ MISS  -> {where(home)} +{grew}, "
                f"{where(other)} +{other_grew}"
            )

    def live_config_change(self) -> None:
        new_config = own_store(2)
        old, shared = self.frag.store_for(OWN_STORE), self.frag.store_for(None)
        self.create_table(new_config)
        new_where = where(build_store(new_config))
        self.say(f"9. live config change: initech's Tenant row now names {new_where}; no restart")
        version = shared.get(CONFIG_VERSION_KEY)
        tenant = Tenant.objects.get(tenant_id=OWN_STORE)
        tenant.config["cache_config"] = new_config
        tenant.save()  # the TENANT_STORES model source hears post_save; nothing else is called
        bumped = shared.get(CONFIG_VERSION_KEY) != version
        self.expect(bumped, "saving the Tenant row did not bump the tenant config version")
        self.say(
            f"   saved -> store dropped here; config version {'bumped' if bumped else 'NOT bumped'}"
            f" (other processes re-read it every {self.frag.options.tenant_config_recheck:g} s)"
        )
        new = self.show_store(OWN_STORE)
        self.expect(where(new) == new_where, f"initech still uses {where(new)}")
        counts = entries(old), entries(shared)
        self.reads(OWN_STORE, dict.fromkeys(READS, "MISS"), "(a fresh store: recomputed)")
        landed = entries(new)
        self.expect(landed > 0, f"initech's entries did not land in {new_where}")
        self.expect(
            (entries(old), entries(shared)) == counts,
            "initech wrote to its old or the shared store",
        )
        self.say(
            f"   {new_where}: {landed} rows/keys now; {where(old)} and the shared store unchanged"
        )
        for tenant in SEED:
            if tenant != OWN_STORE:
                self.reads(tenant, dict.fromkeys(READS, "HIT"), "(still warm)")
        self.move_back(old)

    def move_back(self, old: Any) -> None:
        """initech edits a patient on its new store, then moves back: nothing stale comes back."""
        edited = "Peter Gibbons (moved)"
        self.say(f"   initech edits patient 1 there, then its Tenant row names {where(old)} again")
        self.request(OWN_STORE, "POST", PATIENT_1, {"name": edited, "notes": "stress"})
        tenant = Tenant.objects.get(tenant_id=OWN_STORE)
        tenant.config["cache_config"] = own_store(1)
        tenant.save()  # the edit's bump went to the new store only
        back = self.show_store(OWN_STORE)
        self.expect(where(back) == where(old), f"initech did not move back to {where(old)}")
        got = self.reads(
            OWN_STORE,
            dict.fromkeys(READS, "MISS"),
            "(its entries from before the move are never served again: recomputed)",
        )
        page = got[PATIENT_1].content.decode()
        self.expect(edited in page, "initech's page after moving back lacks the edit made away")
        self.reads(OWN_STORE, dict.fromkeys(READS, "HIT"), "(warm again)")

    def page_and_fragment(self) -> None:
        """A cached page and a cached template fragment, invalidated by an edit in acme only."""
        self.say(
            f"10. a cached page ({CARD_1}, @tagged_cache_page) and a template fragment "
            f"({HOSPITAL_1}, {{% tagged_cache %}})"
        )
        both = (CARD_1, HOSPITAL_1)
        for tenant in ("acme", "globex"):
            self.reads(tenant, dict.fromkeys(both, "MISS"))
            self.reads(tenant, dict.fromkeys(both, "HIT"), quiet=True)
        renamed = "Alice Archer-Jones"
        mark = len(self.bumped)
        self.request("acme", "POST", PATIENT_1, {"name": renamed})
        self.say(f"   acme renames patient 1; bumped: {self.bumps_since(mark)}")
        got = self.reads("acme", dict.fromkeys(both, "MISS"), "(both recomputed)")
        for path in both:
            self.expect(renamed in got[path].content.decode(), f"acme {path} lacks the new name")
        got = self.reads("globex", dict.fromkeys(both, "HIT"), "(globex stays warm)")
        for path in both:
            self.expect("Gina Gomez" in got[path].content.decode(), f"globex {path} is not Gina's")

    # -- report ----------------------------------------------------------------

    def report(self) -> None:
        self.say()
        self.say("per tenant (from cache_hit, cache_missed, tags_bumped, tenant_flushed):")
        self.say(
            f"   {'tenant':<8}{'requests':>9}{'hits':>6}{'misses':>8}"
            f"{'bumps':>7}{'flushes':>9}{'time ms':>9}"
        )
        for tenant, s in self.stats.items():
            label = "(public)" if tenant is None else tenant
            self.say(
                f"   {label:<8}{s.requests:>9}{s.hits:>6}{s.misses:>8}"
                f"{s.bumps:>7}{s.flushes:>9}{s.ms:>9.1f}"
            )
        self.prometheus_report()

    def prometheus_report(self) -> None:
        """The same counts, from the Prometheus registry (the "prometheus" extra)."""
        after = self.prometheus_counts()
        if not after:
            self.say("Prometheus: off (pip install 'fragmented-keys-django[prometheus]')")
            return
        self.say("per tenant, from the Prometheus registry (fragmented_keys_*{tenant=...}):")
        self.say(f"  {'tenant':<8}{'hits':>6}{'misses':>8}{'hit %':>7}{'bumps':>7}{'flushes':>9}")
        for tenant, s in self.stats.items():
            was = self.prom_before.get(tenant, (0.0,) * 4)
            hits, misses, bumps, flushes = (
                now - then for now, then in zip(after.get(tenant, (0.0,) * 4), was, strict=True)
            )
            ratio = f"{100 * hits / (hits + misses):.0f}" if hits + misses else "-"
            label = "(public)" if tenant is None else tenant
            self.say(
                f"  {label:<8}{hits:>6.0f}{misses:>8.0f}{ratio:>7}{bumps:>7.0f}{flushes:>9.0f}"
            )
            self.expect(
                (hits, misses, bumps, flushes) == (s.hits, s.misses, s.bumps, s.flushes),
                f"the Prometheus counts of {label} differ from its signals' counts",
            )
