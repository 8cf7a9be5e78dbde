"""The control port, the command line and the process entry point."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from ib_insync import IB, Contract, MarketOrder, Stock

from ibkr_sim.cli import add_arguments, build_config
from ibkr_sim.config import SimConfig, SimConfigError
from ibkr_sim.control import ControlClient, ControlServer, control_call
from ibkr_sim.server import SimGateway
from tests.sim.helpers import AAPL, until

pytestmark = pytest.mark.integration


@pytest.fixture
async def control(sim: SimGateway) -> AsyncIterator[ControlClient]:
    server = ControlServer(sim)
    host, port = await server.start()
    client = await ControlClient.connect(host, port)
    try:
        yield client
    finally:
        await client.close()
        await server.stop()


async def test_control_port_drives_faults_and_prices(
    sim: SimGateway, control: ControlClient, ib: IB, aapl: Contract
) -> None:
    assert await control.call("ping") == "pong"
    await control.call("hold_fills")
    trade = ib.placeOrder(aapl, MarketOrder("BUY", 10, orderRef="ctl"))
    await until(lambda: trade.orderStatus.status == "Submitted", what="submitted")
    assert await control.call("set_price", con_id=AAPL, price=232.0) == 232.0
    await control.call("release_fills")
    await until(lambda: trade.orderStatus.status == "Filled", what="filled")
    assert trade.orderStatus.avgFillPrice == 232.0
    assert await control.call("place_count", order_ref="ctl") == 1
    stats = await control.call("stats")
    assert stats["connected_client_ids"] == [1]
    assert stats["executions"] == 1
    (execution,) = await control.call("executions")
    assert execution["exec_id"] == trade.fills[0].execution.execId
    assert await control.call("position", account="DU0000001", con_id=AAPL) == {
        "quantity": 10.0, "avg_cost": pytest.approx(232.1)
    }


async def test_control_port_changes_the_universe(control: ControlClient, ib: IB) -> None:
    await control.call("universe_rename", con_id=AAPL, symbol="AAPLX")
    (renamed,) = await ib.qualifyContractsAsync(Stock("AAPLX", "SMART", "USD"))
    assert renamed.conId == AAPL
    await control.call("universe_add", instrument={
        "conId": 99000002, "symbol": "NEWCO", "secType": "STK", "exchange": "SMART", "currency": "USD",
        "primaryExchange": "NASDAQ", "refPrice": 10.0,
    })
    assert len(await ib.reqContractDetailsAsync(Stock("NEWCO", "SMART", "USD"))) == 1
    await control.call("universe_delist", con_id=99000002)
    assert await ib.reqContractDetailsAsync(Stock("NEWCO", "SMART", "USD")) == []


async def test_control_port_reports_bad_requests(sim: SimGateway) -> None:
    server = ControlServer(sim)
    host, port = await server.start()
    with pytest.raises(RuntimeError, match="unknown op"):
        await control_call(host, port, "explode")
    with pytest.raises(RuntimeError, match="TypeError"):
        await control_call(host, port, "set_price", nonsense=1)
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"not json\n")
    answer = json.loads(await reader.readline())
    assert answer["ok"] is False
    writer.close()
    await server.stop()


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_accounts_come_from_the_option_or_sim_accounts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIM_ACCOUNTS", "DU0000011,DU0000012")
    assert build_config(parse([])).accounts == ("DU0000011", "DU0000012")
    assert build_config(parse(["--accounts", "DU0000013"])).accounts == ("DU0000013",)
    monkeypatch.delenv("SIM_ACCOUNTS")
    config = build_config(parse(["--pacing", "off", "--seed", "5", "--tick-interval", "0"]))
    assert (config.accounts, config.pacing, config.seed, config.tick_interval) == (
        ("DU0000001",), False, 5, None
    )


def test_bad_accounts_are_a_configuration_error() -> None:
    with pytest.raises(SimConfigError, match="accounts"):
        build_config(parse(["--accounts", "not an account"]))


async def test_sim_runs_as_its_own_process(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ibkr_sim", "--port", "0", "--control-port", "0", "--ready-file", str(ready),
        "--tick-interval", "0", "--log-level", "WARNING",
        env={**os.environ, "SIM_ACCOUNTS": "DU0000021"},
    )
    try:
        await until(ready.exists, timeout=10, what="ready file")
        ports = json.loads(ready.read_text())
        ib = IB()
        await ib.connectAsync(ports["host"], ports["port"], clientId=1, timeout=3)
        assert ib.managedAccounts() == ["DU0000021"]
        trade = ib.placeOrder(Contract(conId=AAPL, exchange="SMART"), MarketOrder("BUY", 1))
        await until(lambda: trade.orderStatus.status == "Filled", what="filled")
        stats = await control_call(ports["control_host"], ports["control_port"], "stats")
        assert stats["executions"] == 1
        ib.disconnect()
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 10)
    assert code == 0


async def test_control_port_stays_on_loopback_when_the_api_listens_everywhere(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ibkr_sim", "--host", "0.0.0.0", "--port", "0", "--control-port", "0",
        "--ready-file", str(ready), "--tick-interval", "0", "--log-level", "WARNING",
    )
    try:
        await until(ready.exists, timeout=10, what="ready file")
        ports = json.loads(ready.read_text())
        assert ports["host"] == "0.0.0.0" and ports["control_host"] == "127.0.0.1"
        assert await control_call("127.0.0.1", ports["control_port"], "ping") == "pong"
        # Anything but loopback finds no control port (here: the machine's own outward address, if any).
        outward = outward_address()
        if outward is not None:
            with pytest.raises(OSError):
                await asyncio.wait_for(asyncio.open_connection(outward, ports["control_port"]), 3)
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 10)
    assert code == 0


def outward_address() -> str | None:
    """This machine's address on its default route (no packet is sent), or None without one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed anywhere real
        except OSError:
            return None
        address: str = probe.getsockname()[0]
    return None if address.startswith("127.") else address


def test_control_host_is_its_own_option_and_loopback_by_default() -> None:
    assert parse([]).control_host == "127.0.0.1"
    assert parse(["--host", "0.0.0.0"]).control_host == "127.0.0.1"
    assert parse(["--control-host", "0.0.0.0"]).control_host == "0.0.0.0"


@pytest.mark.parametrize("sim_config", [SimConfig(server_version=v) for v in (163, 164, 170, 176)])
async def test_higher_server_versions_work_end_to_end(sim: SimGateway, ib: IB) -> None:
    assert ib.client.serverVersion() == sim.config.server_version
    (aapl,) = await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD"))
    trade = ib.placeOrder(aapl, MarketOrder("BUY", 3))
    await until(lambda: trade.orderStatus.status == "Filled", what="filled")
    completed = await ib.reqCompletedOrdersAsync(apiOnly=False)
    assert [t.order.permId for t in completed] == [trade.order.permId]
    state = await ib.whatIfOrderAsync(aapl, MarketOrder("BUY", 3))
    assert float(state.initMarginChange) > 0
