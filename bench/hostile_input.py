"""Bench: how fast the order-consumer drains orders.requested when most records are hostile.

Run (services from scripts/dev-services, exported):  .venv/bin/python bench/hostile_input.py

A backlog of ``--records`` records is on orders.requested before the worker starts, ``--good`` of them
good market orders spread evenly, the rest hostile, in equal shares: random bytes, broken framing (a
wrong magic or an unknown schema fingerprint), truncated and bit-flipped encodings of orders, decodable
orders with hostile values (a NUL in the instrument_id, control characters in the account, over-long
ids, an account not allowed, a zero quantity), oversized records (20 KiB) and orders whose quantity is a
16 KiB decimal. Each record ends as a status (REJECTED or FILLED) or a dead letter; the drain time is
from the first of those to the last (their record timestamps). Also reported: the worker's CPU per
record, its peak RSS, and the dead letters by stage.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
import uuid
from collections import Counter
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.order_consumer import (
    HISTORY,
    Setup,
    SimProcess,
    cpu_seconds,
    market_order,
    prepare,
    stop_worker,
    worker_env,
)
from workers.adapters.avro import AvroCodec
from workers.adapters.kafka.records import ORDER_REQUESTED, ORDER_STATUS_CHANGED, order_requested_record

HOSTILE_KINDS = ("random", "framing", "truncated", "flipped", "nul_instrument", "control_account", "long_id",
                 "account_not_allowed", "zero_quantity", "oversized", "huge_decimal")


def hostile(kind: str, codec: AvroCodec, rng: random.Random) -> bytes:
    """One hostile record of ``kind``."""
    good = market_order()
    encoded = codec.encode(ORDER_REQUESTED, order_requested_record(good))
    if kind == "random":
        return rng.randbytes(rng.randint(0, 200))
    if kind == "framing":
        return rng.choice([b"\x00\x00" + encoded[2:], encoded[:2] + rng.randbytes(8) + encoded[10:]])
    if kind == "truncated":
        return encoded[: rng.randint(1, len(encoded) - 1)]
    if kind == "flipped":
        flipped = bytearray(encoded)
        at = rng.randrange(10, len(flipped))
        flipped[at] ^= 1 << rng.randrange(8)
        return bytes(flipped)
    if kind == "oversized":
        return encoded + rng.randbytes(20 * 1024)
    if kind == "huge_decimal":
        # The quantity's bytes (after order_id, account, instrument_id and side) replaced by 16 KiB.
        body = codec.encode(ORDER_REQUESTED, order_requested_record(replace(good, quantity=Decimal(1))))
        unscaled = (10**8).to_bytes(4, "big")  # 1 at scale 8, after its length (zigzag: 4 * 2)
        start = body.index(bytes([len(unscaled) * 2]) + unscaled)
        size = 16 * 1024
        varint, n = bytearray(), size * 2
        while n >= 0x80:
            varint.append((n & 0x7F) | 0x80)
            n >>= 7
        varint.append(n)
        return body[:start] + bytes(varint) + b"\x7f" + b"\xff" * (size - 1) + body[start + 1 + len(unscaled):]
    changes: dict[str, Any] = {
        "nul_instrument": {"instrument_id": "STK:AAPL\x00:USD"},
        "control_account": {"account": "DU\x1b[2J0000001"},
        "long_id": {"order_id": "o" * 200},
        "account_not_allowed": {"account": "DU9999999"},
        "zero_quantity": {"quantity": Decimal(0)},
    }[kind]
    return codec.encode(ORDER_REQUESTED, order_requested_record(replace(good, **changes)))


def records(count: int, good: int, codec: AvroCodec, seed: int) -> tuple[list[tuple[str, bytes]], set[str]]:
    """The backlog: (key, value) pairs, good orders spread evenly among the hostile ones; the good ids."""
    rng = random.Random(seed)
    every = max(1, count // max(1, good))
    out: list[tuple[str, bytes]] = []
    good_ids: set[str] = set()
    for n in range(count):
        if n % every == every - 1 and len(good_ids) < good:
            request = market_order()
            good_ids.add(request.order_id)
            out.append((request.order_id, codec.encode(ORDER_REQUESTED, order_requested_record(request))))
        else:
            out.append((f"h{n}", hostile(HOSTILE_KINDS[n % len(HOSTILE_KINDS)], codec, rng)))
    return out, good_ids


async def write_backlog(setup: Setup, backlog: list[tuple[str, bytes]]) -> None:
    spec = {"bootstrap": setup.bootstrap, "topic": setup.topics.orders_requested, "rate": None,
            "records": [[key, value.hex()] for key, value in backlog]}
    path = Path(f"/tmp/bench-hostile-{uuid.uuid4().hex[:8]}.json")
    path.write_text(json.dumps(spec))
    try:
        process = await asyncio.create_subprocess_exec(sys.executable, str(REPO / "bench" / "load_generator.py"),
                                                       str(path), stdout=asyncio.subprocess.DEVNULL, cwd=REPO)
        if await process.wait() != 0:
            raise SystemExit("load generator failed")
    finally:
        path.unlink()


class Outcomes:
    """Statuses and dead letters as they come: the order ids with a status, the FILLED ones, the stages."""

    def __init__(self, setup: Setup, codec: AvroCodec) -> None:
        self.setup, self.codec = setup, codec
        self.with_status: set[str] = set()
        self.filled: set[str] = set()
        self.stages: Counter[str] = Counter()
        self.first: float | None = None
        self.last = 0.0

    @property
    def outcomes(self) -> int:
        return len(self.with_status) + sum(self.stages.values())

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(self.setup.topics.orders_status, self.setup.topics.orders_requested_dlq,
                                    bootstrap_servers=self.setup.bootstrap, group_id=None,
                                    auto_offset_reset="earliest", fetch_min_bytes=1 << 20, fetch_max_wait_ms=200)
        await consumer.start()
        try:
            while True:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    for record in batch:
                        self._note(record)
        finally:
            await consumer.stop()

    def _note(self, record: Any) -> None:
        stamp = record.timestamp / 1000
        self.first = stamp if self.first is None else min(self.first, stamp)
        self.last = max(self.last, stamp)
        if record.topic == self.setup.topics.orders_status:
            value = self.codec.decode(record.value, ORDER_STATUS_CHANGED)
            self.with_status.add(value["order_id"])
            if value["status"] == "FILLED":
                self.filled.add(value["order_id"])
        else:
            self.stages[dict(record.headers)["error.stage"].decode()] += 1


async def bench_hostile(bootstrap: str, server_url: str, count: int, good: int, seed: int) -> dict[str, Any]:
    setup = await prepare(bootstrap, server_url, pacing=False)
    codec = AvroCodec()
    backlog, good_ids = records(count, good, codec, seed)
    outcomes = Outcomes(setup, codec)
    watcher = asyncio.create_task(outcomes.run())
    await write_backlog(setup, backlog)
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "workers", "order-consumer",
                                                   env=worker_env(setup, 100_000), cwd=REPO,
                                                   stdout=asyncio.subprocess.DEVNULL)  # its warning per record
    await asyncio.sleep(0.5)
    cpu_before = cpu_seconds(process.pid)
    deadline = time.monotonic() + 600
    while outcomes.outcomes < count or not good_ids <= outcomes.filled:
        if time.monotonic() > deadline or process.returncode is not None:
            raise SystemExit(f"not drained: {outcomes.outcomes} of {count} records have an outcome, "
                             f"{len(good_ids & outcomes.filled)} of {len(good_ids)} good orders FILLED")
        await asyncio.sleep(0.1)
    worker_cpu = cpu_seconds(process.pid) - cpu_before
    rss = await stop_worker(process)
    watcher.cancel()
    placed = {execution["order_ref"] for execution in await setup.sim.executions()}
    await setup.tear_down()
    assert outcomes.first is not None
    drain = outcomes.last - outcomes.first
    return {
        "records": count, "good_orders": len(good_ids), "hostile_records": count - len(good_ids),
        "drain_seconds": round(drain, 2), "records_per_s": round(count / drain),
        "worker_cpu_ms_per_record": round(worker_cpu / count * 1000, 3), "peak_rss_mb": round(rss, 1),
        "dead_letters_by_stage": dict(outcomes.stages), "statuses": len(outcomes.with_status),
        "good_orders_filled": len(good_ids & outcomes.filled),
        # A bit flip can leave a valid order (another quantity, another order_id): it is placed like any other.
        "orders_placed": len(placed), "placed_not_good": len(placed - good_ids),
    }


async def main(args: argparse.Namespace) -> None:
    HISTORY.orders = args.history
    try:
        result = await bench_hostile(os.environ["KAFKA_BOOTSTRAP_SERVERS"], os.environ["DATABASE_URL"],
                                     args.records, args.good, args.seed)
    finally:
        for sim in SimProcess.started:
            await sim.stop()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=10_000, help="records in the backlog")
    parser.add_argument("--good", type=int, default=500, help="good orders among them")
    parser.add_argument("--seed", type=int, default=16)
    parser.add_argument("--history", type=int, default=0, help="finished orders in the ledger before the run")
    asyncio.run(main(parser.parse_args()))
