"""``ibkr-workers trading-state show|halt|reduce|resume``: read or change the deployment's trading state.

The change is written to PostgreSQL with who (``--by``, else the OS user), when and why (``--reason``,
required); every order-consumer replica follows it within about a second. ``halt`` also asks every open
order of the deployment to be cancelled by the worker that owns it. Exit codes: 0 done, 2 bad
configuration, 3 database unreachable or not migrated.
"""

from __future__ import annotations

import argparse
import getpass
import sys

import psycopg
from psycopg_pool import PoolTimeout

from workers.adapters.postgres.pool import close_pool, open_pool
from workers.adapters.postgres.trading_state import PostgresTradingStateStore
from workers.domain.trading_state import TradingState
from workers.logs import configure_logging
from workers.settings import load_settings

ACTIONS = {"halt": TradingState.HALTED, "reduce": TradingState.REDUCING, "resume": TradingState.ACTIVE}


def who(by: str | None) -> str:
    """``--by`` when given, else the OS user running the command."""
    if by:
        return by
    try:
        return f"{getpass.getuser()} (command line)"
    except (KeyError, OSError):
        return "unknown user (command line)"


async def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    configure_logging(settings.log_level, worker="trading-state")
    if args.action != "show" and not (args.reason or "").strip():
        print(f"ibkr-workers trading-state {args.action}: --reason is required", file=sys.stderr)
        return 2
    try:
        pool = await open_pool(settings.database_dsn, max_size=1, name="ibkr-workers-trading-state")
    except (PoolTimeout, psycopg.OperationalError) as exc:
        print(f"ibkr-workers trading-state: cannot reach PostgreSQL: {exc}", file=sys.stderr)
        return 3
    store = PostgresTradingStateStore(pool)
    try:
        if args.action == "show":
            current = await store.current()
            print(f"{current.state} since {current.changed_at.isoformat()} by {current.changed_by}: "
                  f"{current.reason}")
            for record in await store.history(args.history):
                print(f"  {record.changed_at.isoformat()}  {record.state:<8}  {record.changed_by}: {record.reason}")
            return 0
        change = await store.change(ACTIONS[args.action], reason=" ".join(args.reason.split()),
                                    changed_by=who(args.by))
    except psycopg.errors.UndefinedTable:
        print("ibkr-workers trading-state: the database has no trading_state table: run `ibkr-workers migrate`",
              file=sys.stderr)
        return 3
    finally:
        await close_pool(pool)
    cancels = f"; {change.cancels_requested} open orders asked to cancel" if change.current.state is \
        TradingState.HALTED else ""
    print(f"trading state {change.current.state} (was {change.previous}){cancels}")
    return 0
