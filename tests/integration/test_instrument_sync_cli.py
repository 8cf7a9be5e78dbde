"""The commands as an operator runs them: ``instruments load FILE`` and ``instrument-sync [--once]``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from ibkr_sim.config import SimConfig
from ibkr_sim.server import SimGateway
from tests.integration.topic_reading import records_on_partition
from workers.adapters.postgres.migrate import migrate
from workers.adapters.postgres.pool import close_pool, open_pool
from workers.adapters.postgres.universe import UniverseStore
from workers.domain.universe import entries_from_document
from workers.settings import TopicNames

pytestmark = pytest.mark.integration

STOCKS = ["AAPL", "MSFT", "AMZN", "GOOGL", "META", "NVDA", "TSLA", "INTC", "AMD", "CSCO", "NFLX", "PEP",
          "ADBE", "COST", "JPM", "V", "JNJ", "WMT", "PG", "XOM", "UNH", "HD", "KO", "DIS", "BA", "CAT", "GS",
          "BAC", "IBM", "ORCL", "MA", "CVX", "SPY", "QQQ", "IWM"]
# Stocks and currency pairs only: nothing here expires, whatever day the tests run.
UNIVERSE: list[dict[str, Any]] = [{"instrument_id": f"STK:{s}:USD"} for s in STOCKS] + [
    {"instrument_id": "CASH:EUR.USD"}, {"instrument_id": "CASH:GBP.USD"}]


@pytest.fixture
def sim_config() -> SimConfig:
    return SimConfig(pacing=False)


@pytest.fixture
async def db(database_url: str) -> str:
    await migrate(database_url)
    return database_url


@pytest.fixture
async def topic(kafka_topics: TopicNames, kafka_bootstrap: str) -> AsyncIterator[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(kafka_topics.instruments_updated, 1, 1)])
    try:
        yield kafka_topics.instruments_updated
    finally:
        with contextlib.suppress(Exception):
            await admin.delete_topics([kafka_topics.instruments_updated])
        await admin.close()


@dataclass
class Stack:
    """A migrated schema, the sim, the instruments topic, and the environment a worker needs for them."""

    db: str
    sim: SimGateway
    topic: str
    bootstrap: str
    env: dict[str, str]


@pytest.fixture
def stack(db: str, sim: SimGateway, topic: str, kafka_bootstrap: str, topic_env: dict[str, str]) -> Stack:
    return Stack(db, sim, topic, kafka_bootstrap, sync_environment(db, sim, kafka_bootstrap, topic_env))


def environment(database_url: str, **extra: str) -> dict[str, str]:
    """The parent's environment without any IBKR_/TOPIC_/INSTRUMENT_ setting, plus ours."""
    inherited = {k: v for k, v in os.environ.items()
                 if not k.startswith(("IBKR_", "TOPIC_", "INSTRUMENT_", "LOG_"))}
    return {**inherited, "DATABASE_URL": database_url, "LOG_LEVEL": "INFO", **extra}


def sync_environment(database_url: str, sim: SimGateway, kafka_bootstrap: str, topic_env: dict[str, str],
                     **extra: str) -> dict[str, str]:
    host, port = sim.address
    return environment(database_url, KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap, IBKR_HOST=host,
                       IBKR_PORT=str(port), IBKR_CLIENT_ID="21", IBKR_PACING_PER_SECOND="1000",
                       IBKR_CONNECT_TIMEOUT="5", HEALTH_PORT="0", **topic_env, **extra)


async def start(*args: str, env: dict[str, str]) -> asyncio.subprocess.Process:
    pipe = asyncio.subprocess.PIPE
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "workers", *args, env=env,
                                                stdout=pipe, stderr=pipe)


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await start(*args, env=env)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def until(database_url: str, query: str, at_least: int, seconds: float = 30.0) -> None:
    """Poll ``query`` (a count) until it reaches ``at_least``; fail after ``seconds``."""
    for _ in range(int(seconds / 0.02)):
        if await scalar(database_url, query) >= at_least:
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"timed out waiting for {query} to reach {at_least}")


def log_events(stderr: str, event: str) -> list[dict[str, Any]]:
    found = []
    for line in stderr.splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("event") == event:
                found.append(record)
    return found


async def scalar(database_url: str, query: str) -> Any:
    async with await psycopg.AsyncConnection.connect(database_url) as conn:
        cursor = await conn.execute(query)
        row = await cursor.fetchone()
    assert row is not None
    return row[0]


async def load(database_url: str, items: list[dict[str, Any]]) -> None:
    pool = await open_pool(database_url, max_size=1)
    try:
        await UniverseStore(pool).replace(entries_from_document(items))
    finally:
        await close_pool(pool)


async def topic_keys(bootstrap: str, topic: str) -> list[str]:
    return [record.key.decode() for record in await records_on_partition(bootstrap, topic)]


# -- instruments load ----------------------------------------------------------------------------------------


