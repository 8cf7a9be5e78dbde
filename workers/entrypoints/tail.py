"""``ibkr-workers tail TOPIC``: print the records of one of the contract's topics, decoded.

TOPIC is a contract name (``orders.status``), the name a ``TOPIC_*`` variable gives it, or the settings
field (``orders_status``). Each record becomes one readable line, or one JSON object per line with
``--json``. Dead letters (``orders.requested.dlq``) are shown with their headers and the bytes they hold.

Without ``--from-beginning`` only records written after the start are shown. ``--max N`` stops after N
records, ``--timeout S`` after S seconds. Exit codes: 0 done (also on Ctrl-C); 1 ``--max`` was not reached
before ``--timeout``; 2 unknown topic or bad configuration; 3 Kafka unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Mapping
from dataclasses import fields
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aiokafka.errors import KafkaError

from workers.adapters.avro import AvroCodec, DecodeError, RegistryError
from workers.adapters.avro.wire import codec_for
from workers.adapters.kafka.connection import KafkaUnreachable, kafka_client_kwargs
from workers.adapters.kafka.records import (
    FILL_EXECUTED,
    INSTRUMENT_UPDATED,
    ORDER_CANCEL_REQUESTED,
    ORDER_MODIFY_REQUESTED,
    ORDER_REQUESTED,
    ORDER_STATUS_CHANGED,
    POSITION_UPDATED,
    WORKER_HEALTH,
)
from workers.client import TopicMissing, open_reader
from workers.entrypoints.submit import quiet_logging
from workers.settings import TopicNames, load_settings

# settings field -> the record its topic holds (None: raw bytes, the dead letters).
RECORDS: dict[str, str | None] = {
    "orders_requested": ORDER_REQUESTED,
    "orders_cancel_requested": ORDER_CANCEL_REQUESTED,
    "orders_modify_requested": ORDER_MODIFY_REQUESTED,
    "orders_status": ORDER_STATUS_CHANGED,
    "fills_executed": FILL_EXECUTED,
    "positions_updated": POSITION_UPDATED,
    "instruments_updated": INSTRUMENT_UPDATED,
    "workers_health": WORKER_HEALTH,
    "orders_requested_dlq": None,
}
PREVIEW_BYTES = 48


class UnknownTopic(Exception):
    """TOPIC names none of the contract's topics."""


def resolve_topic(name: str, topics: TopicNames) -> tuple[str, str]:
    """(the topic's actual name, its settings field) for a contract name, configured name or field."""
    defaults = TopicNames()
    for item in fields(TopicNames):
        actual = getattr(topics, item.name)
        if name in (actual, getattr(defaults, item.name), item.name):
            return actual, item.name
    known = ", ".join(getattr(defaults, item.name) for item in fields(TopicNames))
    raise UnknownTopic(f"unknown topic {name!r}; one of: {known}")


def jsonable(value: Any) -> Any:
    """``value`` with decimals as strings, times as ISO 8601 and bytes as hex, for JSON."""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def describe_record(record: Any, codec: AvroCodec, expected: str | None) -> dict[str, Any]:
    """A record as a dict: where it came from, key, headers, and the decoded value (or why not)."""
    shown: dict[str, Any] = {
        "topic": record.topic, "partition": record.partition, "offset": record.offset,
        "timestamp": datetime.fromtimestamp(record.timestamp / 1000, UTC).isoformat(timespec="milliseconds"),
        "key": record.key.decode(errors="replace") if record.key is not None else None,
    }
    if record.headers:
        shown["headers"] = {k: v.decode(errors="replace") for k, v in record.headers}
    value: bytes | None = record.value
    if expected is None:
        shown["value_bytes"] = len(value) if value is not None else 0
        shown["value_hex"] = value.hex() if value is not None else None
        return shown
    try:
        shown["value"] = codec.decode(value, expected)
    except DecodeError as exc:
        shown["error"] = f"undecodable ({exc.kind}): {exc.reason}"
        shown["value_hex"] = value.hex() if value is not None else None
    return shown


def readable_line(shown: Mapping[str, Any]) -> str:
    """One line for people: ``<time> <topic>[<partition>]@<offset> key=<key>  field=value ...``."""
    head = f"{shown['timestamp']} {shown['topic']}[{shown['partition']}]@{shown['offset']} key={shown['key']}"
    parts: list[str] = []
    value = shown.get("value")
    if isinstance(value, Mapping):
        parts += [f"{k}={jsonable(v)}" for k, v in value.items() if v is not None]
    if "error" in shown:
        parts.append(f"error={shown['error']}")
    if "value_hex" in shown and shown["value_hex"] is not None:
        hex_text = shown["value_hex"]
        preview = hex_text[:PREVIEW_BYTES * 2] + ("…" if len(hex_text) > PREVIEW_BYTES * 2 else "")
        parts.append(f"bytes={len(hex_text) // 2} hex={preview}")
    for name, text in (shown.get("headers") or {}).items():
        parts.append(f"[{name}={text}]")
    return head + "  " + " ".join(parts)


async def tail(consumer: Any, codec: AvroCodec, expected: str | None, *, as_json: bool,
               max_records: int | None, stop: asyncio.Event) -> int:
    """Print records until ``stop`` or ``max_records``; return how many were printed."""
    printed = 0
    while not stop.is_set() and (max_records is None or printed < max_records):
        batches = await consumer.getmany(timeout_ms=200)
        for records in batches.values():
            for record in records:
                shown = describe_record(record, codec, expected)
                line = json.dumps(jsonable(shown), sort_keys=False) if as_json else readable_line(shown)
                print(line, flush=True)
                printed += 1
                if max_records is not None and printed >= max_records:
                    return printed
    return printed


async def run(args: argparse.Namespace) -> int:
    settings = load_settings()
    quiet_logging(settings.log_level, "tail")
    try:
        topic, field_name = resolve_topic(args.topic, settings.topics)
    except UnknownTopic as exc:
        print(f"ibkr-workers tail: {exc}", file=sys.stderr)
        return 2
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    timed_out = asyncio.Event()

    def time_is_up() -> None:
        timed_out.set()
        stop.set()

    if args.timeout is not None:
        loop.call_later(args.timeout, time_is_up)
    try:
        consumer = await open_reader(settings.kafka_bootstrap_servers, [topic],
                                     from_beginning=args.from_beginning, **kafka_client_kwargs(settings))
    except TopicMissing as exc:
        print(f"ibkr-workers tail: {exc}", file=sys.stderr)
        return 2
    except KafkaUnreachable as exc:  # its message names the brokers and the setting to fix
        print(f"ibkr-workers tail: {exc}", file=sys.stderr)
        return 3
    except (KafkaError, OSError) as exc:
        print(f"ibkr-workers tail: Kafka at {settings.kafka_bootstrap_servers}: {exc}", file=sys.stderr)
        return 3
    try:
        # With a registry: the contract's schema ids under each topic's subject, looked up once.
        codec = await codec_for(settings.schema_registry, {
            record: getattr(settings.topics, name) for name, record in RECORDS.items() if record is not None})
        printed = await tail(consumer, codec, RECORDS[field_name], as_json=args.json,
                             max_records=args.max, stop=stop)
    except RegistryError as exc:
        print(f"ibkr-workers tail: schema registry at {settings.schema_registry_shown}: {exc}", file=sys.stderr)
        return 3
    finally:
        with contextlib.suppress(Exception):
            await consumer.stop()
    return 1 if args.max is not None and printed < args.max and timed_out.is_set() else 0
