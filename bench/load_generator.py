"""The bench's load generator: produces prepared Kafka records at a steady rate, in a process of its own.

Upstream services produce orders from processes of their own. Producing from the bench's own event loop,
which also decodes every status and fill the worker publishes, would count that loop's delays (a send
waits there for the loop to reach aiokafka's sender) against the worker.

    python bench/load_generator.py RECORDS_FILE

``RECORDS_FILE`` is JSON: ``{"bootstrap": ..., "topic": ..., "rate": orders/s or null,
"records": [[key, payload hex], ...]}``. Prints one JSON object: each key's send time (epoch seconds,
taken just before ``send``, as the record's own timestamp is).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from aiokafka import AIOKafkaProducer


async def produce(bootstrap: str, topic: str, records: list[tuple[str, bytes]], rate: float | None) -> dict[str, float]:
    """Send ``records`` (key, value) at ``rate`` per second (None: all at once); their send times by key."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=1)
    await producer.start()
    sent_at: dict[str, float] = {}
    try:
        await producer.partitions_for(topic)  # metadata before the clock starts
        started = time.perf_counter()
        futures = []
        for i, (key, value) in enumerate(records):
            if rate is not None:
                delay = started + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            sent_at[key] = time.time()
            futures.append(await producer.send(topic, value, key=key.encode()))
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return sent_at


def main(path: str) -> None:
    spec = json.loads(Path(path).read_text())
    records = [(key, bytes.fromhex(value)) for key, value in spec["records"]]
    sent_at = asyncio.run(produce(spec["bootstrap"], spec["topic"], records, spec["rate"]))
    json.dump(sent_at, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
