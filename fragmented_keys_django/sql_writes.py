"""Which tables an SQL statement writes: a conservative reading of its text, for the safety net.

:func:`written_tables` answers with ``(kind, table)`` pairs, ``kind`` one of
``INSERT``, ``UPDATE``, ``DELETE``, ``MERGE``, ``DDL`` (``TRUNCATE``, ``ALTER
TABLE``, ``DROP TABLE``, ``RENAME TABLE``, ``COPY ... FROM``, ``LOAD DATA``),
and ``table`` the bare table name, lower-cased (quotes as each vendor writes
them, ``"..."``, ```...``` and ``[...]``, removed; a schema or database
qualifier dropped). Or with :data:`EVERY_TABLE` for a statement that may write
any table and names none we can read (``CALL``, ``DO``, ``EXEC``, ``TRUNCATE
... CASCADE``, or a write whose target cannot be found).

The reading errs on the side of naming too many tables, never too few: every
identifier between ``UPDATE`` and ``SET``, between ``DELETE`` and ``WHERE``
(MySQL's multi-table forms), in a ``TRUNCATE`` or ``DROP TABLE`` list, and the
target of every ``INSERT``/``REPLACE``/``MERGE``/``UPSERT`` anywhere in the
text (a ``WITH`` query's data-modifying parts, several statements in one
string, PostgreSQL's ``EXPLAIN ANALYZE``). A name that is not a table is
harmless: the caller keeps only the tables it knows. String literals and
comments are removed first, so their text is never read as SQL.

Statements are recognised by their first keyword before any regular
expression runs: :func:`may_write` is the cheap test the database
instrumentation runs on every statement. Results are remembered per statement
text (Django sends the same text again and again, with different parameters).
"""

from __future__ import annotations

import re

__all__ = ["EVERY_TABLE", "may_write", "written_tables"]

#: A statement that may write any table: ``written_tables`` answers this instead of pairs.
EVERY_TABLE = "*"

# First characters of statements that may write (the leading keywords below),
# and of text that must be skipped to find the first keyword (blanks,
# comments, parentheses). A statement starting with anything else (SELECT,
# SAVEPOINT, SET, SHOW, PRAGMA, BEGIN, ...) is not read at all.
_MAYBE_FIRST = frozenset("IiUuDdRrMmTtWwAaCcLlEe \t\r\n(/-")

# Leading keywords of statements that may write. The rest (ROLLBACK, RELEASE,
# CREATE, COMMIT, ANALYZE, ...) change no rows of an existing table.
_WRITE_HEADS = frozenset(
    {
        "INSERT",
        "UPDATE",
        "DELETE",
        "REPLACE",
        "MERGE",
        "UPSERT",
        "TRUNCATE",
        "WITH",
        "ALTER",
        "DROP",
        "RENAME",
        "COPY",
        "LOAD",
        "EXPLAIN",
    }
)
# Leading keywords of statements that run code we cannot read (a stored
# procedure, an anonymous block, a prepared statement): they may write anything.
_OPAQUE_HEADS = frozenset({"CALL", "DO", "EXEC", "EXECUTE"})
# Leading keywords of statements that write rows for sure: if no target can be
# read from one of these, it is taken to write every table. (ALTER, DROP,
# RENAME, WITH, EXPLAIN and COPY also have forms that write nothing.)
_DML_HEADS = frozenset(
    {"INSERT", "UPDATE", "DELETE", "REPLACE", "MERGE", "UPSERT", "TRUNCATE", "LOAD"}
)

