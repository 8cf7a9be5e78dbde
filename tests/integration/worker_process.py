"""An order-consumer as a real process (``python -m workers order-consumer``), for crash and replica tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.integration.harness import Harness

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port free on loopback now (for a worker's probe port, which the test must know)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class WorkerProcess:
    """``python -m workers order-consumer`` with the harness's settings in its environment.

    ``client_id`` defaults to the harness's; a replica gets one of its own, the same after every restart.
    ``health_port`` opens the probe port on a port the test knows (:meth:`health`). ``env`` adds settings.
    """

    def __init__(self, harness: Harness, group: str, *, client_id: int | None = None,
                 health_port: int | None = None, **env: str) -> None:
        settings = harness.settings(kafka_consumer_group=group)
        self.client_id = settings.ibkr_client_id if client_id is None else client_id
        self.health_port = health_port
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
            "DATABASE_URL": settings.database_dsn,
            "IBKR_PORT": str(settings.ibkr_effective_port),
            "IBKR_CLIENT_ID": str(self.client_id),
            "IBKR_ACCOUNTS": settings.ibkr_accounts,
            "IBKR_PACING_PER_SECOND": "1000",
            "MAX_ORDER_AGE": "600",
            "KAFKA_CONSUMER_GROUP": group,
            "KAFKA_SESSION_TIMEOUT_MS": "6000",
            "HEALTH_PORT": str(health_port or 0), "ADMIN_PORT": "0",
            "LOG_LEVEL": os.environ.get("WORKER_LOG_LEVEL", "WARNING"),
            **{f"TOPIC_{name.upper()}": getattr(harness.topics, name)
               for name in harness.topics.__dataclass_fields__},
            **env,
        }
        self.process: asyncio.subprocess.Process | None = None
        self.log = REPO / ".cache" / f"worker-{group}-{self.client_id}.log"
        self.log.parent.mkdir(exist_ok=True)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        with self.log.open("ab") as sink:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "workers", "order-consumer", env=self.env, cwd=REPO,
                stdout=sink, stderr=sink,
            )

    async def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        await self.process.wait()

    async def ensure_gone(self) -> None:
        """Kill the worker if it still runs (a failed test must not leave one behind)."""
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()

    async def terminate(self) -> tuple[int, float]:
        assert self.process is not None
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.process.wait(), 30)
        return code, time.monotonic() - started

    def log_entries(self) -> list[dict[str, Any]]:
        """Every line of the worker's log (JSON, one per line), parsed."""
        entries = []
        for line in self.log.read_text().splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    entries.append(entry)
        return entries

    def logged(self, event: str) -> list[dict[str, Any]]:
        """The lines of the worker's log whose event is ``event``."""
        return [entry for entry in self.log_entries() if entry.get("event") == event]

    async def wait_healthy(self, timeout: float = 60.0) -> None:
        """Wait until the worker's probe port says HEALTHY (it is up: a SIGTERM then stops it gracefully)."""
        deadline = time.monotonic() + timeout
        while await self.health() != "HEALTHY":
            if time.monotonic() > deadline:
                raise AssertionError(f"the worker was not HEALTHY within {timeout} s")
            await asyncio.sleep(0.2)

    async def health(self) -> str | None:
        """The worker's health status as its probe port says it (``/readyz``), or None when it does not answer."""
        assert self.health_port is not None, "the worker was started without a known health port"
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session, \
                    session.get(f"http://127.0.0.1:{self.health_port}/readyz") as response:
                body = await response.json()
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        status = body.get("status")
        return status if isinstance(status, str) else None
