"""``WorkerHealth`` on ``workers.health``: every ``interval`` seconds, and at once on a status change.

The publisher samples the facts (:class:`ProbeSet` gathers them from the adapters) every
``sample_interval`` seconds, or sooner when :meth:`HealthPublisher.notify` is called, lets the
:class:`~workers.domain.health.HealthMonitor` compute the status, and produces a record when the
status differs from the last one published or when ``interval`` seconds have passed since then. A failed
send is logged and tried again on the next sample, so a status change is never silently lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from aiokafka.protocol.metadata import MetadataRequest

from workers.adapters.avro import AvroCodec
from workers.adapters.kafka.records import WORKER_HEALTH
from workers.adapters.postgres.pool import Pool
from workers.domain.health import HealthAssessment, HealthFacts, HealthMonitor, HealthStatus
from workers.logs import get_logger
from workers.metrics import Metrics

log = get_logger(__name__)

T = TypeVar("T")

Probe = Callable[[], T | Awaitable[T]]
"""A fact source: a plain function or a coroutine function."""

FactsSource = Callable[[], Awaitable[HealthFacts]]

MAX_ERROR_LENGTH = 500


class RecordProducer(Protocol):
    """The part of ``AIOKafkaProducer`` the publisher uses."""

    async def send_and_wait(self, topic: str, value: bytes | None = None,
                            key: bytes | None = None) -> Any: ...


def one_line(text: str | None, limit: int = MAX_ERROR_LENGTH) -> str | None:
    """``text`` as a single line of at most ``limit`` characters (None stays None)."""
    if text is None:
        return None
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


async def _call(probe: Probe[T], within: float) -> T:
    result = probe()
    if inspect.isawaitable(result):
        return await asyncio.wait_for(result, within)
    return result


@dataclass
class ProbeSet:
    """Where each fact comes from: plain or async callables, each bounded by ``timeout`` seconds.

    A probe that raises or times out reads as "down" (False) for the three dependencies, as unknown
    (None) for the lag, and keeps its default otherwise; it never stops the health report.
    """

    ibkr_connected: Probe[bool]
    kafka_connected: Probe[bool]
    database_connected: Probe[bool]
    consumer_lag: Probe[int | None] = lambda: None
    orders_in_flight: Probe[int] = lambda: 0
    last_error: Probe[str | None] = lambda: None
    paused: Probe[bool] = lambda: False
    pacing_limited: Probe[bool] = lambda: False
    ibkr_rtt_ms: Probe[float | None] = lambda: None
    trading_state: Probe[str | None] = lambda: None
    timeout: float = 2.0

    async def _read(self, name: str, probe: Probe[T], fallback: T) -> T:
        try:
            return await _call(probe, self.timeout)
        except Exception as exc:  # a probe failing is a fact about the probed system, not our failure
            log.debug("health probe failed", probe=name, error=f"{type(exc).__name__}: {exc}")
            return fallback

    async def collect(self) -> HealthFacts:
        """Run every probe (concurrently) and return the snapshot."""
        def read(name: str, probe: Probe[T], fallback: T) -> asyncio.Task[T]:
            return asyncio.ensure_future(self._read(name, probe, fallback))

        ibkr = read("ibkr_connected", self.ibkr_connected, False)
        kafka = read("kafka_connected", self.kafka_connected, False)
        database = read("database_connected", self.database_connected, False)
        lag = read("consumer_lag", self.consumer_lag, None)
        in_flight = read("orders_in_flight", self.orders_in_flight, 0)
        error = read("last_error", self.last_error, None)
        paused = read("paused", self.paused, False)
        pacing = read("pacing_limited", self.pacing_limited, False)
        rtt = read("ibkr_rtt_ms", self.ibkr_rtt_ms, None)
        trading = read("trading_state", self.trading_state, None)
        return HealthFacts(
            ibkr_connected=bool(await ibkr), kafka_connected=bool(await kafka),
            database_connected=bool(await database), consumer_lag=await lag,
            orders_in_flight=int(await in_flight), last_error=one_line(await error),
            paused=bool(await paused), pacing_limited=bool(await pacing), ibkr_rtt_ms=await rtt,
            trading_state=await trading,
        )


async def database_reachable(pool: Pool, within: float = 2.0) -> bool:
    """True when PostgreSQL answers ``SELECT 1`` through ``pool`` within ``within`` seconds."""
    try:
        async with asyncio.timeout(within), pool.connection(timeout=within) as conn:
            await conn.execute("SELECT 1")
    except Exception:
        return False
    return True


async def kafka_reachable(client: Any, within: float = 2.0) -> bool:
    """True when a broker answers a metadata request within ``within`` seconds.

    ``client`` is a started ``AIOKafkaProducer`` or ``AIOKafkaConsumer`` (its ``.client``) or an
    ``AIOKafkaClient``; the request goes over the connections it already holds. It asks for no topic, so
    the answer lists the brokers only: asked for every topic, a cluster with a thousand topics answers
    with a response that takes tens of milliseconds to decode, on the event loop that places orders.
    """
    kafka_client = getattr(client, "client", None) or getattr(client, "_client", None) or client
    try:
        async with asyncio.timeout(within):
            node_id = kafka_client.get_random_node()
            if node_id is None:
                return False
            response = await kafka_client.send(node_id, MetadataRequest([], allow_auto_topic_creation=False))
    except Exception:
        return False
    return bool(response.brokers)


def health_record(worker: str, instance_id: str, version: str, assessment: HealthAssessment,
                  emitted_at: datetime) -> dict[str, Any]:
    """The ``WorkerHealth`` record of ``assessment``."""
    facts = assessment.facts
    return {
        "worker": worker,
        "instance_id": instance_id,
        "status": assessment.status.value,
        "ibkr_connected": facts.ibkr_connected,
        "kafka_connected": facts.kafka_connected,
        "database_connected": facts.database_connected,
        "consumer_lag": facts.consumer_lag,
        "orders_in_flight": facts.orders_in_flight,
        "last_error": one_line(facts.last_error),
        "version": version,
        "emitted_at": emitted_at,
        "ibkr_rtt_ms": facts.ibkr_rtt_ms,
        "trading_state": facts.trading_state,
    }


class HealthPublisher:
    """Samples the facts, keeps the monitor's status current, and produces ``WorkerHealth`` records."""

    def __init__(self, producer: RecordProducer, codec: AvroCodec, topic: str, *, worker: str,
                 instance_id: str, version: str, monitor: HealthMonitor, facts: FactsSource,
                 interval: float, sample_interval: float = 1.0, send_timeout: float = 5.0,
                 metrics: Metrics | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        if interval <= 0 or sample_interval <= 0:
            raise ValueError("interval and sample_interval must be > 0")
        self.producer = producer
        self.codec = codec
        self.topic = topic
        self.worker = worker
        self.instance_id = instance_id
        self.version = version
        self.monitor = monitor
        self.facts = facts
        self.interval = interval
        self.sample_interval = min(sample_interval, interval)
        self.send_timeout = send_timeout
        self.metrics = metrics
        self.clock = clock
        self.wall_clock = wall_clock
        self.published = 0
        self.last_published_status: HealthStatus | None = None
        self.last_published_trading_state: str | None = None
        self._last_published_at: float | None = None
        self._wake = asyncio.Event()

    @property
    def key(self) -> str:
        """The record key: ``<worker>:<instance_id>``."""
        return f"{self.worker}:{self.instance_id}"

    def notify(self) -> None:
        """Sample again now (e.g. the IBKR connection changed, or :meth:`HealthMonitor.mark_started`)."""
        self._wake.set()

    async def check(self, facts: HealthFacts | None = None) -> HealthAssessment:
        """Sample the facts (unless given) and assess; publish if the status changed or a report is due."""
        assessment = self.monitor.observe(facts if facts is not None else await self.facts())
        if self.metrics is not None:
            self.metrics.observe_health(assessment)
        if assessment.changed:
            log.info("health status changed", status=assessment.status.value,
                     previous=assessment.previous.value if assessment.previous else None,
                     reason=assessment.reason)
        due = (self._last_published_at is None
               or self.clock() - self._last_published_at >= self.interval)
        # A trading state change goes out at once, like a status change: ops watch this topic for both.
        if (due or assessment.status != self.last_published_status
                or assessment.facts.trading_state != self.last_published_trading_state):
            await self.publish(assessment)
        return assessment

    async def publish(self, assessment: HealthAssessment) -> bool:
        """Produce ``assessment`` now; False (logged) when Kafka did not take it in time."""
        value = self.codec.encode(
            WORKER_HEALTH,
            health_record(self.worker, self.instance_id, self.version, assessment, self.wall_clock()),
        )
        try:
            await asyncio.wait_for(
                self.producer.send_and_wait(self.topic, value=value, key=self.key.encode()),
                self.send_timeout,
            )
        except Exception as exc:
            log.warning("health report not published", status=assessment.status.value,
                        error=f"{type(exc).__name__}: {exc}")
            return False
        self.published += 1
        self.last_published_status = assessment.status
        self.last_published_trading_state = assessment.facts.trading_state
        self._last_published_at = self.clock()
        return True

    async def run(self, stop: asyncio.Event) -> None:
        """Report until ``stop`` is set, then publish STOPPING once and return.

        On shutdown, await this task (with a timeout) rather than cancelling it, so the STOPPING record
        goes out before the producer closes.
        """
        while not stop.is_set():
            self._wake.clear()
            try:
                await self.check()
            except Exception:
                log.exception("health check failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(_either(stop, self._wake), self.sample_interval)
        await self.publish_stopping()

    async def publish_stopping(self, sample_timeout: float = 1.0) -> HealthAssessment:
        """Mark the monitor STOPPING and publish that at once (only once).

        The facts are sampled once more if that takes less than ``sample_timeout`` seconds; otherwise the
        last ones are reported, so shutting down never waits on a slow probe.
        """
        self.monitor.mark_stopping()
        last = self.monitor.last
        if self.last_published_status is HealthStatus.STOPPING and last is not None:
            return last
        facts: HealthFacts | None = None
        try:
            facts = await asyncio.wait_for(self.facts(), sample_timeout)
        except Exception:
            if last is None:
                facts = HealthFacts(ibkr_connected=False, kafka_connected=False, database_connected=False)
            else:
                facts = last.facts
        return await self.check(facts)


async def _either(first: asyncio.Event, second: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(first.wait()), asyncio.ensure_future(second.wait())]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
