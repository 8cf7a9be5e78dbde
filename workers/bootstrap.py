"""The one place where the workers' real adapters are built and wired together: the order-consumer
(:func:`build_order_consumer`) and the instrument-sync (:func:`build_instrument_sync`)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from psycopg_pool import PoolTimeout

from workers import __version__
from workers.adapters.avro import AvroCodec, DecodeError, RegistryError, SchemaIncompatibleError
from workers.adapters.avro.wire import codec_for, decode_any
from workers.adapters.http.admin import AdminServer
from workers.adapters.http.probes import ProbeServer
from workers.adapters.ibkr.contract_lookup import IbkrContractLookup
from workers.adapters.ibkr.market_data import MarketDataBook
from workers.adapters.ibkr.pacing import PacingLimiter
from workers.adapters.ibkr.tws_connection import TwsConnection
from workers.adapters.kafka.compression import bound_gzip
from workers.adapters.kafka.connection import KafkaUnreachable, kafka_client_kwargs, start_kafka_client
from workers.adapters.kafka.consuming import (
    ConsumeLoop,
    DeadLetters,
    Decoder,
    RecordSource,
    Refusal,
    Subscription,
    Undecodable,
)
from workers.adapters.kafka.event_sink import AvroEventSink
from workers.adapters.kafka.failures import ErrorKind, classifier
from workers.adapters.kafka.health_publisher import (
    HealthPublisher,
    ProbeSet,
    database_reachable,
    kafka_reachable,
)
from workers.adapters.kafka.instrument_events import InstrumentEventEncoder
from workers.adapters.kafka.lag import consumer_lag
from workers.adapters.kafka.publishing import FillRelay, OutboxRelay
from workers.adapters.kafka.records import (
    FILL_EXECUTED,
    INSTRUMENT_UPDATED,
    ORDER_CANCEL_REQUESTED,
    ORDER_MODIFY_REQUESTED,
    ORDER_REQUESTED,
    ORDER_STATUS_CHANGED,
    POSITION_UPDATED,
    WORKER_HEALTH,
    InvalidText,
    cancel_from_record,
    instrument_id_from_record,
    modify_from_record,
    order_requested_from_record,
)
from workers.adapters.kafka.unreadable import read_unreadable_batches_in_place
from workers.adapters.postgres.cancel_requests import CancelRequests
from workers.adapters.postgres.errors import is_connection_error, is_data_error
from workers.adapters.postgres.failure import describe_database_error
from workers.adapters.postgres.fills import FillStore
from workers.adapters.postgres.instruments import InstrumentMapper
from workers.adapters.postgres.ledger import OrderLedger
from workers.adapters.postgres.modifications import ModificationLedger
from workers.adapters.postgres.outbox import Outbox
from workers.adapters.postgres.pool import close_pool, open_pool
from workers.adapters.postgres.positions import PositionStore
from workers.adapters.postgres.trading_state import PostgresTradingStateStore
from workers.adapters.postgres.universe import TopicOutbox, UniverseStore
from workers.domain.guards import GuardPolicy, OrderLimits
from workers.domain.health import HealthMonitor, HealthThresholds, ProgressWatch
from workers.domain.risk import OrderRate
from workers.domain.trading_mode import check_port
from workers.domain.trading_state import TradingState
from workers.logs import get_logger
from workers.metrics import Metrics, seconds_since
from workers.ports.instruments import InstrumentRow
from workers.runtime.instrument_sync import CONCURRENCY, InstrumentSyncApp, StartupFailed
from workers.runtime.instrument_sync import WORKER as INSTRUMENT_SYNC
from workers.runtime.order_consumer import OrderConsumerApp
from workers.runtime.trading_control import TradingControl
from workers.service_layer.contract_resolution import resolve_on_demand
from workers.service_layer.instrument_cache import InstrumentCache
from workers.service_layer.instrument_sync import InstrumentSync
from workers.service_layer.orders.intake import OrderSource
from workers.service_layer.orders.service import OrderService
from workers.service_layer.orders_first import OrdersFirst
from workers.settings import Settings

log = get_logger(__name__)

# Statuses and positions go out in at most one relay pass per 50 ms (at once when a pass was full): fewer,
# bigger produce requests and outbox reads while orders flow. Fills go out as soon as they are recorded.
OUTBOX_PASS_INTERVAL = 0.05
# IBKR's reports and the relays' passes wait for the order batches in progress, for 20 ms at most.
ORDERS_FIRST_MAX_WAIT = 0.02
# IBKR's reports are handled in batches of what arrived within 10 ms of the first: at 200 orders/s that is
# about two orders' reports a batch instead of one, and 11 % less worker CPU per order (fills go out ~4 ms
# later).
REPORT_LINGER = 0.01
# The ledger rows the worker wrote last that it keeps (with their versions), so IBKR's reports about its
# recent orders are applied without reading them first: a few MB, many seconds of orders at full speed.
REMEMBERED_ORDERS = 4096
# The largest input record taken (key and value): an order or a cancel with every text field at its
# maximum length is under 4 KiB; anything far larger is dead-lettered before it is decoded.
MAX_INPUT_RECORD_BYTES = 16 * 1024
# Fetch limits: a partition's fetch stays around a topic's max.message.bytes, a fetch a few MiB.
MAX_PARTITION_FETCH_BYTES = 1024 * 1024
FETCH_MAX_BYTES = 8 * 1024 * 1024


def on_demand_resolver(gateway: TwsConnection, mapper: InstrumentMapper) -> Any:
    """Resolve an id in the id convention through IBKR; None when it cannot be (the order is rejected)."""
    lookup = IbkrContractLookup(gateway)

    async def resolve(instrument_id: str) -> InstrumentRow | None:
        try:
            return (await resolve_on_demand(instrument_id, lookup, mapper)).row
        except Exception as exc:  # unknown, ambiguous, malformed id, IBKR away: all mean "not mapped"
            log.warning("instrument not resolvable on demand", instrument_id=instrument_id, error=str(exc))
            return None

    return resolve


def guard_policy(settings: Settings) -> GuardPolicy:
    """The guards and risk rules in force, from the settings (the trading state is followed at run time;
    KILL_SWITCH starts the deployment HALTED)."""
    return GuardPolicy(
        allowed_accounts=settings.allowed_accounts,
        global_limits=OrderLimits(max_quantity=settings.max_order_quantity,
                                  max_notional=settings.max_order_notional, max_position=settings.max_position,
                                  price_band=settings.price_band),
        instrument_limits={instrument_id: OrderLimits(**limits.model_dump())
                           for instrument_id, limits in settings.risk_limits_by_instrument.items()},
        sec_type_price_bands=dict(settings.price_band_by_sec_type),
        max_order_age=timedelta(seconds=settings.max_order_age) if settings.max_order_age else None,
        reference_max_age=settings.reference_price_max_age,
        require_reference=settings.reference_price_required,
    )


def order_rate(settings: Settings) -> OrderRate | None:
    """The per-account order rate limit, when ``MAX_ORDERS_PER_SECOND`` sets one."""
    rate = settings.max_orders_per_second
    if rate is None:
        return None
    return OrderRate(rate, settings.max_order_burst or max(1.0, 2 * rate), time.monotonic)


def _avro_decoder(codec: AvroCodec, record_name: str, convert: Callable[[dict[str, Any]], Any]) -> Decoder:
    """Bytes to a command: decoded as ``record_name`` (a record that is not is undecodable), then converted
    (a record whose values the domain refuses is undecodable at stage ``convert``)."""

    async def decode(value: bytes) -> Any:
        try:
            record = await decode_any(codec, value, record_name)
        except DecodeError as exc:
            raise Undecodable(f"{exc.kind}: {exc.reason}") from None
        try:
            return convert(record)
        except InvalidText as exc:
            raise Undecodable(str(exc), stage="validate") from None
        except (KeyError, ValueError, TypeError) as exc:
            raise Undecodable(f"invalid record: {exc}", stage="convert") from None

    return decode


def database_error_kind(exc: BaseException) -> ErrorKind | None:
    """PostgreSQL's errors by kind: connection and timeouts are infrastructure, refused values the record's."""
    if is_connection_error(exc):
        return ErrorKind.INFRASTRUCTURE
    if is_data_error(exc):
        return ErrorKind.RECORD
    return None


def registry_error_kind(exc: BaseException) -> ErrorKind | None:
    """The schema registry away while a record's writer schema is fetched: infrastructure, the record waits."""
    return ErrorKind.INFRASTRUCTURE if isinstance(exc, RegistryError) else None


