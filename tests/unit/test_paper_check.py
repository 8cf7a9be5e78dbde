"""The pure parts of ``paper-check``: guards, the account choice, the summary and the command line."""

from __future__ import annotations

from decimal import Decimal

import pytest

from workers.cli import COMMANDS, build_parser
from workers.service_layer.paper_check import (
    EXIT_FAILED,
    EXIT_PASSED,
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


@pytest.mark.parametrize("port", [4002, 7497, 4100, 12345])
def test_paper_and_other_ports_pass_the_port_guard(port: int) -> None:
    guard_port(port, allow_live=False)
    assert True  # no exception


@pytest.mark.parametrize("port", [4001, 7496])
def test_live_ports_are_refused_unless_live_is_allowed(port: int) -> None:
    with pytest.raises(Refused, match=f"port {port} is a live-trading port"):
        guard_port(port, allow_live=False)
    guard_port(port, allow_live=True)


def test_live_needs_the_flag_and_the_confirmation() -> None:
    assert live_allowed(False, None) is False
    assert live_allowed(False, "yes") is False
    assert live_allowed(True, "YES") is True
    with pytest.raises(Refused, match="IBKR_LIVE_CONFIRM=yes"):
        live_allowed(True, None)
    with pytest.raises(Refused):
        live_allowed(True, "no")


def test_non_paper_accounts_are_refused_in_paper_mode() -> None:
    guard_accounts(["DU0000001", "DF0000002"], allow_live=False)
    with pytest.raises(Refused, match="U0000009"):
        guard_accounts(["DU0000001", "U0000009"], allow_live=False)
    with pytest.raises(Refused, match="no managed accounts"):
        guard_accounts([], allow_live=False)
    guard_accounts(["U0000009"], allow_live=True)
    with pytest.raises(Refused):
        guard_accounts([""], allow_live=True)


def test_account_choice_prefers_the_allowlist() -> None:
    assert choose_account(["DU0000001", "DU0000002"], []) == "DU0000001"
    assert choose_account(["DU0000001", "DU0000002"], ["DU0000002"]) == "DU0000002"
    with pytest.raises(Refused, match="IBKR_ACCOUNTS"):
        choose_account(["DU0000001"], ["DU0000003"])
    with pytest.raises(Refused):
        choose_account([], [])


def test_exit_code_is_zero_only_when_every_step_passed() -> None:
    passed = StepResult("connect", Outcome.PASS, "ok")
    assert exit_code([passed, passed]) == EXIT_PASSED
    assert exit_code([passed, StepResult("buy", Outcome.SKIP)]) == EXIT_FAILED
    assert exit_code([passed, StepResult("buy", Outcome.FAIL, "x")]) == EXIT_FAILED
    assert exit_code([]) == EXIT_FAILED


def test_summary_lines() -> None:
    steps = [StepResult("connect", Outcome.PASS, "server v157"), StepResult("buy", Outcome.FAIL, "Inactive"),
             StepResult("sell", Outcome.SKIP)]
    assert steps[0].line() == "PASS  connect           server v157"
    assert steps[2].line() == "SKIP  sell"
    assert summary(steps) == "paper-check FAIL: 1 passed, 1 failed, 1 skipped"
    assert summary(steps[:1]) == "paper-check PASS: 1 passed, 0 failed, 0 skipped"


def test_fill_detail_names_price_commission_and_exec_ids() -> None:
    detail = fill_detail("BUY", Decimal("1.0"), Decimal("231.4"), Decimal("1.0"), "USD", ["e1", "e2"], 0.314)
    assert detail == "BUY 1 @ 231.4, commission 1.0 USD, execId e1,e2, 0.31 s"
    assert "commission unknown" in fill_detail("SELL", Decimal(1), Decimal(1), None, None, [], 0)


@pytest.mark.parametrize(("answer", "expected"), [("y", True), (" YES\n", True), ("", False), ("no", False)])
def test_confirmation_answers(answer: str, expected: bool) -> None:
    assert is_yes(answer) is expected


def test_command_line() -> None:
    assert COMMANDS["paper-check"] == "workers.entrypoints.paper_check:run"
    args = build_parser().parse_args(["paper-check"])
    assert (args.yes, args.live, args.symbol, args.timeout) == (False, False, "AAPL", 30.0)
    args = build_parser().parse_args(["paper-check", "--yes", "--live", "--symbol", "msft", "--timeout", "5"])
    assert (args.yes, args.live, args.symbol, args.timeout) == (True, True, "MSFT", 5.0)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["paper-check", "--timeout", "0"])
