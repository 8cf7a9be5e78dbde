"""The demo's board: each sample order's status and fills, and the positions, as the person sees them."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path

from workers.client import ClientEvent, FillExecuted, OrderStatusChanged, PositionUpdated
from workers.client.events import plain
from workers.domain.orders import OrderState
from workers.entrypoints.demo_orders import Sample


@dataclass
class BoardRow:
    number: int
    order_id: str
    sample: Sample
    status: OrderState | None = None
    filled: Decimal = Decimal(0)
    avg_price: Decimal | None = None
    fills: int = 0
    fill_quantity: Decimal = Decimal(0)
    reason: str | None = None

    @property
    def final(self) -> bool:
        return self.status is not None and self.status.is_final

    def order_text(self) -> str:
        f = self.sample.fields
        prices = "".join(f" {tag} {plain(f[key])}" for tag, key in (("stp", "stop_price"), ("lmt", "limit_price"))
                         if f.get(key) is not None)
        return f"{f['side']:<4} {plain(f['quantity']):>6} {f['instrument_id']:<24} {f['order_type']:<19}" \
               f"{prices:<22} {f['tif']:<3}"

    def state_text(self) -> str:
        status = self.status.value if self.status else "sent"
        avg = f" @ {plain(self.avg_price)}" if self.avg_price is not None else ""
        return f"{status:<16} {plain(self.filled):>6}{avg:<14} fills {self.fills}"


@dataclass(frozen=True)
class Summary:
    total: int
    final: int
    counts: dict[str, int]
    invalid: int
    invalid_rejected: int
    valid_rejected: int
    fills: int
    positions: int
    seconds: float

    @property
    def not_final(self) -> int:
        return self.total - self.final

    def line(self) -> str:
        counts = ", ".join(f"{self.counts.get(s, 0)} {s}" for s in ("FILLED", "CANCELLED", "REJECTED"))
        return (f"demo: {self.total} orders, {self.final} final ({counts}), {self.not_final} not final; "
                f"invalid {self.invalid_rejected}/{self.invalid} rejected, valid {self.valid_rejected} rejected; "
                f"{self.fills} fills, {self.positions} positions in {self.seconds:.1f} s")


class Board:
    """Every sample order with its latest status and fills, and the positions; rendered as text."""

    def __init__(self, *, headless: bool, log_file: Path | None) -> None:
        self.headless = headless
        self.log_file = log_file
        self.rows: dict[str, BoardRow] = {}
        self.positions: dict[tuple[str, int], PositionUpdated] = {}
        self.last_event = time.monotonic()
        self.total = 0
        self.title = ""
        self.accounts: set[str] = set()
        self.started = time.monotonic()
        self._changed = asyncio.Event()

    def start(self, total: int, rate: float, target: str, accounts: set[str]) -> None:
        self.total, self.accounts, self.started = total, accounts, time.monotonic()
        self.title = f"ibkr-workers demo · {target} · {total} orders at {rate:g}/s · Ctrl-C stops"

    def add(self, order_id: str, sample: Sample) -> None:
        row = self.rows[order_id] = BoardRow(len(self.rows) + 1, order_id, sample)
        if self.headless:
            print(f"{self._now()}  #{row.number:<4} {order_id[:8]}  sent  {row.order_text()}  ({sample.label})",
                  flush=True)

    def on_event(self, event: ClientEvent) -> None:
        """A listener for :meth:`OrderClient.listen`."""
        self.last_event = time.monotonic()
        self._changed.set()
        if isinstance(event, PositionUpdated):
            if event.account in self.accounts:
                self.positions[(event.account, event.con_id)] = event
                if self.headless:
                    print(f"{self._now()}  position  {event.describe()}", flush=True)
            return
        row = self.rows.get(event.order_id)
        if row is None:
            return
        if isinstance(event, OrderStatusChanged):
            row.status, row.filled, row.avg_price = event.status, event.filled_quantity, event.avg_fill_price
            row.reason = event.reason or row.reason
        elif isinstance(event, FillExecuted):
            row.fills += 1
            row.fill_quantity += event.quantity
        if self.headless:
            print(f"{self._now()}  #{row.number:<4} {row.order_id[:8]}  {event.describe()}", flush=True)

    async def wait_until(self, condition: Callable[[], bool], seconds: float) -> bool:
        """Wait (at most ``seconds``) until ``condition()`` holds after some event; return whether it does."""
        deadline = time.monotonic() + seconds
        while not condition():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.5))
        return True

    @staticmethod
    def _now() -> str:
        return datetime.now().strftime("%H:%M:%S.%f")[:-3]

    def status(self, order_id: str) -> OrderState | None:
        return self.rows[order_id].status

    def open_orders(self) -> list[str]:
        return [order_id for order_id, row in self.rows.items() if not row.final]

    def all_final(self) -> bool:
        return all(row.final for row in self.rows.values())

    def fills_complete(self) -> bool:
        return all(row.fill_quantity >= row.filled for row in self.rows.values())

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.rows.values():
            key = row.status.value if row.status else "SENT"
            counts[key] = counts.get(key, 0) + 1
        return counts

    def progress_line(self) -> str:
        counts = self.counts()
        final = sum(counts.get(s, 0) for s in ("FILLED", "CANCELLED", "REJECTED"))
        working = len(self.rows) - final
        fills = sum(row.fills for row in self.rows.values())
        shown = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
        return (f"progress: sent {len(self.rows)}/{self.total} · final {final} · open {working} · "
                f"fills {fills} · {shown} · {time.monotonic() - self.started:.1f} s")

    def frame(self, clear: bool = True) -> str:
        """The whole screen: title, the latest orders, positions, progress."""
        width, height = shutil.get_terminal_size((120, 40))
        positions = sorted(self.positions.values(), key=lambda p: p.instrument_id or "")[:8]
        room = max(3, height - 8 - len(positions))
        lines = [self.title[:width]]
        if self.log_file is not None:
            lines.append(f"logs: {self.log_file}"[:width])
        lines.append(f"{'#':>4} {'order':<8}  {'side':<4} {'qty':>6} {'instrument':<24} {'type':<10}"
                     f"{' prices':<22} {'tif':<3}  {'status':<16} {'filled':>6}{'  avg':<14} fills"[:width])
        for row in list(self.rows.values())[-room:]:
            note = row.reason if row.status is OrderState.REJECTED else row.sample.label
            lines.append(f"{row.number:>4} {row.order_id[:8]}  {row.order_text()}  {row.state_text()}"
                         f"  {note or ''}"[:width])
        lines.append("positions:" + (" none yet" if not positions else ""))
        lines += [f"  {p.describe()}"[:width] for p in positions]
        lines.append(self.progress_line()[:width])
        text = "\n".join(lines) + "\n"
        return "\x1b[H\x1b[J" + text if clear else text

    def summary(self, seconds: float) -> Summary:
        rows = list(self.rows.values())
        counts = self.counts()
        return Summary(
            total=max(self.total, len(rows)), final=sum(1 for r in rows if r.final), counts=counts,
            invalid=sum(1 for r in rows if not r.sample.valid),
            invalid_rejected=sum(1 for r in rows if not r.sample.valid and r.status is OrderState.REJECTED),
            valid_rejected=sum(1 for r in rows if r.sample.valid and r.status is OrderState.REJECTED),
            fills=sum(r.fills for r in rows), positions=len(self.positions), seconds=seconds,
        )