def subscriptions(settings: Settings, codec: AvroCodec, service: OrderService, instruments: InstrumentCache,
                  metrics: Metrics) -> dict[str, Subscription]:
    """What the order-consumer reads: per topic, the record it holds, how it becomes a command, its handler."""

    async def orders(commands: list[tuple[Any, RecordSource]]) -> list[Refusal]:
        for _ in commands:
            metrics.order_consumed()
        conflicts = await service.on_orders_requested(
            [(order, OrderSource(s.topic, s.partition, s.offset, s.timestamp)) for order, s in commands])
        by_place = {(s.topic, s.partition, s.offset): s for _, s in commands}
        return [Refusal(by_place[where], conflict.reason) for conflict in conflicts
                if (where := (conflict.source.topic, conflict.source.partition, conflict.source.offset)) in by_place]

    async def cancels(commands: list[tuple[Any, RecordSource]]) -> None:
        for cancel, _ in commands:
            await service.on_cancel_requested(cancel)

    async def modifications(commands: list[tuple[Any, RecordSource]]) -> list[Refusal]:
        refused: list[Refusal] = []
        for request, s in commands:
            reason = await service.on_modify_requested(request, OrderSource(s.topic, s.partition, s.offset,
                                                                             s.timestamp))
            if reason is not None:
                refused.append(Refusal(s, reason, stage="modify"))
        return refused

    async def instrument_changes(commands: list[tuple[Any, RecordSource]]) -> None:
        for instrument_id, _ in commands:
            instruments.invalidate(instrument_id)

    topics = settings.topics
    return {
        topics.orders_requested: Subscription(
            _avro_decoder(codec, ORDER_REQUESTED, order_requested_from_record), orders,
            reject=service.reject_unprocessable),
        topics.orders_cancel_requested: Subscription(
            _avro_decoder(codec, ORDER_CANCEL_REQUESTED, cancel_from_record), cancels),
        topics.orders_modify_requested: Subscription(
            _avro_decoder(codec, ORDER_MODIFY_REQUESTED, modify_from_record), modifications),
        topics.instruments_updated: Subscription(
            _avro_decoder(codec, INSTRUMENT_UPDATED, instrument_id_from_record),
            instrument_changes),
    }


