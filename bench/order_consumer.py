"""Benchmark of the order-consumer through real Kafka + PostgreSQL + the sim gateway.

Run (services from scripts/dev-services, exported):  .venv/bin/python bench/order_consumer.py

It measures, in one run on this machine:
  * the worker's sustained throughput with a backlog of N orders (pacing off), against
  * ceiling 1: a bare ib_insync loop placing the same market orders against the same sim, and
  * ceiling 2: a bare aiokafka + fastavro consume-and-decode loop on the same broker;
  * p50/p99 latency produce → placeOrder at the sim and execution → fills.executed record, at 200 orders/s,
    next to a baseline: a plain aiokafka consumer of the same topic in a process of its own
    (bench/plain_consumer.py), whose produce → fetch p50/p99 is what any consumer sees on this machine;
    the worker's figures are also given as ratios to it;
  * the worker's peak RSS;
  * with pacing on (worker 45 msg/s, sim enforcing 50/s): throughput vs the budget and pacing violations.
The sim, the worker, the load generator (bench/load_generator.py), the plain consumer and the bare
ib_insync client each run in a process of their own, as in production; the sim's executions (with their
times) are read over its control port.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar

import psycopg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.ledger_history import seed_history
from ibkr_sim.control import control_call
from tests.conftest import with_search_path
from workers.adapters.avro import AvroCodec
from workers.adapters.kafka.records import (
    FILL_EXECUTED,
    ORDER_REQUESTED,
    ORDER_STATUS_CHANGED,
    order_requested_record,
)
from workers.adapters.postgres.instruments import InstrumentMapper
from workers.adapters.postgres.migrate import migrate
from workers.adapters.postgres.pool import close_pool, open_pool
from workers.domain.instruments import Instrument
from workers.domain.orders import OrderRequested, OrderType, Side, TimeInForce
from workers.settings import TopicNames

ACCOUNT = "DU0000001"
AAPL = Instrument(instrument_id="STK:AAPL:USD", con_id=265598, symbol="AAPL", sec_type="STK", exchange="SMART",
                  currency="USD", min_tick=Decimal("0.01"), primary_exchange="NASDAQ")


@dataclass
class History:
    """How many finished orders the ledger holds before a run (see bench/ledger_history.py)."""

    orders: int = 50_000


HISTORY = History()

BARE_IB = """
import asyncio, sys, time
from ib_insync import IB, Contract, MarketOrder
async def main(port, n):
    ib = IB()
    ib.client.MaxRequests = 0  # pacing off in the client too
    await ib.connectAsync("127.0.0.1", port, clientId=99)
    contract = Contract(conId=265598, exchange="SMART")
    done = asyncio.Event(); filled = 0
    def on_status(trade):
        nonlocal filled
        if trade.orderStatus.status == "Filled":
            filled += 1
            if filled == n: done.set()
    ib.orderStatusEvent += on_status
    cpu0, t0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        ib.placeOrder(contract, MarketOrder("BUY", 1))
        await asyncio.sleep(0)
    await asyncio.wait_for(done.wait(), 300)
    print(n / (time.perf_counter() - t0), (time.process_time() - cpu0) / n * 1000)
    ib.disconnect()
asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class SimProcess:
    """The sim gateway in a process of its own (as IB Gateway would be), driven over its control port."""

    started: ClassVar[list[SimProcess]] = []

    def __init__(self, pacing: bool) -> None:
        self.pacing = pacing
        self.process: asyncio.subprocess.Process | None = None
        self.port = 0
        self.control_port = 0

    async def start(self) -> int:
        ready = Path(f"/tmp/bench-sim-{uuid.uuid4().hex[:8]}.json")
        SimProcess.started.append(self)
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ibkr_sim", "--port", "0", "--control-port", "0",
            "--pacing", "on" if self.pacing else "off", "--ready-file", str(ready), cwd=REPO)
        for _ in range(200):
            if ready.exists():
                break
            await asyncio.sleep(0.05)
        ports = json.loads(ready.read_text())
        ready.unlink()
        self.port, self.control_port = ports["port"], ports["control_port"]
        return self.port

    async def call(self, op: str, **kwargs: Any) -> Any:
        return await control_call("127.0.0.1", self.control_port, op, **kwargs)

    async def executions(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await self.call("executions")
        return result

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.terminate()
            await self.process.wait()


class PlainConsumer:
    """The latency baseline: bench/plain_consumer.py on the run's orders topic, in a process of its own."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, setup: Setup, expected: int) -> PlainConsumer:
        """Start it and wait until its positions are fixed, so it sees every order from its send."""
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(REPO / "bench" / "plain_consumer.py"), setup.bootstrap,
            setup.topics.orders_requested, str(expected), stdout=asyncio.subprocess.PIPE, cwd=REPO)
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        if line.strip() != b"ready":
            raise SystemExit(f"plain consumer failed to start: {line!r}")
        return cls(process)

    async def finish(self) -> dict[str, float]:
        """Its fetch times by order_id, once it has fetched every record it expects."""
        out, _ = await asyncio.wait_for(self.process.communicate(), 120)
        if self.process.returncode != 0:
            raise SystemExit(f"plain consumer failed (exit {self.process.returncode})")
        fetched_at: dict[str, float] = json.loads(out)
        return fetched_at


def ratios(worker: dict[str, float], baseline: dict[str, float]) -> dict[str, float]:
    """The worker's p50 and p99 as multiples of the baseline's."""
    return {q: round(worker[q] / baseline[q], 2) for q in ("p50", "p99")}


@dataclass
class Setup:
    bootstrap: str
    database_url: str
    topics: TopicNames
    sim: SimProcess
    port: int
    server_url: str
    schema: str

    async def tear_down(self) -> None:
        """Stop the sim; drop the run's schema (its history is tens of megabytes) and topics."""
        await self.sim.stop()
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{self.schema}" CASCADE')
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            await admin.delete_topics([getattr(self.topics, f) for f in self.topics.__dataclass_fields__])
        finally:
            await admin.close()


async def prepare(bootstrap: str, server_url: str, pacing: bool) -> Setup:
    suffix = uuid.uuid4().hex[:8]
    defaults = TopicNames()
    topics = TopicNames(**{f: f"bench.{getattr(defaults, f)}.{suffix}" for f in defaults.__dataclass_fields__})
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(getattr(topics, f), 6, 1) for f in topics.__dataclass_fields__])
    finally:
        await admin.close()
    schema = f"bench_{suffix}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    database_url = with_search_path(server_url, schema)
    await migrate(database_url)
    pool = await open_pool(database_url)
    try:
        await InstrumentMapper(pool).upsert(AAPL)
    finally:
        await close_pool(pool)
    if HISTORY.orders:
        seed_history(database_url, HISTORY.orders, account=ACCOUNT, instrument_id=AAPL.instrument_id,
                     con_id=AAPL.con_id)
    sim = SimProcess(pacing)
    port = await sim.start()
    return Setup(bootstrap, database_url, topics, sim, port, server_url, schema)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def stage_quantiles(health_port: int) -> dict[str, dict[str, float]]:
    """p50 / p99 (bucket upper bounds, ms) of ibkr_workers_order_stage_seconds, scraped from /metrics."""
    import httpx

    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{health_port}/metrics")).text
    buckets: dict[str, list[tuple[float, float]]] = {}
    for line in text.splitlines():
        if line.startswith("ibkr_workers_order_stage_seconds_bucket"):
            labels, value = line.rsplit(" ", 1)
            stage = labels.split('stage="')[1].split('"')[0]
            bound = labels.split('le="')[1].split('"')[0]
            buckets.setdefault(stage, []).append((float(bound), float(value)))
    result: dict[str, dict[str, float]] = {}
    for stage, points in buckets.items():
        points.sort()
        total = points[-1][1]
        if not total:
            continue
        result[stage] = {f"p{int(q * 100)}_ms_at_most": next(b for b, c in points if c >= q * total) * 1000
                         for q in (0.5, 0.9, 0.99)}
    return result


