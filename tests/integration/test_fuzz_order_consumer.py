"""Fuzzing the order-consumer over the real stack (Kafka, PostgreSQL, the sim gateway).

Hypothesis generates records over the schemas' fields (hostile text, decimals, enums, dates) and byte-level
mutations of encoded records, with good orders among them, and the worker drains them all:

* the worker never stops; every good order is FILLED and placed once, and nothing else is placed;
* every record of ``orders.requested`` is accounted for: a status for its order, or a dead letter; every
  record of ``orders.cancel-requested`` that cannot be decoded or whose text is refused is a dead letter;
* no partition stays stuck: everything is drained within a bound, the last good order last;
* the process's memory stays bounded.

A short run for CI by default; ``FUZZ_RECORDS=100000`` runs a long one by hand.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.integration.harness import ACCOUNT, INSTRUMENTS, Harness, order, running_harness
from workers.adapters.avro import DecodeError, EncodeError
from workers.adapters.kafka.records import (
    ORDER_CANCEL_REQUESTED,
    ORDER_REQUESTED,
    InvalidText,
    cancel_from_record,
    order_requested_record,
)
from workers.settings import TopicNames

pytestmark = pytest.mark.integration

RECORDS = int(os.environ.get("FUZZ_RECORDS", "1200"))
GOOD_EVERY = 15  # one good order among this many records
MAX_RSS_GROWTH = 300 * 1024 * 1024

# Text that breaks every rule at once or none: control characters, bidi overrides, long, odd, ordinary.
_chars = st.characters(exclude_categories=("Cs",))  # surrogates cannot be written as UTF-8 at all
texts = st.one_of(
    st.text(_chars, max_size=12),
    st.text(st.sampled_from("\x00\x07\x1b\x7f\x85\u2028\u202e\ufeffAZaz09:- "), max_size=12),
    st.integers(60, 700).map(lambda n: "L" * n),
    st.text(_chars, min_size=100, max_size=300),
)
hostile_accounts = texts.filter(lambda account: account != ACCOUNT)
decimals = st.one_of(st.none(), st.decimals(min_value=Decimal(-10**11), max_value=Decimal(10**11), places=8,
                                             allow_nan=False, allow_infinity=False))
hostile_orders = st.fixed_dictionaries({
    "order_id": st.one_of(st.uuids().map(str), texts),
    "account": hostile_accounts,  # never the allowed account: none of these orders may be placed
    "instrument_id": st.one_of(st.sampled_from([i.instrument_id for i in INSTRUMENTS]), texts),
    "side": st.sampled_from(["BUY", "SELL"]),
    "quantity": st.decimals(min_value=Decimal(-10**11), max_value=Decimal(10**11), places=8, allow_nan=False,
                            allow_infinity=False),
    "order_type": st.sampled_from(["MARKET", "LIMIT", "STOP", "STOP_LIMIT"]),
    "limit_price": decimals,
    "stop_price": decimals,
    "time_in_force": st.sampled_from(["DAY", "GTC", "IOC", "FOK", "OPG"]),
    "outside_rth": st.booleans(),
    "created_at": st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1),
                               timezones=st.just(UTC)),
    "source": st.one_of(st.none(), texts),
})
hostile_cancels = st.fixed_dictionaries({
    "order_id": st.one_of(st.uuids().map(str), texts),  # never a good order's id
    "account": texts,
    "requested_at": st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2200, 1, 1),
                                 timezones=st.just(UTC)),
    "reason": st.one_of(st.none(), texts),
    "source": st.one_of(st.none(), texts),
})
# Byte-level mutations of an encoded record: (kind, where as a fraction of its length, a byte).
mutations = st.lists(st.tuples(st.sampled_from(["flip", "cut", "insert", "repeat"]),
                               st.floats(0, 1), st.integers(0, 255)), min_size=1, max_size=4)
records = st.one_of(
    st.tuples(st.just("order"), hostile_orders, st.just([])),
    st.tuples(st.just("mutated"), hostile_orders, mutations),
    st.tuples(st.just("cancel"), hostile_cancels, st.just([])),
    st.tuples(st.just("mutated cancel"), hostile_cancels, mutations),
    st.tuples(st.just("bytes"), st.binary(max_size=300), st.just([])),
)


def mutate(data: bytes, steps: list[tuple[str, float, int]]) -> bytes:
    out = bytearray(data)
    for kind, where, byte in steps:
        at = min(len(out) - 1, int(where * len(out))) if out else 0
        if kind == "flip" and out:
            out[at] ^= 1 << (byte % 8)
        elif kind == "cut":
            del out[at:]
        elif kind == "insert":
            out.insert(at, byte)
        elif out:
            out[at:at] = out[at:at + 1 + byte % 16] * (1 + byte % 4)
    return bytes(out)


def generated(count: int) -> list[tuple[str, Any, list[tuple[str, float, int]]]]:
    """``count`` records drawn from :data:`records` (the Hypothesis engine, not one example at a time)."""
    drawn: list[tuple[str, Any, list[tuple[str, float, int]]]] = []

    @settings(max_examples=count, database=None, deadline=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck))
    @given(records)
    def draw(record: tuple[str, Any, list[tuple[str, float, int]]]) -> None:
        drawn.append(record)

    while len(drawn) < count:
        draw()
    return drawn[:count]


@dataclass
class Sent:
    """A record written to a topic, and where it landed."""

    topic: str
    partition: int
    offset: int
    value: bytes | None


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.fixture
async def harness(kafka_bootstrap: str, database_url: str, kafka_topics: TopicNames) -> AsyncIterator[Harness]:
    async with running_harness(kafka_bootstrap, database_url, kafka_topics) as running:
        yield running


async def test_hostile_records_never_stop_the_good_orders_among_them(harness: Harness) -> None:
    assert harness.app is not None
    await harness.wait_for(lambda: harness.app is not None and harness.app.service.reconciled,
                           what="the worker running")
    items = generated(RECORDS)
    rss_before = rss_bytes()
    topics = harness.topics
    good: list[str] = []
    pending: list[tuple[str, bytes | None, asyncio.Future[Any]]] = []
    for n, (kind, fields, steps) in enumerate(items):
        if n % GOOD_EVERY == 0:
            request = order(quantity="1")
            good.append(request.order_id)
            value = harness.codec.encode(ORDER_REQUESTED, order_requested_record(request))
            pending.append((topics.orders_requested, value, await harness.producer.send(
                topics.orders_requested, value, key=request.order_id.encode())))
        is_cancel = kind in ("cancel", "mutated cancel")
        topic = topics.orders_cancel_requested if is_cancel else topics.orders_requested
        try:
            if kind == "bytes":
                value = fields
            else:
                value = harness.codec.encode(ORDER_CANCEL_REQUESTED if is_cancel else ORDER_REQUESTED, fields)
                value = mutate(value, steps) if steps else value
        except EncodeError:
            continue  # a value the contract cannot even carry (a producer of ours could not send it)
        key = str(fields.get("order_id", ""))[:100].encode("utf-8", "replace") if isinstance(fields, dict) else None
        pending.append((topic, value, await harness.producer.send(topic, value, key=key)))
    last = order(quantity="1")
    good.append(last.order_id)
    value = harness.codec.encode(ORDER_REQUESTED, order_requested_record(last))
    pending.append((topics.orders_requested, value, await harness.producer.send(
        topics.orders_requested, value, key=last.order_id.encode())))
    sent: list[Sent] = []
    for topic, value, future in pending:
        metadata = await future
        sent.append(Sent(topic, metadata.partition, metadata.offset, value))
    all_sent = time.monotonic()

    drain_bound = 60.0 + RECORDS / 50
    await harness.wait_status(last.order_id, "FILLED", timeout=drain_bound)
    last_latency = time.monotonic() - all_sent
    for order_id in good:
        await harness.wait_status(order_id, "FILLED", timeout=30)

    def dead_lettered() -> set[tuple[str, int, int]]:
        """Where the dead letters so far came from (they may still arrive while the test waits)."""
        return {(dict(r.headers)["source.topic"].decode(), int(dict(r.headers)["source.partition"]),
                 int(dict(r.headers)["source.offset"])) for r in harness.observed.dead_letters}

    def accounted(record: Sent, dead: set[tuple[str, int, int]]) -> bool:
        if (record.topic, record.partition, record.offset) in dead:
            return True
        try:
            decoded = harness.codec.decode(record.value, ORDER_REQUESTED)
        except DecodeError:
            return False
        return bool(harness.observed.statuses.get(decoded["order_id"]))

    def cancel_accounted(record: Sent, dead: set[tuple[str, int, int]]) -> bool:
        # A cancel that cannot be decoded, or whose text the rules refuse, is on the dead-letter topic.
        if (record.topic, record.partition, record.offset) in dead:
            return True
        try:
            cancel_from_record(harness.codec.decode(record.value, ORDER_CANCEL_REQUESTED))
        except (DecodeError, InvalidText):
            return False
        return True

    requested = [record for record in sent if record.topic == topics.orders_requested]
    cancels = [record for record in sent if record.topic == topics.orders_cancel_requested]

    def all_accounted(records: list[Sent], check: Callable[[Sent, set[tuple[str, int, int]]], bool]) -> bool:
        dead = dead_lettered()
        return all(check(record, dead) for record in records)

    await harness.wait_for(lambda: all_accounted(requested, accounted), timeout=30,
                           what="every record of orders.requested with a status or a dead letter")
    await harness.wait_for(lambda: all_accounted(cancels, cancel_accounted), timeout=30,
                           what="every cancel that cannot be decoded or taken on the dead-letter topic")
    dead = dead_lettered()
    assert any((r.topic, r.partition, r.offset) in dead for r in cancels), "no cancel was dead-lettered at all"

    assert harness._app_task is not None and not harness._app_task.done(), "the worker stopped"
    placed = [request.order_ref for _, request in harness.sim.orders_seen]
    assert sorted(placed) == sorted(good), "only the good orders are placed, each once"
    assert last_latency < drain_bound
    assert rss_bytes() - rss_before < MAX_RSS_GROWTH
