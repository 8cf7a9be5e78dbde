"""Versioned, idempotent schema migrations (the ``migrate`` command).

Migrations are the ``NNNN_name.sql`` files next to this module. Each one runs in its own transaction,
together with its row in ``schema_migrations``; a PostgreSQL advisory lock taken in that transaction
makes concurrent runs (two workers starting at once) wait for each other instead of racing. The lock
key includes the current schema, so runs against different schemas do not wait for each other.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable

from psycopg import AsyncConnection
from psycopg.rows import TupleRow

from workers.adapters.postgres.errors import MigrationError

log = logging.getLogger(__name__)

_FILE_NAME = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")

_LOCK = (
    "SELECT pg_advisory_xact_lock(hashtext('ibkr-workers.migrate'), hashtext(coalesce(current_schema(), '')))"
)

_CREATE_SCHEMA_MIGRATIONS = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True)
class Migration:
    """One migration file: its version, name, SQL text and the checksum recorded when it is applied."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        # Line endings are normalised so a checkout with CRLF does not look like an edited migration.
        normalised = self.sql.replace("\r\n", "\n").encode("utf-8")
        return hashlib.sha256(normalised).hexdigest()


def load_migrations(directory: Traversable | None = None) -> list[Migration]:
    """The migration files of ``directory`` (default: the packaged ones), in version order."""
    folder = directory if directory is not None else resources.files(__package__ or __name__) / "migrations"
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE_NAME.match(entry.name)
        if match is None:
            raise MigrationError(f"migration file {entry.name!r} is not named NNNN_name.sql")
        version = int(match["version"])
        if version in found:
            raise MigrationError(f"two migration files have version {version:04d}")
        found[version] = Migration(version, match["name"], entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


async def migrate(dsn: str) -> list[int]:
    """Apply every pending migration to the database at ``dsn``; return the versions applied now.

    Raises :class:`MigrationError` when an already applied migration's file has changed since.
    """
    migrations = load_migrations()
    applied_now: list[int] = []
    async with await AsyncConnection.connect(dsn, autocommit=True) as conn:
        async with conn.transaction():
            await conn.execute(_LOCK)
            await conn.execute(_CREATE_SCHEMA_MIGRATIONS)
        for migration in migrations:
            if await _apply(conn, migration):
                applied_now.append(migration.version)
    return applied_now


async def _apply(conn: AsyncConnection[TupleRow], migration: Migration) -> bool:
    """Apply ``migration`` unless it is recorded already; True when it ran now."""
    async with conn.transaction():
        # Checked again under the lock: another process may have applied it while we waited.
        await conn.execute(_LOCK)
        cursor = await conn.execute(
            "SELECT checksum FROM schema_migrations WHERE version = %s", (migration.version,)
        )
        recorded = await cursor.fetchone()
        if recorded is not None:
            if recorded[0] != migration.checksum:
                raise MigrationError(
                    f"migration {migration.version:04d}_{migration.name}.sql was changed after it was "
                    "applied; add a new migration instead of editing an applied one"
                )
            return False
        await conn.execute(migration.sql)
        await conn.execute(
            "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
            (migration.version, migration.name, migration.checksum),
        )
    log.info("applied migration %04d_%s", migration.version, migration.name)
    return True