async def build_order_consumer(settings: Settings, *, codec: AvroCodec | None = None,
                               instance_id: str | None = None) -> OrderConsumerApp:
    """Build the order-consumer with real adapters from ``settings``."""
    check_port(settings.ibkr_trading_mode, settings.ibkr_effective_port)
    topics = settings.topics
    codec = codec or await codec_for(settings.schema_registry, {
        ORDER_STATUS_CHANGED: topics.orders_status, FILL_EXECUTED: topics.fills_executed,
        POSITION_UPDATED: topics.positions_updated, WORKER_HEALTH: topics.workers_health,
    })
    instance_id = instance_id or uuid.uuid4().hex[:8]
    metrics = Metrics()
    kafka_kwargs: dict[str, Any] = {"bootstrap_servers": settings.kafka_bootstrap_servers,
                                    **kafka_client_kwargs(settings)}
    # Every connection opened up front and kept: opening one on demand costs the event loop milliseconds
    # (authentication) at the moment load rises, which is when orders can least wait.
    pool = await open_pool(settings.database_dsn, max_size=settings.database_pool_size,
                           min_size=settings.database_pool_size)
    producer = AIOKafkaProducer(enable_idempotence=True, acks="all", linger_ms=2, **kafka_kwargs)
    await start_kafka_client(producer, settings.kafka_bootstrap_servers, kafka_kwargs)
    bound_gzip()
    read_unreadable_batches_in_place()
    consumer = AIOKafkaConsumer(
        topics.orders_requested, topics.orders_cancel_requested, topics.orders_modify_requested,
        topics.instruments_updated, group_id=settings.kafka_consumer_group, enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed", session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=max(500, settings.kafka_session_timeout_ms // 4),
        max_partition_fetch_bytes=MAX_PARTITION_FETCH_BYTES, fetch_max_bytes=FETCH_MAX_BYTES, **kafka_kwargs,
    )
    limiter = PacingLimiter(settings.ibkr_pacing_per_second)
    gateway = TwsConnection(settings.ibkr_host, settings.ibkr_effective_port, settings.ibkr_client_id,
                          limiter=limiter, connect_timeout=settings.ibkr_connect_timeout,
                          readonly=settings.ibkr_readonly, trading_mode=settings.ibkr_trading_mode,
                          report_linger=REPORT_LINGER)
    ledger = OrderLedger(pool, remember=REMEMBERED_ORDERS)
    fills = FillStore(pool)
    writer = f"order-consumer:{settings.ibkr_client_id}"
    outbox = Outbox(pool, writer=writer)
    mapper = InstrumentMapper(pool)
    instruments = InstrumentCache(mapper, resolver=on_demand_resolver(gateway, mapper)
                                  if settings.instrument_resolve_on_demand else None)
    market_data = MarketDataBook(gateway, data_type=settings.ibkr_market_data_type,
                                 lines=settings.ibkr_market_data_lines, idle=settings.ibkr_market_data_idle)
    policy = guard_policy(settings)
    trading_store = PostgresTradingStateStore(pool)
    trading: TradingControl | None = None
    orders_first = OrdersFirst(max_wait=ORDERS_FIRST_MAX_WAIT)
    outbox_relay = OutboxRelay(outbox, producer, pass_interval=OUTBOX_PASS_INTERVAL, turn=orders_first.turn)
    fill_relay = FillRelay(fills, producer, codec, topics.fills_executed,
                           owner_client_id=settings.ibkr_client_id, turn=orders_first.turn)
    fill_relay.on_published_fill = lambda row: metrics.fill_published(seconds_since(row.executed_at))
    service = OrderService(
        ledger=ledger, cancel_requests=CancelRequests(pool), modifications=ModificationLedger(pool), fills=fills,
        outbox=outbox, positions=PositionStore(pool), instruments=instruments, broker=gateway,
        events=AvroEventSink(codec, topics, writer), policy=lambda: policy,
        readonly=settings.ibkr_readonly, on_published=outbox_relay.notify, on_fill=fill_relay.notify,
        metrics=metrics, orders_first=orders_first, rate=order_rate(settings), prices=market_data,
        trading_state=lambda: trading.state if trading is not None else TradingState.HALTED,
    )
    trading = TradingControl(store=trading_store, service=service, metrics=metrics,
                             connected=lambda: gateway.connected)
    await trading.watch.start(configured=TradingState(settings.trading_state) if settings.trading_state else None,
                              kill_switch=settings.kill_switch,
                              instance=f"order-consumer:{instance_id} (client id {settings.ibkr_client_id})")
    gateway.listen(service.on_reports)
    metrics.watch_ibkr(gateway)
    metrics.watch_pacing(limiter)

    await start_kafka_client(consumer, settings.kafka_bootstrap_servers, kafka_kwargs)
    loop = ConsumeLoop(consumer, subscriptions(settings, codec, service, instruments, metrics),
                       DeadLetters(producer, topics.orders_requested_dlq, on_sent=metrics.dead_lettered),
                       gate=lambda: gateway.connected and service.reconciled,
                       classify=classifier(database_error_kind, registry_error_kind),
                       on_retry=lambda kind: metrics.consume_retried(kind.value),
                       max_record_bytes=MAX_INPUT_RECORD_BYTES)
    monitor = HealthMonitor(HealthThresholds(down_after=settings.health_unhealthy_after,
                                               max_lag=settings.health_max_lag))
    facts = ProbeSet(
        ibkr_connected=lambda: gateway.connected,
        kafka_connected=lambda: kafka_reachable(producer),
        database_connected=lambda: database_reachable(pool),
        consumer_lag=lambda: consumer_lag(consumer),
        orders_in_flight=lambda: ledger.count_open_owned_by(settings.ibkr_client_id),
        last_error=lambda: gateway.last_error or loop.last_error,
        ibkr_rtt_ms=lambda: gateway.rtt_ms,
        paused=lambda: loop.paused or loop.gate_closed,
        pacing_limited=lambda: limiter.queued > 0,
        trading_state=lambda: trading.state.value,
    )
    health = HealthPublisher(producer, codec, topics.workers_health, worker="order-consumer",
                             instance_id=instance_id, version=__version__, monitor=monitor,
                             facts=facts.collect, interval=settings.health_interval, metrics=metrics)
    probes = ProbeServer(
        monitor=monitor, metrics=metrics, port=settings.health_port,
        progress=ProgressWatch(lambda: monitor.last.facts.consumer_lag if monitor.last else None,
                               counter=lambda: loop.consumed),
        ibkr_connected=lambda: gateway.connected,
        admin=AdminServer(actions=trading, host=settings.admin_bind, port=settings.admin_port,
                          token=settings.admin_token.get_secret_value() if settings.admin_token else None),
        consume_counts=loop.counts,
    )
    trading.notify = health.notify
    return OrderConsumerApp(settings=settings, pool=pool, producer=producer, consumer=consumer,
                            gateway=gateway, market_data=market_data, service=service, loop=loop,
                            outbox_relay=outbox_relay, fill_relay=fill_relay, trading=trading, metrics=metrics,
                            monitor=monitor,
                            health=health, probes=probes, instance_id=instance_id)


