"""``ibkr-workers demo``: the whole bridge in one process, with sample orders flowing through it.

In one event loop: the sim gateway (on a free port), migrations, the Kafka topics, one instrument-sync
pass (the universe is the example one shipped in the package, ``workers/data/universe.yaml``, when the
database has none yet), the order-consumer, and
an :class:`~workers.client.OrderClient` that sends ``--orders`` sample orders at ``--rate`` per second —
every order type, both sides, stocks, a future, an option and a currency pair, every time in force, and a
few invalid ones (unknown account, unknown instrument, off-tick price) that must come back REJECTED.
A live table shows each order's status and fills and the positions; ``--headless`` prints plain lines.
Resting orders still open at the end are cancelled, so every order ends FILLED, CANCELLED or REJECTED.

``IBKR_PORT`` set explicitly aims the demo at a real *paper* gateway instead of the sim
(``IBKR_ACCOUNTS`` must then name the paper account; ``IBKR_TRADING_MODE=live`` and any account in
``IBKR_ACCOUNTS`` that is not a paper account are refused). The demo's topics are the configured names
with the prefix ``demo.`` (``demo.orders.requested`` ...): it never writes to the topics real workers
and upstream services use on the same cluster. Prices then
come from the sim universe's reference prices, so some "marketable" orders may rest until cancelled.
Each run uses a fresh consumer group that starts at the topics' end, and its own IBKR client ids (random
unless ``IBKR_CLIENT_ID`` is set; instrument-sync uses the next one), so runs never see each other's orders.

Exit codes: 0 every sample order reached a final status; 1 some did not; 2 bad configuration; 3 Kafka,
PostgreSQL or IBKR unreachable; 130 interrupted (Ctrl-C), after cancelling what was open.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.resources
import logging
import random
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Coroutine, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from psycopg_pool import PoolTimeout

from ibkr_sim.config import DEFAULT_ACCOUNTS, SimConfig
from ibkr_sim.server import SimGateway
from ibkr_sim.universe import Universe
from workers.adapters.kafka.connection import kafka_client_kwargs
from workers.adapters.kafka.topics import ensure_topics
from workers.adapters.postgres.failure import describe_database_error
from workers.adapters.postgres.instruments import InstrumentMapper
from workers.adapters.postgres.migrate import migrate
from workers.adapters.postgres.pool import close_pool, open_pool
from workers.adapters.postgres.universe import UniverseStore
from workers.bootstrap import build_instrument_sync, build_order_consumer
from workers.client import OrderClient, OrderTimeout
from workers.domain.brackets import bracket_children
from workers.domain.instruments import Instrument
from workers.domain.orders import FINAL_STATES, OrderRequested, OrderState, OrderType, Side, TimeInForce
from workers.domain.trading_mode import is_paper_account
from workers.entrypoints.demo_board import Board
from workers.entrypoints.demo_orders import Sample, pick_instruments, sample_orders
from workers.entrypoints.instruments import UniverseLoadError, load_universe
from workers.logs import configure_logging, get_logger
from workers.runtime.instrument_sync import StartupFailed
from workers.runtime.order_consumer import OrderConsumerApp
from workers.settings import Settings, TopicNames, load_settings

log = get_logger(__name__)

LOG_FILE = Path(tempfile.gettempdir()) / "ibkr-workers-demo.log"
# Before every topic name: the demo's sample orders never reach the topics of a configured cluster's
# real workers (nor do its statuses, fills and positions reach their readers).
DEMO_TOPIC_PREFIX = "demo."
SETTLE_SECONDS = 20.0
FINISH_SECONDS = 30.0
REFRESH_SECONDS = 0.25


class DemoFailed(Exception):
    """A service the demo needs cannot be reached; the message is one line for the person."""


def say(text: str) -> None:
    print(f"demo: {text}", flush=True)


def demo_settings(settings: Settings) -> Settings:
    """``settings`` with every topic name under :data:`DEMO_TOPIC_PREFIX`."""
    return settings.model_copy(update={
        f"topic_{name}": DEMO_TOPIC_PREFIX + getattr(settings.topics, name)
        for name in TopicNames.__dataclass_fields__})


@contextlib.contextmanager
def example_universe() -> Iterator[Path]:
    """The example universe shipped as package data (``workers/data/universe.yaml``), as a file on disk.

    Read from the installed package, not the source tree, so a wheel or the container image has it too.
    """
    resource = importlib.resources.files("workers") / "data" / "universe.yaml"
    with importlib.resources.as_file(resource) as path:
        yield path


# -- the run --------------------------------------------------------------------------------------

class DemoStack:
    """The sim (unless aimed at a real gateway), the order-consumer and the client, started in order."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.own_sim = settings.ibkr_port is None
        self.accounts = tuple(sorted(settings.allowed_accounts)) or DEFAULT_ACCOUNTS
        explicit_id = "ibkr_client_id" in settings.model_fields_set
        self.client_id = settings.ibkr_client_id if explicit_id else random.randrange(100, 30_000)
        self.group = f"ibkr-workers-demo-{uuid.uuid4().hex[:10]}"
        self.sim: SimGateway | None = None
        self.port = settings.ibkr_port or 0
        self.app: OrderConsumerApp | None = None
        self.app_task: asyncio.Task[None] | None = None
        self.client: OrderClient | None = None
        self.instruments: dict[str, Instrument] = {}
        self.reference: Universe | None = None

    @property
    def kafka(self) -> dict[str, Any]:
        return {"bootstrap_servers": self.settings.kafka_bootstrap_servers,
                **kafka_client_kwargs(self.settings)}

    def price(self, instrument: Instrument) -> float | None:
        """The instrument's price now: the sim's, or the sim universe's reference price for a real gateway."""
        if self.sim is not None:
            with contextlib.suppress(KeyError):
                return self.sim.price(instrument.con_id)
            return None
        if self.reference is None:
            self.reference = Universe.load()
        known = self.reference.get(instrument.con_id)
        return known.ref_price if known is not None else None

    async def start(self, listener: Any) -> None:
        settings = self.settings
        if self.own_sim:
            self.sim = SimGateway(SimConfig(accounts=self.accounts, tick_interval=0.5, volatility=0.0003,
                                            seed=random.randrange(1 << 30)))
            _, self.port = await self.sim.start("127.0.0.1", 0)
            say(f"sim gateway listening on 127.0.0.1:{self.port} (accounts {', '.join(self.accounts)})")
        else:
            say(f"using the IBKR gateway at {settings.ibkr_host}:{self.port} (paper)")
        try:
            applied = await migrate(settings.database_dsn)
        except (psycopg.Error, PoolTimeout) as exc:
            raise DemoFailed(describe_database_error(exc)) from None
        say(f"database migrated ({len(applied)} migrations applied now)")
        try:
            security: dict[str, Any] = kafka_client_kwargs(settings)
            created = await ensure_topics(settings.kafka_bootstrap_servers, settings.topics, **security)
        except (KafkaError, OSError) as exc:
            raise DemoFailed(f"cannot reach Kafka at {settings.kafka_bootstrap_servers}: {exc}") from None
        say(f"kafka topics {DEMO_TOPIC_PREFIX}* ready ({len(created)} created now)")
        await self._sync_instruments()
        await self._start_order_consumer()
        self.client = OrderClient.from_settings(settings, watch_positions=True, source="ibkr-workers-demo")
        self.client.listen(listener)
        await self.client.start()

    async def _sync_instruments(self) -> None:
        """One instrument-sync pass against the gateway, then the instruments the samples use."""
        settings = self.settings
        pool = await open_pool(settings.database_dsn, max_size=1, name="ibkr-workers-demo")
        try:
            if not await UniverseStore(pool).entries():
                with example_universe() as path:
                    await load_universe(settings, str(path))
                say("instrument universe loaded from the example universe")
        except UniverseLoadError as exc:
            raise DemoFailed(str(exc)) from None
        finally:
            await close_pool(pool)
        sync_settings = settings.model_copy(update={"ibkr_port": self.port, "ibkr_client_id": self.client_id + 1})
        try:
            app = await build_instrument_sync(sync_settings)
        except StartupFailed as exc:
            raise DemoFailed(str(exc)) from None
        try:
            _, summary = await app.run_once()
            if summary is not None:
                say(f"instrument-sync {summary.describe()}")
        except StartupFailed as exc:  # another instrument-sync holds the pass: it keeps the mapper current
            say(f"instrument-sync pass skipped: {exc}")
        finally:
            await app.close()
        pool = await open_pool(settings.database_dsn, max_size=1, name="ibkr-workers-demo")
        try:
            self.instruments = await pick_instruments(InstrumentMapper(pool))
        finally:
            await close_pool(pool)
        if not self.instruments:
            raise DemoFailed("no instrument of the samples is in the mapper (did the instrument-sync fail?)")
        say(f"instruments: {', '.join(instrument.instrument_id for instrument in self.instruments.values())}")

    async def _start_order_consumer(self) -> None:
        settings = self.settings.model_copy(update={
            "ibkr_port": self.port, "ibkr_client_id": self.client_id, "kafka_consumer_group": self.group,
            "ibkr_accounts": ",".join(self.accounts),
            "health_port": self.settings.health_port if "health_port" in self.settings.model_fields_set else 0,
            "admin_port": self.settings.admin_port if "admin_port" in self.settings.model_fields_set else 0,
        })
        topics = settings.topics
        await start_group_at_end(self.kafka, self.group, [topics.orders_requested,
                                                           topics.orders_cancel_requested,
                                                           topics.orders_modify_requested,
                                                           topics.instruments_updated])
        self.app = await build_order_consumer(settings)
        self.app_task = asyncio.create_task(self.app.run(), name="order-consumer")
        deadline = time.monotonic() + 3 * settings.ibkr_connect_timeout
        while not self.app.gateway.connected:
            if self.app_task.done() or time.monotonic() > deadline:
                raise DemoFailed(f"the order-consumer cannot connect to IBKR at {settings.ibkr_host}:{self.port}")
            await asyncio.sleep(0.1)
        say(f"order-consumer running (client id {self.client_id}, consumer group {self.group})")

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()
        if self.app is not None and self.app_task is not None:
            self.app.stop.set()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.app_task, 15)
        elif self.app is not None:  # built, never run
            await self.app.close()
        if self.sim is not None:
            await self.sim.stop()


