"""The health status follows from the facts: every transition of the rules in workers.domain.health."""

from __future__ import annotations

from dataclasses import replace

import pytest

from workers.domain.health import (
    Dependency,
    HealthAssessment,
    HealthFacts,
    HealthMonitor,
    HealthStatus,
    HealthThresholds,
    Phase,
    ProgressWatch,
    assess,
    readiness,
)

ALL_UP = HealthFacts(ibkr_connected=True, kafka_connected=True, database_connected=True)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def monitor(clock: FakeClock) -> HealthMonitor:
    return HealthMonitor(HealthThresholds(down_after=30.0, max_lag=100), clock=clock)


@pytest.fixture
def running(monitor: HealthMonitor) -> HealthMonitor:
    monitor.observe(ALL_UP)
    monitor.mark_started()
    assert monitor.observe(ALL_UP).status is HealthStatus.HEALTHY
    return monitor


def without(dependency: Dependency) -> HealthFacts:
    return replace(ALL_UP, ibkr_connected=dependency is not Dependency.IBKR,
                   kafka_connected=dependency is not Dependency.KAFKA,
                   database_connected=dependency is not Dependency.DATABASE)


# -- life cycle -----------------------------------------------------------------------------------------


def test_a_new_monitor_reports_starting_before_any_observation(monitor: HealthMonitor) -> None:
    assert monitor.status is HealthStatus.STARTING
    assert monitor.last is None
    assert monitor.phase is Phase.STARTING


def test_first_observation_is_starting_and_counts_as_a_change(monitor: HealthMonitor) -> None:
    first = monitor.observe(ALL_UP)
    assert first.status is HealthStatus.STARTING
    assert first.previous is None
    assert first.changed
    assert first.reasons == ("starting",)


def test_starting_stays_starting_until_marked_started_even_when_all_is_up(monitor: HealthMonitor) -> None:
    monitor.observe(ALL_UP)
    again = monitor.observe(ALL_UP)
    assert again.status is HealthStatus.STARTING
    assert not again.changed


def test_starting_becomes_healthy_once_started_with_everything_up(monitor: HealthMonitor) -> None:
    monitor.observe(ALL_UP)
    monitor.mark_started()
    after = monitor.observe(ALL_UP)
    assert after.status is HealthStatus.HEALTHY
    assert after.previous is HealthStatus.STARTING
    assert after.changed
    assert after.reasons == ()


def test_starting_becomes_degraded_when_started_while_paused(monitor: HealthMonitor) -> None:
    monitor.observe(ALL_UP)
    monitor.mark_started()
    assert monitor.observe(replace(ALL_UP, paused=True)).status is HealthStatus.DEGRADED


def test_starting_with_a_dependency_down_too_long_is_unhealthy(monitor: HealthMonitor,
                                                               clock: FakeClock) -> None:
    assert monitor.observe(without(Dependency.IBKR)).status is HealthStatus.STARTING
    clock.advance(30)
    stuck = monitor.observe(without(Dependency.IBKR))
    assert stuck.status is HealthStatus.UNHEALTHY
    assert stuck.reasons == ("ibkr down for 30s",)
    assert monitor.observe(ALL_UP).status is HealthStatus.STARTING


@pytest.mark.parametrize("status_before", ["healthy", "degraded", "unhealthy", "starting"])
def test_stopping_wins_over_every_other_status(monitor: HealthMonitor, clock: FakeClock,
                                               status_before: str) -> None:
    facts = {"healthy": ALL_UP, "degraded": replace(ALL_UP, paused=True),
             "unhealthy": without(Dependency.KAFKA), "starting": ALL_UP}[status_before]
    monitor.observe(facts)
    if status_before != "starting":
        monitor.mark_started()
    clock.advance(60)
    before = monitor.observe(facts)
    assert before.status.value == status_before.upper()
    monitor.mark_stopping()
    stopping = monitor.observe(facts)
    assert stopping.status is HealthStatus.STOPPING
    assert stopping.previous is before.status
    assert stopping.changed


