"""Order-consumer replicas, and the broker or the database going away under them, with real processes.

Every worker here is a real ``python -m workers order-consumer`` process over Kafka, PostgreSQL and the sim
gateway (which runs in the test process, so it outlives the workers, as IB Gateway would). The broker that
is SIGKILLed and the PostgreSQL cluster that is restarted are this session's own, started through
``scripts/dev-services`` on other ports (:data:`FAULT_KAFKA_PORT`, :data:`FAULT_PG_PORT`): the shared ones
never see a fault. Marked ``faults``: ``pytest -m "not faults"`` leaves them out.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Protocol

import psycopg
import pytest
from aiokafka.errors import KafkaError

from tests.conftest import ROOT, with_search_path
from tests.integration.harness import AAPL, Harness, order, running_harness
from tests.integration.worker_process import WorkerProcess, free_port
from workers.domain.orders import OrderRequested, OrderType, TimeInForce
from workers.settings import TopicNames

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.faults]

FINAL = {"FILLED", "CANCELLED", "REJECTED"}
# The private broker (and its controller on the next port) and cluster; never the shared 9092 and 5432.
FAULT_KAFKA_PORT = int(os.environ.get("FAULT_KAFKA_TEST_PORT", "9195"))
FAULT_PG_PORT = int(os.environ.get("FAULT_PG_TEST_PORT", "5433"))
FAULT_PG_CLUSTER = f"ibkr_faults_{FAULT_PG_PORT}"
# pg_ctlcluster acts on a cluster owned by the postgres user (scripts/dev-services uses sudo the same way).
AS_ROOT = [] if os.geteuid() == 0 else ["sudo", "-n"]
# Worker settings for the fault tests: health assessed every second, and an outage of a minute still
# DEGRADED (not UNHEALTHY), so the tests see the state the outage should give.
HEALTH_ENV = {"HEALTH_INTERVAL": "1", "HEALTH_UNHEALTHY_AFTER": "120"}


def dev_services(*args: str, env: dict[str, str], during_test: bool = False) -> dict[str, str]:
    """Run ``scripts/dev-services ARGS`` with ``env`` added; return the lines it exports.

    When it fails, the tests that need the service are skipped with its reason; ``during_test`` (a service
    that ran before, started again by a test) fails the test instead.
    """
    give_up = pytest.fail if during_test else pytest.skip
    try:
        done = subprocess.run([str(ROOT / "scripts" / "dev-services"), *args], env={**os.environ, **env},
                              capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        give_up(f"scripts/dev-services {' '.join(args)}: {exc}")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        give_up(f"scripts/dev-services {' '.join(args)} failed: {last}")
    return dict(line.removeprefix("export ").split("=", 1) for line in done.stdout.splitlines()
                if line.startswith("export "))


@dataclass(frozen=True)
class PrivateKafka:
    """A single-node broker of this session's own, which a test may SIGKILL and start again."""

    bootstrap: str
    env: dict[str, str]

    @property
    def pid_file(self) -> Path:
        return ROOT / ".dev-services" / f"kafka-{FAULT_KAFKA_PORT}" / "kafka.pid"

    async def sigkill(self) -> None:
        """SIGKILL the broker's JVM (no shutdown of any kind) and wait until it is gone."""
        await asyncio.to_thread(self._sigkill)

    def _sigkill(self) -> None:
        pid = int(self.pid_file.read_text().strip())
        assert b"kafka.Kafka" in Path(f"/proc/{pid}/cmdline").read_bytes(), "the pid file names no broker"
        os.kill(pid, signal.SIGKILL)
        while Path(f"/proc/{pid}").exists():
            time.sleep(0.05)

    async def start(self) -> None:
        """Start the broker again on its data directory (``scripts/dev-services up kafka``)."""
        await asyncio.to_thread(dev_services, "up", "kafka", env=self.env, during_test=True)


