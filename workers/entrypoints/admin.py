"""One-shot administrative commands: ``migrate`` and ``topics``."""

from __future__ import annotations

import argparse
import sys

import psycopg
from psycopg_pool import PoolTimeout

from workers.adapters.postgres.failure import describe_database_error
from workers.logs import configure_logging, get_logger
from workers.settings import SettingsError, load_settings

log = get_logger(__name__)


async def run_migrate(args: argparse.Namespace) -> int:
    """Apply the pending PostgreSQL migrations."""
    settings = load_settings()
    from workers.adapters.postgres.migrate import migrate

    configure_logging(settings.log_level, worker="migrate")
    try:
        applied = await migrate(settings.database_dsn)
    except (psycopg.Error, PoolTimeout) as exc:
        print(f"ibkr-workers migrate: {describe_database_error(exc)}", file=sys.stderr)
        return 3
    log.info("migrations applied", versions=applied, count=len(applied))
    return 0


async def run_topics(args: argparse.Namespace) -> int:
    """Create the contract's Kafka topics (idempotent)."""
    settings = load_settings()
    from workers.adapters.kafka.connection import KafkaUnreachable, kafka_client_kwargs
    from workers.adapters.kafka.topics import ensure_topics

    configure_logging(settings.log_level, worker="topics")
    try:
        created = await ensure_topics(
            settings.kafka_bootstrap_servers,
            settings.topics,
            partitions=args.partitions,
            replication_factor=args.replication_factor,
            **kafka_client_kwargs(settings),
        )
    except KafkaUnreachable as exc:
        raise SettingsError(str(exc)) from None
    log.info("topics ensured", created=created, count=len(created))
    return 0
