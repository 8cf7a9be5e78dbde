"""``ibkr-workers instruments load FILE``: make a universe file the instrument-sync universe.

The file replaces the whole ``instrument_universe`` table in one transaction: entries not in the file are
removed, changed ones are synced again by the next pass (a running instrument-sync picks them up without a
restart). Exit codes: 0 loaded, 2 invalid file or configuration (nothing is changed), 3 database
unreachable.
"""

from __future__ import annotations

import argparse
import sys

import psycopg
from psycopg_pool import PoolTimeout

from workers.adapters.postgres.failure import describe_database_error
from workers.adapters.postgres.pool import close_pool, open_pool
from workers.adapters.postgres.universe import LoadResult, UniverseStore
from workers.adapters.universe_file import read_universe_file
from workers.domain.universe import UniverseError
from workers.logs import configure_logging, get_logger
from workers.settings import Settings, load_settings

log = get_logger(__name__)


class UniverseLoadError(Exception):
    """The universe could not be loaded; the message is one line for the operator."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


async def load_universe(settings: Settings, path: str) -> LoadResult:
    """Read universe file ``path`` and make it the universe; raises :class:`UniverseLoadError`."""
    try:
        entries = read_universe_file(path)
    except UniverseError as exc:
        raise UniverseLoadError(str(exc), 2) from None
    try:
        pool = await open_pool(settings.database_dsn, max_size=1, name="ibkr-workers-instruments")
    except (PoolTimeout, psycopg.Error) as exc:
        raise UniverseLoadError(describe_database_error(exc), 3) from None
    try:
        result = await UniverseStore(pool).replace(entries)
    except psycopg.errors.UndefinedTable:
        raise UniverseLoadError("the database has no instrument_universe table: run `ibkr-workers migrate`",
                                2) from None
    finally:
        await close_pool(pool)
    log.info("instrument universe loaded", file=path, entries=result.total, added=result.added,
             changed=result.changed, removed=result.removed, unchanged=result.unchanged)
    return result


async def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    configure_logging(settings.log_level, worker="instruments")
    if args.instruments_command != "load":
        print(f"ibkr-workers instruments: unknown action {args.instruments_command!r}", file=sys.stderr)
        return 2
    try:
        result = await load_universe(settings, args.file)
    except UniverseLoadError as exc:
        print(f"ibkr-workers instruments load: {exc}", file=sys.stderr)
        return exc.exit_code
    print(f"loaded {result.total} entries from {args.file}: {result.added} added, {result.changed} changed, "
          f"{result.removed} removed, {result.unchanged} unchanged")
    return 0