_SKIP_TEXT = re.compile(r"(?:\s+|\(|/\*.*?\*/|--[^\n]*(?:\n|$))*", re.S)
_HEAD = re.compile(r"[A-Za-z]+")
# String literals ('...' with '' escapes; E'...' with backslash escapes) and comments.
_LITERALS = re.compile(
    r"""(?<![\w$])[Ee]'(?:[^'\\]|\\.|'')*'|'(?:[^']|'')*'|/\*.*?\*/|--[^\n]*""",
    re.S,
)
_IDENT = r"""(?:"(?:[^"]|"")+"|`(?:[^`]|``)+`|\[[^\]]+\]|[^\W\d][\w$#@]*)"""
_QNAME = rf"{_IDENT}(?:\s*\.\s*{_IDENT})*"
_IDENTS = re.compile(_QNAME)
_CLAUSE = re.compile(
    r"\b(INSERT|UPSERT|REPLACE|UPDATE|DELETE|MERGE|TRUNCATE|ALTER|DROP|RENAME|COPY|LOAD)\b", re.I
)
# Anchored right after the keyword found by _CLAUSE.
_ONE_TARGET = {
    "INSERT": (
        "INSERT",
        re.compile(
            rf"(?:\s+(?:OR\s+\w+|IGNORE|LOW_PRIORITY|DELAYED|HIGH_PRIORITY))*(?:\s+INTO)?\s+({_QNAME})",
            re.I,
        ),
    ),
    "UPSERT": ("INSERT", re.compile(rf"\s+INTO\s+({_QNAME})", re.I)),
    "REPLACE": (
        "INSERT",
        re.compile(rf"(?:\s+(?:LOW_PRIORITY|DELAYED))*(?:\s+INTO)?\s+({_QNAME})", re.I),
    ),
    "MERGE": ("MERGE", re.compile(rf"(?:\s+INTO)?\s+({_QNAME})", re.I)),
    "ALTER": ("DDL", re.compile(rf"\s+TABLE(?:\s+IF\s+EXISTS)?(?:\s+ONLY)?\s+({_QNAME})", re.I)),
    "COPY": ("DDL", re.compile(rf"\s+({_QNAME})(?:\s*\([^)]*\))?\s+FROM\b", re.I)),
    "LOAD": ("DDL", re.compile(rf"\s+(?:XML\s+)?DATA\b[^;]*?\bINTO\s+TABLE\s+({_QNAME})", re.I)),
}
# Anchored right after the keyword: a stretch of text whose identifiers are all candidates.
_MANY_TARGETS = {
    "UPDATE": ("UPDATE", re.compile(r"([^;]*?)\bSET\b", re.I)),
    "DELETE": (
        "DELETE",
        re.compile(r"([^;]*?)(?=\bWHERE\b|\bRETURNING\b|\bORDER\s+BY\b|\bLIMIT\b|;|\Z)", re.I),
    ),
    "TRUNCATE": ("DDL", re.compile(r"([^;]*)", re.I)),
    "DROP": ("DDL", re.compile(r"\s+TABLE\b([^;]*)", re.I)),
    "RENAME": ("DDL", re.compile(r"\s+TABLE\b([^;]*)", re.I)),
}
_CASCADE = re.compile(r"\bCASCADE\b", re.I)
# Keywords met among the candidate names of _MANY_TARGETS (dropped when unquoted).
_KEYWORDS = frozenset(
    {
        "FROM", "JOIN", "INNER", "LEFT", "RIGHT", "FULL", "OUTER", "CROSS", "NATURAL", "ON",
        "AS", "USING", "ONLY", "IF", "EXISTS", "TABLE", "RESTART", "CONTINUE", "IDENTITY",
        "RESTRICT", "LOW_PRIORITY", "QUICK", "IGNORE", "STRAIGHT_JOIN", "LATERAL", "TO", "OR",
        "AND", "NOT", "NULL", "IS", "IN",
    }
)  # fmt: skip

# written_tables() answers by statement text; bounded (Django repeats texts, users may not).
_memo: dict[str, tuple[tuple[str, str], ...] | str] = {}
_MEMO_SIZE = 4096
_MEMO_CHARS = 16384