def test_stopping_is_final(monitor: HealthMonitor) -> None:
    monitor.mark_stopping()
    assert monitor.status is HealthStatus.STOPPING
    monitor.mark_started()
    assert monitor.phase is Phase.STOPPING
    assert monitor.observe(ALL_UP).status is HealthStatus.STOPPING


# -- healthy <-> degraded -------------------------------------------------------------------------------


def test_paused_consumer_degrades_and_resuming_heals(running: HealthMonitor) -> None:
    paused = running.observe(replace(ALL_UP, paused=True))
    assert paused.status is HealthStatus.DEGRADED
    assert paused.changed
    assert "consumer paused" in paused.reasons
    resumed = running.observe(ALL_UP)
    assert resumed.status is HealthStatus.HEALTHY
    assert resumed.previous is HealthStatus.DEGRADED


def test_lag_beyond_the_threshold_degrades(running: HealthMonitor) -> None:
    assert running.observe(replace(ALL_UP, consumer_lag=100)).status is HealthStatus.HEALTHY
    lagging = running.observe(replace(ALL_UP, consumer_lag=101))
    assert lagging.status is HealthStatus.DEGRADED
    assert lagging.reasons == ("consumer lag 101 > 100",)
    assert running.observe(replace(ALL_UP, consumer_lag=0)).status is HealthStatus.HEALTHY


def test_unknown_lag_is_not_lagging(running: HealthMonitor) -> None:
    assert running.observe(replace(ALL_UP, consumer_lag=None)).status is HealthStatus.HEALTHY


def test_pacing_limited_degrades(running: HealthMonitor) -> None:
    limited = running.observe(replace(ALL_UP, pacing_limited=True))
    assert limited.status is HealthStatus.DEGRADED
    assert limited.reasons == ("IBKR requests wait for pacing",)
    assert running.observe(ALL_UP).status is HealthStatus.HEALTHY


def test_every_reason_is_listed_when_several_apply(running: HealthMonitor) -> None:
    several = running.observe(replace(ALL_UP, paused=True, consumer_lag=500, pacing_limited=True))
    assert several.status is HealthStatus.DEGRADED
    assert len(several.reasons) == 3
    assert several.reason == "; ".join(several.reasons)


def test_same_status_twice_is_not_a_change(running: HealthMonitor) -> None:
    first = running.observe(replace(ALL_UP, paused=True))
    second = running.observe(replace(ALL_UP, paused=True, consumer_lag=1000))
    assert first.changed
    assert not second.changed
    assert second.previous is HealthStatus.DEGRADED


def test_errors_and_orders_in_flight_do_not_change_the_status(running: HealthMonitor) -> None:
    busy = running.observe(replace(ALL_UP, last_error="KafkaError: boom", orders_in_flight=40))
    assert busy.status is HealthStatus.HEALTHY
    assert busy.facts.last_error == "KafkaError: boom"


# -- dependencies down: degraded, then unhealthy ----------------------------------------------------------


@pytest.mark.parametrize("dependency", list(Dependency))
def test_a_dependency_down_briefly_degrades(running: HealthMonitor, clock: FakeClock,
                                            dependency: Dependency) -> None:
    down = running.observe(without(dependency))
    assert down.status is HealthStatus.DEGRADED
    assert down.reasons == (f"{dependency} unreachable for 0s (reconnecting)",)
    assert running.down_since(dependency) == clock.now
    clock.advance(29.9)
    assert running.observe(without(dependency)).status is HealthStatus.DEGRADED


