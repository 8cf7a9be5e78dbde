"""One client connection: handshake, pacing, request dispatch, buffered and optionally delayed output."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Protocol

from ibkr_sim import messages as m
from ibkr_sim.framing import (
    HANDSHAKE_PREFIX,
    FieldError,
    FrameReader,
    FrameTooLarge,
    parse_int,
    parse_version_range,
)
from ibkr_sim.handlers import HANDLERS, Backend, request_id_of
from ibkr_sim.logs import get_logger
from ibkr_sim.quotes import LIVE, MarketDataLine

log = get_logger(__name__)

CLIENT_ID_IN_USE = "Unable to connect as the client id is already in use. Retry with a unique client id."


class Switchboard(Protocol):
    """What a connection needs of the server: the registry of connections and clientIds, the fault switches."""

    frozen: bool
    response_delay: float
    pacing_enabled: bool
    pacing_violations: int

    def session_opened(self, session: ClientSession) -> None:
        """Register a new connection."""

    def session_closed(self, session: ClientSession) -> None:
        """Forget a connection and free its clientId."""

    def bind_client(self, session: ClientSession, client_id: int) -> bool:
        """Claim ``client_id`` for the session; False when another live connection holds it."""

    def take_next_valid_id(self, client_id: int) -> int:
        """The nextValidId to announce on connect."""


class ClientSession(asyncio.Protocol):
    """The server side of one TWS API connection."""

    def __init__(self, switchboard: Switchboard, backend: Backend) -> None:
        self.switchboard = switchboard
        self.backend = backend
        self.config = backend.config
        self.version = backend.config.server_version
        self.transport: asyncio.Transport | None = None
        self.reader = FrameReader()
        self.stage = "prefix"  # prefix -> version -> start -> ready -> closed
        self.client_id: int | None = None
        self.peer = ""
        self._prefix = b""
        self._out: list[bytes] = []
        self._flush_pending = False
        self._delayed: deque[tuple[float, bytes]] = deque()
        self._delay_timer: asyncio.TimerHandle | None = None
        self._held_input: list[bytes] = []
        self._times: deque[float] = deque()
        self.messages_received = 0
        self.pacing_violations = 0
        # Subscriptions: accounts for reqAccountUpdates, reqId -> account for the multi variant.
        self.account_updates: set[str] = set()
        self.account_multi: dict[int, tuple[str, str]] = {}
        self.positions_subscribed = False
        self.market_data: dict[int, MarketDataLine] = {}  # reqId -> streaming market data
        self.market_data_type = LIVE
        self._sent_values: dict[str, dict[tuple[str, str], str]] = {}

    # --- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.switchboard.session_opened(self)

    def data_received(self, data: bytes) -> None:
        if self.switchboard.frozen:
            self._held_input.append(data)
            return
        # Everything this data causes goes out in one write at the end, without a scheduled flush.
        self._flush_pending = True
        try:
            self._process(data)
        except FrameTooLarge as exc:
            log.warning("connection closed: frame too large", peer=self.peer, error=str(exc))
            self.close()
        except Exception:
            # Nothing a client sends may take the server down; this connection is unusable though.
            log.exception("connection closed after an unexpected error", peer=self.peer)
            self.close()
        self.flush()

    def eof_received(self) -> bool:
        # Free the clientId at once: ibapi closes its socket up to a second after sending EOF.
        self.switchboard.session_closed(self)
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.stage = "closed"
        if self._delay_timer is not None:
            self._delay_timer.cancel()
        self.switchboard.session_closed(self)

    # --- input -------------------------------------------------------------------------------

    def _process(self, data: bytes) -> None:
        if self.stage == "prefix":
            self._prefix += data
            if len(self._prefix) < len(HANDSHAKE_PREFIX):
                return
            if not self._prefix.startswith(HANDSHAKE_PREFIX):
                log.warning("connection closed: no API prefix", peer=self.peer)
                self.close()
                return
            data = self._prefix[len(HANDSHAKE_PREFIX) :]
            self._prefix = b""
            self.stage = "version"
        for fields in self.reader.feed(data):
            if self.stage == "closed":
                return
            self._on_frame(fields)

    def _on_frame(self, fields: list[str]) -> None:
        if self.stage == "version":
            self._on_version(fields)
            return
        if self.config.pacing and self.switchboard.pacing_enabled and not self._pace():
            return
        self.messages_received += 1
        if self.stage == "start":
            if fields and fields[0] == "71":
                self._on_start_api(fields)
            else:
                log.info("request before startApi ignored", peer=self.peer, msg_id=fields[0] if fields else None)
            return
        try:
            msg_id = int(fields[0])
        except (ValueError, IndexError):
            self.error(-1, 320, f"Error reading request. Unable to parse message id {fields[:1]!r}.")
            return
        handler = HANDLERS.get(msg_id)
        if handler is None:
            self.error(
                request_id_of(msg_id, fields), 321,
                f"Error validating request.-'{msg_id}' : cause - The sim gateway does not support "
                f"request message id {msg_id}",
            )
            return
        try:
            handler(self.backend, self, fields)
        except (FieldError, ValueError, IndexError) as exc:
            self.error(
                request_id_of(msg_id, fields), 320,
                f"Error reading request. Message id {msg_id}. Unable to parse data. {exc}",
            )
        except Exception:
            # A sim bug must not cost the client its connection: log it and answer like TWS would.
            log.exception("request failed", msg_id=msg_id, peer=self.peer)
            self.error(request_id_of(msg_id, fields), 320, f"Error processing request. Message id {msg_id}.")

    def _on_version(self, fields: list[str]) -> None:
        offer = parse_version_range(fields[0]) if fields else None
        if offer is None:
            log.warning("connection closed: bad version offer", peer=self.peer, offer=fields[0] if fields else None)
            self.close()
            return
        low, high = offer
        if not low <= self.version <= high:
            log.warning(
                "client versions exclude the server version; answering anyway",
                peer=self.peer, client_min=low, client_max=high, server_version=self.version,
            )
        now = time.strftime("%Y%m%d %H:%M:%S", time.gmtime())
        self.send(m.handshake_reply(self.version, f"{now} UTC"))
        self.stage = "start"

    def _on_start_api(self, fields: list[str]) -> None:
        try:
            client_id = parse_int(fields[2]) if len(fields) > 2 else 0
        except FieldError:
            client_id = -1
        if client_id < 0 or not self.switchboard.bind_client(self, client_id):
            self.error(-1, 326, CLIENT_ID_IN_USE)
            self.flush()
            self.close()
            return
        self.client_id = client_id
        self.stage = "ready"
        self.send(m.managed_accounts(list(self.config.accounts)))
        self.send(m.next_valid_id(self.switchboard.take_next_valid_id(client_id)))
        if self.config.farm_status_on_connect:
            for code, text in m.FARM_STATUS:
                self.error(-1, code, text)

    def _pace(self) -> bool:
        """Count the message against IB's per-second limit; False (and error 100) when over it."""
        limit = self.config.max_messages_per_second
        now = asyncio.get_running_loop().time()
        times = self._times
        while times and now - times[0] >= 1.0:
            times.popleft()
        if len(times) < limit:
            times.append(now)
            return True
        self.pacing_violations += 1
        self.switchboard.pacing_violations += 1
        self.error(
            -1, 100,
            f"Max rate of messages per second has been exceeded:max={limit} rec={len(times) + 1} (1)",
        )
        after = self.config.pacing_disconnect_after
        if after is not None and self.pacing_violations >= after:
            self.flush()
            self.close()
        return False

    # --- output ------------------------------------------------------------------------------

    def send(self, frame: bytes) -> None:
        """Queue a frame; frames queued in one turn of the loop go out in one write."""
        self._out.append(frame)
        if not self._flush_pending:
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self.flush)

    def send_all(self, frames: list[bytes]) -> None:
        """Queue several frames."""
        if frames:
            self._out.extend(frames)
            if not self._flush_pending:
                self._flush_pending = True
                asyncio.get_running_loop().call_soon(self.flush)

    def error(self, req_id: int, code: int, text: str) -> None:
        """Queue an error message."""
        self.send(m.error(req_id, code, text, self.version))

    def flush(self) -> None:
        """Write queued frames (or hand them to the delay line, or keep them while frozen)."""
        self._flush_pending = False
        if not self._out or self.switchboard.frozen or self.transport is None or self.stage == "closed":
            return
        data = b"".join(self._out)
        self._out.clear()
        delay = self.switchboard.response_delay
        if delay <= 0 and not self._delayed:
            self.transport.write(data)
            return
        loop = asyncio.get_running_loop()
        self._delayed.append((loop.time() + max(delay, 0.0), data))
        if self._delay_timer is None:
            self._delay_timer = loop.call_at(self._delayed[0][0], self._release_delayed)

    def _release_delayed(self) -> None:
        self._delay_timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._delayed and self._delayed[0][0] <= now:
            _, data = self._delayed.popleft()
            if self.transport is not None and self.stage != "closed":
                self.transport.write(data)
        if self._delayed:
            self._delay_timer = loop.call_at(self._delayed[0][0], self._release_delayed)

    def thaw(self) -> None:
        """Resume after a freeze: handle the input that arrived meanwhile, send what was queued."""
        held, self._held_input = self._held_input, []
        for data in held:
            self.data_received(data)
        self.flush()

    def close(self) -> None:
        """Close the connection (pending output is written first)."""
        if self.transport is not None and self.stage != "closed":
            self.stage = "closed"
            self.transport.close()
            self.switchboard.session_closed(self)

    def abort(self) -> None:
        """Drop the connection at once, like a crashed gateway."""
        if self.transport is not None:
            self.stage = "closed"
            self.transport.abort()
            self.switchboard.session_closed(self)

    # --- events from the broker --------------------------------------------------------------

    def push_account_values(self, values: dict[str, list[tuple[str, str, str]]]) -> None:
        """Send the account values that changed since this connection last got them."""
        for account in self.account_updates:
            if account in values:
                changed = self._changed(account, values[account])
                self.send_all([m.update_account_value(t, v, c, account) for t, v, c in changed])
        for req_id, (account, model) in self.account_multi.items():
            if account in values:
                changed = self._changed(f"{req_id}:{account}", values[account])
                self.send_all([
                    m.account_update_multi(req_id, account, model, t, value=v, cur=c) for t, v, c in changed
                ])

    def remember_values(self, key: str, values: list[tuple[str, str, str]]) -> None:
        """Note values sent in a full answer, so later pushes send only changes."""
        self._sent_values[key] = {(t, c): v for t, v, c in values}

    def _changed(self, key: str, values: list[tuple[str, str, str]]) -> list[tuple[str, str, str]]:
        sent = self._sent_values.setdefault(key, {})
        changed = [(t, v, c) for t, v, c in values if sent.get((t, c)) != v]
        for t, v, c in changed:
            sent[(t, c)] = v
        return changed
