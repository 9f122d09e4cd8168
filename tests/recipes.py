"""Extract the runnable recipes of docs/tenancy.md (``<!-- recipe: NAME -->`` + a python block).

Used by tests/test_docs_recipes.py and tests/tenants_suite/test_docs_recipe.py.
Recipe blocks are named ``NAME settings`` (applied as settings), ``NAME <part>``
(setup code such as urls or tasks) and ``NAME`` (the usage, run as written).
"""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "tenancy.md"
_BLOCK = re.compile(r"<!-- recipe: ([\w-]+(?: [\w-]+)?) -->\s*```python\n(.*?)```", re.S)
_REDIS = re.compile(r"redis://([\w.-]+):(\d+)/(\d+)")


def load(doc: Path = DOC) -> dict[str, str]:
    """Return ``{block name: code}``; a duplicated name is an error."""
    blocks: dict[str, str] = {}
    for name, code in _BLOCK.findall(doc.read_text()):
        if name in blocks:
            raise AssertionError(f"recipe block {name!r} appears twice in {doc}")
        blocks[name] = code
    return blocks


class RedisRewriter:
    """Map every distinct Redis URL of a recipe to a local test database, in order of appearance."""

    def __init__(self, base: str, dbs: list[int]) -> None:
        self.base = base.rstrip("/")
        self.free = list(dbs)
        self.mapping: dict[str, int] = {}

    def __call__(self, code: str) -> str:
        def sub(m: re.Match) -> str:
            url = m.group(0)
            if url not in self.mapping:
                if not self.free:
                    raise AssertionError(
                        f"recipe uses more Redis databases than the test allows: {url}"
                    )
                self.mapping[url] = self.free.pop(0)
            return f"{self.base}/{self.mapping[url]}"

        return _REDIS.sub(sub, code)

    def used(self) -> list[int]:
        return sorted(set(self.mapping.values()))


def run(code: str, namespace: dict, name: str) -> dict:
    """Execute *code* in *namespace* (filename points at the doc for tracebacks)."""
    exec(compile(code, f"{DOC}:<recipe {name}>", "exec"), namespace)
    return namespace


def settings_from(namespace: dict) -> dict:
    """The upper-case names a settings block defined."""
    return {k: v for k, v in namespace.items() if k.isupper() and not k.startswith("__")}
