"""``ibkr-workers demo --headless`` as a process: its own sim, real Kafka and PostgreSQL, every order final."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import noted_topic
from workers.entrypoints.demo import DEMO_TOPIC_PREFIX

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SUMMARY = re.compile(
    r"^demo: (?P<total>\d+) orders, (?P<final>\d+) final \((?P<filled>\d+) FILLED, (?P<cancelled>\d+) CANCELLED, "
    r"(?P<rejected>\d+) REJECTED\), (?P<not_final>\d+) not final; invalid (?P<invalid_rejected>\d+)/"
    r"(?P<invalid>\d+) rejected, valid (?P<valid_rejected>\d+) rejected; (?P<fills>\d+) fills, "
    r"(?P<positions>\d+) positions in [\d.]+ s$")


async def run_demo(env: dict[str, str], *args: str, timeout: float = 60) -> tuple[int, list[str], str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers", "demo", *args, cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode().splitlines(), err.decode()


@pytest.fixture
async def demo_env(kafka_bootstrap: str, database_url: str, topic_env: dict[str, str],
                   kafka_admin: Any) -> AsyncIterator[dict[str, str]]:
    demo_topics = [noted_topic(DEMO_TOPIC_PREFIX + name) for name in topic_env.values()]
    yield {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
           "DATABASE_URL": database_url, "LOG_LEVEL": "WARNING", **topic_env}
    with contextlib.suppress(Exception):  # the demo created them; the shared broker should not keep them
        await kafka_admin.delete_topics(demo_topics)


async def test_headless_demo_brings_every_sample_order_to_a_final_status(demo_env: dict[str, str],
                                                                         topic_env: dict[str, str],
                                                                         kafka_admin: Any) -> None:
    started = time.monotonic()
    code, out, err = await run_demo(demo_env, "--orders", "50", "--rate", "25", "--headless")
    assert code == 0, "\n".join(out[-20:]) + err[-3000:]
    assert time.monotonic() - started < 60
    summary = SUMMARY.match(out[-1])
    assert summary is not None, out[-1]
    n = {key: int(value) for key, value in summary.groupdict().items()}
    # 50 samples, and the children of the brackets among them (rows of their own).
    assert n["total"] == n["final"] > 50 and n["not_final"] == 0
    assert n["filled"] + n["cancelled"] + n["rejected"] == n["total"]
    assert n["invalid"] >= 3 and n["invalid_rejected"] == n["invalid"]
    assert n["valid_rejected"] == 0
    assert n["filled"] >= 20 and n["fills"] >= n["filled"] and n["positions"] >= 4
    sent = [line for line in out if "  sent  " in line]
    assert len(sent) == n["total"]
    assert sum(1 for line in sent if ": take-profit)" in line) == sum(1 for line in sent if ": stop-loss)" in line) > 0
    shown = " ".join(sent)
    for kind in ("MARKET", "LIMIT", "STOP ", "STOP_LIMIT", "STK:", "FUT:", "OPT:", "CASH:", "SELL", "BUY",
                 "DAY", "GTC", "IOC", "FOK", "OPG", "GTD", "TRAILING_STOP", "TRAILING_STOP_LIMIT", "MARKET_ON_CLOSE",
                 "LIMIT_ON_CLOSE", "MARKET_IF_TOUCHED", "LIMIT_IF_TOUCHED", "bracket", "OCO pair", "Adaptive"):
        assert kind in shown, kind
    for reason in ("ACCOUNT_NOT_ALLOWED", "UNKNOWN_INSTRUMENT", "PRICE_OFF_TICK", "MODIFIED: limit_price",
                   "MODIFIED: quantity"):
        assert any(reason in line for line in out), reason
    # Everything went through the demo's own topics; the configured names were never even created.
    existing = set(await kafka_admin.list_topics())
    configured = set(topic_env.values())
    assert {DEMO_TOPIC_PREFIX + name for name in configured} <= existing
    assert not configured & existing


@pytest.mark.parametrize("accounts", ["U0000002", "DU0000001,U0000002"])
async def test_demo_refuses_an_account_that_is_not_a_paper_account(accounts: str) -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "IBKR_ACCOUNTS": accounts}
    code, out, err = await run_demo(env, "--orders", "1", "--headless", timeout=30)
    assert code == 2 and out == []
    assert "refused" in err and "U0000002" in err and "paper" in err and err.strip().count("\n") == 0


async def test_demo_refuses_a_live_trading_configuration() -> None:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "IBKR_TRADING_MODE": "live",
           "IBKR_LIVE_CONFIRM": "yes", "IBKR_PORT": "4001"}
    code, _, err = await run_demo(env, "--orders", "1", "--headless", timeout=30)
    assert code == 2
    assert "refused" in err and err.strip().count("\n") == 0