# --rules: the worker's risk rules all off, or all on (each set so that the bench's orders pass it: what is
# measured is the cost of checking, not of rejecting).
RULES_OFF = {"PRICE_BAND": "none", "PRICE_BAND_BY_SEC_TYPE": "{}", "MAX_ORDER_AGE": "none"}
RULES_ON = {"PRICE_BAND": "0.10", "MAX_ORDER_AGE": "60", "MAX_ORDER_NOTIONAL": "1000000000",
            "MAX_POSITION": "1000000000000", "MAX_ORDERS_PER_SECOND": "100000"}
WORKER_EXTRA_ENV: dict[str, str] = {}


def worker_env(setup: Setup, pacing: float, health_port: int = 0) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "KAFKA_BOOTSTRAP_SERVERS": setup.bootstrap, "DATABASE_URL": setup.database_url,
        "IBKR_PORT": str(setup.port), "IBKR_CLIENT_ID": "7", "IBKR_ACCOUNTS": ACCOUNT,
        "IBKR_PACING_PER_SECOND": str(pacing), "KAFKA_CONSUMER_GROUP": f"bench-{uuid.uuid4().hex[:6]}",
        "HEALTH_PORT": str(health_port), "ADMIN_PORT": "0", "LOG_LEVEL": "WARNING",
        **{f"TOPIC_{f.upper()}": getattr(setup.topics, f) for f in setup.topics.__dataclass_fields__},
        # BENCH_WORKER_X=v runs the worker with X=v (to try a setting without editing the bench).
        **{name.removeprefix("BENCH_WORKER_"): value for name, value in os.environ.items()
           if name.startswith("BENCH_WORKER_")},
        **WORKER_EXTRA_ENV,
    }


def market_order() -> OrderRequested:
    return OrderRequested(order_id=str(uuid.uuid4()), account=ACCOUNT, instrument_id=AAPL.instrument_id,
                          side=Side.BUY, quantity=Decimal(1), order_type=OrderType.MARKET, limit_price=None,
                          stop_price=None, time_in_force=TimeInForce.DAY, outside_rth=False,
                          created_at=datetime.now(UTC))


class Watcher:
    """Collects FILLED statuses and fills.executed record timestamps by order id."""

    def __init__(self, setup: Setup, codec: AvroCodec) -> None:
        self.setup, self.codec = setup, codec
        self.filled: dict[str, float] = {}
        self.fill_records: dict[str, float] = {}
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        # An observer that fetches a few times a second, in big batches, rather than each record as it
        # comes: its figures come from record timestamps, so only its (and the broker's) CPU changes, on the
        # two cores the worker shares with everything else.
        consumer = AIOKafkaConsumer(self.setup.topics.orders_status, self.setup.topics.fills_executed,
                                    bootstrap_servers=self.setup.bootstrap, group_id=None,
                                    auto_offset_reset="earliest",
                                    fetch_min_bytes=1 << 20, fetch_max_wait_ms=200)
        await consumer.start()
        try:
            while True:  # getmany, not one record at a time: the load generator shares the two cores
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    for record in records:
                        self._note(record)
        finally:
            await consumer.stop()

    def _note(self, record: Any) -> None:
        if record.topic == self.setup.topics.orders_status:
            value = self.codec.decode(record.value, ORDER_STATUS_CHANGED)
            if value["status"] == "FILLED":
                self.filled.setdefault(value["order_id"], time.time())
        else:
            value = self.codec.decode(record.value, FILL_EXECUTED)
            self.fill_records[value["fill_id"]] = record.timestamp / 1000


