"""Account, portfolio and position messages rendered from the portfolio at current prices."""

from __future__ import annotations

import time
from collections.abc import Iterable

from ibkr_sim import messages as m
from ibkr_sim.market import PriceProcess
from ibkr_sim.portfolio import Portfolio, Position


class Reports:
    """Builds the account-related frames a connection sends."""

    def __init__(self, portfolio: Portfolio, prices: PriceProcess) -> None:
        self.portfolio = portfolio
        self.prices = prices

    def values(self, account: str) -> list[tuple[str, str, str]]:
        """Account values as ``(tag, value, currency)``."""
        return self.portfolio.values(account, self.prices.price)

    def _positions(self, account: str, con_ids: Iterable[int] | None, with_flat: bool) -> list[Position]:
        acct = self.portfolio.account(account)
        if con_ids is None:
            found = list(acct.positions.values())
        else:
            found = [p for c in con_ids if (p := acct.positions.get(c)) is not None]
        return [p for p in found if with_flat or p.quantity != 0]

    def account_updates(self, account: str, with_end: bool) -> list[bytes]:
        """reqAccountUpdates answer: values, portfolio, account time, then accountDownloadEnd."""
        frames = self.account_values(account)
        frames += self.portfolio_updates(account, None, with_flat=False)
        frames.append(m.update_account_time(time.strftime("%H:%M")))
        if with_end:
            frames.append(m.account_download_end(account))
        return frames

    def account_values(self, account: str) -> list[bytes]:
        """updateAccountValue for every account value."""
        return [m.update_account_value(tag, value, cur, account) for tag, value, cur in self.values(account)]

    def portfolio_updates(self, account: str, con_ids: Iterable[int] | None, with_flat: bool) -> list[bytes]:
        """updatePortfolio for the account's positions (all, or the given conIds)."""
        found = self._positions(account, con_ids, with_flat)
        return [self.portfolio_update(account, p.instrument.con_id) for p in found]

    def portfolio_update(self, account: str, con_id: int) -> bytes:
        """updatePortfolio for one position (flat ones included: clients drop them)."""
        pos = self.portfolio.account(account).positions[con_id]
        price = self.prices.price(pos.instrument)
        return m.update_portfolio(
            account, pos.instrument, quantity=pos.quantity, price=price, value=pos.market_value(price),
            avg_cost=pos.avg_cost, unrealized=pos.unrealized_pnl(price), realized=pos.realized_pnl,
        )

    def position(self, account: str, con_id: int) -> bytes:
        """position (61) for one contract."""
        pos = self.portfolio.account(account).positions[con_id]
        return m.position(account, pos.instrument, pos.quantity, pos.avg_cost)

    def positions(self, account: str, con_ids: Iterable[int] | None, with_flat: bool) -> list[bytes]:
        """position (61) messages."""
        return [
            m.position(account, p.instrument, p.quantity, p.avg_cost)
            for p in self._positions(account, con_ids, with_flat)
        ]

    def positions_multi(self, req_id: int, account: str) -> list[bytes]:
        """positionMulti (71) messages then positionMultiEnd."""
        frames = [
            m.position_multi(req_id, account, p.instrument, p.quantity, p.avg_cost)
            for p in self._positions(account, None, with_flat=False)
        ]
        frames.append(m.position_multi_end(req_id))
        return frames

    def account_multi(self, req_id: int, account: str, model_code: str) -> list[bytes]:
        """accountUpdateMulti (73) values."""
        return [
            m.account_update_multi(req_id, account, model_code, tag, value=value, cur=cur)
            for tag, value, cur in self.values(account)
        ]

    def summary(self, req_id: int, accounts: Iterable[str], tags: str) -> list[bytes]:
        """accountSummary (63) for the requested tags, then accountSummaryEnd."""
        wanted = {t.strip() for t in tags.split(",") if t.strip()}
        ledger = any(t.startswith("$LEDGER") for t in wanted)
        frames = []
        for account in accounts:
            for tag, value, cur in self.values(account):
                if (ledger if tag == "CashBalance" else tag in wanted):
                    frames.append(m.account_summary(req_id, account, tag, value, cur))
        frames.append(m.account_summary_end(req_id))
        return frames