@pytest.fixture(scope="session")
def private_kafka() -> Iterator[PrivateKafka]:
    """This session's own broker on :data:`FAULT_KAFKA_PORT`, stopped when the session ends."""
    env = {"KAFKA_PORT": str(FAULT_KAFKA_PORT), "KAFKA_CONTROLLER_PORT": str(FAULT_KAFKA_PORT + 1)}
    exports = dev_services("up", "kafka", env=env)
    broker = PrivateKafka(exports["KAFKA_BOOTSTRAP_SERVERS"], env)
    if not broker.pid_file.exists():
        pytest.skip(f"a broker this checkout did not start answers on port {FAULT_KAFKA_PORT} "
                    "(FAULT_KAFKA_TEST_PORT moves the fault tests' broker)")
    yield broker
    subprocess.run([str(ROOT / "scripts" / "dev-services"), "down", "kafka"], env={**os.environ, **env},
                   capture_output=True, timeout=120, check=False)


@dataclass(frozen=True)
class PrivateCluster:
    """A PostgreSQL cluster of this session's own (Debian's cluster tools), which a test may restart."""

    url: str
    version: str
    name: str

    async def ctl(self, *action: str) -> None:
        """``pg_ctlcluster VERSION NAME ACTION...`` (fast mode: the workers' connections never end by themselves)."""
        done = await asyncio.to_thread(subprocess.run, [*AS_ROOT, "pg_ctlcluster", self.version, self.name, *action],
                                       capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr


@pytest.fixture(scope="session")
def private_cluster() -> Iterator[PrivateCluster]:
    """This session's own PostgreSQL cluster on :data:`FAULT_PG_PORT`, left stopped when the session ends."""
    env = {"PG_PORT": str(FAULT_PG_PORT), "PG_CLUSTER": FAULT_PG_CLUSTER}
    exports = dev_services("up", "postgres", env=env)
    listed = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=True).stdout
    version, name = next(line.split()[:2] for line in listed.splitlines() if line.split()[2] == str(FAULT_PG_PORT))
    yield PrivateCluster(exports["DATABASE_URL"], version, name)
    subprocess.run([*AS_ROOT, "pg_ctlcluster", version, name, "stop", "-m", "fast"], capture_output=True, timeout=120,
                   check=False)


@pytest.fixture
def private_database_url(private_cluster: PrivateCluster) -> Iterator[str]:
    """A URL on the private cluster whose ``search_path`` is a fresh schema of this test's own."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(private_cluster.url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield with_search_path(private_cluster.url, schema)
    finally:
        with psycopg.connect(private_cluster.url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@dataclass
class Replicas:
    """Order-consumer processes of one consumer group, one client id each."""

    workers: list[WorkerProcess]

    async def stop_all(self) -> list[int]:
        return [(await worker.terminate())[0] for worker in self.workers if worker.running]

    async def ensure_gone(self) -> None:
        for worker in self.workers:
            await worker.ensure_gone()

    async def wait_health(self, status: str, timeout: float) -> None:
        """Wait until every running replica's probe port says ``status``."""
        seen: dict[int, str | None] = {}

        async def poll() -> bool:
            for worker in self.workers:
                if worker.running:
                    seen[worker.client_id] = await worker.health()
            return all(s == status for s in seen.values())

        deadline = time.monotonic() + timeout
        while not await poll():
            if time.monotonic() > deadline:
                raise AssertionError(f"replicas not {status} within {timeout}s: {seen}")
            await asyncio.sleep(0.2)


class BuildReplicas(Protocol):
    def __call__(self, harness: Harness, client_ids: Sequence[int], **env: str) -> Replicas: ...


@pytest.fixture
async def replicas() -> AsyncIterator[BuildReplicas]:
    """Builds the replicas of a test (a consumer group of its own); none is left running afterwards."""
    built: list[Replicas] = []

    def build(harness: Harness, client_ids: Sequence[int], **env: str) -> Replicas:
        group = f"replicas-{uuid.uuid4().hex[:8]}"
        made = Replicas([WorkerProcess(harness, group, client_id=client_id, health_port=free_port(),
                                       **{**HEALTH_ENV, **env})
                         for client_id in client_ids])
        built.append(made)
        return made

    yield build
    for made in built:
        await made.ensure_gone()


async def send_until_written(harness: Harness, request: OrderRequested) -> None:
    """Send ``request``, again on a producer error: an outage may leave it written once, twice or not yet."""
    while True:
        try:
            await harness.send(request)
            return
        except KafkaError:
            await asyncio.sleep(0.5)


