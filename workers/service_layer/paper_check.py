"""The pure part of ``ibkr-workers paper-check``: the live/paper guards, step results and the summary.

No I/O here: :mod:`workers.entrypoints.paper_check` talks to IBKR and uses these to decide and to report.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import Decimal

from workers.domain.trading_mode import ModeMismatch, check_accounts, check_port

# The account values reported for every managed account.
ACCOUNT_TAGS = ("NetLiquidation", "TotalCashValue", "BuyingPower")

EXIT_PASSED, EXIT_FAILED, EXIT_REFUSED = 0, 1, 2


class Outcome(enum.StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    SKIP = "SKIP"


@dataclass(frozen=True)
class StepResult:
    """One line of the summary."""

    name: str
    outcome: Outcome
    detail: str = ""

    def line(self, width: int = 16) -> str:
        return f"{self.outcome.value:<4}  {self.name:<{width}}  {self.detail}".rstrip()


class Refused(Exception):
    """The check will not trade here (live port, live account, no confirmation); exit code 2."""


def live_allowed(live_flag: bool, live_confirm: str | None) -> bool:
    """``--live`` counts only together with ``IBKR_LIVE_CONFIRM=yes``; ``--live`` alone is refused."""
    confirmed = (live_confirm or "").strip().lower() == "yes"
    if live_flag and not confirmed:
        raise Refused("--live is refused unless IBKR_LIVE_CONFIRM=yes is also set")
    return live_flag and confirmed


def guard_port(port: int, *, allow_live: bool) -> None:
    """Refuse a well-known live port (4001 / 7496) unless live trading was allowed explicitly."""
    if allow_live:
        return
    try:
        check_port("paper", port)
    except ModeMismatch as exc:
        raise Refused(f"{exc}; paper-check trades only on paper unless --live and IBKR_LIVE_CONFIRM=yes") from None


def guard_accounts(accounts: Iterable[str], *, allow_live: bool) -> None:
    """Refuse when IBKR manages a non-paper account (not DU…/DF…) unless live trading was allowed."""
    managed = [a for a in accounts if a]
    if allow_live:
        if not managed:
            raise Refused("IBKR reported no managed accounts")
        return
    try:
        check_accounts("paper", managed)
    except ModeMismatch as exc:
        raise Refused(str(exc)) from None


def choose_account(managed: Sequence[str], allowlist: Iterable[str]) -> str:
    """The account to trade: the first managed one in ``IBKR_ACCOUNTS`` when that is set, else the first."""
    allowed = set(allowlist)
    if allowed:
        for account in managed:
            if account in allowed:
                return account
        raise Refused(f"none of the managed accounts {', '.join(managed)} is in IBKR_ACCOUNTS")
    if not managed:
        raise Refused("IBKR reported no managed accounts")
    return managed[0]


def is_yes(answer: str) -> bool:
    return answer.strip().lower() in ("y", "yes")


def exit_code(steps: Sequence[StepResult]) -> int:
    """0 only when there are steps and every one passed."""
    if steps and all(step.outcome is Outcome.PASS for step in steps):
        return EXIT_PASSED
    return EXIT_FAILED


def summary(steps: Sequence[StepResult]) -> str:
    """The closing line: overall verdict and counts."""
    counts = {outcome: sum(1 for s in steps if s.outcome is outcome) for outcome in Outcome}
    verdict = "PASS" if exit_code(steps) == EXIT_PASSED else "FAIL"
    return (f"paper-check {verdict}: {counts[Outcome.PASS]} passed, {counts[Outcome.FAIL]} failed, "
            f"{counts[Outcome.SKIP]} skipped")


def fill_detail(side: str, quantity: Decimal, price: Decimal, commission: Decimal | None,
                commission_currency: str | None, exec_ids: Sequence[str], seconds: float) -> str:
    """``BUY 1 @ 187.23, commission 1.00 USD, execId …, 0.31 s``."""
    fee = (f"commission {commission} {commission_currency or ''}".rstrip()
           if commission is not None else "commission unknown")
    return (f"{side} {quantity.normalize():f} @ {price}, {fee}, execId {','.join(exec_ids)}, "
            f"{seconds:.2f} s")
