"""A worker's health, derived from facts rather than set by hand.

The rules, in order of precedence:

* ``STOPPING`` once the worker began to shut down; ``STARTING`` until it said it finished starting
  (connected, recovered, reconciled), unless a dependency stays down too long meanwhile.
* ``UNHEALTHY`` when IBKR, Kafka or PostgreSQL has been unreachable for longer than
  :attr:`HealthThresholds.down_after`.
* ``DEGRADED`` when a dependency is down for less than that (reconnecting), the consumer is paused,
  the consumer lag exceeds :attr:`HealthThresholds.max_lag`, or outgoing IBKR requests wait for pacing.
* ``HEALTHY`` otherwise.

Everything here is pure: :class:`HealthMonitor` takes its clock as a parameter, so tests drive time.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

Clock = Callable[[], float]
"""Seconds on a monotonic scale (``time.monotonic`` in production)."""


class HealthStatus(enum.StrEnum):
    """The contract's ``HealthStatus`` symbols."""

    STARTING = "STARTING"
    HEALTHY = "HEALTHY"
    DEGRADED = "DEGRADED"
    UNHEALTHY = "UNHEALTHY"
    STOPPING = "STOPPING"


class Dependency(enum.StrEnum):
    """An outside system a worker cannot work without."""

    IBKR = "ibkr"
    KAFKA = "kafka"
    DATABASE = "database"


class Phase(enum.StrEnum):
    """Where the worker is in its life cycle."""

    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"


@dataclass(frozen=True)
class HealthFacts:
    """One snapshot of what the probes found; the status is computed from it."""

    ibkr_connected: bool
    kafka_connected: bool
    database_connected: bool
    consumer_lag: int | None = None
    orders_in_flight: int = 0
    last_error: str | None = None
    paused: bool = False
    pacing_limited: bool = False
    ibkr_rtt_ms: float | None = None
    trading_state: str | None = None
    """The deployment's trading state as the worker follows it; None for a worker that places no order."""

    def reachable(self, dependency: Dependency) -> bool:
        """Whether ``dependency`` answered in this snapshot."""
        if dependency is Dependency.IBKR:
            return self.ibkr_connected
        if dependency is Dependency.KAFKA:
            return self.kafka_connected
        return self.database_connected


@dataclass(frozen=True)
class ConsumeCounts:
    """What a consume loop set aside and retried since the worker started (shown by ``/healthz``)."""

    dead_letters: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    """Records put on the dead-letter topic, by the stage that refused them (decode, validate, handle …)."""
    retries: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    """Failed attempts at consumed records, by kind of error (infrastructure, record, unknown)."""


@dataclass(frozen=True)
class HealthThresholds:
    """When a problem stops being a blip."""

    down_after: float = 60.0
    """Seconds a dependency may stay unreachable (DEGRADED) before the worker is UNHEALTHY."""
    max_lag: int = 1000
    """Consumer lag (records) above which the worker is DEGRADED."""

    def __post_init__(self) -> None:
        if self.down_after < 0:
            raise ValueError("down_after must be >= 0")
        if self.max_lag < 0:
            raise ValueError("max_lag must be >= 0")


@dataclass(frozen=True)
class HealthAssessment:
    """The status computed from one snapshot, why, and what it was before."""

    status: HealthStatus
    reasons: tuple[str, ...]
    facts: HealthFacts
    down_for: Mapping[Dependency, float] = field(default_factory=lambda: MappingProxyType({}))
    """Seconds each unreachable dependency has been down (reachable ones are absent)."""
    previous: HealthStatus | None = None
    """The status of the assessment before this one; None for the first."""

    @property
    def changed(self) -> bool:
        """True when the status differs from the previous one (and for the first assessment)."""
        return self.status != self.previous

    @property
    def reason(self) -> str:
        """The reasons as one line ("" when healthy)."""
        return "; ".join(self.reasons)


def assess(facts: HealthFacts, phase: Phase, down_for: Mapping[Dependency, float],
           thresholds: HealthThresholds, previous: HealthStatus | None = None) -> HealthAssessment:
    """The status for ``facts`` in ``phase``, given how long each dependency has been down."""
    reasons: list[str] = []
    frozen = MappingProxyType(dict(down_for))

    def result(status: HealthStatus) -> HealthAssessment:
        return HealthAssessment(status, tuple(reasons), facts, frozen, previous)

    if phase is Phase.STOPPING:
        reasons.append("stopping")
        return result(HealthStatus.STOPPING)

    too_long = [dep for dep, seconds in down_for.items() if seconds >= thresholds.down_after]
    for dep in Dependency:
        if dep in too_long:
            reasons.append(f"{dep} down for {down_for[dep]:.0f}s")
    if too_long:
        return result(HealthStatus.UNHEALTHY)
    if phase is Phase.STARTING:
        reasons.append("starting")
        return result(HealthStatus.STARTING)

    for dep in Dependency:
        if dep in down_for:
            reasons.append(f"{dep} unreachable for {down_for[dep]:.0f}s (reconnecting)")
    if facts.paused:
        reasons.append("consumer paused")
    if facts.consumer_lag is not None and facts.consumer_lag > thresholds.max_lag:
        reasons.append(f"consumer lag {facts.consumer_lag} > {thresholds.max_lag}")
    if facts.pacing_limited:
        reasons.append("IBKR requests wait for pacing")
    return result(HealthStatus.DEGRADED if reasons else HealthStatus.HEALTHY)