async def build_instrument_sync(settings: Settings, *, codec: AvroCodec | None = None,
                                concurrency: int = CONCURRENCY,
                                instance_id: str | None = None) -> InstrumentSyncApp:
    """Build the instrument-sync with real adapters from ``settings``; raises :class:`StartupFailed`."""
    try:
        codec = codec or await codec_for(settings.schema_registry, {
            INSTRUMENT_UPDATED: settings.topics.instruments_updated, WORKER_HEALTH: settings.topics.workers_health,
        })
    except SchemaIncompatibleError as exc:
        raise StartupFailed(str(exc)) from None
    except RegistryError as exc:
        raise StartupFailed(f"schema registry unreachable: {exc}") from None
    instance = instance_id or uuid.uuid4().hex[:8]
    metrics = Metrics()
    topic = settings.topics.instruments_updated
    try:
        pool = await open_pool(settings.database_dsn, max_size=max(settings.database_pool_size,
                                                                   concurrency + 2),
                               name="ibkr-workers-instrument-sync")
    except (PoolTimeout, psycopg.Error) as exc:
        raise StartupFailed(describe_database_error(exc)) from None
    kafka_kwargs: dict[str, Any] = {"bootstrap_servers": settings.kafka_bootstrap_servers,
                                    **kafka_client_kwargs(settings)}
    producer = AIOKafkaProducer(enable_idempotence=True, acks="all", linger_ms=5, **kafka_kwargs)
    try:
        await start_kafka_client(producer, settings.kafka_bootstrap_servers, kafka_kwargs)
    except KafkaUnreachable as exc:
        await close_pool(pool)
        raise StartupFailed(str(exc)) from None
    except Exception as exc:
        await close_pool(pool)
        raise StartupFailed(f"cannot reach Kafka at {settings.kafka_bootstrap_servers}: {exc}") from None
    limiter = PacingLimiter(settings.ibkr_pacing_per_second)
    gateway = TwsConnection(settings.ibkr_host, settings.ibkr_effective_port, settings.ibkr_client_id,
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
    health = HealthPublisher(producer, codec, settings.topics.workers_health, worker=INSTRUMENT_SYNC,
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