def may_write(sql: str) -> bool:
    """Return False if *sql* certainly writes no row (the cheap test run on every statement).

    Looks at the first character, and for a ``;``: ``SELECT``, ``SAVEPOINT``,
    ``SET``, ``PRAGMA`` and ``BEGIN`` alone are rejected without reading
    further; a string holding several statements is always read (PostgreSQL
    runs them all, and a write may follow a first statement that cannot).
    """
    return sql[:1] in _MAYBE_FIRST or ";" in sql


def written_tables(sql: str) -> tuple[tuple[str, str], ...] | str:
    """Return the ``(kind, table)`` pairs *sql* may write, ``()`` for none, or :data:`EVERY_TABLE`.

    *sql* is one statement text as a database driver receives it (several
    statements separated by ``;`` are read too). Table names are lower-cased,
    unquoted and unqualified (``"public"."Patient"`` -> ``patient``). Never
    raises on odd input: what cannot be read is :data:`EVERY_TABLE` when it
    starts like a write, ``()`` otherwise.
    """
    hit = _memo.get(sql)
    if hit is not None:
        return hit
    result = _read(sql)
    if len(sql) <= _MEMO_CHARS:
        if len(_memo) >= _MEMO_SIZE:
            _memo.clear()
        _memo[sql] = result
    return result


def _read(sql: str) -> tuple[tuple[str, str], ...] | str:
    if ";" not in sql:
        return _read_one(sql)
    found: list[tuple[str, str]] = []
    for one in _LITERALS.sub(" '' ", sql).split(";"):  # literals blanked: no ';' inside
        got = _read_one(one)
        if got is EVERY_TABLE:
            return EVERY_TABLE
        found.extend(got)
    return tuple(dict.fromkeys(found))


def _read_one(sql: str) -> tuple[tuple[str, str], ...] | str:
    start = _SKIP_TEXT.match(sql).end()  # type: ignore[union-attr]  (matches the empty string)
    head = _HEAD.match(sql, start)
    word = head.group(0).upper() if head else ""
    if word in _OPAQUE_HEADS:
        return EVERY_TABLE
    if word not in _WRITE_HEADS:
        return ()
    text = _LITERALS.sub(" '' ", sql)
    found: list[tuple[str, str]] = []
    for clause in _CLAUSE.finditer(text):
        keyword = clause.group(1).upper()
        one = _ONE_TARGET.get(keyword)
        if one is not None:
            kind, pattern = one
            m = pattern.match(text, clause.end())
            if m is not None:
                found.append((kind, _bare(m.group(1))))
            continue
        kind, pattern = _MANY_TARGETS[keyword]
        m = pattern.match(text, clause.end())
        if m is None:
            continue
        if keyword == "TRUNCATE" and _CASCADE.search(m.group(1)):
            return EVERY_TABLE  # also empties every table referencing these
        found.extend(
            (kind, _bare(name))
            for name in _IDENTS.findall(m.group(1))
            if name.upper() not in _KEYWORDS  # unquoted keywords only: "from" may be a table
        )
    if found:
        return tuple(dict.fromkeys(found))
    # A write we could not read: every table. Other heads may write nothing.
    return EVERY_TABLE if word in _DML_HEADS else ()


def _bare(qname: str) -> str:
    """Return the last part of a possibly qualified, possibly quoted name, unquoted and lower-cased."""
    last = _IDENTS_PARTS.findall(qname)[-1]
    if last[:1] in ('"', "`"):
        q = last[0]
        last = last[1:-1].replace(q + q, q)
    elif last[:1] == "[":
        last = last[1:-1]
    return last.lower()


_IDENTS_PARTS = re.compile(_IDENT)


def bare_table_name(db_table: str) -> str:
    """Return a model's ``Meta.db_table`` as :func:`written_tables` names it.

    Django quotes ``db_table`` whole, so a dot is part of the name, except in
    the ``'schema"."table'`` idiom, whose last part is the table.
    """
    return db_table.rsplit('"."', 1)[-1].lower()
