"""Service fixtures shared by every test.

Where the services come from, in order:
1. ``KAFKA_BOOTSTRAP_SERVERS`` / ``DATABASE_URL`` from the environment (``make test`` sets them from
   ``scripts/dev-services up``);
2. testcontainers, when a Docker engine answers;
3. otherwise the test fails with a message saying how to start the services. Integration tests are never
   silently skipped.

Isolation: every test that asks for ``kafka_topics`` gets its own uniquely named topics, and every test that
asks for ``database_url`` gets its own PostgreSQL schema (``search_path`` set in the URL), so tests never see
each other's data.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import pytest

from ibkr_sim.config import SimConfig
from ibkr_sim.server import SimGateway
from workers.adapters.postgres.migrate import migrate
from workers.adapters.postgres.pool import Pool, close_pool, open_pool
from workers.settings import TopicNames

HOW_TO_START = (
    "no {what} available: set {var}, or run `scripts/dev-services up` and export the lines it prints, "
    "or start a Docker engine so testcontainers can run one"
)


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:
        return False


# Topics the tests of this session named (``kafka_topics``, :func:`noted_topic`): deleted from a broker
# given by the environment when the session ends, so a long-lived development broker does not collect
# them. Only these names: never a pattern, the broker may be shared.
TEST_TOPICS: set[str] = set()


def noted_topic(name: str) -> str:
    """Note ``name`` as a topic of this test session (deleted when the session ends); return it."""
    TEST_TOPICS.add(name)
    return name


async def _delete_test_topics(bootstrap: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = TEST_TOPICS & set(await admin.list_topics())
        for start in range(0, len(existing), 100):
            await admin.delete_topics(sorted(existing)[start:start + 100])
    finally:
        await admin.close()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers of a real Kafka broker."""
    from_env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if from_env:
        yield from_env
        if TEST_TOPICS:
            try:
                asyncio.run(asyncio.wait_for(_delete_test_topics(from_env), 60))
            except Exception as exc:  # cleanup only: never fail a session over it
                warnings.warn(f"test topics not deleted: {exc!r}", stacklevel=1)
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:3.9.1").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    pytest.fail(HOW_TO_START.format(what="Kafka broker", var="KAFKA_BOOTSTRAP_SERVERS"), pytrace=False)


@dataclass(frozen=True)
class KafkaTls:
    """A broker's SASL_SSL listener (SCRAM-SHA-512) and what a client needs to use it, mutual TLS included."""

    bootstrap: str
    cafile: str
    username: str
    password: str = field(repr=False)
    certfile: str
    keyfile: str
    key_password: str = field(repr=False)

    def settings(self, *, client_certificate: bool = True) -> dict[str, Any]:
        """``Settings`` keywords for this listener (the worker settings an operator would set)."""
        values: dict[str, Any] = {
            "kafka_bootstrap_servers": self.bootstrap, "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_mechanism": "SCRAM-SHA-512", "kafka_sasl_username": self.username,
            "kafka_sasl_password": self.password, "kafka_ssl_cafile": self.cafile,
        }
        if client_certificate:
            values.update(kafka_ssl_certfile=self.certfile, kafka_ssl_keyfile=self.keyfile,
                          kafka_ssl_key_password=self.key_password)
        return values

    def env(self, **overrides: str) -> dict[str, str]:
        """The same settings as environment variables, with ``overrides`` (names in capitals)."""
        return {**{name.upper(): str(value) for name, value in self.settings().items()}, **overrides}


# Tests that need a schema registry ask for one (``schema_registry_url``); every other test must not pick one
# up from the environment, where it would switch the workers to the Confluent framing.
SCHEMA_REGISTRY_FROM_ENV = os.environ.pop("SCHEMA_REGISTRY_URL", None)
# The port of the registry the restart tests stop and start: one of their own, never the shared one.
REGISTRY_RESTART_TEST_PORT = int(os.environ.get("REGISTRY_RESTART_TEST_PORT", "8181"))