async def start_group_at_end(kafka: dict[str, Any], group: str, topics: list[str]) -> None:
    """Commit ``group``'s offsets at the topics' current end: the new group skips every older record."""
    admin = AIOKafkaAdminClient(**kafka)
    await admin.start()
    try:
        described = await admin.describe_topics(topics)
    finally:
        await admin.close()
    partitions = [TopicPartition(entry["topic"], p["partition"]) for entry in described
                  for p in entry["partitions"]]
    consumer = AIOKafkaConsumer(group_id=group, enable_auto_commit=False, **kafka)
    await consumer.start()
    try:
        consumer.assign(partitions)
        await consumer.commit(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


async def produce(client: OrderClient, board: Board, samples: list[Sample], rate: float,
                  stop: asyncio.Event) -> None:
    """Send the samples at ``rate`` per second (each registered on the board before it is sent); a sample
    with a modification gets it once its order works at IBKR."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    modifying: list[asyncio.Task[None]] = []
    try:
        for index, sample in enumerate(samples):
            delay = started + index / rate - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return
            order_id = str(uuid.uuid4())
            board.add(order_id, sample)
            await client.submit(order_id=order_id, **sample.fields)
            for child_id, child in bracket_samples(order_id, sample):
                board.add(child_id, child)  # followed and, if still open at the end, cancelled as any order
                client.watch(child_id)
            if sample.modify is not None:
                modifying.append(asyncio.create_task(modify_when_working(client, order_id, sample)))
    finally:
        if modifying:
            await asyncio.gather(*modifying, return_exceptions=True)


def bracket_samples(parent_order_id: str, sample: Sample) -> list[tuple[str, Sample]]:
    """The children of a bracket sample as the worker derives them, each with its own board row."""
    if sample.fields.get("take_profit_price") is None and sample.fields.get("stop_loss_price") is None:
        return []
    parent = OrderRequested(order_id=parent_order_id, account=sample.fields["account"],
                            instrument_id=sample.fields["instrument_id"], side=Side(sample.fields["side"]),
                            quantity=sample.fields["quantity"], order_type=OrderType(sample.fields["order_type"]),
                            limit_price=None, stop_price=None, time_in_force=TimeInForce(sample.fields["tif"]),
                            outside_rth=False, created_at=datetime.now(UTC),
                            take_profit_price=sample.fields.get("take_profit_price"),
                            stop_loss_price=sample.fields.get("stop_loss_price"))
    return [(child.order_id, Sample(f"{sample.label}: {leg.replace('_', '-')}", {
        "account": child.account, "instrument_id": child.instrument_id, "side": child.side.value,
        "quantity": child.quantity, "order_type": child.order_type.value, "tif": child.time_in_force.value,
        "limit_price": child.limit_price, "stop_price": child.stop_price}, True))
        for leg, child in bracket_children(parent)]


async def modify_when_working(client: OrderClient, order_id: str, sample: Sample) -> None:
    """Send the sample's modification once its order works at IBKR (not if it ended first)."""
    assert sample.modify is not None
    try:
        status = await client.wait_for_status(order_id, [OrderState.SUBMITTED, *FINAL_STATES], timeout=30)
    except OrderTimeout:
        return
    if status.status is OrderState.SUBMITTED:
        await client.modify(order_id, account=sample.fields["account"], **sample.modify)


async def settle(client: OrderClient, board: Board, stop: asyncio.Event) -> None:
    """Wait until what will fill has filled, cancel what still rests, wait until everything is final."""
    working = {OrderState.SUBMITTED, OrderState.PARTIALLY_FILLED, OrderState.CANCEL_PENDING}

    def only_resting_left() -> bool:
        open_orders = board.open_orders()
        quiet = time.monotonic() - board.last_event > 1.0
        return stop.is_set() or not open_orders or (quiet and all(board.status(o) in working
                                                                  for o in open_orders))

    await board.wait_until(only_resting_left, SETTLE_SECONDS)
    await cancel_open(client, board, "demo: interrupted" if stop.is_set() else "demo: end of the run")
    await board.wait_until(lambda: board.all_final() and (board.fills_complete() or stop.is_set()),
                           5.0 if stop.is_set() else FINISH_SECONDS)


async def cancel_open(client: OrderClient, board: Board, reason: str) -> None:
    for order_id in board.open_orders():
        await client.cancel(order_id, account=board.rows[order_id].sample.fields["account"], reason=reason)


async def refresh(board: Board, headless: bool) -> None:
    """Redraw the live table (or print a progress line every 2 s when headless) until cancelled."""
    period = 2.0 if headless else REFRESH_SECONDS
    while True:
        if headless:
            print(board.progress_line(), flush=True)
        else:
            sys.stdout.write(board.frame())
            sys.stdout.flush()
        await asyncio.sleep(period)


def configure_demo_logging(settings: Settings, headless: bool) -> None:
    """Logs go to stderr when headless; under the live table, to a file (whose name the table shows)."""
    configure_logging(settings.log_level, worker="demo", json=None if headless else False)
    if not headless:
        handler = logging.getLogger().handlers[0]
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(LOG_FILE.open("a", encoding="utf-8"))  # open for the whole run


async def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    if settings.ibkr_trading_mode == "live":
        print("ibkr-workers demo: refused with IBKR_TRADING_MODE=live: the demo sends sample orders",
              file=sys.stderr)
        return 2
    not_paper = sorted(account for account in settings.allowed_accounts if not is_paper_account(account))
    if not_paper:
        print(f"ibkr-workers demo: refused: IBKR_ACCOUNTS holds non-paper account(s) {', '.join(not_paper)}: "
              "the demo sends sample orders to paper accounts only", file=sys.stderr)
        return 2
    if settings.ibkr_port is not None and not settings.allowed_accounts:
        print("ibkr-workers demo: IBKR_PORT aims at a real gateway: set IBKR_ACCOUNTS to its paper account",
              file=sys.stderr)
        return 2
    if args.orders < 1 or args.rate <= 0:
        print("ibkr-workers demo: --orders and --rate must be positive", file=sys.stderr)
        return 2
    settings = demo_settings(settings)
    headless = bool(args.headless) or not sys.stdout.isatty()
    configure_demo_logging(settings, headless)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    board = Board(headless=headless, log_file=None if headless else LOG_FILE)
    stack = DemoStack(settings)
    started = time.monotonic()
    try:
        try:
            if not await until_stopped(stack.start(board.on_event), stop):
                say("interrupted while starting")
                return 130
        except (DemoFailed, KafkaError, OSError) as exc:
            print(f"ibkr-workers demo: {exc}", file=sys.stderr)
            return 3
        except (psycopg.Error, PoolTimeout) as exc:
            print(f"ibkr-workers demo: {describe_database_error(exc)}", file=sys.stderr)
            return 3
        assert stack.client is not None
        samples = sample_orders(args.orders, stack.instruments, stack.price, stack.accounts[0],
                                set(stack.accounts))
        board.start(len(samples), args.rate, f"sim 127.0.0.1:{stack.port}" if stack.own_sim
                    else f"IBKR {settings.ibkr_host}:{stack.port}", set(stack.accounts))
        return await drive(stack.client, board, samples, args.rate, headless, stop, started)
    finally:
        await stack.close()


async def until_stopped(work: Coroutine[Any, Any, None], stop: asyncio.Event) -> bool:
    """Run ``work`` unless ``stop`` is set first (then cancel it); True when it completed."""
    task = asyncio.create_task(work)
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        return False
    task.result()
    return True


async def drive(client: OrderClient, board: Board, samples: list[Sample], rate: float, headless: bool,
                stop: asyncio.Event, started: float) -> int:
    """Produce, settle, and show it; the exit code from the outcome."""
    if not headless:
        sys.stdout.write("\x1b[?1049h\x1b[?25l")  # the alternate screen, no cursor
    painter = asyncio.create_task(refresh(board, headless))
    try:
        await produce(client, board, samples, rate, stop)
        await settle(client, board, stop)
    finally:
        painter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await painter
        if not headless:
            sys.stdout.write("\x1b[?25h\x1b[?1049l")
            sys.stdout.write(board.frame(clear=False))
    summary = board.summary(time.monotonic() - started)
    print(summary.line(), flush=True)
    if stop.is_set():
        return 130
    return 0 if summary.not_final == 0 else 1

