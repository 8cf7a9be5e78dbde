"""Brackets and OCA groups do not keep forgotten orders alive in the sim."""

from __future__ import annotations

import pytest
from ib_insync import IB, Contract, LimitOrder

from ibkr_sim import SimConfig, broker
from ibkr_sim.server import SimGateway
from tests.sim.helpers import until


@pytest.fixture
def sim_config() -> SimConfig:
    return SimConfig(pacing=False)


@pytest.fixture(autouse=True)
def small_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker, "FINISHED_KEPT", 30)
    monkeypatch.setattr(broker, "FORGET_AT_ONCE", 9)


async def test_forgotten_brackets_and_oca_members_leave_the_link_indexes(
    sim: SimGateway, ib: IB, aapl: Contract
) -> None:
    trades = []
    for n in range(20):
        # Filled parents (the market is 231.40) whose children are one group; each fill of a take-profit
        # (marketable at once) cancels its stop-loss.
        trades += [ib.placeOrder(aapl, o) for o in ib.bracketOrder("BUY", 1, 232.00, 231.00, 200.00)]
        trades.append(ib.placeOrder(aapl, LimitOrder("BUY", 1, 232.00, ocaGroup=f"g{n}")))
    await until(lambda: all(t.isDone() for t in trades), timeout=10, what="every order done")
    kept = set(sim.orders())
    assert len(kept) <= 39
    linked = {o for members in sim.broker._children.values() for o in members}
    linked |= {o for members in sim.broker._oca.values() for o in members}
    assert linked <= kept
    assert linked  # the newest groups are still there
