"""Versioned schema of the PostgreSQL session store, applied at start under an advisory lock.

Every migration has a number; the numbers applied are rows of ``<table>_schema_version`` in the
store's schema. :func:`migrate` takes a transaction-scoped advisory lock named after the schema and
table first, so replicas starting together queue behind the first one and then find nothing left
to do; the DDL is transactional, so a migration that fails leaves no half-made table behind.
Migrations only ever add: a runtime older than the database keeps working with the tables it
knows (it logs that the schema is newer).
"""

# SQL is built with identifiers here: quote() accepts only [a-z0-9_] names, and quotes them.
# ruff: noqa: S608

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("agent_runtime.sessions.postgres")

# Waiting for another replica's migration is the only slow part; it is still short.
MIGRATION_TIMEOUT = 30.0


@dataclass(frozen=True)
class Migration:
    """One step of the schema: statements with ``{table}``, ``{index}`` placeholders."""

    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "sessions table, one row per session, and the expiry index the sweeper reads",
        (
            "CREATE TABLE IF NOT EXISTS {table} ("
            " session_key text PRIMARY KEY,"
            " turns text[] NOT NULL,"
            " expires_at timestamptz NOT NULL)",
            "CREATE INDEX IF NOT EXISTS {expiry_index} ON {table} (expires_at)",
        ),
    ),
)
LATEST = MIGRATIONS[-1].version


_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def quote(identifier: str) -> str:
    """A double-quoted SQL identifier; refuses anything but [a-z0-9_] names (the config's pattern)."""
    if not _IDENTIFIER.fullmatch(identifier):
        raise ValueError("PostgreSQL names of the session store may hold only a-z, 0-9 and _")
    return f'"{identifier}"'


def qualified(schema_name: str, name: str) -> str:
    """``"schema"."name"``."""
    return f"{quote(schema_name)}.{quote(name)}"


def version_table(table_name: str) -> str:
    """Name of the table that records the applied migrations of ``table_name``."""
    return f"{table_name}_schema_version"


def lock_key(schema_name: str, table_name: str) -> int:
    """The advisory-lock key of one sessions table: a signed 64-bit hash of its qualified name."""
    digest = hashlib.sha256(f"sentient-sessions:{schema_name}.{table_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def migrate(conn: Any, schema_name: str, table_name: str) -> int:
    """Apply the migrations the database lacks, in one transaction; the version now in force."""
    names = {
        "table": qualified(schema_name, table_name),
        "expiry_index": quote(f"{table_name}_expires_at_idx"),
    }
    versions = qualified(schema_name, version_table(table_name))
    async with conn.transaction():
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1)", lock_key(schema_name, table_name), timeout=MIGRATION_TIMEOUT
        )
        # CREATE SCHEMA needs the CREATE privilege on the database even when the schema exists:
        # a role that owns only its schema must not trip on it.
        exists = await conn.fetchval("SELECT true FROM pg_namespace WHERE nspname = $1", schema_name)
        if not exists:
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema_name)}")
        await conn.execute(
            f"CREATE TABLE IF NOT EXISTS {versions} ("
            " version integer PRIMARY KEY,"
            " description text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        current = int(await conn.fetchval(f"SELECT coalesce(max(version), 0) FROM {versions}"))
        for migration in MIGRATIONS:
            if migration.version <= current:
                continue
            for statement in migration.statements:
                await conn.execute(statement.format(**names), timeout=MIGRATION_TIMEOUT)
            await conn.execute(
                f"INSERT INTO {versions} (version, description) VALUES ($1, $2)",
                migration.version,
                migration.description,
            )
            log.info(
                "sessions schema migrated",
                extra={"version": migration.version, "table": f"{schema_name}.{table_name}"},
            )
    if current > LATEST:
        log.warning(
            "sessions schema version %d is newer than this runtime knows (%d); using it as is",
            current,
            LATEST,
        )
    return max(current, LATEST)
