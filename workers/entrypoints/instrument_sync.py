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
import contextlib
import signal
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg
from aiokafka import AIOKafkaProducer
from psycopg_pool import PoolTimeout

from workers import __version__
from workers.adapters.avro import AvroCodec, RegistryError
from workers.adapters.avro.wire import codec_for
from workers.adapters.http.probes import ProbeServer
from workers.adapters.ibkr.contract_lookup import IbkrContractLookup
from workers.adapters.ibkr.gateway import IbkrGateway
from workers.adapters.ibkr.pacing import PacingLimiter
from workers.adapters.kafka.connection import kafka_client_kwargs
from workers.adapters.kafka.health_publisher import (
    HealthPublisher,
    ProbeSet,
    database_reachable,
    kafka_reachable,
)
from workers.adapters.kafka.instrument_events import InstrumentEventEncoder
from workers.adapters.kafka.publishing import OutboxRelay
from workers.adapters.kafka.records import INSTRUMENT_UPDATED, WORKER_HEALTH
from workers.adapters.postgres.instruments import InstrumentMapper
from workers.adapters.postgres.pool import Pool, close_pool, open_pool
from workers.adapters.postgres.universe import TopicOutbox, UniverseStore
from workers.domain.health import HealthMonitor, HealthThresholds
from workers.entrypoints.instruments import UniverseLoadError, load_universe
from workers.logs import configure_logging, get_logger, instance_id
from workers.metrics import Metrics
from workers.ports.ibkr import ConnectionChanged, IbReport
from workers.service_layer.instrument_sync import InstrumentSync, PassSummary, run_passes
from workers.settings import Settings, load_settings

log = get_logger(__name__)

# Entries resolved at once: enough to keep the pacing budget busy while earlier answers are written.
CONCURRENCY = 8
ONCE_CONNECT_ATTEMPTS = 5
ONCE_RESUME_ATTEMPTS = 3
DRAIN_SECONDS = 15.0
WORKER = "instrument-sync"


class StartupFailed(Exception):
    """A service the worker needs cannot be reached; the message is one line for the operator."""