async def produce(setup: Setup, codec: AvroCodec, orders: list[OrderRequested], rate: float | None) -> dict[str, float]:
    """Produce ``orders`` to orders.requested at ``rate`` per second (None: all at once) from the load
    generator's own process (bench/load_generator.py); their send times by order_id."""
    spec = {"bootstrap": setup.bootstrap, "topic": setup.topics.orders_requested, "rate": rate,
            "records": [[o.order_id, codec.encode(ORDER_REQUESTED, order_requested_record(o)).hex()]
                        for o in orders]}
    path = Path(f"/tmp/bench-load-{uuid.uuid4().hex[:8]}.json")
    path.write_text(json.dumps(spec))
    try:
        process = await asyncio.create_subprocess_exec(sys.executable, str(REPO / "bench" / "load_generator.py"),
                                                       str(path), stdout=asyncio.subprocess.PIPE, cwd=REPO)
        out, _ = await process.communicate()
    finally:
        path.unlink()
    if process.returncode != 0:
        raise SystemExit(f"load generator failed (exit {process.returncode})")
    sent_at: dict[str, float] = json.loads(out)
    return sent_at


async def wait_filled(watcher: Watcher, orders: list[OrderRequested], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    waiting = [o.order_id for o in orders]
    while waiting:
        waiting = [order_id for order_id in waiting if order_id not in watcher.filled]
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {len(waiting)} orders not FILLED")
        await asyncio.sleep(0.05)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def start_worker(setup: Setup, pacing: float, health_port: int = 0) -> asyncio.subprocess.Process:
    profile = os.environ.get("BENCH_PROFILE")  # a path: profile the worker with cProfile into it
    prefix = ["-m", "cProfile", "-o", profile] if profile else []
    return await asyncio.create_subprocess_exec(sys.executable, *prefix, "-m", "workers", "order-consumer",
                                                env=worker_env(setup, pacing, health_port), cwd=REPO)


async def stop_worker(process: asyncio.subprocess.Process) -> float:
    rss = peak_rss_mb(process.pid)
    process.terminate()
    await asyncio.wait_for(process.wait(), 30)
    return rss


async def executions_by_ref(sim: SimProcess) -> dict[str, tuple[float, str]]:
    return {e["order_ref"]: (e["epoch"], e["exec_id"]) for e in await sim.executions()}


async def bench_worker_backlog(bootstrap: str, server_url: str, count: int) -> dict[str, Any]:
    setup = await prepare(bootstrap, server_url, pacing=False)
    codec = AvroCodec()
    watcher = Watcher(setup, codec)
    watcher.task = asyncio.create_task(watcher.run())
    orders = [market_order() for _ in range(count)]
    await produce(setup, codec, orders, rate=None)  # the backlog is there before the worker starts
    process = await start_worker(setup, pacing=100_000)
    await asyncio.sleep(0.5)
    cpu_before = cpu_seconds(process.pid)
    await wait_filled(watcher, orders, timeout=600)
    worker_cpu = cpu_seconds(process.pid) - cpu_before
    rss = await stop_worker(process)
    by_ref = await executions_by_ref(setup.sim)
    epochs = sorted(by_ref[o.order_id][0] for o in orders)
    rate = (count - 1) / (epochs[-1] - epochs[0])
    watcher.task.cancel()
    await setup.tear_down()
    return {"orders": count, "orders_per_s": rate, "peak_rss_mb": rss,
            "worker_cpu_ms_per_order": worker_cpu / count * 1000}


async def bench_worker_latency(bootstrap: str, server_url: str, count: int, rate: float,
                               ramp_seconds: float, plain_consumer: bool = True,
                               pacing: bool = False) -> dict[str, Any]:
    """Latency at ``rate`` orders/s, steady state: one stream of orders at that rate, of which the first
    ``ramp_seconds`` are not counted in the figures but reported on their own (the moment load starts,
    the broker, PostgreSQL and the worker all warm up on the same two cores). With ``plain_consumer``, the
    same orders' produce → fetch by a plain consumer of the topic is measured alongside (the baseline).
    With ``pacing``, the worker paces at 45 messages/s and the sim enforces IB's 50/s, as with a real gateway."""
    setup = await prepare(bootstrap, server_url, pacing=pacing)
    codec = AvroCodec()
    watcher = Watcher(setup, codec)
    watcher.task = asyncio.create_task(watcher.run())
    health_port = free_port()
    process = await start_worker(setup, pacing=45 if pacing else 100_000, health_port=health_port)
    warmup = [market_order() for _ in range(20)]
    ramp = [market_order() for _ in range(int(rate * ramp_seconds))]
    orders = [market_order() for _ in range(count)]
    plain = await PlainConsumer.start(setup, len(warmup) + len(ramp) + count) if plain_consumer else None
    await produce(setup, codec, warmup, rate=50)
    await wait_filled(watcher, warmup, timeout=60)
    cpu_before = cpu_seconds(process.pid)
    sent_at = await produce(setup, codec, ramp + orders, rate=rate)
    await wait_filled(watcher, ramp + orders, timeout=300)
    await asyncio.sleep(3)  # fills wait up to 2 s for commissions
    cpu_per_order_ms = (cpu_seconds(process.pid) - cpu_before) / (len(ramp) + count) * 1000
    stages = await stage_quantiles(health_port)
    rss = await stop_worker(process)
    by_ref = await executions_by_ref(setup.sim)

    def to_place(batch: list[OrderRequested]) -> list[float]:
        return [(by_ref[o.order_id][0] - sent_at[o.order_id]) * 1000 for o in batch]

    measured = to_place(orders)
    fetched_at = await plain.finish() if plain is not None else {}
    to_fill = [(watcher.fill_records[by_ref[o.order_id][1]] - by_ref[o.order_id][0]) * 1000 for o in orders
               if by_ref[o.order_id][1] in watcher.fill_records]
    watcher.task.cancel()
    await setup.tear_down()
    if os.environ.get("BENCH_DUMP"):  # a path: every order's (order_id, sent at, produce->place ms)
        everything = ramp + orders
        Path(os.environ["BENCH_DUMP"]).write_text(json.dumps(
            [(o.order_id, sent_at[o.order_id], latency)
             for o, latency in zip(everything, to_place(everything), strict=True)]))
    result: dict[str, Any] = {
        "orders": count, "rate": rate,
        "produce_to_place_ms": {"p50": statistics.median(measured), "p99": percentile(measured, 0.99)},
        "execution_to_fill_record_ms": {"p50": statistics.median(to_fill), "p99": percentile(to_fill, 0.99)},
        "peak_rss_mb": rss, "worker_cpu_ms_per_order": round(cpu_per_order_ms, 3), "worker_stages": stages,
        "measured_ms": measured,
    }
    if plain is not None:
        baseline = [(fetched_at[o.order_id] - sent_at[o.order_id]) * 1000 for o in orders]
        result["plain_consumer_produce_to_fetch_ms"] = {"p50": statistics.median(baseline),
                                                        "p99": percentile(baseline, 0.99)}
        result["ratio_to_plain_consumer"] = ratios(result["produce_to_place_ms"],
                                                   result["plain_consumer_produce_to_fetch_ms"])
        result["baseline_ms"] = baseline
    if ramp:
        ramp_latency = to_place(ramp)
        result["ramp"] = {"orders": len(ramp), "produce_to_place_ms": {
            "p50": statistics.median(ramp_latency), "p99": percentile(ramp_latency, 0.99),
            "max": max(ramp_latency)}}
    return result


async def bench_worker_pacing(bootstrap: str, server_url: str, count: int) -> dict[str, Any]:
    setup = await prepare(bootstrap, server_url, pacing=True)
    codec = AvroCodec()
    watcher = Watcher(setup, codec)
    watcher.task = asyncio.create_task(watcher.run())
    orders = [market_order() for _ in range(count)]
    await produce(setup, codec, orders, rate=None)
    process = await start_worker(setup, pacing=45)
    await wait_filled(watcher, orders, timeout=600)
    await stop_worker(process)
    by_ref = await executions_by_ref(setup.sim)
    epochs = sorted(by_ref[o.order_id][0] for o in orders)
    rate = (count - 1) / (epochs[-1] - epochs[0])
    violations = (await setup.sim.call("stats"))["pacing_violations"]
    watcher.task.cancel()
    await setup.tear_down()
    return {"orders": count, "budget_per_s": 45, "orders_per_s": rate, "pacing_violations": violations}


async def bench_bare_ib(count: int) -> dict[str, Any]:
    sim = SimProcess(pacing=False)
    port = await sim.start()
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", BARE_IB, str(port), str(count),
                                                   stdout=asyncio.subprocess.PIPE)
    out, _ = await process.communicate()
    await sim.stop()
    rate, cpu_ms = (float(x) for x in out.split())
    return {"orders": count, "orders_per_s": rate, "client_cpu_ms_per_order": cpu_ms}


