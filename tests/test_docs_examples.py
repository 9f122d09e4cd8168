"""The Python examples of the docs run as written.

Every ```python block preceded by an ``<!-- example -->`` HTML comment in
``docs/*.md`` or ``README.md`` is executed here, each in a fresh namespace,
under a fresh ``override_settings(CACHES=...)``: ``default`` is a new LocMemCache
and ``fragmented`` wraps it (the alias the examples use). Examples enter tenants
themselves (``TenantContext.use_tenant``) where they need one. Global state an
example may change (registered models, the chosen alias, the epoch, global
tags) is reset afterwards.

The tenancy recipes (``<!-- recipe: ... -->``) are run by
``tests/test_docs_recipes.py`` instead.
"""

from __future__ import annotations

import re
import textwrap
import uuid
from pathlib import Path

import pytest
from django.core.cache import caches
from django.test import override_settings

from fragmented_keys_django import ModelTagManager, TenantContext, reset_configuration
from fragmented_keys_django import keys as keys_mod

ROOT = Path(__file__).resolve().parent.parent
DOCS = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
# The marker alone on its line (possibly indented, inside a list item).
_BLOCK = re.compile(r"^[ \t]*<!-- example -->[ \t]*\n\s*```python\n(.*?)```", re.S | re.M)
_MARK = re.compile(r"^[ \t]*<!-- example -->[ \t]*$", re.M)


def examples() -> list[tuple[str, str]]:
    """Return ``[(id, code)]`` for every marked example, ids like ``quickstart.md#2``."""
    found = []
    for doc in DOCS:
        text = doc.read_text()
        blocks = _BLOCK.findall(text)
        assert len(blocks) == len(_MARK.findall(text)), (
            f"{doc.name}: an <!-- example --> marker is not followed by a ```python block"
        )
        found += [(f"{doc.name}#{i}", textwrap.dedent(code)) for i, code in enumerate(blocks, 1)]
    return found


EXAMPLES = examples()


def test_the_required_examples_are_marked():
    """The quick start's cache API, decorator and tag cheat sheet, and the README's, run here."""
    ids = {name.split("#")[0] for name, _ in EXAMPLES}
    assert {"README.md", "quickstart.md", "tenancy.md"} <= ids
    quickstart = "\n".join(code for name, code in EXAMPLES if name.startswith("quickstart.md"))
    for needle in (
        "@tagged_cache(",
        "set_with_tags(",
        "get_with_tags(",
        "get_or_set_with_tags(",
        "get_many_with_tags(",
        "delete_with_tags(",
        "invalidate_tags(",
        "get_tag_version(",
        "frag.clear()",
    ):
        assert needle in quickstart, needle


@pytest.fixture
def doc_caches():
    conf = {
        "default": {
            "BACKEND": "django.core.cache.backends.locmem.LocMemCache",
            "LOCATION": f"docs-{uuid.uuid4().hex}",
        },
        "fragmented": {
            "BACKEND": "fragmented_keys_django.FragmentedKeysCacheBackend",
            "CACHE_NAME": "default",
            "PREFIX": "docs",
        },
    }
    global_tags = keys_mod._global_tags
    with override_settings(CACHES=conf):
        try:
            yield
        finally:
            caches["fragmented"].close()
            keys_mod._global_tags = global_tags
            keys_mod.clear_memos()
            ModelTagManager.clear_all()
            reset_configuration()
            TenantContext.clear_all()


@pytest.mark.django_db
@pytest.mark.parametrize(("name", "code"), EXAMPLES, ids=[name for name, _ in EXAMPLES])
def test_doc_example(doc_caches, name, code):
    module = "docs_example_" + re.sub(r"\W", "_", name)
    namespace = {"__name__": module}
    exec(compile(code, f"{name} (example)", "exec"), namespace)
    assert TenantContext.get_tenant_id() is None, f"{name} left a tenant entered"
