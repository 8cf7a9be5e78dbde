"""The workers and ``OrderClient`` over Kafka's SASL_SSL (SCRAM-SHA-512, mutual TLS), and its misconfigurations.

The broker is the TLS test broker that ``scripts/dev-services up kafka-tls`` starts (fixture ``kafka_tls``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from ibkr_sim.server import SimGateway
from tests.conftest import KafkaTls
from tests.integration.harness import AAPL, ACCOUNT, Harness, running_harness
from tests.integration.test_instrument_sync_cli import load
from tests.integration.topic_reading import records_on_partition
from workers.adapters.kafka.connection import KafkaUnreachable, kafka_client_kwargs
from workers.adapters.postgres.migrate import migrate
from workers.client import OrderClient
from workers.domain.orders import OrderState
from workers.settings import SettingsError, TopicNames, load_settings

pytestmark = pytest.mark.integration

# A misconfigured worker must say so well before this; it must never wait for the broker forever.
FAILURE_BOUND_S = 30.0


def security(tls: KafkaTls, **overrides: Any) -> dict[str, Any]:
    """aiokafka security keywords for the TLS listener, built as the workers build theirs."""
    return kafka_client_kwargs(load_settings(**{**tls.settings(), **overrides}))


def worker_env(tls: KafkaTls, database_url: str, topic_env: dict[str, str], sim_port: int,
               **overrides: str | None) -> dict[str, str]:
    """The parent's environment without its Kafka/IBKR/topic settings, plus the TLS listener's; ``None`` unsets."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "IBKR_", "TOPIC_", "LOG_"))}
    env = {**inherited, **tls.env(), **topic_env, "DATABASE_URL": database_url, "IBKR_HOST": "127.0.0.1",
           "IBKR_PORT": str(sim_port), "IBKR_CLIENT_ID": "31", "IBKR_ACCOUNTS": ACCOUNT,
           "IBKR_CONNECT_TIMEOUT": "5", "HEALTH_PORT": "0", "LOG_LEVEL": "INFO"}
    for name, value in overrides.items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


async def run_worker(*args: str, env: dict[str, str]) -> tuple[int, str, float]:
    """Run ``ibkr-workers ARGS``; return its exit code, its stderr and how long it ran."""
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "workers", *args, env=env,
                                                   stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    try:
        _, err = await asyncio.wait_for(process.communicate(), FAILURE_BOUND_S * 2)
    except TimeoutError:
        process.kill()
        await process.wait()
        pytest.fail(f"ibkr-workers {' '.join(args)} still ran after {FAILURE_BOUND_S * 2:.0f}s")
    assert process.returncode is not None
    return process.returncode, err.decode(), time.monotonic() - started


@pytest.fixture
async def tls_topics(kafka_tls: KafkaTls, kafka_topics: TopicNames) -> AsyncIterator[TopicNames]:
    """This test's topics, created on the TLS broker (over its TLS listener) and deleted afterwards."""
    names = [getattr(kafka_topics, n) for n in kafka_topics.__dataclass_fields__]
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_tls.bootstrap, **security(kafka_tls))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1) for name in names])
        yield kafka_topics
        with contextlib.suppress(Exception):
            await admin.delete_topics(names)
    finally:
        await admin.close()


@pytest.fixture
async def tls_harness(kafka_tls: KafkaTls, database_url: str, kafka_topics: TopicNames) -> AsyncIterator[Harness]:
    """An order-consumer whose settings name the TLS listener, with the client certificate (mutual TLS)."""
    async with running_harness(kafka_tls.bootstrap, database_url, kafka_topics, security=security(kafka_tls),
                               **kafka_tls.settings()) as running:
        yield running


