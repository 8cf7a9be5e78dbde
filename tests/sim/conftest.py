"""Fixtures for the sim gateway tests: an in-process sim on 127.0.0.1 and ib_insync clients of it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from ib_insync import IB, Contract, Stock

from ibkr_sim.server import SimGateway
from tests.sim.helpers import Connect


@pytest.fixture
async def connect(sim: SimGateway) -> AsyncIterator[Connect]:
    """``await connect(client_id)`` → a connected ib_insync client, disconnected after the test."""
    clients: list[IB] = []

    async def _connect(client_id: int = 1, timeout: float = 3.0, **kwargs: Any) -> IB:
        ib = IB()
        clients.append(ib)
        host, port = sim.address
        await ib.connectAsync(host, port, clientId=client_id, timeout=timeout, **kwargs)
        return ib

    yield _connect
    for ib in clients:
        ib.disconnect()
    await asyncio.sleep(0)


@pytest.fixture
async def ib(connect: Connect) -> IB:
    """One connected client (clientId 1)."""
    return await connect(1)


@pytest.fixture
async def aapl(ib: IB) -> Contract:
    """AAPL qualified through the sim."""
    (contract,) = await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD"))
    return contract
