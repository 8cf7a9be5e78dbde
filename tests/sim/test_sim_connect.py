"""Handshake and connection life cycle against the real ib_insync client."""

from __future__ import annotations

import asyncio
import struct
import time

import pytest
from ib_insync import IB

from ibkr_sim.config import SimConfig
from ibkr_sim.framing import FrameReader, encode_frame
from ibkr_sim.server import SimGateway
from tests.sim.helpers import ACCOUNT, Connect, Errors, until

pytestmark = pytest.mark.integration


async def raw_handshake(sim: SimGateway, offer: bytes = b"v157..176") -> tuple[
    asyncio.StreamReader, asyncio.StreamWriter, list[str]
]:
    reader, writer = await asyncio.open_connection(*sim.address)
    writer.write(b"API\0" + struct.pack(">I", len(offer)) + offer)
    frames = FrameReader()
    got: list[list[str]] = []
    while not got:
        got = frames.feed(await asyncio.wait_for(reader.read(4096), 2))
    return reader, writer, got[0]


async def read_frames(reader: asyncio.StreamReader, count: int) -> list[list[str]]:
    frames = FrameReader()
    got: list[list[str]] = []
    while len(got) < count:
        data = await asyncio.wait_for(reader.read(4096), 2)
        if not data:
            break
        got += frames.feed(data)
    return got


async def test_connect_returns_quickly_with_accounts_and_next_id(connect: Connect) -> None:
    started = time.monotonic()
    ib = await connect(1)
    elapsed = time.monotonic() - started
    assert ib.isConnected()
    assert ib.managedAccounts() == [ACCOUNT]
    assert ib.client.serverVersion() == 157
    assert elapsed < 0.5


async def test_handshake_answers_version_and_time_only(sim: SimGateway) -> None:
    _, writer, reply = await raw_handshake(sim)
    assert reply[0] == "157"
    assert len(reply) == 2
    assert reply[1].endswith(" UTC")
    writer.close()


async def test_configured_version_is_announced(sim: SimGateway) -> None:
    sim.config.server_version = 151
    _, writer, reply = await raw_handshake(sim, b"v100..157")
    assert reply[0] == "151"
    writer.close()


async def test_start_api_gets_managed_accounts_then_next_valid_id(sim: SimGateway) -> None:
    reader, writer, _ = await raw_handshake(sim)
    writer.write(encode_frame(("71", "2", "7", "")))
    frames = await read_frames(reader, 2)
    assert frames[0] == ["15", "1", ACCOUNT]
    assert frames[1] == ["9", "1", "1"]
    writer.close()


async def test_several_clients_connect_at_once(sim: SimGateway, connect: Connect) -> None:
    clients = await asyncio.gather(*(connect(i) for i in range(1, 6)))
    assert all(c.isConnected() for c in clients)
    assert sim.connected_client_ids == [1, 2, 3, 4, 5]


async def test_duplicate_client_id_gets_326_and_is_closed(sim: SimGateway, connect: Connect) -> None:
    await connect(3)
    reader, writer, _ = await raw_handshake(sim)
    writer.write(encode_frame(("71", "2", "3", "")))
    frames = await read_frames(reader, 2)
    assert frames[0][:4] == ["4", "2", "-1", "326"]
    assert await asyncio.wait_for(reader.read(100), 2) == b""  # closed by the sim
    assert sim.connected_client_ids == [3]


async def test_duplicate_client_id_fails_ib_insync_connect(sim: SimGateway, connect: Connect) -> None:
    await connect(4)
    second = IB()
    errors = Errors(second)
    with pytest.raises((ConnectionError, asyncio.TimeoutError)):
        await second.connectAsync(*sim.address, clientId=4, timeout=0.5)
    assert 326 in errors.codes(-1)
    assert not second.isConnected()


async def test_client_id_is_free_again_after_disconnect(sim: SimGateway, connect: Connect) -> None:
    first = await connect(5)
    first.disconnect()
    await until(lambda: 5 not in sim.connected_client_ids, what="clientId freed")
    again = await connect(5)
    assert again.isConnected()


async def test_unsupported_request_gets_an_error_not_a_disconnect(ib: IB) -> None:
    errors = Errors(ib)
    ib.client.send(24, 1)  # reqScannerParameters: not served by the sim
    await until(lambda: errors.seen, what="error")
    assert errors.seen[0][1] == 321
    assert ib.isConnected()
    assert await ib.reqCurrentTimeAsync()


async def test_unsupported_request_with_a_req_id_fails_that_request(ib: IB) -> None:
    errors = Errors(ib)
    ib.client.send(87, 42, "", "", "", "")  # reqHeadTimeStamp with reqId 42
    await until(lambda: errors.seen, what="error")
    assert errors.seen[0][:2] == (42, 321)


async def test_requests_before_start_api_are_ignored(sim: SimGateway) -> None:
    reader, writer, _ = await raw_handshake(sim)
    writer.write(encode_frame(("49", "1")) + encode_frame(("71", "2", "9", "")))
    frames = await read_frames(reader, 2)
    assert [f[0] for f in frames[:2]] == ["15", "9"]
    writer.close()


async def test_no_api_prefix_closes_only_that_connection(sim: SimGateway, ib: IB) -> None:
    reader, writer = await asyncio.open_connection(*sim.address)
    writer.write(b"GET / HTTP/1.0\r\n\r\n")
    assert await asyncio.wait_for(reader.read(100), 2) == b""
    assert ib.isConnected()
    assert await ib.reqCurrentTimeAsync()


@pytest.mark.parametrize("sim_config", [SimConfig(farm_status_on_connect=True)])
async def test_farm_status_notices_follow_connect(sim: SimGateway) -> None:
    reader, writer, _ = await raw_handshake(sim)
    writer.write(encode_frame(("71", "2", "11", "")))
    frames = await read_frames(reader, 5)
    assert [f[3] for f in frames[2:5]] == ["2104", "2106", "2158"]
    writer.close()
