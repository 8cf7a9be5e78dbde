"""The order-consumer's health over the real services: it follows the gateway, PostgreSQL and the consumer."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.integration.harness import Harness, order
from tests.integration.tcp_proxy import TcpProxy
from workers.settings import TopicNames

pytestmark = pytest.mark.integration


def via_proxy(url: str, port: int) -> str:
    parts = urlsplit(url)
    credentials = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
    return urlunsplit(parts._replace(netloc=f"{credentials}127.0.0.1:{port}"))


async def test_health_follows_the_gateway_postgresql_and_the_paused_consumer(
        kafka_bootstrap: str, database_url: str, kafka_topics: TopicNames) -> None:
    target = urlsplit(database_url)
    proxy = TcpProxy(target.hostname or "127.0.0.1", target.port or 5432)
    await proxy.start()
    harness = Harness(kafka_bootstrap, database_url, kafka_topics)
    try:
        await harness.start(True, database_url=via_proxy(database_url, proxy.port), health_unhealthy_after=2.0)
        app = harness.app
        assert app is not None

        def saw(status: str, since: int = 0, **facts: object) -> bool:
            return any(h["status"] == status and all(h[k] == v for k, v in facts.items())
                       for h in harness.observed.health[since:])

        await harness.wait_for(lambda: saw("HEALTHY", ibkr_connected=True, database_connected=True),
                               timeout=30, what="HEALTHY on workers.health")
        assert harness.observed.health[0]["worker"] == "order-consumer"

        mark = len(harness.observed.health)
        harness.sim.refuse_connections(3.0)  # the gateway goes away, as at IB's daily restart
        await harness.wait_for(lambda: saw("DEGRADED", mark, ibkr_connected=False), timeout=15,
                               what="DEGRADED while IBKR is down")
        await harness.wait_for(lambda: saw("HEALTHY", mark + 1, ibkr_connected=True), timeout=30,
                               what="HEALTHY after the reconnect")

        mark = len(harness.observed.health)
        await proxy.cut()  # PostgreSQL unreachable for this worker
        request = order()
        await harness.send(request)  # the consumer cannot record it: it pauses, it does not drop it
        await harness.wait_for(lambda: saw("DEGRADED", mark, database_connected=False), timeout=15,
                               what="DEGRADED while PostgreSQL is unreachable")
        await harness.wait_for(lambda: saw("UNHEALTHY", mark, database_connected=False), timeout=15,
                               what="UNHEALTHY once PostgreSQL stayed away")
        assert app.loop.paused or app.loop.last_error is not None
        await proxy.restore()
        await harness.wait_status(request.order_id, "FILLED", timeout=40)
        mark_after = len(harness.observed.health)
        await harness.wait_for(lambda: saw("HEALTHY", mark_after - 1, database_connected=True), timeout=30,
                               what="HEALTHY after PostgreSQL returned")
        assert harness.sim.place_count(request.order_id) == 1
    finally:
        await harness.stop()
        await proxy.cut()
