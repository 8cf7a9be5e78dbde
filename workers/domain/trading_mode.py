"""Mode guards: paper and live must agree with the port and with the accounts IBKR manages."""

from __future__ import annotations

from collections.abc import Iterable

LIVE_PORTS = frozenset({4001, 7496})
PAPER_PORTS = frozenset({4002, 7497})


class ModeMismatch(Exception):
    """The trading mode, the port and the managed accounts disagree: the worker refuses to trade."""


def is_paper_account(account: str) -> bool:
    """IBKR paper-trading accounts begin with ``DU`` (``DF`` for paper advisor masters)."""
    return account.startswith(("DU", "DF"))


def check_port(mode: str, port: int) -> None:
    """Refuse a paper worker on a well-known live port, and the reverse."""
    if mode == "paper" and port in LIVE_PORTS:
        raise ModeMismatch(f"paper trading mode but port {port} is a live-trading port (paper: 4002 / 7497)")
    if mode == "live" and port in PAPER_PORTS:
        raise ModeMismatch(f"live trading mode but port {port} is a paper-trading port (live: 4001 / 7496)")


def check_accounts(mode: str, accounts: Iterable[str]) -> None:
    """Refuse when IBKR manages an account of the other kind than the worker's mode."""
    managed = [a for a in accounts if a]
    if not managed:
        raise ModeMismatch("IBKR reported no managed accounts")
    if mode == "paper":
        live = [a for a in managed if not is_paper_account(a)]
        if live:
            raise ModeMismatch(f"paper trading mode but IBKR manages non-paper account(s) {', '.join(live)}")
    else:
        paper = [a for a in managed if is_paper_account(a)]
        if paper:
            raise ModeMismatch(f"live trading mode but IBKR manages paper account(s) {', '.join(paper)}")