async def stream(harness: Harness, requests: Sequence[OrderRequested],
                 events: dict[int, Callable[[], Awaitable[None]]], per_second: float = 40.0) -> None:
    """Send ``requests`` at about ``per_second``; before request ``i`` is sent, await ``events[i]`` (if any)."""
    for i, request in enumerate(requests):
        if i in events:
            await events[i]()
        await send_until_written(harness, request)
        await asyncio.sleep(1 / per_second)


async def wait_settled(harness: Harness, market: Sequence[OrderRequested], timeout: float) -> None:
    """Every market order FILLED, and every execution the sim made published on ``fills.executed``."""
    await harness.wait_for(lambda: all(harness.observed.last_status(r.order_id) == "FILLED" for r in market),
                           timeout=timeout, what="every market order FILLED")
    await harness.wait_for(
        lambda: sum(len(f) for f in harness.observed.fills.values()) >= len(harness.sim.executions()),
        timeout=60, what="every execution on fills.executed")
    await asyncio.sleep(1.0)  # anything published twice would show up now


def assert_placed_once_and_filled_once(harness: Harness, requests: Sequence[OrderRequested]) -> None:
    """Each order placed once at the sim (by ``orderRef``, whichever client id), each execution published once."""
    placed_twice = [r.order_id for r in requests if harness.sim.place_count(r.order_id) != 1]
    assert placed_twice == []
    exec_ids = Counter(f["fill_id"] for fills in harness.observed.fills.values() for f in fills)
    assert [e for e, n in exec_ids.items() if n > 1] == []
    assert set(exec_ids) == {e.exec_id for e in harness.sim.executions()}


def assert_no_status_after_the_final_one(harness: Harness, requests: Sequence[OrderRequested]) -> None:
    """Statuses come at least once, but once an order's is final, any that follows repeats it."""
    for request in requests:
        trail = harness.status_trail(request.order_id)
        final = next(i for i, status in enumerate(trail) if status in FINAL)
        assert set(trail[final:]) == {trail[final]}, (request.order_id, trail)


def market_orders(rng: random.Random, count: int) -> list[OrderRequested]:
    return [order(quantity=str(rng.randint(1, 3))) for _ in range(count)]


@pytest.fixture
async def harness(kafka_bootstrap: str, database_url: str, kafka_topics: TopicNames) -> AsyncIterator[Harness]:
    """The shared broker and cluster; the workers are processes of the test's own."""
    async with running_harness(kafka_bootstrap, database_url, kafka_topics, in_process=False) as running:
        yield running


async def test_three_replicas_joining_crashing_and_restarting_place_each_order_once_and_cancel_every_resting_one(
        harness: Harness, replicas: BuildReplicas) -> None:
    rng = random.Random(20261207)
    # At INFO the workers log each cancel they leave to the replica that owns its order.
    group = replicas(harness, [21, 22, 23], LOG_LEVEL="INFO")
    first, second, joining = group.workers
    price = Decimal(str(harness.sim.price(AAPL.con_id))).quantize(Decimal("0.01"))
    requests = [order(order_type=OrderType.LIMIT, limit=str(price - 25), tif=TimeInForce.GTC, quantity="2")
                if i % 3 == 0 else order(quantity=str(rng.randint(1, 3))) for i in range(180)]
    resting = [r for r in requests if r.order_type is OrderType.LIMIT]
    market = [r for r in requests if r.order_type is OrderType.MARKET]

    # Each replica is stopped only once it is up (HEALTHY): a process still importing has nothing to lose.
    async def crash_first() -> None:
        await group.wait_health("HEALTHY", timeout=60)
        await first.kill()
        await first.start()  # the same client id: it reconciles what it owned and goes on

    async def restart_second() -> None:
        await group.wait_health("HEALTHY", timeout=60)
        code, _ = await second.terminate()
        assert code == 0
        await second.start()

    await first.start()
    await second.start()
    await stream(harness, requests, {40: joining.start, 80: crash_first, 120: restart_second})

    await wait_settled(harness, market, timeout=120)
    await harness.wait_for(lambda: all(harness.observed.last_status(r.order_id) == "SUBMITTED" for r in resting),
                           timeout=30, what="every resting order SUBMITTED")
    for request in resting:
        await harness.cancel(request.order_id)
    await harness.wait_for(lambda: all(harness.observed.last_status(r.order_id) == "CANCELLED" for r in resting),
                           timeout=60, what="every resting order CANCELLED")
    assert await group.stop_all() == [0, 0, 0]

    assert all(harness.observed.last_status(r.order_id) in FINAL for r in requests)
    assert_placed_once_and_filled_once(harness, requests)
    assert_no_status_after_the_final_one(harness, requests)
    for request in market:
        assert sum(f["quantity"] for f in harness.observed.fills[request.order_id]) == request.quantity
    assert not any(harness.observed.fills.get(r.order_id) for r in resting)
    # Every cancel reached IBKR through the client id that placed the order: nothing works any more.
    assert harness.sim.open_orders() == []
    by_ref = {o.request.order_ref: o for o in harness.sim.orders()}
    assert {by_ref[r.order_id].status for r in resting} == {"Cancelled"}
    # Each replica owned orders (the one that joined mid-stream too), and the rebalances moved orders away
    # from the replica that placed them: some cancels arrived at a replica that does not own their order.
    assert {o.client_id for o in harness.sim.orders()} == {21, 22, 23}
    routed = [e for worker in group.workers for e in worker.logged("cancel left for the owning worker")]
    assert routed, "no cancel reached a replica other than its order's owner"


