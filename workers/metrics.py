"""Prometheus metrics of both workers, in a registry of their own.

Build one :class:`Metrics` per process and call its methods where things happen; ``/metrics`` serves
:attr:`Metrics.registry`. Each :class:`Metrics` has its own ``CollectorRegistry`` (never the global
default), so tests can build as many as they like. Every name starts with ``ibkr_workers_``.

Counters the adapters already keep (the gateway's reconnects and errors by code, the pacing limiter's
waits) are read from them at scrape time through :meth:`Metrics.watch_ibkr` and
:meth:`Metrics.watch_pacing`, so nothing counts them twice.

Label values must come from small fixed sets: a rejection's :class:`~workers.domain.guards.RejectReason`
(never its free-text detail), an IBKR error code, a health status.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from workers.domain.health import HealthAssessment, HealthStatus

PREFIX = "ibkr_workers_"

# Seconds from consuming an order to handing it to IBKR: milliseconds normally, seconds under pacing.
PLACE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# Seconds from an execution at IBKR to its fill on Kafka: includes the wait for the commission report.
FILL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 300.0)
# Seconds one instrument-sync pass takes.
SYNC_PASS_BUCKETS = (1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)


class IbkrStats(Protocol):
    """What :meth:`Metrics.watch_ibkr` reads (``TwsConnection`` has it)."""

    @property
    def connected(self) -> bool: ...

    @property
    def reconnects(self) -> int: ...

    @property
    def errors_by_code(self) -> Mapping[int, int]: ...

    @property
    def rtt_ms(self) -> float | None: ...

    @property
    def heartbeat_failures(self) -> int: ...


class PacingStats(Protocol):
    """What :meth:`Metrics.watch_pacing` reads (``PacingLimiter`` has it)."""

    @property
    def waits(self) -> int: ...

    @property
    def waited_seconds(self) -> float: ...

    @property
    def queued(self) -> int: ...


def seconds_since(moment: datetime, now: datetime | None = None) -> float:
    """Seconds from ``moment`` (timezone-aware) to ``now`` (default: the current UTC time), at least 0.

    Clamped because the two clocks may be different machines' (IBKR's execution time, ours).
    """
    current = now if now is not None else datetime.now(UTC)
    return max(0.0, (current - moment).total_seconds())


class _AdapterCounters(Collector):
    """Counters kept by the adapters, read when Prometheus scrapes."""

    def __init__(self) -> None:
        self.ibkr: IbkrStats | None = None
        self.pacing: PacingStats | None = None

    def collect(self) -> Iterator[Metric]:
        ibkr, pacing = self.ibkr, self.pacing
        yield CounterMetricFamily(
            PREFIX + "ibkr_reconnects", "Times the IBKR connection was re-established after it dropped.",
            value=ibkr.reconnects if ibkr is not None else 0,
        )
        errors = CounterMetricFamily(
            PREFIX + "ibkr_errors", "Errors and notices received from IBKR, by IBKR error code.",
            labels=["code"],
        )
        for code, count in sorted((ibkr.errors_by_code if ibkr is not None else {}).items()):
            errors.add_metric([str(code)], count)
        yield errors
        rtt = ibkr.rtt_ms if ibkr is not None else None
        yield GaugeMetricFamily(
            PREFIX + "ibkr_heartbeat_rtt_seconds", "Round trip of the last reqCurrentTime heartbeat.",
            value=rtt / 1000 if rtt is not None else float("nan"),
        )
        yield CounterMetricFamily(
            PREFIX + "ibkr_heartbeat_failures", "Heartbeats IBKR did not answer in time (connection dropped).",
            value=ibkr.heartbeat_failures if ibkr is not None else 0,
        )
        yield CounterMetricFamily(
            PREFIX + "pacing_waits", "IBKR requests that had to wait for the pacing limiter.",
            value=pacing.waits if pacing is not None else 0,
        )
        yield CounterMetricFamily(
            PREFIX + "pacing_wait_seconds", "Seconds IBKR requests spent waiting for the pacing limiter.",
            value=pacing.waited_seconds if pacing is not None else 0.0,
        )
        yield GaugeMetricFamily(
            PREFIX + "pacing_queued", "IBKR requests waiting for the pacing limiter now.",
            value=pacing.queued if pacing is not None else 0,
        )


class Metrics:
    """Every metric of the workers, with one method per thing that happens."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        # order-consumer
        self._consumed = Counter(PREFIX + "orders_consumed", "Order requests consumed from Kafka.",
                                 registry=r)
        self._placed = Counter(PREFIX + "orders_placed", "Orders handed to IBKR.", registry=r)
        self._rejected = Counter(PREFIX + "orders_rejected", "Orders rejected, by reason.", ["reason"],
                                 registry=r)
        self._cancelled = Counter(PREFIX + "orders_cancelled", "Orders IBKR confirmed cancelled.",
                                  registry=r)
        self._dead_letters = Counter(PREFIX + "dead_letters", "Records set aside on the dead-letter topic, by "
                                     "stage (size, decode, validate, convert, route, handle; decompress and read for a "
                                     "record batch that could not be read).", ["stage"], registry=r)
        self._consume_retries = Counter(
            PREFIX + "consume_retries", "Failed attempts at handling consumed records, by kind of error "
            "(infrastructure: retried while it lasts; record, unknown: narrowed down to a dead letter).",
            ["kind"], registry=r)
        self._fills = Counter(PREFIX + "fills", "Fills published to Kafka.", registry=r)
        self._stage = Histogram(
            PREFIX + "order_stage_seconds",
            "Time an order spends in each stage: queued (Kafka timestamp to handler), record (ledger "
            "write of its batch), waiting (recorded to reserved), send (reserved to placeOrder written).",
            ["stage"], registry=r,
            buckets=(0.0005, 0.001, 0.002, 0.004, 0.006, 0.008, 0.01, 0.015, 0.02, 0.025, 0.035, 0.05, 0.1, 0.25,
                     0.5, 1.0, 2.5, 5.0),
        )
        self._order_status_transitions = Counter(
            PREFIX + "order_status_transitions", "Order state changes written to the ledger.", ["from", "to"],
            registry=r)
        self._transitions = Counter(PREFIX + "health_status_transitions",
                                    "Changes of the worker's health status.", ["from", "to"], registry=r)
        self._status = Gauge(PREFIX + "health_status", "1 for the worker's current health status.",
                             ["status"], registry=r)
        self._trading_state = Gauge(PREFIX + "trading_state",
                                    "1 for the deployment's trading state as this worker follows it "
                                    "(ACTIVE, REDUCING, HALTED).", ["state"], registry=r)
        self._trading_state_changes = Counter(PREFIX + "trading_state_changes",
                                              "Changes of the trading state this worker followed.",
                                              ["state"], registry=r)
        self._lag = Gauge(PREFIX + "consumer_lag",
                          "Records of the assigned partitions not committed yet (NaN when unknown).",
                          registry=r)
        self._in_flight = Gauge(PREFIX + "orders_in_flight", "Orders placed at IBKR and not final yet.",
                                registry=r)
        self._ibkr_connected = Gauge(PREFIX + "ibkr_connected", "1 when the IBKR connection is up.",
                                     registry=r)
        self._consume_to_place = Histogram(
            PREFIX + "consume_to_place_seconds", "Seconds from consuming an order to placing it at IBKR.",
            buckets=PLACE_BUCKETS, registry=r)
        self._execution_to_fill = Histogram(
            PREFIX + "execution_to_fill_published_seconds",
            "Seconds from an execution at IBKR to its fill published on Kafka.",
            buckets=FILL_BUCKETS, registry=r)
        # instrument-sync
        self._synced = Counter(PREFIX + "instruments_synced", "Instrument entries synced, by change.",
                               ["change"], registry=r)
        self._sync_failed = Counter(PREFIX + "instruments_sync_failed",
                                    "Instrument entries that could not be synced.", registry=r)
        self._sync_pass = Histogram(PREFIX + "instrument_sync_pass_seconds",
                                    "Seconds one instrument-sync pass took.", buckets=SYNC_PASS_BUCKETS,
                                    registry=r)
        self._sync_last_success = Gauge(PREFIX + "instrument_sync_last_success_timestamp_seconds",
                                        "Unix time the last complete instrument-sync pass ended.",
                                        registry=r)
        self._adapters = _AdapterCounters()
        r.register(self._adapters)
        for status in HealthStatus:
            self._status.labels(status.value).set(1.0 if status is HealthStatus.STARTING else 0.0)
        self._lag.set(math.nan)

    # -- order-consumer ---------------------------------------------------------------------------

    def order_consumed(self) -> None:
        """An ``OrderRequested`` was consumed (before any check)."""
        self._consumed.inc()

    def order_placed(self, latency: float | None = None) -> None:
        """An order was handed to IBKR; ``latency``: seconds since it was consumed, when known."""
        self._placed.inc()
        if latency is not None:
            self._consume_to_place.observe(max(0.0, latency))

    def order_stage(self, stage: str, seconds: float) -> None:
        """Time one order spent in ``stage`` (queued, record, waiting, send)."""
        self._stage.labels(stage).observe(max(0.0, seconds))

    def order_transition(self, previous: str, current: str) -> None:
        self._order_status_transitions.labels(previous, current).inc()

    def order_rejected(self, reason: str) -> None:
        """An order was rejected; ``reason`` is a ``RejectReason`` (or another short fixed code)."""
        self._rejected.labels(str(reason)).inc()

    def order_cancelled(self) -> None:
        """IBKR confirmed an order cancelled."""
        self._cancelled.inc()

    def dead_lettered(self, stage: str) -> None:
        """A consumed record went to the dead-letter topic; ``stage`` says where it failed."""
        self._dead_letters.labels(stage).inc()

    def consume_retried(self, kind: str) -> None:
        """Handling consumed records failed once; ``kind`` is the error's kind."""
        self._consume_retries.labels(kind).inc()

    def fill_published(self, latency: float | None = None) -> None:
        """A fill reached ``fills.executed``; ``latency``: seconds since the execution (see
        :func:`seconds_since`)."""
        self._fills.inc()
        if latency is not None:
            self._execution_to_fill.observe(max(0.0, latency))

    def set_trading_state(self, state: str, states: tuple[str, ...], *, changed: bool) -> None:
        """The trading state in force (one of ``states``); ``changed``: a change was followed."""
        for each in states:
            self._trading_state.labels(each).set(1.0 if each == state else 0.0)
        if changed:
            self._trading_state_changes.labels(state).inc()

    def set_orders_in_flight(self, count: int) -> None:
        self._in_flight.set(count)

    def set_consumer_lag(self, lag: int | None) -> None:
        """The consumer lag in records; None (unknown, or nothing assigned) shows as NaN."""
        self._lag.set(math.nan if lag is None else lag)

    # -- health -----------------------------------------------------------------------------------

    def observe_health(self, assessment: HealthAssessment) -> None:
        """Record an assessment: status gauge, transitions, lag, orders in flight, IBKR connection.

        Call it with every assessment (the health publisher does); a transition is counted only when
        the status changed from a previous one.
        """
        status = assessment.status
        if assessment.previous is not None and assessment.changed:
            self._transitions.labels(assessment.previous.value, status.value).inc()
        for each in HealthStatus:
            self._status.labels(each.value).set(1.0 if each is status else 0.0)
        facts = assessment.facts
        self.set_consumer_lag(facts.consumer_lag)
        self.set_orders_in_flight(facts.orders_in_flight)
        if self._adapters.ibkr is None:  # a watched gateway answers live instead
            self._ibkr_connected.set(1.0 if facts.ibkr_connected else 0.0)

    # -- IBKR adapter counters --------------------------------------------------------------------

    def watch_ibkr(self, gateway: IbkrStats) -> None:
        """Expose ``gateway``'s reconnects, errors by code and connection state, read at scrape time."""
        self._adapters.ibkr = gateway
        self._ibkr_connected.set_function(lambda: 1.0 if gateway.connected else 0.0)

    def watch_pacing(self, limiter: PacingStats) -> None:
        """Expose ``limiter``'s waits, seconds waited and queue length, read at scrape time."""
        self._adapters.pacing = limiter

    # -- instrument-sync --------------------------------------------------------------------------

    def instrument_synced(self, change: str) -> None:
        """An instrument entry was synced; ``change`` is CREATED, UPDATED, DEACTIVATED or UNCHANGED."""
        self._synced.labels(str(change)).inc()

    def instrument_sync_failed(self) -> None:
        """An instrument entry could not be synced (IBKR gave no contract, or an error)."""
        self._sync_failed.inc()

    def instrument_sync_pass(self, seconds: float, *, completed: bool = True) -> None:
        """A sync pass took ``seconds``; ``completed`` passes also set the last-success time."""
        self._sync_pass.observe(max(0.0, seconds))
        if completed:
            self._sync_last_success.set_to_current_time()
