"""The Confluent framing against a small in-memory schema registry served over real HTTP on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from test_avro_codec import SAMPLES

from tests.fake_registry import FakeRegistry
from workers.adapters.avro import (
    AvroCodec,
    DecodeError,
    DecodeFailure,
    RegistryCodec,
    RegistryError,
    SchemaCatalog,
    SchemaIncompatibleError,
    SchemaRegistryClient,
)

CATALOG = SchemaCatalog()
TOPIC = "orders.status"


@pytest.fixture
async def registry() -> AsyncIterator[tuple[FakeRegistry, str]]:
    fake = FakeRegistry()
    server = await asyncio.start_server(fake.serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield fake, f"http://127.0.0.1:{port}"
        server.close()


@pytest.fixture
async def codec(registry: tuple[FakeRegistry, str]) -> AsyncIterator[RegistryCodec]:
    codec = RegistryCodec(SchemaRegistryClient(registry[1]), CATALOG)
    yield codec
    await codec.aclose()


@pytest.mark.parametrize("name", sorted(SAMPLES))
async def test_every_record_round_trips_through_the_confluent_framing(
    codec: RegistryCodec, registry: tuple[FakeRegistry, str], name: str
) -> None:
    fake, _ = registry
    data = await codec.encode(name, SAMPLES[name], topic=TOPIC)
    assert data[0] == 0
    schema_id = int.from_bytes(data[1:5], "big")
    assert list(fake.subjects) == [f"{TOPIC}-value"]
    assert fake.subjects[f"{TOPIC}-value"][-1] == schema_id  # the current version, registered last
    assert json.loads(fake.schemas[schema_id]) == CATALOG.current(name).schema
    assert await codec.decode(data, name) == SAMPLES[name]


async def test_a_schema_is_registered_once_and_then_served_from_the_cache(
    codec: RegistryCodec, registry: tuple[FakeRegistry, str]
) -> None:
    fake, _ = registry
    first = await codec.encode("OrderRequested", SAMPLES["OrderRequested"], topic=TOPIC)
    asked = len(fake.requests)
    second = await codec.encode("OrderRequested", SAMPLES["OrderRequested"], topic=TOPIC)
    await codec.decode(first, "OrderRequested")
    assert second == first
    assert len(fake.requests) == asked


async def test_each_topic_registers_under_its_own_subject(
    codec: RegistryCodec, registry: tuple[FakeRegistry, str]
) -> None:
    fake, _ = registry
    await codec.encode("WorkerHealth", SAMPLES["WorkerHealth"], topic="workers.health")
    await codec.encode("WorkerHealth", SAMPLES["WorkerHealth"], topic="workers.health.copy")
    assert sorted(fake.subjects) == ["workers.health-value", "workers.health.copy-value"]


async def test_a_fresh_reader_fetches_an_id_once(
    registry: tuple[FakeRegistry, str], codec: RegistryCodec
) -> None:
    fake, url = registry
    data = await codec.encode("FillExecuted", SAMPLES["FillExecuted"], topic="fills.executed")
    asked = len(fake.requests)
    async with SchemaRegistryClient(url) as client:
        reader = RegistryCodec(client, CATALOG)
        assert await reader.decode(data, "FillExecuted") == SAMPLES["FillExecuted"]
        assert await reader.decode(data, "FillExecuted") == SAMPLES["FillExecuted"]
    assert [method for method, _ in fake.requests[asked:]] == ["GET"]


async def test_an_unknown_schema_id_is_a_decode_error(codec: RegistryCodec) -> None:
    with pytest.raises(DecodeError) as caught:
        await codec.decode(b"\x00\x00\x00\x03\xe7" + b"\x02a", "OrderRequested")
    assert caught.value.kind is DecodeFailure.UNKNOWN_SCHEMA


async def test_a_record_of_another_type_is_a_decode_error(codec: RegistryCodec) -> None:
    data = await codec.encode("OrderCancelRequested", SAMPLES["OrderCancelRequested"], topic=TOPIC)
    with pytest.raises(DecodeError) as caught:
        await codec.decode(data, "OrderRequested")
    assert caught.value.kind is DecodeFailure.WRONG_RECORD


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"", DecodeFailure.TRUNCATED),
        (b"\x00\x00\x01", DecodeFailure.TRUNCATED),
        (b"\x07abcdef", DecodeFailure.GARBAGE),
    ],
)
async def test_bad_framing_is_a_decode_error(codec: RegistryCodec, data: bytes, kind: DecodeFailure) -> None:
    with pytest.raises(DecodeError) as caught:
        await codec.decode(data, "OrderRequested")
    assert caught.value.kind is kind


async def test_a_truncated_body_is_a_decode_error(codec: RegistryCodec) -> None:
    data = await codec.encode("PositionUpdated", SAMPLES["PositionUpdated"], topic="positions.updated")
    with pytest.raises(DecodeError) as caught:
        await codec.decode(data[:-3], "PositionUpdated")
    assert caught.value.kind is DecodeFailure.TRUNCATED


async def test_single_object_input_is_still_read(codec: RegistryCodec) -> None:
    data = AvroCodec(CATALOG).encode("InstrumentUpdated", SAMPLES["InstrumentUpdated"])
    assert await codec.decode(data, "InstrumentUpdated") == SAMPLES["InstrumentUpdated"]


async def test_an_unreachable_registry_is_a_registry_error_not_a_decode_error() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    async with SchemaRegistryClient(f"http://127.0.0.1:{port}", timeout=2) as client:
        codec = RegistryCodec(client, CATALOG)
        with pytest.raises(RegistryError):
            await codec.encode("OrderRequested", SAMPLES["OrderRequested"], topic=TOPIC)
        with pytest.raises(RegistryError) as caught:
            await codec.decode(b"\x00\x00\x00\x00\x01\x02a", "OrderRequested")
        assert not isinstance(caught.value, DecodeError)


async def test_the_event_codec_shape_is_shared_by_both_framings(codec: RegistryCodec) -> None:
    single = AvroCodec(CATALOG)
    for event_codec in (codec, single):
        data = await event_codec.serialize("orders.requested", "OrderRequested", SAMPLES["OrderRequested"])
        assert (
            await event_codec.deserialize("orders.requested", data, "OrderRequested")
            == SAMPLES["OrderRequested"]
        )


async def test_a_new_subject_gets_the_history_oldest_first_then_the_current_version(
    codec: RegistryCodec, registry: tuple[FakeRegistry, str]
) -> None:
    fake, _ = registry
    registered = await codec.register_record(TOPIC, "OrderRequested")
    versions = [*CATALOG.history("OrderRequested"), CATALOG.current("OrderRequested")]
    assert [version for version, _ in registered] == versions
    texts = [json.loads(fake.schemas[i]) for i in fake.subjects[f"{TOPIC}-value"]]
    distinct = [v.schema for n, v in enumerate(versions) if v.schema not in [w.schema for w in versions[:n]]]
    assert texts == distinct
    assert fake.compatibility == {f"{TOPIC}-value": "BACKWARD"}


async def test_a_subject_that_holds_versions_gets_only_the_current_one(
    codec: RegistryCodec, registry: tuple[FakeRegistry, str]
) -> None:
    _, url = registry
    oldest = CATALOG.history("OrderRequested")[0]
    async with SchemaRegistryClient(url) as client:
        await client.register(f"{TOPIC}-value", oldest.schema_text)
    registered = await codec.register_record(TOPIC, "OrderRequested")
    assert [version for version, _ in registered] == [CATALOG.current("OrderRequested")]


async def test_a_subject_rule_at_least_as_strict_as_backward_is_kept(
    codec: RegistryCodec, registry: tuple[FakeRegistry, str]
) -> None:
    fake, _ = registry
    fake.compatibility[f"{TOPIC}-value"] = "FULL_TRANSITIVE"
    fake.compatibility["other-value"] = "NONE"
    await codec.register_record(TOPIC, "WorkerHealth")
    await codec.register_record("other", "WorkerHealth")
    assert fake.compatibility == {f"{TOPIC}-value": "FULL_TRANSITIVE", "other-value": "BACKWARD"}


async def test_a_refused_schema_is_an_incompatibility_error_naming_the_subject(
    codec: RegistryCodec, registry: tuple[FakeRegistry, str]
) -> None:
    fake, _ = registry
    fake.refuse = True
    with pytest.raises(SchemaIncompatibleError) as caught:
        await codec.register_record(TOPIC, "WorkerHealth")
    assert caught.value.subject == f"{TOPIC}-value"
    assert f"{TOPIC}-value" in str(caught.value)
    assert "incompatible" in caught.value.reason