async def test_an_order_sent_with_order_client_over_sasl_ssl_is_filled_once(tls_harness: Harness,
                                                                           kafka_tls: KafkaTls) -> None:
    settings = tls_harness.settings(**kafka_tls.settings())
    assert settings.kafka_security_protocol == "SASL_SSL" and settings.kafka_ssl_certfile
    async with OrderClient.from_settings(settings) as client:
        order_id = await client.submit(account=ACCOUNT, instrument_id=AAPL.instrument_id, side="BUY",
                                       quantity=Decimal(5), order_type="MARKET")
        final = await client.wait_for_final(order_id, timeout=30)
        fills = await client.wait_for_fills(order_id, timeout=10)
    assert final.status is OrderState.FILLED
    assert sum(fill.quantity for fill in fills) == Decimal(5)
    assert tls_harness.sim.place_count(order_id) == 1
    # The worker's health records reached the topic over the same listener.
    await tls_harness.wait_for(lambda: any(h["worker"] == "order-consumer" for h in tls_harness.observed.health),
                               what="a health record")


async def test_instrument_sync_publishes_over_sasl_ssl_without_a_client_certificate(
        kafka_tls: KafkaTls, tls_topics: TopicNames, database_url: str, sim: SimGateway,
        topic_env: dict[str, str]) -> None:
    await migrate(database_url)
    await load(database_url, [{"instrument_id": "STK:AAPL:USD"}, {"instrument_id": "CASH:EUR.USD"}])
    env = worker_env(kafka_tls, database_url, topic_env, sim.address[1], KAFKA_SSL_CERTFILE=None,
                     KAFKA_SSL_KEYFILE=None, KAFKA_SSL_KEY_PASSWORD=None)

    code, err, _ = await run_worker("instrument-sync", "--once", env=env)

    assert code == 0, err
    records = await records_on_partition(kafka_tls.bootstrap, tls_topics.instruments_updated,
                                         **security(kafka_tls))
    assert sorted(record.key.decode() for record in records) == ["CASH:EUR.USD", "STK:AAPL:USD"]


MISCONFIGURED = {
    "wrong password": ({"KAFKA_SASL_PASSWORD": "not-the-password"}, "KAFKA_SASL_PASSWORD"),
    "unknown CA": ({"KAFKA_SSL_CAFILE": None}, "KAFKA_SSL_CAFILE"),
    "plaintext client": ({"KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}, "KAFKA_SECURITY_PROTOCOL"),
}


@pytest.mark.parametrize("command", [("order-consumer",), ("instrument-sync", "--once")],
                         ids=["order-consumer", "instrument-sync"])
@pytest.mark.parametrize("case", list(MISCONFIGURED), ids=list(MISCONFIGURED))
async def test_a_misconfigured_worker_exits_at_once_with_one_line_naming_the_setting(
        kafka_tls: KafkaTls, database_url: str, sim: SimGateway, topic_env: dict[str, str], case: str,
        command: tuple[str, ...]) -> None:
    await migrate(database_url)
    overrides, setting = MISCONFIGURED[case]
    env = worker_env(kafka_tls, database_url, topic_env, sim.address[1], **overrides)

    code, err, took = await run_worker(*command, env=env)

    assert code != 0
    assert took < FAILURE_BOUND_S
    (message,) = [line for line in err.splitlines() if line.startswith(f"ibkr-workers {command[0]}:")]
    assert setting in message, message
    assert kafka_tls.bootstrap in message
    assert kafka_tls.password not in err and kafka_tls.key_password not in err
    assert "Traceback" not in err


async def test_order_client_with_a_wrong_password_raises_naming_the_setting(kafka_tls: KafkaTls,
                                                                            tls_topics: TopicNames) -> None:
    settings = load_settings(**{**kafka_tls.settings(), "kafka_sasl_password": "not-the-password"},
                             **{f"topic_{n}": getattr(tls_topics, n) for n in tls_topics.__dataclass_fields__})
    started = time.monotonic()
    with pytest.raises(KafkaUnreachable, match="KAFKA_SASL_PASSWORD"):
        async with OrderClient.from_settings(settings):
            pass
    assert time.monotonic() - started < FAILURE_BOUND_S


async def test_a_wrong_client_key_password_is_a_configuration_error_naming_it(kafka_tls: KafkaTls) -> None:
    with pytest.raises(SettingsError, match="KAFKA_SSL_KEY_PASSWORD"):
        security(kafka_tls, kafka_ssl_key_password=secrets.token_hex(8))  # a wrong one
