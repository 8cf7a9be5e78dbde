"""``ibkr-workers order-consumer``: run the order-consumer until SIGTERM / SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import sys

import psycopg
from psycopg_pool import PoolTimeout

from workers.adapters.avro import RegistryError, SchemaIncompatibleError
from workers.adapters.kafka.connection import KafkaUnreachable
from workers.adapters.postgres.failure import describe_database_error
from workers.domain.trading_mode import ModeMismatch
from workers.logs import configure_logging, get_logger, instance_id
from workers.settings import SettingsError, load_settings

log = get_logger(__name__)


async def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    instance = instance_id()
    configure_logging(settings.log_level, worker="order-consumer", instance=instance)
    from workers.bootstrap import build_order_consumer

    try:
        app = await build_order_consumer(settings, instance_id=instance)
    except ModeMismatch as exc:
        raise SettingsError(f"refusing to trade: {exc}") from None
    except SchemaIncompatibleError as exc:  # a schema change the subject's rule refuses: fix the schema
        raise SettingsError(str(exc)) from None
    except RegistryError as exc:
        raise SettingsError(f"schema registry unreachable: {exc}") from None
    except psycopg.errors.UndefinedTable:
        # The trading state is read before anything is consumed: a database not migrated stops here.
        raise SettingsError("the database has no trading_state table: run `ibkr-workers migrate`") from None
    except (psycopg.Error, PoolTimeout) as exc:
        print(f"ibkr-workers order-consumer: {describe_database_error(exc)}", file=sys.stderr)
        return 3
    except KafkaUnreachable as exc:
        raise SettingsError(str(exc)) from None
    # Everything built so far lives as long as the process: keep it out of the collector's scans, and
    # collect the young generation less often, so collection pauses do not show in order latency.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, app.stop.set)
    log.info("order-consumer started", client_id=settings.ibkr_client_id,
             ibkr=f"{settings.ibkr_host}:{settings.ibkr_effective_port}", readonly=settings.ibkr_readonly)
    await app.run()
    log.info("order-consumer stopped")
    return 0
