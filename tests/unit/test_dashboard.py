"""The Grafana dashboard: a valid dashboard model whose PromQL names only metrics the workers export."""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from workers.domain.health import HealthAssessment, HealthFacts, HealthStatus
from workers.metrics import Metrics

REPO = Path(__file__).resolve().parents[2]
HELM_DASHBOARD = REPO / "helm" / "ibkr-workers" / "dashboards" / "ibkr-workers.json"
DOCS_DASHBOARD = REPO / "docs" / "grafana-dashboard.json"

METRIC = re.compile(r"\bibkr_workers_[A-Za-z0-9_]+")
BY_CLAUSE = re.compile(r"\bby\s*\(([^)]*)\)")
# Labels Prometheus adds at scrape time (ServiceMonitor target labels), or that histograms carry.
TARGET_LABELS = {"namespace", "pod", "instance", "job", "service", "container", "endpoint", "le"}


@dataclass
class FakeGateway:
    connected: bool = True
    reconnects: int = 2
    errors_by_code: Mapping[int, int] = field(default_factory=lambda: {1100: 1, 201: 3})
    rtt_ms: float | None = 12.5
    heartbeat_failures: int = 1


@dataclass
class FakeLimiter:
    waits: int = 4
    waited_seconds: float = 0.75
    queued: int = 1


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(HELM_DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))


def expressions(model: dict[str, Any]) -> list[str]:
    """Every PromQL expression: the panels' targets and the query variables."""
    exprs = [target["expr"] for panel in all_panels(model["panels"]) for target in panel.get("targets", [])]
    for variable in model["templating"]["list"]:
        query = variable.get("query")
        if variable.get("type") == "query":
            exprs.append(query["query"] if isinstance(query, dict) else str(query))
    return exprs


def scraped() -> dict[str, set[str]]:
    """Sample name -> label names, from a real ``/metrics`` body after every public method ran once."""
    metrics = Metrics()
    facts = HealthFacts(ibkr_connected=True, kafka_connected=True, database_connected=True, consumer_lag=3,
                        orders_in_flight=2)
    calls: dict[str, Callable[[], None]] = {
        "order_consumed": metrics.order_consumed,
        "order_placed": lambda: metrics.order_placed(0.02),
        "order_stage": lambda: metrics.order_stage("send", 0.001),
        "order_transition": lambda: metrics.order_transition("SUBMITTED", "FILLED"),
        "order_rejected": lambda: metrics.order_rejected("UNKNOWN_INSTRUMENT"),
        "order_cancelled": metrics.order_cancelled,
        "fill_published": lambda: metrics.fill_published(0.4),
        "dead_lettered": lambda: metrics.dead_lettered("validate"),
        "consume_retried": lambda: metrics.consume_retried("infrastructure"),
        "set_orders_in_flight": lambda: metrics.set_orders_in_flight(2),
        "set_consumer_lag": lambda: metrics.set_consumer_lag(5),
        "set_trading_state": lambda: metrics.set_trading_state("HALTED", ("ACTIVE", "REDUCING", "HALTED"),
                                                               changed=True),
        "observe_health": lambda: metrics.observe_health(
            HealthAssessment(HealthStatus.HEALTHY, (), facts, previous=HealthStatus.STARTING)),
        "watch_ibkr": lambda: metrics.watch_ibkr(FakeGateway()),
        "watch_pacing": lambda: metrics.watch_pacing(FakeLimiter()),
        "instrument_synced": lambda: metrics.instrument_synced("CREATED"),
        "instrument_sync_failed": metrics.instrument_sync_failed,
        "instrument_sync_pass": lambda: metrics.instrument_sync_pass(3.0),
    }
    public = {name for name, member in inspect.getmembers(metrics, inspect.ismethod) if not name.startswith("_")}
    assert public == set(calls), f"call every public Metrics method here: missing {public - set(calls)}"
    for call in calls.values():
        call()
    body = generate_latest(metrics.registry).decode()
    samples: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples.setdefault(sample.name, set()).update(sample.labels)
    return samples


def test_helm_and_docs_dashboards_are_the_same_file() -> None:
    assert DOCS_DASHBOARD.read_bytes() == HELM_DASHBOARD.read_bytes()


def test_dashboard_has_the_grafana_model_shape() -> None:
    model = dashboard()
    assert model["uid"] == "ibkr-workers" and model["title"]
    assert isinstance(model["schemaVersion"], int)
    panels = list(all_panels(model["panels"]))
    graphs = [p for p in panels if p["type"] != "row"]
    assert len(graphs) >= 10
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in graphs:
        assert panel["title"] and panel["targets"], panel
        assert set(panel["gridPos"]) == {"x", "y", "w", "h"}
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        for target in panel["targets"]:
            assert target["refId"] and target["expr"].strip()
    variables = {v["name"]: v for v in model["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"


def test_dashboard_covers_the_operations_view() -> None:
    exprs = "\n".join(expressions(dashboard()))
    for needle in ("ibkr_workers_ibkr_connected", "ibkr_workers_order_status_transitions_total",
                   "by (to)", "by (reason)", "ibkr_workers_execution_to_fill_published_seconds_bucket",
                   "ibkr_workers_consume_to_place_seconds_bucket", "ibkr_workers_consumer_lag",
                   "ibkr_workers_pacing_waits_total", "ibkr_workers_ibkr_reconnects_total",
                   "ibkr_workers_ibkr_heartbeat_rtt_seconds", "ibkr_workers_health_status",
                   "histogram_quantile"):
        assert needle in exprs, needle


def test_every_metric_in_the_dashboard_is_in_a_real_scrape() -> None:
    samples = scraped()
    used = {name for expr in expressions(dashboard()) for name in METRIC.findall(expr)}
    assert used
    missing = sorted(used - set(samples))
    assert not missing, f"not exported by workers.metrics: {missing}"


@pytest.mark.parametrize("expr", expressions(dashboard()))
def test_grouping_labels_exist_on_the_metrics_they_group(expr: str) -> None:
    samples = scraped()
    labels = set().union(*(samples.get(name, set()) for name in METRIC.findall(expr)))
    grouped = {label.strip() for clause in BY_CLAUSE.findall(expr) for label in clause.split(",") if label.strip()}
    assert grouped <= labels | TARGET_LABELS, f"{expr}: unknown labels {grouped - labels - TARGET_LABELS}"
