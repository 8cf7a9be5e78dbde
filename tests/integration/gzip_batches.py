"""Writing several records to a topic as one gzip record batch (a decompression bomb, say)."""

from __future__ import annotations

from aiokafka import AIOKafkaProducer


async def send_as_one_gzip_batch(bootstrap: str, topic: str, values: list[bytes], partition: int = 0,
                                 key: bytes = b"k") -> list[int]:
    """Write ``values`` to ``topic``'s ``partition`` in one gzip batch; their offsets (consecutive)."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, compression_type="gzip", linger_ms=500,
                                max_batch_size=16 * 1024 * 1024, max_request_size=16 * 1024 * 1024)
    await producer.start()
    try:
        sent = [await producer.send(topic, value, key=key, partition=partition) for value in values]
        offsets = [(await future).offset for future in sent]
    finally:
        await producer.stop()
    assert offsets == list(range(offsets[0], offsets[0] + len(values))), "not one batch"
    return offsets
