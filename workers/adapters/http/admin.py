"""The admin endpoints: the trading state, the kill switch and the global cancel, behind a bearer token.

They listen on an address and port of their own (``ADMIN_BIND``, loopback by default, and
``ADMIN_PORT``), never on the open health port. Every request needs ``Authorization: Bearer
<ADMIN_TOKEN>``: without a token configured they answer 403 and change nothing; a missing or wrong token
gets 401 and a warning log. Bodies are small (at most :data:`MAX_BODY` bytes) and only these are accepted:

* ``GET /trading-state``: the state in force, who set it, when and why.
* ``POST /trading-state`` ``{"state": "ACTIVE"|"REDUCING"|"HALTED", "reason": "...", "by": "..."}``
  (``by`` optional): change the deployment's trading state.
* ``POST /kill-switch`` with ``on`` / ``off`` (or JSON ``true`` / ``false`` / ``{"kill_switch": true}``):
  ``on`` is HALTED, ``off`` is ACTIVE.
* ``POST /global-cancel`` ``{"reason": "...", "by": "..."}``: reqGlobalCancel, which cancels every open
  order of the account at the gateway, other client ids' and manual ones included. Never implied by HALTED.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from workers.domain.trading_state import TradingState
from workers.logs import get_logger

log = get_logger(__name__)

MAX_BODY = 2048
MAX_TEXT = 500

_ON = frozenset({"on", "true", "1", "yes"})
_OFF = frozenset({"off", "false", "0", "no"})


class AdminActions(Protocol):
    """What the admin endpoints do; the worker's runtime implements it."""

    async def trading_state(self) -> dict[str, Any]: ...

    async def set_trading_state(self, state: TradingState, *, reason: str, changed_by: str) -> dict[str, Any]: ...

    async def global_cancel(self, *, reason: str, changed_by: str) -> dict[str, Any]: ...


class BadRequest(ValueError):
    """A body other than the documented ones."""


def parse_switch(body: str) -> bool:
    """``on``/``off`` (and true/false, 1/0, yes/no), or JSON ``true``/``false``/``{"kill_switch": b}``.

    Raises ValueError for anything else.
    """
    text = body.strip()
    if text.lower() in _ON:
        return True
    if text.lower() in _OFF:
        return False
    try:
        value: Any = json.loads(text)
    except json.JSONDecodeError:
        raise ValueError(f"expected on or off, got {text[:40]!r}") from None
    if isinstance(value, dict):
        value = value.get("kill_switch", value.get("enabled"))
    if isinstance(value, str) and value.lower() in _ON | _OFF:
        return value.lower() in _ON
    if isinstance(value, bool):
        return value
    raise ValueError('expected on, off, true, false or {"kill_switch": true|false}')


def _object(body: str, required: frozenset[str], optional: frozenset[str]) -> dict[str, str]:
    """A JSON object with exactly the ``required`` keys (and any of ``optional``), each a short string."""
    try:
        value: Any = json.loads(body)
    except json.JSONDecodeError:
        raise BadRequest("expected a JSON object") from None
    if not isinstance(value, dict):
        raise BadRequest("expected a JSON object")
    keys = set(value)
    if not required <= keys or not keys <= required | optional:
        raise BadRequest(f"expected the keys {sorted(required)} (optional: {sorted(optional)}), got {sorted(keys)}")
    for key, text in value.items():
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
            raise BadRequest(f"{key} must be a non-empty string of at most {MAX_TEXT} characters")
    return {key: " ".join(text.split()) for key, text in value.items()}


def parse_state_change(body: str) -> tuple[TradingState, str, str | None]:
    """``{"state": ..., "reason": ..., "by": ...}`` (``by`` optional) -> (state, reason, by)."""
    fields = _object(body, frozenset({"state", "reason"}), frozenset({"by"}))
    try:
        state = TradingState(fields["state"].upper())
    except ValueError:
        raise BadRequest(f"state must be one of {', '.join(TradingState)}") from None
    return state, fields["reason"], fields.get("by")


def parse_global_cancel(body: str) -> tuple[str, str | None]:
    """``{"reason": ..., "by": ...}`` (``by`` optional) -> (reason, by)."""
    fields = _object(body, frozenset({"reason"}), frozenset({"by"}))
    return fields["reason"], fields.get("by")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AdminServer:
    """The admin endpoints on their own listener; ``port=0`` binds a free port (see :attr:`port`)."""

    def __init__(self, *, actions: AdminActions, token: str | None, host: str = "127.0.0.1",
                 port: int = 8081) -> None:
        self.actions = actions
        self._token = token.encode() if token else None
        self.host = host
        self.requested_port = port
        self._runner: web.AppRunner | None = None
        self._port: int | None = None

    @property
    def port(self) -> int:
        """The port bound by :meth:`start`."""
        if self._port is None:
            raise RuntimeError("the admin server is not started")
        return self._port

    def application(self) -> web.Application:
        app = web.Application(client_max_size=MAX_BODY, middlewares=[self._authorize])
        app.router.add_get("/trading-state", self._get_state)
        app.router.add_post("/trading-state", self._set_state)
        app.router.add_post("/kill-switch", self._kill_switch)
        app.router.add_post("/global-cancel", self._global_cancel)
        return app

    async def start(self) -> None:
        runner = web.AppRunner(self.application(), access_log=None, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self.requested_port).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        log.info("admin endpoints listening", host=self.host, port=self._port,
                 enabled=self._token is not None)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _authorize(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if self._token is None:
            return web.json_response({"error": "admin endpoints are disabled: ADMIN_TOKEN is not set"},
                                     status=403)
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), self._token):
            log.warning("admin request refused: missing or wrong token", path=request.path,
                        method=request.method, peer=request.remote)
            return web.json_response({"error": "missing or wrong bearer token"}, status=401,
                                     headers={"WWW-Authenticate": "Bearer"})
        if request.content_length is not None and request.content_length > MAX_BODY:
            return web.json_response({"error": f"body larger than {MAX_BODY} bytes"}, status=413)
        try:
            return await handler(request)
        except (BadRequest, ValueError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        except ConnectionError as exc:
            return web.json_response({"error": str(exc)}, status=503)

    @staticmethod
    def _who(request: web.Request, by: str | None) -> str:
        origin = f"HTTP from {request.remote or 'unknown'}"
        return f"{by} ({origin})" if by else origin

    async def _get_state(self, request: web.Request) -> web.Response:
        return web.json_response(await self.actions.trading_state())

    async def _set_state(self, request: web.Request) -> web.Response:
        state, reason, by = parse_state_change(await request.text())
        result = await self.actions.set_trading_state(state, reason=reason, changed_by=self._who(request, by))
        return web.json_response(result)

    async def _kill_switch(self, request: web.Request) -> web.Response:
        on = parse_switch(await request.text())
        state = TradingState.HALTED if on else TradingState.ACTIVE
        result = await self.actions.set_trading_state(
            state, reason=f"kill switch {'on' if on else 'off'}", changed_by=self._who(request, None))
        return web.json_response({"kill_switch": on, **result})

    async def _global_cancel(self, request: web.Request) -> web.Response:
        reason, by = parse_global_cancel(await request.text())
        return web.json_response(await self.actions.global_cancel(reason=reason,
                                                                  changed_by=self._who(request, by)))