async def test_the_broker_sigkilled_and_restarted_mid_stream_loses_and_duplicates_nothing(
        private_kafka: PrivateKafka, database_url: str, kafka_topics: TopicNames,
        replicas: BuildReplicas) -> None:
    rng = random.Random(9195)
    async with running_harness(private_kafka.bootstrap, database_url, kafka_topics, in_process=False) as harness:
        group = replicas(harness, [31, 32])
        for worker in group.workers:
            await worker.start()
        await group.wait_health("HEALTHY", timeout=60)
        requests = market_orders(rng, 120)

        async def broker_away() -> None:
            await private_kafka.sigkill()
            await group.wait_health("DEGRADED", timeout=30)
            await private_kafka.start()

        await stream(harness, requests, {50: broker_away})
        await wait_settled(harness, requests, timeout=120)
        await group.wait_health("HEALTHY", timeout=60)
        assert await group.stop_all() == [0, 0]

        assert_placed_once_and_filled_once(harness, requests)
        assert_no_status_after_the_final_one(harness, requests)
        for request in requests:
            assert sum(f["quantity"] for f in harness.observed.fills[request.order_id]) == request.quantity
        # The Kafka client's retries (several a second each) are not a line each in the workers' logs.
        for worker in group.workers:
            client_lines = [e for e in worker.log_entries() if str(e.get("logger", "")).startswith("aiokafka")]
            assert len(client_lines) < 100, Counter(e["event"][:60] for e in client_lines).most_common(5)


async def test_postgresql_restarted_mid_stream_loses_and_duplicates_nothing(
        private_cluster: PrivateCluster, private_database_url: str, kafka_bootstrap: str,
        kafka_topics: TopicNames, replicas: BuildReplicas) -> None:
    rng = random.Random(5433)
    async with running_harness(kafka_bootstrap, private_database_url, kafka_topics, in_process=False) as harness:
        group = replicas(harness, [41, 42])
        for worker in group.workers:
            await worker.start()
        await group.wait_health("HEALTHY", timeout=60)
        requests = market_orders(rng, 120)

        async def restart() -> None:
            await private_cluster.ctl("restart", "-m", "fast")

        async def away_then_back() -> None:
            await private_cluster.ctl("stop", "-m", "fast")
            await group.wait_health("DEGRADED", timeout=30)
            await private_cluster.ctl("start")

        await stream(harness, requests, {40: restart, 80: away_then_back})
        await wait_settled(harness, requests, timeout=120)
        await group.wait_health("HEALTHY", timeout=60)
        assert await group.stop_all() == [0, 0]

        # The broker stayed up: each replica's health records said why it was DEGRADED.
        degraded = {h["instance_id"] for h in harness.observed.health
                    if h["status"] == "DEGRADED" and not h["database_connected"]}
        assert len(degraded) == 2

        assert_placed_once_and_filled_once(harness, requests)
        assert_no_status_after_the_final_one(harness, requests)
        for request in requests:
            assert sum(f["quantity"] for f in harness.observed.fills[request.order_id]) == request.quantity
