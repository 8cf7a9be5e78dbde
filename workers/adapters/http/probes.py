"""The HTTP endpoint on ``HEALTH_PORT``: ``/healthz``, ``/readyz``, ``/metrics``.

It runs on the worker's own event loop (aiohttp, no thread), so its answers say something about that
loop:

* ``/healthz`` (liveness): 200 while the event loop keeps time and the consume loop moves. A
  :class:`LoopHeartbeat` task measures how late the loop wakes it; a lag above ``max_loop_lag`` (seen
  within the heartbeat's window) fails it, as does a :class:`~workers.domain.health.ProgressWatch`
  reporting a consume loop stuck with records waiting. A loop blocked *right now* cannot answer at all,
  which a probe with a timeout also reads as a failure. A worker with a consume loop also shows its
  :class:`~workers.domain.health.ConsumeCounts`: ``dead_letters`` by stage and ``consume_retries`` by kind.
* ``/readyz`` (readiness): 200 only when the health status is HEALTHY or DEGRADED and IBKR is connected;
  otherwise 503 with the reason in JSON.
* ``/metrics``: the Prometheus text format (or OpenMetrics, by content negotiation) of the worker's
  :class:`~workers.metrics.Metrics` registry.

Nothing on this port changes the worker's state. The admin endpoints (trading state, kill switch) are an
:class:`~workers.adapters.http.admin.AdminServer` of their own, behind a token, on their own address and
port; the probe server starts and stops it with itself when given one.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client.exposition import choose_encoder

from workers.adapters.http.admin import AdminServer
from workers.domain.health import ConsumeCounts, HealthMonitor, ProgressWatch, readiness
from workers.logs import get_logger
from workers.metrics import Metrics

log = get_logger(__name__)


class LoopHeartbeat:
    """A task that wakes every ``interval`` seconds and records how late the event loop woke it.

    :meth:`lag` is the largest delay seen in the last ``window`` seconds, or the time the next beat is
    overdue now, whichever is larger.
    """

    def __init__(self, interval: float = 0.1, window: float = 10.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if interval <= 0 or window <= 0:
            raise ValueError("interval and window must be > 0")
        self.interval = interval
        self.window = window
        self.clock = clock
        self.beats = 0
        self._late: deque[tuple[float, float]] = deque()
        self._last_beat: float | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if not self.running:
            self._last_beat = self.clock()
            self._task = asyncio.create_task(self._beat(), name="loop-heartbeat")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _beat(self) -> None:
        while True:
            due = self.clock() + self.interval
            await asyncio.sleep(self.interval)
            now = self.clock()
            self.beats += 1
            self._last_beat = now
            late = now - due
            if late > 0:
                self._late.append((now, late))
            while self._late and now - self._late[0][0] > self.window:
                self._late.popleft()

    def lag(self) -> float:
        """Seconds the loop was late recently (0.0 when it keeps time)."""
        now = self.clock()
        recent = max((late for at, late in self._late if now - at <= self.window), default=0.0)
        overdue = now - self._last_beat - self.interval if self._last_beat is not None else 0.0
        return max(0.0, recent, overdue)


class ProbeServer:
    """The worker's operational HTTP server; ``port=0`` binds a free port (see :attr:`port`)."""

    def __init__(self, *, monitor: HealthMonitor, metrics: Metrics, host: str = "0.0.0.0",
                 port: int = 8080, heartbeat: LoopHeartbeat | None = None,
                 progress: ProgressWatch | None = None, max_loop_lag: float = 2.0,
                 ibkr_connected: Callable[[], bool] | None = None,
                 admin: AdminServer | None = None,
                 consume_counts: Callable[[], ConsumeCounts] | None = None) -> None:
        self.monitor = monitor
        self.metrics = metrics
        self.host = host
        self.requested_port = port
        self.heartbeat = heartbeat if heartbeat is not None else LoopHeartbeat()
        self.progress = progress
        self.max_loop_lag = max_loop_lag
        self.ibkr_connected = ibkr_connected
        self.admin = admin
        self.consume_counts = consume_counts
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The port bound by :meth:`start`."""
        if self._port is None:
            raise RuntimeError("the probe server is not started")
        return self._port

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        return app

    async def start(self) -> None:
        """Start the heartbeat and listen; returns once the port is bound."""
        self.heartbeat.start()
        runner = web.AppRunner(self.application(), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self.requested_port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        address = runner.addresses[0]
        self._port = int(address[1])
        log.info("probe server listening", host=self.host, port=self._port)
        if self.admin is not None:
            try:
                await self.admin.start()
            except BaseException:
                await self.stop()
                raise

    async def stop(self) -> None:
        if self.admin is not None:
            await self.admin.stop()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        await self.heartbeat.stop()

    async def __aenter__(self) -> ProbeServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- handlers ---------------------------------------------------------------------------------

    def liveness_failure(self) -> str | None:
        """Why the worker should be restarted, or None while it is alive."""
        if not self.heartbeat.running:
            return "event loop heartbeat is not running"
        lag = self.heartbeat.lag()
        if lag > self.max_loop_lag:
            return f"event loop blocked for {lag:.2f}s (limit {self.max_loop_lag:.2f}s)"
        if self.progress is not None:
            return self.progress.check()
        return None

    async def _healthz(self, request: web.Request) -> web.Response:
        failure = self.liveness_failure()
        body: dict[str, Any] = {
            "alive": failure is None,
            "loop_lag_seconds": round(self.heartbeat.lag(), 4),
            "status": self.monitor.status.value,
        }
        if self.consume_counts is not None:
            counts = self.consume_counts()
            body["dead_letters"] = dict(sorted(counts.dead_letters.items()))
            body["consume_retries"] = dict(sorted(counts.retries.items()))
        if failure is not None:
            body["reason"] = failure
            return web.json_response(body, status=503)
        return web.json_response(body)

    async def _readyz(self, request: web.Request) -> web.Response:
        live = self.ibkr_connected() if self.ibkr_connected is not None else None
        verdict = readiness(self.monitor.last, ibkr_connected=live)
        body = {"ready": verdict.ready, "status": self.monitor.status.value, "reason": verdict.reason}
        return web.json_response(body, status=200 if verdict.ready else 503)

    async def _metrics(self, request: web.Request) -> web.Response:
        # The text format by default; OpenMetrics when the scraper asks for it.
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(self.metrics.registry), headers={"Content-Type": content_type})