@dataclass
class InstrumentSyncApp:
    """A wired instrument-sync: :meth:`run_once` or :meth:`run_forever`, then :meth:`close`."""

    settings: Settings
    pool: Pool
    gateway: IbkrGateway
    producer: AIOKafkaProducer
    relay: OutboxRelay
    outbox: TopicOutbox
    store: UniverseStore
    sync: InstrumentSync
    metrics: Metrics
    monitor: HealthMonitor
    health: HealthPublisher
    probes: ProbeServer
    instance_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    closing: bool = False
    version: str = __version__
    _connect_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _was_connected: bool = False

    async def connect(self, attempts: int) -> bool:
        """Connect to IBKR, trying ``attempts`` times with back-off; False when it never worked."""
        delay = 0.5
        for attempt in range(1, attempts + 1):
            if self.stop.is_set():
                return False
            try:
                await self.gateway.connect()
                self.gateway.last_error = None
                self._connected()
                return True
            except (OSError, TimeoutError, ConnectionError) as exc:
                log.warning("ibkr connect failed", attempt=attempt, error=str(exc) or type(exc).__name__)
                self.gateway.last_error = f"{type(exc).__name__}: {exc}"
                self.gateway.disconnect()
            if attempt < attempts:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), delay)
                delay = min(delay * 2, 10.0)
        return False

    async def ensure_connected(self) -> bool:
        """Connected to IBKR (reconnecting, retrying until :attr:`stop`, if needed); False once stopping.

        The pass loop and the connection supervisor both call it; one connects, the other waits for it.
        """
        async with self._connect_lock:
            if self.gateway.connected:
                return True
            if not await self.gateway.connect_with_retry(stop=self.stop):
                return False
            self._connected()
            return True

    def _connected(self) -> None:
        if self._was_connected:
            self.gateway.reconnects += 1
        self._was_connected = True
        self.health.notify()

    def pass_started(self) -> None:
        """A pass started: with IBKR connected, the worker has finished starting."""
        if self.gateway.connected:
            self.monitor.mark_started()
        self.health.notify()

    async def _supervise_connection(self) -> None:
        """Reconnect as soon as the connection drops, also between passes, so the health says the truth."""
        while not self.stop.is_set():
            if not self.gateway.connected and not await self.ensure_connected():
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 0.5)

    @contextlib.asynccontextmanager
    async def operating(self, *, required: bool) -> AsyncIterator[None]:
        """The operations surface around a run: probe server, health reports, IBKR heartbeat.

        ``required``: a probe server that cannot listen is a :class:`StartupFailed` (else a warning). On the
        way out :attr:`stop` is set and the STOPPING report is sent before returning.
        """
        try:
            await self.probes.start()
        except OSError as exc:
            message = f"cannot listen on HEALTH_PORT {self.settings.health_port}: {exc.strerror or exc}"
            if required:
                raise StartupFailed(message) from None
            log.warning("no probe server for this run", error=message)
        settings = self.settings
        health_task = asyncio.create_task(self.health.run(self.stop), name="health")
        heartbeat = asyncio.create_task(
            self.gateway.run_heartbeat(self.stop, settings.ibkr_heartbeat_interval,
                                       settings.ibkr_heartbeat_timeout), name="ibkr-heartbeat")
        try:
            yield
        finally:
            self.stop.set()
            self.monitor.mark_stopping()
            heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await heartbeat
            with contextlib.suppress(Exception):
                await asyncio.wait_for(health_task, 3.0)  # sends STOPPING

    async def run_once(self) -> tuple[int, PassSummary | None]:
        """One pass (resumed after a lost connection up to a few times); (exit code, summary)."""
        async with self.operating(required=False):
            return await self._run_once()

    async def _run_once(self) -> tuple[int, PassSummary | None]:
        async with self.store.exclusive() as locked:
            if not locked:
                raise StartupFailed("another instrument-sync is running a pass on this database")
            if not await self.connect(ONCE_CONNECT_ATTEMPTS):
                raise StartupFailed(
                    f"cannot connect to IBKR at {self.settings.ibkr_host}:{self.settings.ibkr_effective_port}"
                    f" with client id {self.settings.ibkr_client_id}"
                )
            summary = await self.sync.run_pass(self.stop)
            for _ in range(ONCE_RESUME_ATTEMPTS):
                if summary.interrupted is None or self.stop.is_set():
                    break
                if not self.gateway.connected and not await self.connect(ONCE_CONNECT_ATTEMPTS):
                    break
                summary = await self.sync.run_pass(self.stop)
        unpublished = await self.drain()
        code = 0 if summary.ok and unpublished == 0 else 1
        if unpublished:
            log.error("instrument events not yet published; the next run publishes them", pending=unpublished)
        return code, summary

    async def run_forever(self) -> None:
        """Passes until :attr:`stop` is set; events are published as entries commit."""
        async with self.operating(required=True):
            await self._run_forever()

    async def _run_forever(self) -> None:
        relay_task = asyncio.create_task(self.relay.run(self.stop), name="instrument-events-relay")
        try:
            while not self.stop.is_set():
                async with self.store.exclusive() as locked:
                    if locked:
                        # Connect only with the lock: a standby never takes an IBKR connection.
                        supervisor = asyncio.create_task(self._supervise_connection(), name="ibkr-connection")
                        try:
                            await run_passes(self.sync, self.stop, self.settings.instrument_sync_interval,
                                             self.ensure_connected)
                        finally:
                            supervisor.cancel()
                            with contextlib.suppress(asyncio.CancelledError, Exception):
                                await supervisor
                        break
                log.warning("another instrument-sync holds the lock; waiting")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop.wait(), 5.0)
        finally:
            self.stop.set()
            self.monitor.mark_stopping()
            self.health.notify()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(relay_task, 2.0)
            await self.drain()

    async def drain(self) -> int:
        """Publish the pending instrument events; return how many are still pending after trying."""
        try:
            async with asyncio.timeout(DRAIN_SECONDS):
                while await self.relay.publish_pending():
                    pass
        except Exception as exc:
            log.warning("could not publish instrument events", error=f"{type(exc).__name__}: {exc}")
        with contextlib.suppress(Exception):
            return await self.outbox.pending_count()
        return -1

    async def on_reports(self, reports: list[IbReport]) -> None:
        if any(isinstance(r, ConnectionChanged) for r in reports):
            self.health.notify()
        lost = any(isinstance(r, ConnectionChanged) and not r.connected for r in reports)
        if lost and not self.closing:
            log.warning("ibkr connection lost; the pass stops and resumes after reconnecting")

    async def close(self) -> None:
        self.closing = True
        with contextlib.suppress(Exception):
            await self.probes.stop()
        await self.gateway.close()
        with contextlib.suppress(Exception):
            await self.producer.stop()
        await close_pool(self.pool)


