"""``ibkr-workers submit``, ``cancel`` and ``tail`` as a person runs them: subprocesses against a running
order-consumer (real Kafka, real PostgreSQL, the sim gateway)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import pytest

from tests.integration.harness import AAPL, ACCOUNT, Harness, order, running_harness
from workers.domain.orders import OrderType, TimeInForce
from workers.settings import TopicNames

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Run:
    code: int
    out: list[str]
    err: str


class Cli:
    """``python -m workers ...`` with the harness's settings (and topics) in its environment."""

    def __init__(self, harness: Harness) -> None:
        settings = harness.settings()
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "DATABASE_URL": settings.database_dsn,
            "LOG_LEVEL": "WARNING",
            **{f"TOPIC_{name.upper()}": getattr(harness.topics, name)
               for name in harness.topics.__dataclass_fields__},
        }

    async def __call__(self, *args: str, timeout: float = 60, **env: str) -> Run:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "workers", *args, env={**self.env, **env}, cwd=REPO,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), timeout)
        assert process.returncode is not None
        return Run(process.returncode, out.decode().splitlines(), err.decode())

    async def start(self, *args: str) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "workers", *args, env=self.env, cwd=REPO,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )


@pytest.fixture
async def harness(kafka_bootstrap: str, database_url: str, kafka_topics: TopicNames) -> AsyncIterator[Harness]:
    async with running_harness(kafka_bootstrap, database_url, kafka_topics) as running:
        yield running


@pytest.fixture
def cli(harness: Harness) -> Cli:
    return Cli(harness)


def aapl_price(harness: Harness) -> Decimal:
    return Decimal(str(harness.sim.price(AAPL.con_id))).quantize(Decimal("0.01"))


async def test_submit_with_wait_prints_the_id_statuses_and_fill_and_exits_zero(harness: Harness,
                                                                               cli: Cli) -> None:
    run = await cli("submit", "--account", ACCOUNT, "--instrument", AAPL.instrument_id, "--side", "BUY",
                    "--qty", "10", "--type", "LIMIT", "--limit", str(aapl_price(harness) + 1), "--tif", "DAY",
                    "--wait", "--timeout", "30")
    assert run.code == 0, run.err
    order_id = run.out[0]
    assert uuid.UUID(order_id)
    lines = [line.split()[1] for line in run.out[1:]]
    # Statuses keep their order on orders.status; a fill on fills.executed may come before any of them.
    statuses = [word for word in lines if word != "FILL"]
    assert statuses[0] == "ACCEPTED" and "FILLED" in statuses and "FILL" in lines
    assert harness.sim.place_count(order_id) == 1
    await harness.wait_status(order_id, "FILLED")


async def test_submit_of_a_gtd_adaptive_limit_order_rests_at_ibkr_with_both(harness: Harness, cli: Cli) -> None:
    run = await cli("submit", "--account", ACCOUNT, "--instrument", AAPL.instrument_id, "--side", "BUY",
                    "--qty", "2", "--order-type", "LIMIT", "--limit", str(aapl_price(harness) - 25), "--tif", "GTD",
                    "--good-till", "2099-01-02T15:30:00Z", "--algo", "ADAPTIVE", "--algo-priority", "PATIENT")
    assert run.code == 0, run.err
    await harness.wait_status(run.out[0], "SUBMITTED")
    [placed] = [req for _, req in harness.sim.broker.requests_seen if req.order_ref == run.out[0]]
    assert (placed.order_type, placed.tif, placed.good_till_date) == ("LMT", "GTD", "20990102-15:30:00")


async def test_submit_of_an_order_the_worker_refuses_exits_one_with_the_reason(cli: Cli) -> None:
    run = await cli("submit", "--account", ACCOUNT, "--instrument", "STK:NOPE:USD", "--side", "SELL",
                    "--qty", "1", "--wait", "--timeout", "30")
    assert run.code == 1
    assert "REJECTED" in run.out[-1] and "UNKNOWN_INSTRUMENT" in run.out[-1]


async def test_submit_waiting_past_its_timeout_exits_one(harness: Harness, cli: Cli) -> None:
    run = await cli("submit", "--account", ACCOUNT, "--instrument", AAPL.instrument_id, "--side", "BUY",
                    "--qty", "1", "--type", "LIMIT", "--limit", str(aapl_price(harness) - 25), "--tif", "GTC",
                    "--wait", "--timeout", "3")
    assert run.code == 1
    assert "timed out" in run.err
    await harness.wait_status(run.out[0], "SUBMITTED")


async def test_cancel_command_cancels_a_resting_order(harness: Harness, cli: Cli) -> None:
    submitted = await cli("submit", "--account", ACCOUNT, "--instrument", AAPL.instrument_id, "--side", "BUY",
                          "--qty", "3", "--type", "LIMIT", "--limit", str(aapl_price(harness) - 20),
                          "--tif", "GTC")
    assert submitted.code == 0, submitted.err
    order_id = submitted.out[0]
    await harness.wait_status(order_id, "SUBMITTED")
    run = await cli("cancel", order_id, "--account", ACCOUNT, "--wait", "--timeout", "30")
    assert run.code == 0, run.err
    assert run.out[0] == f"cancel requested for {order_id}"
    assert run.out[-1].split()[1] == "CANCELLED"
    assert harness.observed.last_status(order_id) == "CANCELLED"
    assert harness.sim.open_orders() == []