async def bench_bare_kafka(bootstrap: str, count: int) -> dict[str, Any]:
    topic = f"bench.decode.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 6, 1)])
    finally:
        await admin.close()
    codec = AvroCodec()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    futures = [await producer.send(topic, codec.encode(ORDER_REQUESTED, order_requested_record(market_order())))
               for _ in range(count)]
    await asyncio.gather(*futures)
    await producer.stop()
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=f"d-{uuid.uuid4().hex[:6]}",
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    decoded = 0
    started = time.perf_counter()
    while decoded < count:
        for records in (await consumer.getmany(timeout_ms=500, max_records=500)).values():
            for record in records:
                codec.decode(record.value, ORDER_REQUESTED)
                decoded += 1
        await consumer.commit()
    elapsed = time.perf_counter() - started
    await consumer.stop()
    return {"records": count, "records_per_s": count / elapsed}


async def main(args: argparse.Namespace) -> None:
    HISTORY.orders = args.history
    try:
        await run_all(args)
    finally:
        for sim in SimProcess.started:
            await sim.stop()


async def latency_runs(bootstrap: str, server_url: str, args: argparse.Namespace) -> dict[str, Any]:
    """``--latency-runs`` runs of the latency bench; with more than one, the medians of their p50 and p99
    as well (identical runs differ widely on a shared machine)."""
    runs = [await bench_worker_latency(bootstrap, server_url, args.latency_orders, args.rate, args.ramp,
                                       plain_consumer=not args.no_plain_consumer)
            for _ in range(max(1, args.latency_runs))]
    measured = [latency for run in runs for latency in run.pop("measured_ms")]
    baseline = [latency for run in runs for latency in run.pop("baseline_ms", [])]
    if len(runs) == 1:
        return runs[0]
    summary: dict[str, Any] = {
        "runs": runs,
        "pooled_p99_ms": percentile(measured, 0.99),  # over every measured order of every run
        "median_p50_ms": statistics.median(r["produce_to_place_ms"]["p50"] for r in runs),
        "median_p99_ms": statistics.median(r["produce_to_place_ms"]["p99"] for r in runs),
        "p99_ms_each_run": [round(r["produce_to_place_ms"]["p99"], 1) for r in runs],
        "ramp_p99_ms_each_run": [round(r["ramp"]["produce_to_place_ms"]["p99"], 1) for r in runs if "ramp" in r],
    }
    if baseline:
        summary["plain_consumer"] = {
            "pooled_p99_ms": percentile(baseline, 0.99),
            "median_p50_ms": statistics.median(r["plain_consumer_produce_to_fetch_ms"]["p50"] for r in runs),
            "median_p99_ms": statistics.median(r["plain_consumer_produce_to_fetch_ms"]["p99"] for r in runs),
            "p99_ms_each_run": [round(r["plain_consumer_produce_to_fetch_ms"]["p99"], 1) for r in runs],
        }
        summary["ratio_to_plain_consumer"] = {
            "median_p50": round(summary["median_p50_ms"] / summary["plain_consumer"]["median_p50_ms"], 2),
            "median_p99": round(summary["median_p99_ms"] / summary["plain_consumer"]["median_p99_ms"], 2),
            "pooled_p99": round(summary["pooled_p99_ms"] / summary["plain_consumer"]["pooled_p99_ms"], 2),
            "p99_each_run": [r["ratio_to_plain_consumer"]["p99"] for r in runs],
        }
    return summary


