"""One bad record never stops the orders behind it: real Kafka, real PostgreSQL, the sim gateway."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import psycopg
import pytest

from tests.integration.harness import Harness, order, running_harness
from workers.settings import TopicNames

pytestmark = pytest.mark.integration

POISON_ACCOUNT = "DU-POISON"


@pytest.fixture
async def harness(kafka_bootstrap: str, database_url: str, kafka_topics: TopicNames) -> AsyncIterator[Harness]:
    async with running_harness(kafka_bootstrap, database_url, kafka_topics) as running:
        yield running


async def refuse_account_in_ledger(database_url: str, account: str, table: str = "orders") -> None:
    """Make PostgreSQL refuse any ``table`` row of ``account`` with a data exception (a value it cannot store)."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute(f"""
            CREATE OR REPLACE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.account = '{account}' THEN
                    RAISE EXCEPTION 'value refused for account %', NEW.account USING ERRCODE = '22023';
                END IF;
                RETURN NEW;
            END $$""")
        await conn.execute(f"CREATE TRIGGER refuse_poison BEFORE INSERT ON {table} "
                           "FOR EACH ROW EXECUTE FUNCTION refuse_poison()")


async def test_an_order_the_ledger_refuses_is_dead_lettered_and_rejected_and_the_orders_around_it_fill_once(
        harness: Harness) -> None:
    await refuse_account_in_ledger(harness.database_url, POISON_ACCOUNT)
    assert harness.app is not None
    await harness.wait_for(lambda: harness.app is not None and harness.app.service.reconciled,
                           what="the worker running")
    before = [order(quantity="1") for _ in range(15)]
    poison = order(account=POISON_ACCOUNT)
    after = [order(quantity="2") for _ in range(15)]
    # Sent together so the poison shares fetched batches with good orders (placed before it fails).
    await asyncio.gather(*(harness.send(request) for request in [*before, poison, *after]))

    for request in [*before, *after]:
        await harness.wait_status(request.order_id, "FILLED")
    rejected = await harness.wait_status(poison.order_id, "REJECTED")
    assert rejected["reason"].startswith("UNPROCESSABLE: the request could not be processed (")
    assert "value refused for account" in rejected["reason"]
    await harness.wait_for(lambda: len(harness.observed.dead_letters) == 1, what="the dead letter")
    [letter] = harness.observed.dead_letters
    headers = dict(letter.headers)
    assert letter.key == poison.order_id.encode()
    assert headers["error.stage"] == b"handle"
    assert headers["error.reason"].startswith(b"InvalidParameterValue: value refused for account")
    for request in [*before, *after]:
        assert harness.sim.place_count(request.order_id) == 1
    assert harness.sim.place_count(poison.order_id) == 0
    metrics = harness.app.metrics.registry
    assert metrics.get_sample_value("ibkr_workers_dead_letters_total", {"stage": "handle"}) == 1
    assert (metrics.get_sample_value("ibkr_workers_consume_retries_total", {"kind": "record"}) or 0) >= 1


async def test_orders_placed_in_a_batch_that_then_failed_on_a_cancel_are_not_placed_again(harness: Harness) -> None:
    await refuse_account_in_ledger(harness.database_url, POISON_ACCOUNT, table="cancel_requests")
    assert harness.app is not None
    await harness.wait_for(lambda: harness.app is not None and harness.app.service.reconciled,
                           what="the worker running")
    requests = [order(quantity="1") for _ in range(20)]
    # Orders and a cancel the ledger refuses, fetched together: the orders' handler places them, then the
    # cancels' handler fails and the whole batch is handled again, a record at a time.
    await asyncio.gather(*(harness.send(request) for request in requests[:10]),
                         harness.cancel(requests[3].order_id, account=POISON_ACCOUNT),
                         *(harness.send(request) for request in requests[10:]))

    for request in requests:
        await harness.wait_status(request.order_id, "FILLED")
    await harness.wait_for(lambda: len(harness.observed.dead_letters) == 1, what="the dead letter")
    [letter] = harness.observed.dead_letters
    headers = dict(letter.headers)
    assert headers["source.topic"] == harness.topics.orders_cancel_requested.encode()
    assert headers["error.stage"] == b"handle"
    for request in requests:
        assert harness.sim.place_count(request.order_id) == 1