async def test_tail_json_decodes_the_status_records_by_contract_name(harness: Harness, cli: Cli) -> None:
    request = order()
    await harness.send(request)
    await harness.wait_status(request.order_id, "FILLED")
    run = await cli("tail", "orders.status", "--from-beginning", "--json", "--max", "3", "--timeout", "20")
    assert run.code == 0, run.err
    records = [json.loads(line) for line in run.out]
    assert [r["value"]["status"] for r in records] == harness.status_trail(request.order_id)[:3]
    assert {r["topic"] for r in records} == {harness.topics.orders_status}
    assert all(r["key"] == request.order_id and r["value"]["order_id"] == request.order_id for r in records)
    assert records[0]["value"]["filled_quantity"] == "0"


async def test_tail_follows_new_records_only_without_from_beginning(harness: Harness, cli: Cli) -> None:
    old = order()
    await harness.send(old)
    await harness.wait_status(old.order_id, "FILLED")
    await harness.wait_for(lambda: len(harness.observed.fills[old.order_id]) == 1, what="the old fill")
    tail = await cli.start("tail", "fills.executed", "--max", "1", "--timeout", "45")
    sent: list[str] = []

    async def keep_sending() -> None:
        # The tail reads only what comes after its start, which the test cannot see: send until it has one.
        while True:
            new = order(quantity="4")
            sent.append(new.order_id)
            await harness.send(new)
            await asyncio.sleep(1.0)

    sender = asyncio.create_task(keep_sending())
    try:
        out, err = await asyncio.wait_for(tail.communicate(), 60)
    finally:
        sender.cancel()
    assert tail.returncode == 0, err.decode()
    (line,) = out.decode().splitlines()
    key = line.split(" key=")[1].split()[0]
    assert key in sent and key != old.order_id
    assert "quantity=4" in line and f"order_id={key}" in line


async def test_tail_shows_dead_letters_with_their_headers(harness: Harness, cli: Cli) -> None:
    await harness.send_raw(b"bad-key", b"not avro at all")
    await harness.wait_for(lambda: len(harness.observed.dead_letters) == 1, what="the dead letter")
    run = await cli("tail", harness.topics.orders_requested_dlq, "--from-beginning", "--max", "1",
                    "--timeout", "20")
    assert run.code == 0, run.err
    (line,) = run.out
    assert "key=bad-key" in line
    assert "[error.stage=decode]" in line and f"[source.topic={harness.topics.orders_requested}]" in line
    assert b"not avro at all".hex() in line
    as_json = await cli("tail", "orders_requested_dlq", "--from-beginning", "--json", "--max", "1",
                        "--timeout", "20")
    record = json.loads(as_json.out[0])
    assert bytes.fromhex(record["value_hex"]) == b"not avro at all"
    assert record["headers"]["source.offset"].isdigit() and record["headers"]["error.reason"]


async def test_bad_configuration_and_unknown_topic_exit_two_with_one_line(cli: Cli) -> None:
    bad = await cli("submit", "--account", ACCOUNT, "--instrument", AAPL.instrument_id, "--side", "BUY",
                    "--qty", "1", KAFKA_SECURITY_PROTOCOL="CARRIER_PIGEON")
    assert bad.code == 2
    assert bad.err.strip().count("\n") == 0 and "KAFKA_SECURITY_PROTOCOL" in bad.err
    unknown = await cli("tail", "orders.nope", "--max", "1", "--timeout", "5")
    assert unknown.code == 2
    assert "unknown topic 'orders.nope'" in unknown.err


async def test_tail_names_an_unreachable_schema_registry_without_its_credentials(cli: Cli) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    user, secret = f"u{secrets.token_hex(4)}", secrets.token_urlsafe(12)  # made up here, never real
    run = await cli("tail", "orders.status", "--max", "1", "--timeout", "20",
                    SCHEMA_REGISTRY_URL=f"http://{user}:{secret}@127.0.0.1:{port}")
    assert run.code == 3, run.err
    assert f"schema registry at http://127.0.0.1:{port}" in run.err
    assert secret not in run.err + "\n".join(run.out) and user not in run.err


async def test_a_resting_order_submitted_by_the_harness_can_be_cancelled_by_id(harness: Harness,
                                                                              cli: Cli) -> None:
    resting = order(order_type=OrderType.LIMIT, limit=str(aapl_price(harness) - 40), tif=TimeInForce.GTC)
    await harness.send(resting)
    await harness.wait_status(resting.order_id, "SUBMITTED")
    run = await cli("cancel", resting.order_id, "--account", ACCOUNT)
    assert run.code == 0, run.err
    await harness.wait_status(resting.order_id, "CANCELLED")
