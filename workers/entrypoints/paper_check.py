"""``ibkr-workers paper-check``: prove a paper IB Gateway / TWS (or the sim) works end to end.

Read-only first: connection health (server version, connect time, reqCurrentTime round trip), managed
accounts, account values, positions, open orders, and the stock qualified by reqContractDetails. Then,
after a confirmation (``--yes`` skips it), a 1-share MARKET BUY tracked to its fill and commission, and
a 1-share SELL reversing it, tracked the same way; the position in the stock must be back to its start.

Refused (exit 2, nothing placed) on a live port (4001 / 7496) or a non-paper managed account unless
``--live`` and ``IBKR_LIVE_CONFIRM=yes``; refused without ``--yes`` when stdin is not a terminal.
Exit 0 only when every step passed; 1 when a step failed or was skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
import uuid
from collections.abc import Awaitable, Sequence
from decimal import Decimal
from typing import Any

from ib_insync import Contract, ContractDetails, Order, Trade

from workers.adapters.ibkr.pacing import PacingLimiter, Priority
from workers.adapters.ibkr.reports import to_decimal
from workers.adapters.ibkr.tws_connection import TwsConnection
from workers.logs import configure_logging
from workers.service_layer.paper_check import (
    ACCOUNT_TAGS,
    EXIT_REFUSED,
    Outcome,
    Refused,
    StepResult,
    choose_account,
    exit_code,
    fill_detail,
    guard_accounts,
    guard_port,
    is_yes,
    live_allowed,
    summary,
)
from workers.settings import Settings, load_settings

# IB's order statuses after which nothing more happens to an order.
FINAL_STATUSES = frozenset({"Filled", "Cancelled", "ApiCancelled", "Inactive"})


class Report:
    """Collects step results and prints each line as it is known."""

    def __init__(self) -> None:
        self.steps: list[StepResult] = []

    def add(self, name: str, outcome: Outcome, detail: str = "") -> StepResult:
        step = StepResult(name, outcome, detail)
        self.steps.append(step)
        print(step.line(), flush=True)
        return step

    def skip(self, names: Sequence[str], why: str) -> None:
        for name in names:
            self.add(name, Outcome.SKIP, why)


TRADE_STEPS = ("buy", "sell", "position")


async def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    configure_logging(settings.log_level, worker="paper-check")
    logging.getLogger("ib_insync").setLevel(logging.CRITICAL)
    try:
        allow_live = live_allowed(bool(args.live), settings.ibkr_live_confirm)
        guard_port(settings.ibkr_effective_port, allow_live=allow_live)
        if not args.yes and not sys.stdin.isatty():
            raise Refused("stdin is not a terminal: pass --yes to place the test orders without asking")
    except Refused as exc:
        print(f"ibkr-workers paper-check: refused: {exc}", file=sys.stderr)
        return EXIT_REFUSED
    return await PaperCheck(settings, args, allow_live).run()


class PaperCheck:
    def __init__(self, settings: Settings, args: argparse.Namespace, allow_live: bool) -> None:
        self.settings = settings
        self.symbol: str = args.symbol
        self.timeout: float = float(args.timeout)
        self.assume_yes: bool = bool(args.yes)
        self.allow_live = allow_live
        self.report = Report()
        self.gateway = TwsConnection(
            settings.ibkr_host, settings.ibkr_effective_port, settings.ibkr_client_id,
            limiter=PacingLimiter(settings.ibkr_pacing_per_second),
            connect_timeout=min(settings.ibkr_connect_timeout, self.timeout),
            trading_mode="live" if allow_live else "paper",
        )

    @property
    def ib(self) -> Any:
        return self.gateway.ib

    async def run(self) -> int:
        report = self.report
        mode = "live (confirmed)" if self.allow_live else "paper"
        print(f"paper-check against {self.settings.ibkr_host}:{self.gateway.port} "
              f"client id {self.settings.ibkr_client_id}, {mode} mode, symbol {self.symbol}", flush=True)
        try:
            if not await self._connect():
                report.skip(("accounts", "account values", "positions", "open orders", "contract",
                             *TRADE_STEPS), "not connected")
                return self._finish()
            try:
                account = self._accounts()
            except Refused as exc:
                report.add("accounts", Outcome.FAIL, f"refused: {exc}")
                print(f"ibkr-workers paper-check: refused: {exc}", file=sys.stderr)
                print(summary(report.steps), flush=True)
                return EXIT_REFUSED
            await self._account_values()
            start_position = await self._positions(account)
            await self._open_orders()
            contract = await self._contract()
            if contract is None:
                report.skip(TRADE_STEPS, "no contract")
                return self._finish()
            if not await self._confirmed(account):
                report.skip(TRADE_STEPS, "not confirmed")
                return self._finish()
            bought = await self._trade("buy", "BUY", contract, account)
            if not bought:
                report.skip(TRADE_STEPS[1:], "the buy did not fill")
                return self._finish()
            await self._trade("sell", "SELL", contract, account)
            await self._position_restored(account, contract, start_position)
            return self._finish()
        finally:
            await self.gateway.close()

    def _finish(self) -> int:
        print(summary(self.report.steps), flush=True)
        return exit_code(self.report.steps)

    async def _step(self, name: str, action: Awaitable[str]) -> bool:
        """Run one read-only step; an exception or a timeout is a FAIL with its message."""
        try:
            detail = await asyncio.wait_for(action, self.timeout)
        except Exception as exc:
            self.report.add(name, Outcome.FAIL, f"{type(exc).__name__}: {exc}".rstrip(": "))
            return False
        self.report.add(name, Outcome.PASS, detail)
        return True

    # -- read-only steps ----------------------------------------------------------------------------

    async def _connect(self) -> bool:
        async def connect() -> str:
            started = time.monotonic()
            await self.gateway.connect()
            connect_ms = (time.monotonic() - started) * 1000
            started = time.monotonic()
            server_time = await self.gateway.current_time()
            rtt_ms = (time.monotonic() - started) * 1000
            return (f"server v{self.ib.client.serverVersion()}, connected in {connect_ms:.0f} ms, "
                    f"reqCurrentTime {rtt_ms:.1f} ms (server time {server_time:%Y-%m-%d %H:%M:%S %Z})")

        return await self._step("connect", connect())

    def _accounts(self) -> str:
        managed = self.gateway.managed_accounts
        guard_accounts(managed, allow_live=self.allow_live)
        account = choose_account(managed, self.settings.allowed_accounts)
        self.report.add("accounts", Outcome.PASS, f"{', '.join(managed)} (trading in {account})")
        return account

    async def _account_values(self) -> None:
        async def values() -> str:
            rows = await self._summary_values()
            parts: list[str] = []
            for account in self.gateway.managed_accounts:
                tags = rows.get(account, {})
                missing = [tag for tag in ACCOUNT_TAGS if tag not in tags]
                if missing:
                    raise LookupError(f"{account}: no {', '.join(missing)}")
                parts.append(account + " " + " ".join(f"{tag}={tags[tag]}" for tag in ACCOUNT_TAGS))
            return "; ".join(parts)

        await self._step("account values", values())

    async def _summary_values(self) -> dict[str, dict[str, str]]:
        """NetLiquidation, … by account: from the account updates ib_insync subscribed on connect, else
        from an account summary request."""
        rows: dict[str, dict[str, str]] = {}

        def collect(items: Sequence[Any]) -> None:
            for item in items:
                if item.tag in ACCOUNT_TAGS and item.currency not in ("", "BASE"):
                    rows.setdefault(item.account, {})[item.tag] = f"{item.value} {item.currency}"

        collect(self.ib.accountValues())
        if any(len(rows.get(a, {})) < len(ACCOUNT_TAGS) for a in self.gateway.managed_accounts):
            await self.gateway.limiter.acquire(Priority.QUERY)
            collect(await self.ib.accountSummaryAsync())
        return rows

    async def _positions(self, account: str) -> Decimal:
        held = Decimal(0)

        async def positions() -> str:
            nonlocal held
            found = await self.gateway.positions()
            mine = [p for p in found if p.account == account]
            symbols = {p.contract.conId: p.contract.symbol for p in self.ib.positions()}
            held = sum((p.quantity for p in mine if symbols.get(p.con_id) == self.symbol), Decimal(0))
            return f"{len(mine)} position(s) in {account}, {self.symbol} {held.normalize():f}"

        await self._step("positions", positions())
        return held

    async def _open_orders(self) -> None:
        async def open_orders() -> str:
            await self.gateway.limiter.acquire(Priority.QUERY)
            trades: list[Trade] = await self.ib.reqAllOpenOrdersAsync()
            return f"{len(trades)} open order(s)"

        await self._step("open orders", open_orders())

    async def _contract(self) -> Contract | None:
        qualified: Contract | None = None

        async def contract() -> str:
            nonlocal qualified
            wanted = Contract(symbol=self.symbol, secType="STK", exchange="SMART", currency="USD")
            details: list[ContractDetails] = await self.gateway.contract_details(wanted)
            if not details or details[0].contract is None:
                raise LookupError(f"reqContractDetails found no USD stock {self.symbol}")
            if len(details) > 1:
                raise LookupError(f"reqContractDetails found {len(details)} contracts for {self.symbol}")
            found = details[0].contract
            qualified = Contract(conId=found.conId, symbol=found.symbol, secType=found.secType,
                                 exchange="SMART", primaryExchange=found.primaryExchange,
                                 currency=found.currency)
            return (f"{found.symbol} conId {found.conId} {found.primaryExchange or found.exchange} "
                    f"{found.currency} ({details[0].longName or 'no name'})")

        await self._step("contract", contract())
        return qualified

    async def _confirmed(self, account: str) -> bool:
        if self.assume_yes:
            return True
        prompt = (f"Place a 1-share MARKET BUY of {self.symbol} in {account}, then a 1-share SELL? "
                  "[y/N] ")
        answer = await asyncio.to_thread(input, prompt)
        return is_yes(answer)

    # -- the trades ---------------------------------------------------------------------------------

    async def _trade(self, name: str, action: str, contract: Contract, account: str) -> bool:
        order = Order(action=action, totalQuantity=1, orderType="MKT", tif="DAY", account=account,
                      orderRef=f"paper-check-{uuid.uuid4()}", transmit=True)
        started = time.monotonic()
        await self.gateway.limiter.acquire(Priority.PLACE)
        trade: Trade = self.ib.placeOrder(contract, order)
        deadline = started + self.timeout
        while time.monotonic() < deadline:
            if trade.orderStatus.status in FINAL_STATUSES and self._commissions_known(trade):
                break
            await asyncio.sleep(0.05)
        status = trade.orderStatus.status
        if status != "Filled":
            why = next((entry.message for entry in reversed(trade.log) if entry.message), "")
            if status not in FINAL_STATUSES:
                self.ib.cancelOrder(order)
                why = f"not filled within {self.timeout:g} s; cancelled"
            self.report.add(name, Outcome.FAIL, f"{action} ended {status or 'unknown'}: {why}".rstrip(": "))
            return False
        fills = trade.fills
        if not self._commissions_known(trade):
            self.report.add(name, Outcome.FAIL, f"{action} filled but no commission report within "
                                                f"{self.timeout:g} s")
            return True
        commissions = [fill.commissionReport for fill in fills]
        total = sum((to_decimal(c.commission) for c in commissions), Decimal(0))
        detail = fill_detail(action, to_decimal(trade.orderStatus.filled),
                             to_decimal(trade.orderStatus.avgFillPrice), total, commissions[0].currency,
                             [fill.execution.execId for fill in fills], time.monotonic() - started)
        self.report.add(name, Outcome.PASS, f"{detail}, ib order {order.orderId}")
        return True

    @staticmethod
    def _commissions_known(trade: Trade) -> bool:
        fills = trade.fills
        return bool(fills) and all(fill.commissionReport.execId for fill in fills)

    async def _position_restored(self, account: str, contract: Contract, start: Decimal) -> None:
        async def position() -> str:
            found = await self.gateway.positions()
            now = sum((p.quantity for p in found if p.account == account and p.con_id == contract.conId),
                      Decimal(0))
            if now != start:
                raise AssertionError(f"{self.symbol} position {now.normalize():f}, "
                                     f"was {start.normalize():f} before the check")
            return f"{self.symbol} back to {start.normalize():f}"

        await self._step("position", position())
