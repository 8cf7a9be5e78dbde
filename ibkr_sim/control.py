"""Control port: one JSON object per line in, one per line out, to drive a sim in another process.

Request ``{"op": "hold_fills"}`` or ``{"op": "set_price", "con_id": 265598, "price": 231.5}``; answer
``{"ok": true, "result": …}`` or ``{"ok": false, "error": "…"}``. :func:`control_call` is the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

from ibkr_sim.logs import get_logger
from ibkr_sim.orders import SimExecution, SimOrder
from ibkr_sim.server import SimGateway
from ibkr_sim.universe import instrument_from_dict, instrument_to_dict

log = get_logger(__name__)

Op = Callable[..., Any]


def _order_dict(o: SimOrder) -> dict[str, Any]:
    r = o.request
    return {
        "client_id": o.client_id, "order_id": o.order_id, "perm_id": o.perm_id, "con_id": o.instrument.con_id,
        "account": o.account, "action": r.action, "quantity": r.total_quantity, "order_type": r.order_type,
        "lmt_price": r.lmt_price, "aux_price": r.aux_price, "tif": r.tif, "order_ref": r.order_ref,
        "status": o.status, "filled": o.filled, "avg_fill_price": o.avg_fill_price,
        "parent_id": r.parent_id, "oca_group": r.oca_group, "oca_type": r.oca_type, "held": o.held,
        "awaiting_parent": o.awaiting_parent, "trail_stop": o.trail_stop, "trailing_percent": r.trailing_percent,
        "good_till_date": r.good_till_date, "algo_strategy": r.algo_strategy, "algo_params": r.algo_params,
    }


def _exec_dict(e: SimExecution) -> dict[str, Any]:
    return {
        "exec_id": e.exec_id, "order_id": e.order.order_id, "client_id": e.order.client_id,
        "perm_id": e.order.perm_id, "con_id": e.order.instrument.con_id, "side": e.side, "shares": e.shares,
        "price": e.price, "commission": e.commission, "time": e.time, "epoch": e.epoch,
        "order_ref": e.order.request.order_ref,
    }


def operations(sim: SimGateway) -> dict[str, Op]:
    """The operations the control port offers, by name."""
    u = sim.universe

    def stats() -> dict[str, Any]:
        return {
            "pacing_violations": sim.pacing_violations,
            "connected_client_ids": sim.connected_client_ids,
            "connections_accepted": sim.connections_accepted,
            "orders": len(sim.broker.orders),
            "executions": len(sim.executions()),
            "listening": sim.listening,
            "cpu_seconds": sim.cpu_seconds(),
        }

    def position(account: str, con_id: int) -> dict[str, Any] | None:
        pos = sim.position(account, con_id)
        return None if pos is None else {"quantity": pos.quantity, "avg_cost": pos.avg_cost}

    return {
        "ping": lambda: "pong",
        "stats": stats,
        "cpu_seconds": sim.cpu_seconds,
        "cpu_times": sim.cpu_times,
        "drop_connections": sim.drop_connections,
        "refuse_connections": sim.refuse_connections,
        "delay_responses": sim.delay_responses,
        "reject_next_order": sim.reject_next_order,
        "hold_fills": sim.hold_fills,
        "release_fills": sim.release_fills,
        "send_system_message": sim.send_system_message,
        "correct_execution": sim.correct_execution,
        "lower_next_valid_id": sim.lower_next_valid_id,
        "freeze": sim.freeze,
        "unfreeze": sim.unfreeze,
        "set_pacing": sim.set_pacing,
        "price": sim.price,
        "set_price": sim.set_price,
        "script_prices": sim.script_prices,
        "step_prices": sim.step_prices,
        "run_opening_auction": sim.run_opening_auction,
        "close_session": sim.close_session,
        "set_regular_trading_hours": sim.set_regular_trading_hours,
        "expire_day_orders": sim.expire_day_orders,
        "set_market_data": sim.set_market_data,
        "market_data_lines_in_use": sim.market_data_lines_in_use,
        "place_count": sim.place_count,
        "orders": lambda: [_order_dict(o) for o in sim.orders()],
        "executions": lambda: [_exec_dict(e) for e in sim.executions()],
        "position": position,
        "account_values": sim.account_values,
        "instruments": lambda: [instrument_to_dict(i) for i in u],
        "universe_add": lambda instrument: instrument_to_dict(_add(sim, instrument)),
        "universe_update": lambda con_id, **changes: instrument_to_dict(u.update(con_id, **changes)),
        "universe_rename": lambda con_id, symbol, local_symbol=None: instrument_to_dict(
            u.rename(con_id, symbol, local_symbol)
        ),
        "universe_delist": lambda con_id: instrument_to_dict(u.delist(con_id)),
        "universe_relist": lambda con_id: instrument_to_dict(u.relist(con_id)),
    }


def _add(sim: SimGateway, record: dict[str, Any]) -> Any:
    inst = instrument_from_dict(record)
    sim.universe.add(inst)
    return inst


class ControlServer:
    """Serves :func:`operations` of a sim on a TCP port."""

    def __init__(self, sim: SimGateway) -> None:
        self.ops = operations(sim)
        self._server: asyncio.Server | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Listen; return the bound address."""
        self._server = await asyncio.start_server(self._serve, host, port, limit=16 * 1024 * 1024)
        bound: tuple[str, int] = self._server.sockets[0].getsockname()[:2]
        return bound

    async def stop(self) -> None:
        """Stop listening."""
        if self._server is not None:
            self._server.close()
            self._server = None

    def handle(self, line: bytes) -> dict[str, Any]:
        """Run one request line; never raises."""
        try:
            request = json.loads(line)
            if not isinstance(request, dict) or not isinstance(request.get("op"), str):
                raise ValueError('a request is a JSON object with a string "op"')
            op = self.ops.get(request.pop("op"))
            if op is None:
                raise ValueError(f"unknown op; known: {', '.join(sorted(self.ops))}")
            return {"ok": True, "result": op(**request)}
        except Exception as exc:
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                if not line.strip():
                    continue
                writer.write(json.dumps(self.handle(line), default=str).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError) as exc:
            log.info("control connection ended", error=str(exc))
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


class ControlClient:
    """A connection to a control port."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def connect(cls, host: str, port: int) -> ControlClient:
        """Open a connection."""
        # Answers such as the day's executions are one long line: allow up to 256 MiB.
        reader, writer = await asyncio.open_connection(host, port, limit=256 * 1024 * 1024)
        return cls(reader, writer)

    async def call(self, op: str, **kwargs: Any) -> Any:
        """Run one operation; raise ``RuntimeError`` with the sim's message if it failed."""
        self._writer.write(json.dumps({"op": op, **kwargs}).encode() + b"\n")
        await self._writer.drain()
        answer = json.loads(await self._reader.readline())
        if not answer.get("ok"):
            raise RuntimeError(answer.get("error", "control call failed"))
        return answer.get("result")

    async def close(self) -> None:
        """Close the connection."""
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()


async def control_call(host: str, port: int, op: str, **kwargs: Any) -> Any:
    """One-shot: connect, run ``op``, close."""
    client = await ControlClient.connect(host, port)
    try:
        return await client.call(op, **kwargs)
    finally:
        await client.close()
