"""The order life cycle of workers.domain.orders: which changes are legal."""

from __future__ import annotations

from collections import deque
from itertools import pairwise

import pytest

from workers.domain.orders import (
    FINAL_STATES,
    LEGAL_TRANSITIONS,
    IllegalTransition,
    OrderState,
    can_transition,
    check_transition,
)

S = OrderState
CONTRACT_STATUSES = {
    "ACCEPTED",
    "SUBMITTED",
    "PARTIALLY_FILLED",
    "FILLED",
    "CANCEL_PENDING",
    "CANCELLED",
    "REJECTED",
}


def reachable_from(start: OrderState) -> set[OrderState]:
    seen = {start}
    queue = deque([start])
    while queue:
        for following in LEGAL_TRANSITIONS[queue.popleft()]:
            if following not in seen:
                seen.add(following)
                queue.append(following)
    return seen


def test_every_state_has_its_transitions_listed() -> None:
    assert set(LEGAL_TRANSITIONS) == set(OrderState)


def test_final_states_are_filled_cancelled_and_rejected() -> None:
    assert {s for s in OrderState if s.is_final} == {S.FILLED, S.CANCELLED, S.REJECTED} == FINAL_STATES


@pytest.mark.parametrize("final", sorted(FINAL_STATES))
def test_a_final_state_has_no_way_out(final: OrderState) -> None:
    assert LEGAL_TRANSITIONS[final] == frozenset()
    for requested in OrderState:
        assert not can_transition(final, requested)
        with pytest.raises(IllegalTransition):
            check_transition("o-1", final, requested)


@pytest.mark.parametrize(
    "path",
    [
        [S.ACCEPTED, S.PLACING, S.SUBMITTED, S.FILLED],
        [S.ACCEPTED, S.PLACING, S.FILLED],
        [S.ACCEPTED, S.PLACING, S.SUBMITTED, S.PARTIALLY_FILLED, S.PARTIALLY_FILLED, S.FILLED],
        [S.ACCEPTED, S.PLACING, S.SUBMITTED, S.CANCEL_PENDING, S.PARTIALLY_FILLED, S.FILLED],
    ],
)
def test_legal_paths_to_filled_exist(path: list[OrderState]) -> None:
    assert path[0] is S.ACCEPTED
    assert path[-1] is S.FILLED
    assert all(can_transition(current, requested) for current, requested in pairwise(path))


@pytest.mark.parametrize(
    "path",
    [
        [S.ACCEPTED, S.CANCELLED],
        [S.ACCEPTED, S.PLACING, S.CANCELLED],
        [S.ACCEPTED, S.PLACING, S.SUBMITTED, S.CANCEL_PENDING, S.CANCELLED],
        [S.ACCEPTED, S.PLACING, S.SUBMITTED, S.PARTIALLY_FILLED, S.CANCEL_PENDING, S.CANCELLED],
    ],
)
def test_legal_paths_to_cancelled_exist(path: list[OrderState]) -> None:
    assert path[0] is S.ACCEPTED
    assert path[-1] is S.CANCELLED
    assert all(can_transition(current, requested) for current, requested in pairwise(path))


def test_every_state_is_reachable_from_accepted() -> None:
    assert reachable_from(S.ACCEPTED) == set(OrderState)


@pytest.mark.parametrize("state", [s for s in OrderState if not s.is_final])
def test_every_open_state_can_still_end(state: OrderState) -> None:
    assert reachable_from(state) & FINAL_STATES


def test_an_order_is_rejected_before_or_during_placement_but_not_after_a_fill() -> None:
    assert can_transition(S.ACCEPTED, S.REJECTED)
    assert can_transition(S.PLACING, S.REJECTED)
    assert can_transition(S.SUBMITTED, S.REJECTED)
    assert not can_transition(S.PARTIALLY_FILLED, S.REJECTED)


@pytest.mark.parametrize(
    ("current", "requested"),
    [
        (S.FILLED, S.SUBMITTED),
        (S.ACCEPTED, S.SUBMITTED),
        (S.ACCEPTED, S.FILLED),
        (S.SUBMITTED, S.PLACING),
        (S.SUBMITTED, S.ACCEPTED),
        (S.PLACING, S.PLACING),
        (S.SUBMITTED, S.SUBMITTED),
        (S.PARTIALLY_FILLED, S.SUBMITTED),
    ],
)
def test_illegal_transition_names_the_order_and_both_states(
    current: OrderState, requested: OrderState
) -> None:
    with pytest.raises(IllegalTransition) as refused:
        check_transition("o-42", current, requested)

    assert (refused.value.order_id, refused.value.current, refused.value.requested) == (
        "o-42",
        current,
        requested,
    )
    assert "o-42" in str(refused.value)


def test_partial_fills_may_follow_each_other() -> None:
    assert can_transition(S.PARTIALLY_FILLED, S.PARTIALLY_FILLED)


def test_placing_publishes_as_accepted() -> None:
    assert S.PLACING.published_status is S.ACCEPTED


@pytest.mark.parametrize("state", [s for s in OrderState if s is not S.PLACING])
def test_other_states_publish_as_themselves(state: OrderState) -> None:
    assert state.published_status is state


def test_published_statuses_are_the_contract_values() -> None:
    assert {str(s.published_status) for s in OrderState} == CONTRACT_STATUSES
