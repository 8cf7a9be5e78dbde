"""The bench's baseline consumer: a plain aiokafka consumer of the orders topic, in a process of its own.

The time from a record's send to its fetch by *any* consumer on this machine is part of the worker's
produce -> placeOrder latency that the worker cannot remove. This consumer measures that leg alone, in the
same run and on the same topic as the worker, so the worker's figures can be given as a ratio to it: the
ratio travels between machines, absolute milliseconds do not.

    python bench/plain_consumer.py BOOTSTRAP TOPIC EXPECTED

It reads TOPIC from the beginning with fetch settings like the worker's (read_committed, batches of up to
500 records, 200 ms long polls; no consumer group), prints ``ready`` once its partitions are assigned and
their positions fixed, and exits after
EXPECTED records, printing one JSON object: each key's fetch time (epoch seconds, taken as the batch
returns, as the load generator takes its send times).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from aiokafka import AIOKafkaConsumer


async def consume(bootstrap: str, topic: str, expected: int) -> dict[str, float]:
    """Fetch ``expected`` records of ``topic`` from its beginning; their fetch times by key."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                isolation_level="read_committed", auto_offset_reset="earliest")
    await consumer.start()
    fetched_at: dict[str, float] = {}
    seen = 0
    ready = False
    try:
        while seen < expected:
            batches = await consumer.getmany(timeout_ms=200 if ready else 20, max_records=500)
            now = time.time()
            for records in batches.values():
                for record in records:
                    fetched_at.setdefault(record.key.decode(), now)
                    seen += 1
            if not ready and consumer.assignment():
                for partition in consumer.assignment():  # positions fixed before the bench produces
                    await consumer.position(partition)
                print("ready", flush=True)
                ready = True
    finally:
        await consumer.stop()
    return fetched_at


def main(bootstrap: str, topic: str, expected: str) -> None:
    fetched_at = asyncio.run(consume(bootstrap, topic, int(expected)))
    json.dump(fetched_at, sys.stdout)


if __name__ == "__main__":
    main(*sys.argv[1:4])
