"""Hostile input: random bytes and malformed frames never crash the sim nor disturb another client."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ib_insync import IB, LimitOrder, Stock
from ib_insync.client import Client

from ibkr_sim.config import SimConfig
from ibkr_sim.framing import FrameReader, encode_frame
from ibkr_sim.logs import configure_logging
from ibkr_sim.server import SimGateway
from ibkr_sim.universe import Universe
from tests.sim.helpers import Connect, Errors

pytestmark = pytest.mark.integration

HANDSHAKE = b"API\0" + struct.pack(">I", 9) + b"v157..176"  # as ib_insync sends it: no trailing NUL
START_API = encode_frame(("71", "2", "77", ""))
MESSAGE_IDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 15, 16, 17, 20, 49, 58, 59, 61, 62, 63, 64, 71, 74, 75, 76, 77,
               87, 99, 100, 104, 105, 9999, -1]
LIKELY_VALUES = ["", "0", "1", "-1", "2147483647", "1.7976931348623157e+308", "nan", "inf", "Infinite",
                 "1e400", "BUY", "SELL", "MKT", "LMT", "STP", "SMART", "AAPL", "STK", "265598", "100", "100.5",
                 "DU0000001", "IOC", "OPG", "\xff", "ALL"]

text_field = st.text(alphabet=st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), max_size=10)
any_field = st.one_of(st.sampled_from(LIKELY_VALUES), text_field)
random_frame = st.tuples(st.sampled_from(MESSAGE_IDS), st.lists(any_field, max_size=30)).map(
    lambda t: encode_frame([str(t[0]), *t[1]])
)


@dataclass
class FuzzEnv:
    runner: asyncio.Runner
    sim: SimGateway
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    place_order_fields: list[str]
    errors: list[logging.LogRecord] = field(default_factory=list)


class _Collect(logging.Handler):
    def __init__(self, sink: list[logging.LogRecord]) -> None:
        super().__init__(logging.ERROR)
        self.sink = sink

    def emit(self, record: logging.LogRecord) -> None:
        self.sink.append(record)


async def _read_until(reader: asyncio.StreamReader, msg_id: str, frames: FrameReader) -> list[str]:
    while True:
        data = await asyncio.wait_for(reader.read(65536), 2)
        assert data, "the good client's connection was closed"
        for fields in frames.feed(data):
            if fields and fields[0] == msg_id:
                return fields


async def _setup(runner: asyncio.Runner) -> FuzzEnv:
    sim = SimGateway(SimConfig(pacing=False), Universe.load())
    await sim.start("127.0.0.1", 0)
    reader, writer = await asyncio.open_connection(*sim.address)
    writer.write(HANDSHAKE + encode_frame(("71", "2", "1", "")))
    await _read_until(reader, "9", FrameReader())
    sent: list[bytes] = []
    client = Client(object())
    client.connState = Client.CONNECTED
    client._serverVersion = 157
    client.conn.sendMsg = sent.append
    client.placeOrder(900, Stock("AAPL", "SMART", "USD"), LimitOrder("BUY", 10, 230.0, orderRef="fuzz"))
    (fields,) = FrameReader().feed(b"".join(sent))
    return FuzzEnv(runner, sim, reader, writer, fields)


@contextlib.contextmanager
def _sim_errors_collected(sink: list[logging.LogRecord]) -> Iterator[None]:
    """Route the sim's structlog events through ``logging`` (as its own process does) and keep the errors."""
    root = logging.getLogger()
    saved = (structlog.get_config(), root.handlers[:], root.level)
    configure_logging("WARNING")
    handler = _Collect(sink)
    logging.getLogger("ibkr_sim").addHandler(handler)
    try:
        yield
    finally:
        logging.getLogger("ibkr_sim").removeHandler(handler)
        structlog.configure(**saved[0])
        root.handlers[:] = saved[1]
        root.setLevel(saved[2])


@pytest.fixture(scope="module")
def env() -> Iterator[FuzzEnv]:
    runner = asyncio.Runner()
    fuzz = runner.run(_setup(runner))
    try:
        with _sim_errors_collected(fuzz.errors):
            yield fuzz
    finally:
        fuzz.writer.close()
        runner.run(fuzz.sim.stop())
        runner.close()


async def _attack_then_check(env: FuzzEnv, junk: bytes) -> None:
    reader, writer = await asyncio.open_connection(*env.sim.address)
    writer.write(junk)
    await writer.drain()
    try:
        while await asyncio.wait_for(reader.read(65536), 0.01):
            pass
    except (TimeoutError, ConnectionError):
        pass
    writer.close()
    env.writer.write(encode_frame(("49", "1")))
    answer = await _read_until(env.reader, "49", FrameReader())
    assert int(answer[2]) > 0
    assert env.sim.listening


mutations = st.lists(st.tuples(st.integers(0, 130), any_field), max_size=6)


def _mutated(base: list[str], changes: list[tuple[int, str]], cut: int) -> bytes:
    fields = list(base)
    for index, value in changes:
        if index < len(fields):
            fields[index] = value
    return encode_frame(fields[: max(cut, 1)])


junk_strategy = st.one_of(
    st.binary(max_size=300),
    st.lists(random_frame, max_size=12).map(lambda frames: HANDSHAKE + START_API + b"".join(frames)),
    st.tuples(st.lists(random_frame, max_size=4), st.binary(max_size=64)).map(
        lambda t: HANDSHAKE + START_API + b"".join(t[0]) + t[1]
    ),
    st.integers(0, 2**32 - 1).map(lambda n: HANDSHAKE + START_API + struct.pack(">I", n) + b"x" * 16),
    st.binary(max_size=40).map(lambda b: b"API\0" + struct.pack(">I", len(b)) + b),
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(junk=junk_strategy)
def test_random_input_never_disturbs_another_client(env: FuzzEnv, junk: bytes) -> None:
    env.runner.run(_attack_then_check(env, junk))
    assert env.errors == []


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=mutations, cut=st.integers(1, 140))
def test_mangled_place_orders_are_answered_not_fatal(
    env: FuzzEnv, changes: list[tuple[int, str]], cut: int
) -> None:
    junk = HANDSHAKE + START_API + _mutated(env.place_order_fields, changes, cut)
    env.runner.run(_attack_then_check(env, junk))
    assert env.errors == []


async def test_ib_insync_client_keeps_working_beside_a_hostile_one(sim: SimGateway, connect: Connect) -> None:
    ib: IB = await connect(1)
    errors = Errors(ib)
    reader, writer = await asyncio.open_connection(*sim.address)
    writer.write(HANDSHAKE + START_API + encode_frame(("3", "x")) + encode_frame(("9", "8")) + b"\xff" * 50)
    writer.write(struct.pack(">I", 2**31) + b"junk")
    assert await asyncio.wait_for(reader.read(65536), 2) is not None
    writer.close()
    (aapl,) = await ib.qualifyContractsAsync(Stock("AAPL", "SMART", "USD"))
    assert aapl.conId == 265598
    assert errors.seen == []