def dev_services_registry(command: str, port: int | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``scripts/dev-services COMMAND registry`` (for a registry on ``port`` when given)."""
    env = {**os.environ, **({"REGISTRY_PORT": str(port)} if port is not None else {})}
    # The first `up` builds the registry from Maven Central: minutes on a machine that has not yet.
    return subprocess.run([str(ROOT / "scripts" / "dev-services"), command, "registry"], env=env,
                          capture_output=True, text=True, timeout=900, check=False)


def start_registry(port: int | None = None) -> str:
    """Start (or find running) a schema registry with scripts/dev-services; its ``SCHEMA_REGISTRY_URL``.

    Skips the test, with the script's reason, only when the script cannot start one here.
    """
    try:
        done = dev_services_registry("up", port)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"no schema registry: scripts/dev-services up registry: {exc}")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        pytest.skip(f"no schema registry: scripts/dev-services up registry failed: {last}")
    return next(line.split("=", 1)[1] for line in done.stdout.splitlines()
                if line.startswith("export SCHEMA_REGISTRY_URL="))


@pytest.fixture(scope="session")
def schema_registry_url() -> str:
    """A Confluent-compatible schema registry: ``SCHEMA_REGISTRY_URL`` when set, else the development one.

    The development registry (Apicurio Registry, ``scripts/dev-services up registry``) is started once and
    left running, like the broker. Tests keep to subjects of their own topics (unique names).
    """
    return SCHEMA_REGISTRY_FROM_ENV or start_registry()


# The lines `scripts/dev-services up kafka-tls` prints; set them all to use a TLS broker of your own.
KAFKA_TLS_EXPORTS = ("KAFKA_TLS_BOOTSTRAP_SERVERS", "KAFKA_TLS_SSL_CAFILE", "KAFKA_TLS_SASL_USERNAME",
                     "KAFKA_TLS_SASL_PASSWORD_FILE", "KAFKA_TLS_SSL_CERTFILE", "KAFKA_TLS_SSL_KEYFILE",
                     "KAFKA_TLS_SSL_KEY_PASSWORD_FILE")
# The test broker with the TLS listener: a broker of its own, never the plain one the other tests share.
KAFKA_TLS_TEST_PORT = int(os.environ.get("KAFKA_TLS_TEST_PORT", "9192"))
ROOT = Path(__file__).resolve().parent.parent


def _start_tls_broker() -> dict[str, str]:
    """Start (or find running) the TLS test broker with scripts/dev-services; return the lines it prints."""
    env = {**os.environ, "KAFKA_PORT": str(KAFKA_TLS_TEST_PORT),
           "KAFKA_CONTROLLER_PORT": str(KAFKA_TLS_TEST_PORT + 1),
           "KAFKA_TLS_PORT": str(KAFKA_TLS_TEST_PORT + 2)}
    try:
        done = subprocess.run([str(ROOT / "scripts" / "dev-services"), "up", "kafka-tls"], env=env,
                              capture_output=True, text=True, timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"no Kafka broker with a SASL_SSL listener: scripts/dev-services up kafka-tls: {exc}")
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        pytest.skip(f"no Kafka broker with a SASL_SSL listener: scripts/dev-services up kafka-tls failed: {last}")
    return dict(line.removeprefix("export ").split("=", 1) for line in done.stdout.splitlines()
                if line.startswith("export "))


@pytest.fixture(scope="session")
def kafka_tls() -> KafkaTls:
    """A Kafka broker's SASL_SSL listener: the ``KAFKA_TLS_*`` exports when all are set, else the test broker.

    The test broker (on ``KAFKA_TLS_TEST_PORT``, 9192, and the two ports after it) is started through
    ``scripts/dev-services up kafka-tls`` once and left running, like the plain one; the tests are skipped,
    with the script's reason, only when it cannot be started.
    """
    exports = {name: os.environ[name] for name in KAFKA_TLS_EXPORTS if os.environ.get(name)}
    if len(exports) < len(KAFKA_TLS_EXPORTS):
        exports = _start_tls_broker()
    return KafkaTls(
        bootstrap=exports["KAFKA_TLS_BOOTSTRAP_SERVERS"], cafile=exports["KAFKA_TLS_SSL_CAFILE"],
        username=exports["KAFKA_TLS_SASL_USERNAME"],
        password=Path(exports["KAFKA_TLS_SASL_PASSWORD_FILE"]).read_text().strip(),
        certfile=exports["KAFKA_TLS_SSL_CERTFILE"], keyfile=exports["KAFKA_TLS_SSL_KEYFILE"],
        key_password=Path(exports["KAFKA_TLS_SSL_KEY_PASSWORD_FILE"]).read_text().strip(),
    )


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """URL of a real PostgreSQL database (shared; tests get their own schema from ``database_url``)."""
    from_env = os.environ.get("DATABASE_URL")
    if from_env:
        yield from_env
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver=None) as container:
            yield container.get_connection_url()
        return
    pytest.fail(HOW_TO_START.format(what="PostgreSQL server", var="DATABASE_URL"), pytrace=False)


def with_search_path(url: str, schema: str) -> str:
    """Return ``url`` with libpq ``options`` setting ``search_path`` to ``schema``."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "options"]
    query.append(("options", f"-csearch_path={schema}"))
    return urlunsplit(parts._replace(query=urlencode(query)))


@pytest.fixture
def database_url(postgres_server_url: str) -> Iterator[str]:
    """A libpq URL whose ``search_path`` is a fresh schema of this test's own, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield with_search_path(postgres_server_url, schema)
    finally:
        with psycopg.connect(postgres_server_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def pool_size() -> int:
    """How many connections :func:`pool` opens at most (a module can override it)."""
    return 4


@pytest.fixture
async def pool(database_url: str, pool_size: int) -> AsyncIterator[Pool]:
    """A connection pool on this test's own schema, migrated to the latest version."""
    await migrate(database_url)
    opened = await open_pool(database_url, max_size=pool_size)
    try:
        yield opened
    finally:
        await close_pool(opened)


@pytest.fixture
def sim_config() -> SimConfig:
    """The in-process sim's configuration; override it in a test module (or parametrize) to start it differently."""
    return SimConfig()


@pytest.fixture
async def sim(sim_config: SimConfig) -> AsyncIterator[SimGateway]:
    gateway = SimGateway(sim_config)
    await gateway.start("127.0.0.1", 0)
    try:
        yield gateway
    finally:
        await gateway.stop()


@pytest.fixture
def kafka_topics() -> TopicNames:
    """Topic names unique to this test (the contract's names with a random suffix)."""
    suffix = uuid.uuid4().hex[:10]
    defaults = TopicNames()
    return TopicNames(**{field: noted_topic(f"{getattr(defaults, field)}.{suffix}")
                         for field in defaults.__dataclass_fields__})


@pytest.fixture
def topic_env(kafka_topics: TopicNames) -> dict[str, str]:
    """``TOPIC_*`` environment overrides matching ``kafka_topics``, for subprocess tests."""
    return {f"TOPIC_{field.upper()}": getattr(kafka_topics, field) for field in kafka_topics.__dataclass_fields__}


@pytest.fixture
async def kafka_admin(kafka_bootstrap: str) -> AsyncIterator[Any]:
    """A started aiokafka admin client on the test broker."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()