@pytest.mark.parametrize("dependency", list(Dependency))
def test_a_dependency_down_longer_than_the_threshold_is_unhealthy(running: HealthMonitor,
                                                                  clock: FakeClock,
                                                                  dependency: Dependency) -> None:
    running.observe(without(dependency))
    clock.advance(30)
    unhealthy = running.observe(without(dependency))
    assert unhealthy.status is HealthStatus.UNHEALTHY
    assert unhealthy.previous is HealthStatus.DEGRADED
    assert unhealthy.down_for == {dependency: 30.0}
    assert unhealthy.reasons == (f"{dependency} down for 30s",)


@pytest.mark.parametrize("dependency", list(Dependency))
def test_unhealthy_heals_when_the_dependency_returns(running: HealthMonitor, clock: FakeClock,
                                                     dependency: Dependency) -> None:
    running.observe(without(dependency))
    clock.advance(45)
    assert running.observe(without(dependency)).status is HealthStatus.UNHEALTHY
    healed = running.observe(ALL_UP)
    assert healed.status is HealthStatus.HEALTHY
    assert healed.previous is HealthStatus.UNHEALTHY
    assert running.down_since(dependency) is None


def test_unhealthy_heals_to_degraded_when_other_problems_remain(running: HealthMonitor,
                                                                clock: FakeClock) -> None:
    running.observe(without(Dependency.DATABASE))
    clock.advance(31)
    assert running.observe(without(Dependency.DATABASE)).status is HealthStatus.UNHEALTHY
    assert running.observe(replace(ALL_UP, paused=True)).status is HealthStatus.DEGRADED


def test_the_down_clock_restarts_after_a_dependency_came_back(running: HealthMonitor,
                                                              clock: FakeClock) -> None:
    running.observe(without(Dependency.IBKR))
    clock.advance(20)
    running.observe(ALL_UP)
    clock.advance(5)
    running.observe(without(Dependency.IBKR))
    clock.advance(20)
    # Down 40 of the last 45 seconds, but never 30 in a row.
    assert running.observe(without(Dependency.IBKR)).status is HealthStatus.DEGRADED


def test_each_dependency_has_its_own_down_clock(running: HealthMonitor, clock: FakeClock) -> None:
    running.observe(without(Dependency.KAFKA))
    clock.advance(20)
    both = replace(ALL_UP, kafka_connected=False, database_connected=False)
    assert running.observe(both).status is HealthStatus.DEGRADED
    clock.advance(15)
    unhealthy = running.observe(both)
    assert unhealthy.status is HealthStatus.UNHEALTHY
    assert unhealthy.reasons == ("kafka down for 35s",)
    assert unhealthy.down_for == {Dependency.KAFKA: 35.0, Dependency.DATABASE: 15.0}


def test_unhealthy_wins_over_degraded(running: HealthMonitor, clock: FakeClock) -> None:
    facts = replace(without(Dependency.IBKR), paused=True, pacing_limited=True)
    running.observe(facts)
    clock.advance(30)
    assert running.observe(facts).status is HealthStatus.UNHEALTHY


def test_a_zero_threshold_makes_any_outage_unhealthy(clock: FakeClock) -> None:
    monitor = HealthMonitor(HealthThresholds(down_after=0), clock=clock)
    monitor.mark_started()
    assert monitor.observe(without(Dependency.KAFKA)).status is HealthStatus.UNHEALTHY


def test_thresholds_refuse_negative_values() -> None:
    with pytest.raises(ValueError, match="down_after"):
        HealthThresholds(down_after=-1)
    with pytest.raises(ValueError, match="max_lag"):
        HealthThresholds(max_lag=-1)


def test_assess_is_pure() -> None:
    thresholds = HealthThresholds(down_after=10, max_lag=5)
    down = {Dependency.IBKR: 3.0}
    first = assess(without(Dependency.IBKR), Phase.RUNNING, down, thresholds)
    second = assess(without(Dependency.IBKR), Phase.RUNNING, down, thresholds)
    assert first == second
    assert first.status is HealthStatus.DEGRADED
    assert assess(ALL_UP, Phase.RUNNING, {}, thresholds, HealthStatus.DEGRADED).changed


