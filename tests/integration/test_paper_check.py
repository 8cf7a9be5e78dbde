"""``ibkr-workers paper-check`` as a person runs it: a subprocess against the sim gateway (in process)."""

from __future__ import annotations

import asyncio
import os
import pty
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from ibkr_sim.config import SimConfig
from ibkr_sim.server import SimGateway

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
ACCOUNT = "DU0000001"
AAPL_CON_ID = 265598


@dataclass
class Run:
    code: int
    out: list[str]
    err: str

    def step(self, name: str) -> str:
        """The summary line of step ``name``."""
        lines = [line for line in self.out if line[4:].strip().startswith(name + " ")]
        assert lines, f"no {name!r} step in {self.out}"
        return lines[0]


async def paper_check(port: int, *args: str, timeout: float = 60, **env: str) -> Run:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers", "paper-check", *args, cwd=REPO,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "IBKR_PORT": str(port),
             "LOG_LEVEL": "WARNING", **env},
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return Run(process.returncode, out.decode().splitlines(), err.decode())


@pytest.fixture
def sim_config() -> SimConfig:
    return SimConfig(accounts=(ACCOUNT,))


def aapl_position(sim: SimGateway, account: str = ACCOUNT) -> float:
    position = sim.position(account, AAPL_CON_ID)
    return float(position.quantity) if position is not None else 0.0


async def test_passes_against_the_sim_and_leaves_the_position_as_it_was(sim: SimGateway) -> None:
    before = aapl_position(sim)
    run = await paper_check(sim.address[1], "--yes", "--timeout", "15")
    assert run.code == 0, (run.out, run.err)
    for step in ("connect", "accounts", "account values", "positions", "open orders", "contract",
                 "buy", "sell", "position"):
        assert run.step(step).startswith("PASS"), run.out
    assert "server v157" in run.step("connect") and "reqCurrentTime" in run.step("connect")
    assert ACCOUNT in run.step("accounts")
    for tag in ("NetLiquidation=", "TotalCashValue=", "BuyingPower="):
        assert tag in run.step("account values")
    assert "conId 265598" in run.step("contract")
    buy, sell = run.step("buy"), run.step("sell")
    assert "BUY 1 @ " in buy and "commission 1" in buy and "USD" in buy and "execId" in buy
    assert "SELL 1 @ " in sell and "commission 1" in sell and "USD" in sell and "execId" in sell
    assert run.out[-1].startswith("paper-check PASS: 9 passed, 0 failed, 0 skipped")
    sides = [request.action for _, request in sim.orders_seen]
    assert sides == ["BUY", "SELL"]
    assert aapl_position(sim) == before
    assert [e.shares for e in sim.executions()] == [1.0, 1.0]


async def test_refuses_without_yes_when_stdin_is_not_a_terminal(sim: SimGateway) -> None:
    run = await paper_check(sim.address[1], "--timeout", "5")
    assert run.code == 2
    assert "stdin is not a terminal" in run.err and "--yes" in run.err
    assert sim.orders_seen == []
    assert sim.connections_accepted == 0


async def test_refuses_a_live_port_without_connecting() -> None:
    run = await paper_check(4001, "--yes", "--timeout", "2")
    assert run.code == 2
    assert "port 4001 is a live-trading port" in run.err
    assert not any(line.startswith(("PASS", "FAIL")) for line in run.out)


async def test_live_flag_alone_is_refused() -> None:
    run = await paper_check(4001, "--yes", "--live", "--timeout", "2")
    assert run.code == 2
    assert "IBKR_LIVE_CONFIRM=yes" in run.err


async def test_refuses_a_non_paper_account_and_places_nothing() -> None:
    live_like = SimGateway(SimConfig(accounts=("U0000009",)))
    await live_like.start("127.0.0.1", 0)
    try:
        run = await paper_check(live_like.address[1], "--yes", "--timeout", "10")
        assert run.code != 0
        assert run.step("accounts").startswith("FAIL")
        assert "non-paper account(s) U0000009" in run.err
        assert live_like.orders_seen == []
        assert live_like.position("U0000009", AAPL_CON_ID) is None
    finally:
        await live_like.stop()


async def test_unknown_symbol_fails_the_contract_step_and_places_nothing(sim: SimGateway) -> None:
    run = await paper_check(sim.address[1], "--yes", "--symbol", "NOPEX", "--timeout", "10")
    assert run.code == 1
    assert run.step("contract").startswith("FAIL")
    assert run.step("buy").startswith("SKIP") and run.step("sell").startswith("SKIP")
    assert sim.orders_seen == []


async def confirm_on_a_terminal(port: int, answer: str) -> tuple[int, str]:
    """Run paper-check with a pseudo-terminal as stdin and type ``answer`` at the prompt."""
    leader, follower = pty.openpty()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "workers", "paper-check", "--timeout", "10", cwd=REPO,
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "IBKR_PORT": str(port), "LOG_LEVEL": "WARNING"},
            stdin=follower, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        os.write(leader, answer.encode() + b"\n")
        out, _ = await asyncio.wait_for(process.communicate(), 60)
    finally:
        os.close(follower)
        os.close(leader)
    assert process.returncode is not None
    return process.returncode, out.decode()


async def test_a_terminal_confirmation_places_the_orders(sim: SimGateway) -> None:
    code, out = await confirm_on_a_terminal(sim.address[1], "y")
    assert code == 0, out
    assert "Place a 1-share MARKET BUY of AAPL in DU0000001" in out
    assert [request.action for _, request in sim.orders_seen] == ["BUY", "SELL"]


async def test_declining_at_the_terminal_places_nothing(sim: SimGateway) -> None:
    code, out = await confirm_on_a_terminal(sim.address[1], "n")
    assert code == 1
    assert "SKIP  buy               not confirmed" in out
    assert sim.orders_seen == []


async def test_an_order_not_filled_in_time_is_cancelled_and_fails(sim: SimGateway) -> None:
    sim.hold_fills()
    run = await paper_check(sim.address[1], "--yes", "--timeout", "2")
    assert run.code == 1
    assert run.step("buy").startswith("FAIL") and "not filled within 2 s; cancelled" in run.step("buy")
    assert run.step("sell").startswith("SKIP")
    assert [request.action for _, request in sim.orders_seen] == ["BUY"]
    for _ in range(50):
        if not sim.open_orders():
            break
        await asyncio.sleep(0.1)
    assert sim.open_orders() == []
    assert sim.executions() == []