async def rules_compare(bootstrap: str, server_url: str, args: argparse.Namespace) -> dict[str, Any]:
    """Latency runs with every risk rule off and on, interleaved (off, on, off, on …): worker CPU per order
    and p99 produce → placeOrder of each, and the ratios on / off."""
    figures: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    for _ in range(max(1, args.latency_runs)):
        for name, env in (("off", RULES_OFF), ("on", RULES_ON)):
            WORKER_EXTRA_ENV.clear()
            WORKER_EXTRA_ENV.update(env)
            run = await bench_worker_latency(bootstrap, server_url, args.latency_orders, args.rate, args.ramp,
                                             plain_consumer=False, pacing=args.pacing)
            run.pop("measured_ms", None)
            figures[name].append(run)
    WORKER_EXTRA_ENV.clear()

    def medians(runs: list[dict[str, Any]]) -> dict[str, float]:
        return {"worker_cpu_ms_per_order": statistics.median(r["worker_cpu_ms_per_order"] for r in runs),
                "p50_ms": statistics.median(r["produce_to_place_ms"]["p50"] for r in runs),
                "p99_ms": statistics.median(r["produce_to_place_ms"]["p99"] for r in runs),
                "cpu_each_run": [r["worker_cpu_ms_per_order"] for r in runs],
                "p99_each_run": [round(r["produce_to_place_ms"]["p99"], 1) for r in runs]}

    off, on = medians(figures["off"]), medians(figures["on"])
    return {"rules_off": off, "rules_on": on, "rate": args.rate, "pacing": args.pacing,
            "ratio_cpu_on_to_off": round(on["worker_cpu_ms_per_order"] / off["worker_cpu_ms_per_order"], 3),
            "ratio_p99_on_to_off": round(on["p99_ms"] / off["p99_ms"], 3)}


