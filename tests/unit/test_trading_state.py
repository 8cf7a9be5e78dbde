"""The trading state's rule: what each state lets through, and how the settings set the start state."""

from __future__ import annotations

import pytest

from workers.domain.guards import RejectReason
from workers.domain.trading_state import TradingState, admits, refusal_detail, start_state

A, R, H = TradingState.ACTIVE, TradingState.REDUCING, TradingState.HALTED


@pytest.mark.parametrize("reduces", [True, False])
def test_active_lets_every_order_through(reduces: bool) -> None:
    assert admits(A, reduces_position=reduces) is None


def test_reducing_lets_through_only_an_order_that_reduces_a_position() -> None:
    assert admits(R, reduces_position=True) is None
    assert admits(R, reduces_position=False) is RejectReason.TRADING_REDUCING


@pytest.mark.parametrize("reduces", [True, False])
def test_halted_lets_nothing_through(reduces: bool) -> None:
    assert admits(H, reduces_position=reduces) is RejectReason.TRADING_HALTED


def test_the_refusal_sentence_names_the_state() -> None:
    assert "HALTED" in refusal_detail(H)
    assert "reduce" in refusal_detail(R)


@pytest.mark.parametrize(("stored", "configured", "kill_switch", "expected"), [
    (A, None, False, A),
    (H, None, False, H),
    (H, A, False, H),          # a restart never resumes a halted deployment
    (R, A, False, R),
    (A, R, False, R),
    (A, None, True, H),        # KILL_SWITCH is "start HALTED"
    (R, A, True, H),
    (A, H, False, H),
])
def test_the_settings_only_make_the_stored_state_stricter(stored: TradingState, configured: TradingState | None,
                                                          kill_switch: bool, expected: TradingState) -> None:
    assert start_state(stored, configured, kill_switch) is expected


def test_states_are_ordered_from_loosest_to_strictest() -> None:
    assert [s.strictness for s in (A, R, H)] == [0, 1, 2]
    assert A.stricter(H) is H and H.stricter(R) is H and R.stricter(A) is R
