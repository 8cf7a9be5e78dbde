"""A wired order-consumer and how it runs: its tasks, their supervision, and a graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from workers import __version__
from workers.adapters.http.probes import ProbeServer
from workers.adapters.ibkr.market_data import MarketDataBook
from workers.adapters.ibkr.tws_connection import TwsConnection
from workers.adapters.kafka.connection import kafka_client_kwargs
from workers.adapters.kafka.consuming import ConsumeLoop
from workers.adapters.kafka.health_publisher import HealthPublisher
from workers.adapters.kafka.publishing import FillRelay, OutboxRelay
from workers.adapters.postgres.pool import Pool, close_pool
from workers.domain.health import HealthMonitor
from workers.logs import get_logger
from workers.metrics import Metrics
from workers.runtime.trading_control import TradingControl
from workers.service_layer.orders.service import OrderService
from workers.settings import Settings

log = get_logger(__name__)

# Positions (IBKR reports one after each fill) are written at most every 100 ms, each at its latest.
POSITION_WRITE_INTERVAL = 0.1


@dataclass
class OrderConsumerApp:
    """A wired order-consumer: run it with :meth:`run` until ``stop`` is set."""

    settings: Settings
    pool: Pool
    producer: AIOKafkaProducer
    consumer: AIOKafkaConsumer
    gateway: TwsConnection
    market_data: MarketDataBook
    service: OrderService
    loop: ConsumeLoop
    outbox_relay: OutboxRelay
    fill_relay: FillRelay
    trading: TradingControl
    metrics: Metrics
    monitor: HealthMonitor
    health: HealthPublisher
    probes: ProbeServer
    instance_id: str
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    version: str = __version__

    async def run(self) -> None:
        """Connect, reconcile, consume; on ``stop``: stop consuming, drain, commit, disconnect."""
        settings = self.settings
        await self.probes.start()
        health_task = asyncio.create_task(self.health.run(self.stop), name="health")
        recovered = await self.fill_relay.recover(
            {"bootstrap_servers": settings.kafka_bootstrap_servers, **kafka_client_kwargs(settings)}
        )
        log.info("fill recovery done", marked_published=recovered)
        tasks = [
            asyncio.create_task(self._supervise_connection(), name="ibkr-connection"),
            asyncio.create_task(self.service.run_placer(self.stop), name="placer"),
            asyncio.create_task(self.service.run_placement_watchdog(
                self.stop, answer_within=settings.ibkr_order_answer_timeout,
                every=min(2.0, settings.ibkr_order_answer_timeout)), name="placement-watchdog"),
            asyncio.create_task(self.outbox_relay.run(self.stop), name="outbox-relay"),
            asyncio.create_task(self.fill_relay.run(self.stop), name="fill-relay"),
            asyncio.create_task(self.service.run_position_writer(self.stop, every=POSITION_WRITE_INTERVAL),
                                name="position-writer"),
            asyncio.create_task(self._sweep_cancels(), name="cancel-sweep"),
            asyncio.create_task(self.trading.watch.run(self.stop), name="trading-state"),
            asyncio.create_task(self.gateway.run_pruning(self.stop), name="ib-pruning"),
            asyncio.create_task(self.market_data.run_idle_release(self.stop), name="market-data-idle"),
            asyncio.create_task(self.gateway.run_heartbeat(self.stop, settings.ibkr_heartbeat_interval,
                                                           settings.ibkr_heartbeat_timeout), name="heartbeat"),
        ]
        try:
            await self.loop.run(self.stop)
        finally:
            self.stop.set()
            self.monitor.mark_stopping()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            # Publish what the last handled records produced before leaving.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._drain(), 3.0)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(health_task, 3.0)  # sends STOPPING
            await self.close()

    async def _drain(self) -> None:
        await self.service.write_positions()
        while await self.outbox_relay.publish_pending():
            pass
        self.fill_relay.commission_wait = self.fill_relay.commission_wait * 0
        while await self.fill_relay.publish_pending():
            pass

    async def _supervise_connection(self) -> None:
        while not self.stop.is_set():
            if not self.gateway.connected:
                if not await self.gateway.connect_with_retry(stop=self.stop):
                    return
                self.gateway.reconnects += 1
                try:
                    await self.service.reconcile()
                except Exception:
                    log.exception("reconciliation failed; reconnecting")
                    self.gateway.disconnect()
                    continue
                if self.monitor.phase.name == "STARTING":
                    self.monitor.mark_started()
                self.health.notify()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 0.5)

    async def _sweep_cancels(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), 1.0)
            try:
                if self.gateway.connected:
                    await self.service.sweep_cancels()
            except Exception:
                log.exception("cancel sweep failed")

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.probes.stop()
        with contextlib.suppress(Exception):
            await self.consumer.stop()
        with contextlib.suppress(Exception):
            await self.market_data.close()
        await self.gateway.close()
        with contextlib.suppress(Exception):
            await self.producer.stop()
        await close_pool(self.pool)

