"""Helpers shared by the sim gateway tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from ib_insync import IB, Contract

AAPL = 265598
MSFT = 272093
ACCOUNT = "DU0000001"


async def until(predicate: Callable[[], Any], timeout: float = 2.0, what: str = "condition") -> None:
    """Wait until ``predicate()`` is true; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


class Errors:
    """Collects the error events of an IB client: (reqId, code, message)."""

    def __init__(self, ib: IB) -> None:
        self.seen: list[tuple[int, int, str]] = []
        ib.errorEvent += self._on_error

    def _on_error(self, req_id: int, code: int, message: str, contract: Contract | None) -> None:
        self.seen.append((req_id, code, message))

    def codes(self, req_id: int | None = None) -> list[int]:
        return [code for rid, code, _ in self.seen if req_id is None or rid == req_id]


Connect = Callable[..., Awaitable[IB]]