async def test_instruments_load_replaces_the_universe_with_a_file(db: str, tmp_path: Path) -> None:
    first = tmp_path / "universe.yaml"
    first.write_text("instruments:\n  - instrument_id: STK:AAPL:USD\n  - instrument_id: CASH:EUR.USD\n"
                     "  - {instrument_id: FUT:ES, exchange: CME, months: 2}\n")
    code, out, err = await run_cli("instruments", "load", str(first), env=environment(db))
    assert code == 0, err
    assert out.strip() == f"loaded 3 entries from {first}: 3 added, 0 changed, 0 removed, 0 unchanged"

    second = tmp_path / "universe.json"
    second.write_text(json.dumps([{"instrument_id": "STK:AAPL:USD"}, {"id": "FUT:ES", "months": 3},
                                  {"instrument_id": "OPT:SPY:20261218:600:C"}]))
    code, out, _ = await run_cli("instruments", "load", str(second), env=environment(db))
    assert code == 0
    assert out.strip().endswith("1 added, 1 changed, 1 removed, 1 unchanged")
    order = "SELECT string_agg(instrument_id, ',' ORDER BY position) FROM instrument_universe"
    assert await scalar(db, order) == "STK:AAPL:USD,FUT:ES,OPT:SPY:20261218:600:C"

    bad = tmp_path / "bad.yaml"
    bad.write_text("- instrument_id: STK:MSFT:USD\n- instrument_id: STK:IBM:USD\n  colour: blue\n")
    code, out, err = await run_cli("instruments", "load", str(bad), env=environment(db))
    assert code == 2
    assert err.strip().count("\n") == 0
    assert "unknown field 'colour'" in err and str(bad) in err
    assert await scalar(db, "SELECT count(*) FROM instrument_universe") == 3


# -- instrument-sync --once ----------------------------------------------------------------------------------


async def test_crash_in_the_middle_of_a_pass_then_once_completes_it(stack: Stack) -> None:
    db = stack.db
    await load(db, UNIVERSE)
    stack.sim.delay_responses(150)  # slow enough to kill the worker half way
    worker = await start("instrument-sync", "--once", env=stack.env)
    synced = "SELECT count(*) FROM instrument_universe WHERE synced_pass IS NOT NULL"
    try:
        await until(db, synced, 4)
    finally:
        worker.send_signal(signal.SIGKILL)
        await worker.wait()
    done_at_crash = await scalar(db, synced)
    assert 4 <= done_at_crash < len(UNIVERSE)
    assert await scalar(db, "SELECT count(*) FROM instruments") == done_at_crash

    stack.sim.delay_responses(0)
    code, out, err = await run_cli("instrument-sync", "--once", env=stack.env)

    assert code == 0, err
    assert f"{len(UNIVERSE)}/{len(UNIVERSE)} entries, 0 failed" in out
    (started,) = log_events(err, "instrument sync pass started")
    assert started["resumed"] is True
    assert started["already_done"] >= done_at_crash
    assert await scalar(db, "SELECT count(*) FROM instruments WHERE active") == len(UNIVERSE)
    passes = "SELECT count(*) || ':' || max(resumes) || ':' || bool_and(finished_at IS NOT NULL) FROM " \
             "instrument_sync_passes"
    assert await scalar(db, passes) == "1:1:true"
    assert await scalar(db, "SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0
    keys = await topic_keys(stack.bootstrap, stack.topic)
    assert sorted(keys) == sorted(item["instrument_id"] for item in UNIVERSE)


async def test_once_exits_non_zero_with_a_summary_when_entries_fail(stack: Stack) -> None:
    await load(stack.db, [{"instrument_id": "STK:AAPL:USD"}, {"instrument_id": "STK:NOPE:USD"}])
    code, out, err = await run_cli("instrument-sync", "--once", env=stack.env)
    assert code == 1
    assert out == ""
    assert "2/2 entries, 1 failed" in err
    assert "STK:NOPE:USD: STK NOPE SMART USD: IBKR has no security definition (error 200)" in err
    assert await scalar(stack.db, "SELECT string_agg(instrument_id, ',') FROM instruments") == "STK:AAPL:USD"
    (finished,) = log_events(err, "instrument sync pass finished")
    assert (finished["done"], finished["failed"], finished["created"]) == (2, 1, 1)


async def test_the_worker_syncs_at_start_then_stops_gracefully_on_sigterm(stack: Stack,
                                                                          tmp_path: Path) -> None:
    universe = tmp_path / "universe.yaml"
    universe.write_text("- instrument_id: STK:AAPL:USD\n- instrument_id: CASH:EUR.USD\n")
    env = {**stack.env, "INSTRUMENT_UNIVERSE_FILE": str(universe), "INSTRUMENT_SYNC_INTERVAL": "3600"}
    worker = await start("instrument-sync", env=env)
    try:
        await until(stack.db, "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL", 2)
    finally:
        worker.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(worker.communicate(), 10)
    assert worker.returncode == 0, err.decode()
    finished = "SELECT count(*) FROM instrument_sync_passes WHERE finished_at IS NOT NULL"
    assert await scalar(stack.db, finished) == 1
    assert sorted(await topic_keys(stack.bootstrap, stack.topic)) == ["CASH:EUR.USD", "STK:AAPL:USD"]
    assert log_events(err.decode(), "instrument-sync stopped")
