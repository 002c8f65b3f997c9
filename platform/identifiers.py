"""Names admins choose become SQL identifiers: validate them, then quote them.

Validation makes names predictable (lower-case ASCII, no quoting surprises);
quoting everywhere makes injection impossible even if validation had a gap.
"""

from __future__ import annotations

import hashlib
import re

__all__ = [
    "IDENTIFIER_PATTERN",
    "MAX_ENTITY_NAME",
    "MAX_FIELD_NAME",
    "SYSTEM_COLUMNS",
    "identifier_problem",
    "quote_ident",
    "quote_literal",
    "short_name",
]

IDENTIFIER_PATTERN = r"^[a-z][a-z0-9_]*$"
_IDENTIFIER = re.compile(IDENTIFIER_PATTERN)

# Field columns get suffixes (a currency field `price` stores `price_amount`
# and `price_currency`) and index names combine entity and field, so both
# stay well below PostgreSQL's 63-byte identifier limit.
MAX_ENTITY_NAME = 40
MAX_FIELD_NAME = 48

# Reserved (and type/function-name) keywords of PostgreSQL 18
# (`SELECT word FROM pg_get_keywords() WHERE catcode IN ('R', 'T')`).
SQL_RESERVED = frozenset(
    """all analyse analyze and any array as asc asymmetric authorization binary
    both case cast check collate collation column concurrently constraint create
    cross current_catalog current_date current_role current_schema current_time
    current_timestamp current_user default deferrable desc distinct do else end
    except false fetch for foreign freeze from full grant group having ilike in
    initially inner intersect into is isnull join lateral leading left like limit
    localtime localtimestamp natural not notnull null offset on only or order
    outer overlaps placing primary references returning right select
    session_user similar some symmetric system_user table tablesample then to
    trailing true union unique user using variadic verbose when where window
    with""".split()
)

# Columns every entity table has; fields may not use these names.
SYSTEM_COLUMNS = (
    "id",
    "created_at",
    "created_by",
    "updated_at",
    "updated_by",
    "owner_id",
    "version",
    "deleted_at",
    "search_vector",
)

# Entity names that would clash with URL segments or system schemas.
RESERVED_ENTITY_NAMES = frozenset({"meta", "api", "admin", "static", "health", "openapi", "pg", "xrm"})


def identifier_problem(name: object, *, max_length: int, what: str) -> str | None:
    """Why `name` cannot be an identifier, or None if it can."""
    if not isinstance(name, str):
        return f"{what} must be a string"
    if not _IDENTIFIER.match(name):
        return (
            f"{what} {name!r} must start with a lower-case letter and contain only "
            "lower-case letters, digits and underscores"
        )
    if "__" in name:
        return f"{what} {name!r} must not contain a double underscore (reserved for names xrm derives)"
    if len(name.encode()) > max_length:
        return f"{what} {name!r} is longer than {max_length} characters"
    if name in SQL_RESERVED:
        return f"{what} {name!r} is a reserved SQL word"
    if name.startswith(("pg_", "xrm_")):
        return f"{what} {name!r} uses a reserved prefix (pg_, xrm_)"
    return None


def quote_ident(name: str) -> str:
    """Quote an identifier for SQL (doubling any embedded quote)."""
    if "\x00" in name:
        raise ValueError("identifier contains NUL")
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    """Quote a string literal for DDL, where bind parameters are not allowed."""
    if "\x00" in value:
        raise ValueError("literal contains NUL")
    return "'" + value.replace("'", "''") + "'"


def short_name(*parts: str) -> str:
    """A readable object name (index, constraint) within 63 bytes, unique by hash."""
    name = "_".join(parts)
    if len(name.encode()) <= 63:
        return name
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return name.encode()[:54].decode(errors="ignore") + "_" + digest
