"""A wired instrument-sync and how it runs: one pass or passes forever, IBKR's connection supervised,
events drained before it stops."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer

from workers import __version__
from workers.adapters.http.probes import ProbeServer
from workers.adapters.ibkr.tws_connection import TwsConnection
from workers.adapters.kafka.health_publisher import HealthPublisher
from workers.adapters.kafka.publishing import OutboxRelay
from workers.adapters.postgres.pool import Pool, close_pool
from workers.adapters.postgres.universe import TopicOutbox, UniverseStore
from workers.domain.health import HealthMonitor
from workers.logs import get_logger
from workers.metrics import Metrics
from workers.ports.ibkr import ConnectionChanged, IbReport
from workers.service_layer.instrument_sync import InstrumentSync, run_passes
from workers.service_layer.sync_records import PassSummary
from workers.settings import Settings

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
    gateway: TwsConnection
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


