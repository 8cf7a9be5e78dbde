#!/usr/bin/env python3
"""Is a Kafka broker serving on HOST:PORT? Used by ``scripts/dev-services``; standard library only.

It sends a Metadata request (v4, no topics) over the Kafka wire protocol and calls the broker ready when
the answer lists at least one broker: a KRaft broker lists itself only once it has caught up with the
metadata log and is unfenced, which is when producing and creating topics work.

    probe.py HOST PORT                 one attempt; exit 0 ready, 1 not ready
    probe.py HOST PORT --wait SECONDS  retry until ready or SECONDS have passed
    probe.py HOST PORT --tcp           only: does anything accept a TCP connection there?

On success it prints the cluster id (or ``tcp-open`` with ``--tcp``).
"""

from __future__ import annotations

import argparse
import socket
import struct
import sys
import time

METADATA_API_KEY = 3
METADATA_VERSION = 4
CLIENT_ID = b"dev-services-probe"


class ProbeError(Exception):
    """The peer did not answer like a ready Kafka broker."""


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    chunks: list[bytes] = []
    remaining = size
    while remaining:
        chunk = sock.recv(remaining)
        if not chunk:
            raise ProbeError("connection closed by peer")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def _take(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self._data, self._pos)
        self._pos += struct.calcsize(fmt)
        return int(value)

    def int16(self) -> int:
        return self._take(">h")

    def int32(self) -> int:
        return self._take(">i")

    def nullable_string(self) -> str | None:
        length = self.int16()
        if length < 0:
            return None
        value = self._data[self._pos : self._pos + length].decode("utf-8")
        self._pos += length
        return value


def metadata(host: str, port: int, timeout: float) -> tuple[str | None, int]:
    """Return (cluster id, number of brokers listed) from a Metadata v4 request."""
    correlation_id = 7
    header = struct.pack(">hhih", METADATA_API_KEY, METADATA_VERSION, correlation_id, len(CLIENT_ID))
    header += CLIENT_ID
    body = struct.pack(">ib", 0, 0)  # topics: empty array (none); allow_auto_topic_creation: false
    request = header + body
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(struct.pack(">i", len(request)) + request)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        if size <= 0 or size > 10_000_000:
            raise ProbeError(f"implausible response size {size}")
        reader = _Reader(_recv_exact(sock, size))
    try:
        if reader.int32() != correlation_id:
            raise ProbeError("correlation id mismatch")
        reader.int32()  # throttle_time_ms
        brokers = reader.int32()
        for _ in range(max(brokers, 0)):
            reader.int32()  # node_id
            reader.nullable_string()  # host
            reader.int32()  # port
            reader.nullable_string()  # rack
        cluster_id = reader.nullable_string()
    except struct.error as exc:
        raise ProbeError(f"malformed Metadata response: {exc}") from exc
    return cluster_id, max(brokers, 0)


def tcp_open(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--wait", type=float, default=0.0, help="keep trying for this many seconds")
    parser.add_argument("--tcp", action="store_true", help="only test that the port accepts connections")
    args = parser.parse_args(argv)

    deadline = time.monotonic() + args.wait
    while True:
        if args.tcp:
            if tcp_open(args.host, args.port, 2.0):
                sys.stdout.write("tcp-open\n")
                return 0
        else:
            try:
                cluster_id, brokers = metadata(args.host, args.port, 3.0)
                if brokers > 0:
                    sys.stdout.write(f"{cluster_id or 'unknown-cluster'}\n")
                    return 0
            except (OSError, ProbeError):
                pass
        if time.monotonic() >= deadline:
            return 1
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
