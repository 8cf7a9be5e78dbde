"""``ibkr-workers instrument-sync [--once]``: keep the instrument mapper current from IBKR.

A full pass at start, then one every ``INSTRUMENT_SYNC_INTERVAL`` seconds (start to start); ``--once`` runs
one pass (resuming an unfinished one) and exits. ``INSTRUMENT_UNIVERSE_FILE``, when set, is loaded into the
universe at start (as ``instruments load`` would).

IBKR: one read-only TWS connection with its own client id, ``IBKR_CLIENT_ID`` — give every worker process
a different one (IB refuses a second connection with a client id in use; e.g. order-consumer 1,
instrument-sync 2). Requests go through the pacing limiter (``IBKR_PACING_PER_SECOND``).

Events: each change is written to the outbox with the instrument row, then published to
``instruments.updated`` by an idempotent producer once committed (a crash in between publishes it at the
next start). Only one instrument-sync runs a pass per database schema (an advisory lock).

Operations (both modes, like the order-consumer): ``WorkerHealth`` on ``workers.health`` keyed
``instrument-sync:<instance_id>`` every ``HEALTH_INTERVAL`` seconds and at once on a status change (STARTING
until the first pass started with IBKR connected, STOPPING on shutdown), and an HTTP server on
``HEALTH_PORT`` with ``/healthz``, ``/readyz`` (200 when IBKR is connected and the status is HEALTHY or
DEGRADED) and ``/metrics`` (no kill switch: this worker places no order). ``HEALTH_PORT=0`` binds a free
port. The long-running worker exits 3 when it cannot listen on ``HEALTH_PORT``; ``--once`` only warns and
runs its pass without the HTTP server (a one-off job needs no probes).

Exit codes of ``--once``: 0 every entry synced and every event published; 1 entries failed, the pass was
interrupted, or events are still unpublished (the summary says which); 2 bad configuration or universe
file; 3 PostgreSQL, Kafka or IBKR unreachable, or another instrument-sync holds the lock.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

import psycopg
from psycopg_pool import PoolTimeout

from workers.adapters.postgres.failure import describe_database_error
from workers.bootstrap import build_instrument_sync
from workers.entrypoints.instruments import UniverseLoadError, load_universe
from workers.logs import configure_logging, get_logger, instance_id
from workers.runtime.instrument_sync import WORKER, StartupFailed
from workers.settings import load_settings

log = get_logger(__name__)


async def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    instance = instance_id()
    configure_logging(settings.log_level, worker=WORKER, instance=instance)
    try:
        if settings.instrument_universe_file:
            await load_universe(settings, settings.instrument_universe_file)
        app = await build_instrument_sync(settings, instance_id=instance)
    except UniverseLoadError as exc:
        print(f"ibkr-workers instrument-sync: {exc}", file=sys.stderr)
        return exc.exit_code
    except StartupFailed as exc:
        print(f"ibkr-workers instrument-sync: {exc}", file=sys.stderr)
        return 3
    except (psycopg.Error, PoolTimeout) as exc:
        print(f"ibkr-workers instrument-sync: {describe_database_error(exc)}", file=sys.stderr)
        return 3
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, app.stop.set)
    log.info("instrument-sync started", client_id=settings.ibkr_client_id, once=bool(args.once),
             ibkr=f"{settings.ibkr_host}:{settings.ibkr_effective_port}",
             interval_s=settings.instrument_sync_interval, instance=app.instance_id)
    try:
        if args.once:
            code, summary = await app.run_once()
            if summary is not None:
                print(summary.describe(), file=sys.stdout if code == 0 else sys.stderr)
            return code
        await app.run_forever()
        return 0
    except StartupFailed as exc:
        print(f"ibkr-workers instrument-sync: {exc}", file=sys.stderr)
        return 3
    except psycopg.errors.UndefinedTable:
        print("ibkr-workers instrument-sync: the database is not migrated: run `ibkr-workers migrate`",
              file=sys.stderr)
        return 2
    except (psycopg.Error, PoolTimeout) as exc:
        print(f"ibkr-workers instrument-sync: {describe_database_error(exc)}", file=sys.stderr)
        return 3
    finally:
        await app.close()
        log.info("instrument-sync stopped")