async def build_instrument_sync(settings: Settings, *, codec: AvroCodec | None = None,
                                concurrency: int = CONCURRENCY,
                                instance_id: str | None = None) -> InstrumentSyncApp:
    """Build the instrument-sync with real adapters from ``settings``; raises :class:`StartupFailed`."""
    try:
        codec = codec or await codec_for(settings.schema_registry_url, {
            INSTRUMENT_UPDATED: settings.topics.instruments_updated, WORKER_HEALTH: settings.topics.workers_health,
        })
    except RegistryError as exc:
        raise StartupFailed(f"schema registry unreachable: {exc}") from None
    instance = instance_id or uuid.uuid4().hex[:8]
    metrics = Metrics()
    topic = settings.topics.instruments_updated
    try:
        pool = await open_pool(settings.database_dsn, max_size=max(settings.database_pool_size,
                                                                   concurrency + 2),
                               name="ibkr-workers-instrument-sync")
    except (PoolTimeout, psycopg.OperationalError) as exc:
        raise StartupFailed(f"cannot reach PostgreSQL: {exc}") from None
    kafka_kwargs: dict[str, Any] = {"bootstrap_servers": settings.kafka_bootstrap_servers,
                                    **kafka_client_kwargs(settings)}
    producer = AIOKafkaProducer(enable_idempotence=True, acks="all", linger_ms=5, **kafka_kwargs)
    try:
        await producer.start()
    except Exception as exc:
        await close_pool(pool)
        raise StartupFailed(f"cannot reach Kafka at {settings.kafka_bootstrap_servers}: {exc}") from None
    limiter = PacingLimiter(settings.ibkr_pacing_per_second)
    gateway = IbkrGateway(settings.ibkr_host, settings.ibkr_effective_port, settings.ibkr_client_id,
                          limiter=limiter, connect_timeout=settings.ibkr_connect_timeout, readonly=True)
    metrics.watch_ibkr(gateway)
    metrics.watch_pacing(limiter)
    outbox = TopicOutbox(pool, topic)
    relay = OutboxRelay(outbox, producer)
    store = UniverseStore(pool)
    sync = InstrumentSync(
        store=store, mapper=InstrumentMapper(pool), lookup=IbkrContractLookup(gateway),
        events=InstrumentEventEncoder(codec, topic), concurrency=concurrency,
        resume_within=timedelta(seconds=settings.instrument_sync_interval), on_change=relay.notify,
        metrics=metrics,
    )
    monitor = HealthMonitor(HealthThresholds(down_after=settings.health_unhealthy_after,
                                               max_lag=settings.health_max_lag))
    facts = ProbeSet(
        ibkr_connected=lambda: gateway.connected,
        kafka_connected=lambda: kafka_reachable(producer),
        database_connected=lambda: database_reachable(pool),
        consumer_lag=lambda: None,  # it consumes nothing
        orders_in_flight=lambda: 0,
        last_error=lambda: gateway.last_error or sync.counters.last_error,
        ibkr_rtt_ms=lambda: gateway.rtt_ms,
        paused=lambda: False,
        pacing_limited=lambda: limiter.queued > 0,
    )
    health = HealthPublisher(producer, codec, settings.topics.workers_health, worker=WORKER,
                             instance_id=instance, version=__version__, monitor=monitor,
                             facts=facts.collect, interval=settings.health_interval, metrics=metrics)
    probes = ProbeServer(monitor=monitor, metrics=metrics, port=settings.health_port,
                         ibkr_connected=lambda: gateway.connected)
    app = InstrumentSyncApp(settings=settings, pool=pool, gateway=gateway, producer=producer, relay=relay,
                            outbox=outbox, store=store, sync=sync, metrics=metrics, monitor=monitor,
                            health=health, probes=probes, instance_id=instance)
    sync.on_pass_started = app.pass_started
    gateway.listen(app.on_reports)
    return app


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
    except (psycopg.OperationalError, PoolTimeout) as exc:
        print(f"ibkr-workers instrument-sync: PostgreSQL failed: {str(exc).splitlines()[0] if str(exc) else exc!r}",
              file=sys.stderr)
        return 3
    finally:
        await app.close()
        log.info("instrument-sync stopped")
