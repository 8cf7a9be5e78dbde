"""The migrate command's function against a real PostgreSQL: versioned, idempotent, safe when concurrent."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import psycopg
import pytest

from workers.adapters.postgres.errors import MigrationError
from workers.adapters.postgres.migrate import load_migrations, migrate

CONTRACT_TABLES = {"instruments", "orders", "fills", "cancel_requests", "ib_order_ids", "outbox"}


async def schema_snapshot(database_url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Columns, constraints and indexes of the test's own schema."""
    queries = {
        "columns": """
            SELECT table_name, column_name, data_type, is_nullable, column_default,
                   numeric_precision, numeric_scale
              FROM information_schema.columns
             WHERE table_schema = current_schema()
             ORDER BY table_name, column_name
        """,
        "constraints": """
            SELECT tc.table_name, tc.constraint_name, tc.constraint_type, cc.check_clause
              FROM information_schema.table_constraints AS tc
              LEFT JOIN information_schema.check_constraints AS cc
                ON cc.constraint_schema = tc.constraint_schema AND cc.constraint_name = tc.constraint_name
             WHERE tc.table_schema = current_schema()
             ORDER BY tc.table_name, tc.constraint_name
        """,
        "indexes": """
            SELECT tablename, indexname, indexdef FROM pg_indexes
             WHERE schemaname = current_schema() ORDER BY tablename, indexname
        """,
    }
    snapshot: dict[str, list[tuple[Any, ...]]] = {}
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        for name, query in queries.items():
            cursor = await conn.execute(query)
            snapshot[name] = await cursor.fetchall()
    return snapshot


async def recorded_migrations(database_url: str) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cursor = await conn.execute("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
        return await cursor.fetchall()


@pytest.mark.integration
async def test_migrate_twice_applies_nothing_the_second_time_and_leaves_the_same_schema(
    database_url: str,
) -> None:
    versions = [m.version for m in load_migrations()]

    first = await migrate(database_url)
    after_first = await schema_snapshot(database_url)
    second = await migrate(database_url)
    after_second = await schema_snapshot(database_url)

    assert first == versions
    assert second == []
    assert after_second == after_first
    assert after_first["columns"], "the migrations created no column in the test's schema"


@pytest.mark.integration
async def test_migrations_create_the_contract_tables_in_the_current_schema(database_url: str) -> None:
    await migrate(database_url)

    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cursor = await conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        )
        tables = {row[0] for row in await cursor.fetchall()}

    assert tables >= CONTRACT_TABLES | {"schema_migrations"}


@pytest.mark.integration
async def test_each_applied_migration_is_recorded_with_name_and_checksum(database_url: str) -> None:
    await migrate(database_url)

    recorded = await recorded_migrations(database_url)

    assert recorded == [(m.version, m.name, m.checksum) for m in load_migrations()]


@pytest.mark.integration
async def test_concurrent_migrate_calls_apply_each_version_exactly_once(database_url: str) -> None:
    versions = [m.version for m in load_migrations()]

    results = await asyncio.gather(*(migrate(database_url) for _ in range(3)))

    applied = sorted(v for result in results for v in result)
    assert applied == versions
    assert [row[0] for row in await recorded_migrations(database_url)] == versions


@pytest.mark.integration
async def test_an_applied_migration_that_was_edited_is_an_error(database_url: str) -> None:
    await migrate(database_url)
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1")

    with pytest.raises(MigrationError, match=r"0001_initial\.sql was changed"):
        await migrate(database_url)


def test_packaged_migrations_are_numbered_from_one_without_gaps() -> None:
    versions = [m.version for m in load_migrations()]

    assert versions == list(range(1, len(versions) + 1))


def test_migration_files_are_read_in_version_order(tmp_path: Path) -> None:
    (tmp_path / "0002_second.sql").write_text("SELECT 2;")
    (tmp_path / "0001_first.sql").write_text("SELECT 1;")
    (tmp_path / "README.md").write_text("not a migration")

    migrations = load_migrations(tmp_path)

    assert [(m.version, m.name) for m in migrations] == [(1, "first"), (2, "second")]


def test_a_misnamed_migration_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "1_first.sql").write_text("SELECT 1;")

    with pytest.raises(MigrationError, match=r"NNNN_name\.sql"):
        load_migrations(tmp_path)


def test_checksum_ignores_line_endings(tmp_path: Path) -> None:
    (tmp_path / "0001_unix.sql").write_bytes(b"SELECT 1;\nSELECT 2;\n")
    (tmp_path / "0002_windows.sql").write_bytes(b"SELECT 1;\r\nSELECT 2;\r\n")

    unix, windows = load_migrations(tmp_path)

    assert unix.checksum == windows.checksum