async def run_all(args: argparse.Namespace) -> None:
    bootstrap = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    server_url = os.environ["DATABASE_URL"]
    results: dict[str, Any] = {}
    if args.rules_compare:
        print(json.dumps(await rules_compare(bootstrap, server_url, args), indent=2))
        return
    if args.only_latency:
        print(json.dumps(await latency_runs(bootstrap, server_url, args), indent=2))
        return
    if args.only_backlog:
        print(json.dumps(await bench_worker_backlog(bootstrap, server_url, args.orders), indent=2))
        return
    results["bare_ib_insync"] = await bench_bare_ib(args.orders)
    results["bare_kafka_decode"] = await bench_bare_kafka(bootstrap, args.orders)
    results["worker_backlog"] = await bench_worker_backlog(bootstrap, server_url, args.orders)
    results["worker_latency"] = await latency_runs(bootstrap, server_url, args)
    if not args.skip_pacing:
        results["worker_pacing_on"] = await bench_worker_pacing(bootstrap, server_url, args.pacing_orders)
    results["ratio_worker_to_bare_ib"] = (results["worker_backlog"]["orders_per_s"]
                                          / results["bare_ib_insync"]["orders_per_s"])
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--orders", type=int, default=3000)
    parser.add_argument("--latency-orders", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=200.0, help="orders/s of the latency run (target: 200)")
    parser.add_argument("--ramp", type=float, default=2.0,
                        help="seconds of orders at --rate before the measured ones (reported apart)")
    parser.add_argument("--latency-runs", type=int, default=1, help="repeat the latency run; report the medians")
    parser.add_argument("--pacing-orders", type=int, default=450)
    parser.add_argument("--history", type=int, default=HISTORY.orders,
                        help="finished orders in the ledger before each run (0: empty tables)")
    parser.add_argument("--skip-pacing", action="store_true")
    parser.add_argument("--only-backlog", action="store_true", help="only the worker's backlog throughput")
    parser.add_argument("--only-latency", action="store_true", help="only the worker's latency at 200/s")
    parser.add_argument("--rules-compare", action="store_true",
                        help="only latency runs, every risk rule off then on (interleaved), with the ratios")
    parser.add_argument("--pacing", action="store_true",
                        help="with --rules-compare: the worker paces at 45 msg/s and the sim enforces 50/s")
    parser.add_argument("--no-plain-consumer", action="store_true",
                        help="latency runs without the plain consumer of the orders topic (the baseline)")
    asyncio.run(main(parser.parse_args()))