class HealthMonitor:
    """Tracks since when each dependency is down, and turns snapshots into :class:`HealthAssessment`."""

    def __init__(self, thresholds: HealthThresholds | None = None, *, clock: Clock = time.monotonic) -> None:
        self.thresholds = thresholds if thresholds is not None else HealthThresholds()
        self.clock = clock
        self._phase = Phase.STARTING
        self._down_since: dict[Dependency, float] = {}
        self._last: HealthAssessment | None = None

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def last(self) -> HealthAssessment | None:
        """The most recent assessment; None before the first :meth:`observe`."""
        return self._last

    @property
    def status(self) -> HealthStatus:
        """The most recent status (STARTING before the first observation, unless stopping)."""
        if self._last is None:
            return HealthStatus.STOPPING if self._phase is Phase.STOPPING else HealthStatus.STARTING
        return self._last.status

    def mark_started(self) -> None:
        """The worker finished starting; from now on the status follows the facts.

        Does nothing once stopping: a worker never goes back from STOPPING.
        """
        if self._phase is Phase.STARTING:
            self._phase = Phase.RUNNING

    def mark_stopping(self) -> None:
        """The worker began to shut down; every later assessment is STOPPING."""
        self._phase = Phase.STOPPING

    def down_since(self, dependency: Dependency) -> float | None:
        """The clock reading when ``dependency`` was first seen down, or None if it is up."""
        return self._down_since.get(dependency)

    def observe(self, facts: HealthFacts) -> HealthAssessment:
        """Record ``facts``, compute the status and remember it; see :attr:`HealthAssessment.changed`."""
        now = self.clock()
        for dep in Dependency:
            if facts.reachable(dep):
                self._down_since.pop(dep, None)
            else:
                self._down_since.setdefault(dep, now)
        down_for = {dep: max(0.0, now - since) for dep, since in self._down_since.items()}
        previous = self._last.status if self._last is not None else None
        self._last = assess(facts, self._phase, down_for, self.thresholds, previous)
        return self._last


@dataclass(frozen=True)
class Readiness:
    """Whether the worker may take orders now, and if not, why."""

    ready: bool
    reason: str


def readiness(assessment: HealthAssessment | None, *, ibkr_connected: bool | None = None) -> Readiness:
    """Ready when HEALTHY or DEGRADED and IBKR is connected.

    ``ibkr_connected`` is a live reading when the caller has one; otherwise the assessment's is used.
    """
    if assessment is None:
        return Readiness(False, "no health assessment yet")
    if assessment.status not in (HealthStatus.HEALTHY, HealthStatus.DEGRADED):
        detail = f": {assessment.reason}" if assessment.reason else ""
        return Readiness(False, f"status {assessment.status}{detail}")
    connected = assessment.facts.ibkr_connected if ibkr_connected is None else ibkr_connected
    if not connected:
        return Readiness(False, "IBKR not connected")
    return Readiness(True, f"status {assessment.status}")


class ProgressWatch:
    """Notices a consume loop that stopped moving while records wait for it.

    Call :meth:`progress` whenever the loop moves (or give ``counter``, e.g. ``lambda: loop.consumed``,
    and it is read at each :meth:`check`). The loop is *stalled* when records have been waiting
    (``backlog() > 0``) for more than ``stall_after`` seconds with no progress in that time. An idle loop
    with nothing to read is never stalled.
    """

    def __init__(self, backlog: Callable[[], int | None], *, stall_after: float = 120.0,
                 counter: Callable[[], int] | None = None, clock: Clock = time.monotonic) -> None:
        self.backlog = backlog
        self.stall_after = stall_after
        self.counter = counter
        self.clock = clock
        self._last_progress = clock()
        self._waiting_since: float | None = None
        self._last_count = counter() if counter is not None else None

    def progress(self) -> None:
        """The consume loop moved (handled a record, or went round with nothing to do)."""
        self._last_progress = self.clock()

    def stalled_for(self) -> float:
        """Seconds the loop has been stuck with records waiting; 0.0 when it is not stuck."""
        now = self.clock()
        if self.counter is not None:
            count = self.counter()
            if count != self._last_count:
                self._last_count = count
                self._last_progress = now
        waiting = self.backlog()
        if not waiting:
            self._waiting_since = None
            return 0.0
        if self._waiting_since is None:
            self._waiting_since = now
        return max(0.0, now - max(self._last_progress, self._waiting_since))

    def check(self) -> str | None:
        """None when the loop moves; otherwise why it looks stuck."""
        stuck = self.stalled_for()
        if stuck > self.stall_after:
            return f"consume loop made no progress for {stuck:.0f}s with records waiting"
        return None