# -- readiness --------------------------------------------------------------------------------------------


def _assessment(status: HealthStatus, facts: HealthFacts = ALL_UP) -> HealthAssessment:
    return HealthAssessment(status, (), facts)


@pytest.mark.parametrize("status", [HealthStatus.HEALTHY, HealthStatus.DEGRADED])
def test_ready_when_healthy_or_degraded_with_ibkr_connected(status: HealthStatus) -> None:
    verdict = readiness(_assessment(status))
    assert verdict.ready
    assert verdict.reason == f"status {status}"


@pytest.mark.parametrize("status", [HealthStatus.STARTING, HealthStatus.UNHEALTHY, HealthStatus.STOPPING])
def test_not_ready_in_other_statuses(status: HealthStatus) -> None:
    verdict = readiness(_assessment(status))
    assert not verdict.ready
    assert verdict.reason.startswith(f"status {status}")


def test_not_ready_without_ibkr_even_when_degraded() -> None:
    verdict = readiness(_assessment(HealthStatus.DEGRADED, without(Dependency.IBKR)))
    assert not verdict.ready
    assert verdict.reason == "IBKR not connected"


def test_a_live_ibkr_reading_overrides_the_snapshot() -> None:
    assert not readiness(_assessment(HealthStatus.HEALTHY), ibkr_connected=False).ready
    assert readiness(_assessment(HealthStatus.DEGRADED, without(Dependency.IBKR)), ibkr_connected=True).ready


def test_not_ready_before_the_first_assessment() -> None:
    verdict = readiness(None)
    assert not verdict.ready
    assert verdict.reason == "no health assessment yet"


def test_unready_reason_carries_the_status_reasons(running: HealthMonitor, clock: FakeClock) -> None:
    running.observe(without(Dependency.DATABASE))
    clock.advance(31)
    verdict = readiness(running.observe(without(Dependency.DATABASE)))
    assert verdict.reason == "status UNHEALTHY: database down for 31s"


# -- consume-loop progress --------------------------------------------------------------------------------


def test_an_idle_loop_with_nothing_to_read_is_never_stalled(clock: FakeClock) -> None:
    watch = ProgressWatch(lambda: 0, stall_after=10, clock=clock)
    clock.advance(1000)
    assert watch.check() is None
    assert watch.stalled_for() == 0.0


def test_records_waiting_without_progress_stall_the_loop(clock: FakeClock) -> None:
    backlog = {"lag": 0}
    watch = ProgressWatch(lambda: backlog["lag"], stall_after=10, clock=clock)
    clock.advance(500)  # idle for a long time: that is not stalling
    backlog["lag"] = 5
    assert watch.check() is None
    clock.advance(10)
    assert watch.check() is None
    clock.advance(1)
    assert watch.check() == "consume loop made no progress for 11s with records waiting"


def test_progress_keeps_a_loop_with_records_waiting_alive(clock: FakeClock) -> None:
    watch = ProgressWatch(lambda: 50, stall_after=10, clock=clock)
    for _ in range(5):
        clock.advance(8)
        watch.progress()
        assert watch.check() is None
    clock.advance(11)
    assert watch.check() is not None


def test_a_moving_counter_counts_as_progress(clock: FakeClock) -> None:
    consumed = {"n": 0}
    watch = ProgressWatch(lambda: 3, stall_after=10, counter=lambda: consumed["n"], clock=clock)
    watch.check()
    clock.advance(9)
    consumed["n"] += 1
    assert watch.check() is None
    clock.advance(9)
    assert watch.check() is None
    clock.advance(2)
    assert watch.check() is not None


def test_unknown_backlog_is_not_stalled(clock: FakeClock) -> None:
    watch = ProgressWatch(lambda: None, stall_after=1, clock=clock)
    clock.advance(100)
    assert watch.check() is None
