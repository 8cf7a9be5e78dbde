"""docs/events.md is exactly what ``python -m workers.docs_gen`` prints, and it covers the whole contract."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from workers import docs_gen
from workers.adapters.avro import SchemaCatalog
from workers.adapters.kafka.topics import topic_specs
from workers.settings import TopicNames

ROOT = Path(__file__).resolve().parents[2]
EVENTS_DOC = ROOT / "docs" / "events.md"
REGENERATE = "regenerate it: python -m workers.docs_gen > docs/events.md"


@pytest.fixture(scope="module")
def page() -> str:
    return docs_gen.render()


def test_committed_events_doc_equals_the_generator_output(page: str) -> None:
    committed = EVENTS_DOC.read_text(encoding="utf-8")
    assert committed == page, f"docs/events.md is stale: {REGENERATE}"


def test_module_entrypoint_prints_the_page(page: str) -> None:
    result = subprocess.run([sys.executable, "-m", "workers.docs_gen"], capture_output=True, text=True,
                            cwd=ROOT, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == page


def test_every_topic_of_the_contract_has_a_row(page: str) -> None:
    documented = [topic.attribute for topic in docs_gen.TOPICS]
    assert sorted(documented) == sorted(docs_gen.topic_attributes())
    names = TopicNames()
    for attribute in documented:
        assert f"| `{getattr(names, attribute)}` | `TOPIC_{attribute.upper()}` |" in page


def test_topic_table_shows_the_cleanup_policy_the_topics_command_creates(page: str) -> None:
    compacted = {spec.name for spec in topic_specs(TopicNames())
                 if spec.configs.get("cleanup.policy") == "compact"}
    assert compacted == {"positions.updated", "instruments.updated"}
    rows = {line.split(" | ")[0].strip("| `"): line for line in page.splitlines() if line.startswith("| `")}
    for name in compacted:
        assert "| compacted, " in rows[name]
    assert "delete, kept 90 days" in rows["orders.requested.dlq"]
    for spec in topic_specs(TopicNames()):
        assert f"`max.message.bytes={spec.configs['max.message.bytes']}`" in rows[spec.name]


def test_every_record_and_every_field_is_documented(page: str) -> None:
    catalog = SchemaCatalog()
    records = catalog.records()
    assert len(records) == 8
    for fullname in records:
        version = catalog.current(fullname)
        assert f"### {version.short_name}\n" in page
        assert f"- full name: `{fullname}`" in page
        assert version.fingerprint.hex(" ") in page
        for field in version.schema["fields"]:
            assert f"| `{field['name']}` |" in page, f"{fullname}.{field['name']} missing"


def test_every_topic_record_exists_in_the_schemas() -> None:
    catalog = SchemaCatalog()
    short_names = {catalog.current(name).short_name for name in catalog.records()}
    on_topics = {topic.record for topic in docs_gen.TOPICS if topic.record is not None}
    assert on_topics == short_names


def test_types_and_defaults_are_rendered_readably(page: str) -> None:
    assert "| `quantity` | `decimal(20, 8)` | required |" in page
    assert "| `limit_price` | `decimal(20, 8)` or `null` | `null` |" in page
    assert "| `time_in_force` | enum `TimeInForce` | `\"DAY\"` |" in page
    assert "| `created_at` | `timestamp-micros` | required |" in page
    assert "| `Side` | `BUY`, `SELL` |" in page


def test_a_pipe_in_a_doc_does_not_break_the_table() -> None:
    assert docs_gen._cell("a | b\n  c") == "a \\| b c"
