"""docs/settings.md is exactly what ``python -m workers.docs_gen settings`` prints, and it covers every setting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import Field

from workers import docs_gen
from workers.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SETTINGS_DOC = ROOT / "docs" / "settings.md"
REGENERATE = "regenerate it: python -m workers.docs_gen settings > docs/settings.md"


@pytest.fixture(scope="module")
def page() -> str:
    return docs_gen.render_settings()


def rows(page: str) -> dict[str, str]:
    """Table rows by variable name."""
    return {line.split(" | ")[0].strip("| `"): line for line in page.splitlines() if line.startswith("| `")}


def test_committed_settings_doc_equals_the_generator_output(page: str) -> None:
    committed = SETTINGS_DOC.read_text(encoding="utf-8")
    assert committed == page, f"docs/settings.md is stale: {REGENERATE}"


def test_module_entrypoint_prints_the_settings_page(page: str) -> None:
    result = subprocess.run([sys.executable, "-m", "workers.docs_gen", "settings"], capture_output=True,
                            text=True, cwd=ROOT, check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == page


def test_every_setting_has_one_row_and_a_description(page: str) -> None:
    documented = rows(page)
    assert sorted(documented) == sorted(name.upper() for name in Settings.model_fields)
    for name, field in Settings.model_fields.items():
        assert field.description, f"{name} has no docstring in workers/settings.py"
        assert page.count(f"| `{name.upper()}` |") == 1


def test_every_setting_is_in_a_named_section() -> None:
    sections = docs_gen.settings_sections()
    assert docs_gen.OTHER_SETTINGS not in sections, sections.get(docs_gen.OTHER_SETTINGS)
    assert sorted(name for names in sections.values() for name in names) == sorted(Settings.model_fields)


def test_types_bounds_and_defaults_are_rendered_readably(page: str) -> None:
    by_name = rows(page)
    assert "| one of `paper`, `live` | `paper` |" in by_name["IBKR_TRADING_MODE"]
    assert "| integer ≥ 1000, ≤ 300000 | `10000` |" in by_name["KAFKA_SESSION_TIMEOUT_MS"]
    assert "| number > 0 | `5` |" in by_name["IBKR_ORDER_ANSWER_TIMEOUT"]
    assert "| `true` / `false` | `false` |" in by_name["KILL_SWITCH"]
    assert "| decimal > 0 | unset |" in by_name["MAX_ORDER_NOTIONAL"]
    assert "| text | empty |" in by_name["IBKR_ACCOUNTS"]
    assert "| text (secret) | unset |" in by_name["KAFKA_SASL_PASSWORD"]
    assert "| text (secret) | `postgresql://localhost:5432/ibkr_workers` |" in by_name["DATABASE_URL"]


def test_a_setting_outside_every_prefix_gets_a_section_of_its_own() -> None:
    class Wider(Settings):
        quote_staleness: float = Field(default=0.5, gt=0, description="Oldest quote trusted, in seconds.")

    sections = docs_gen.settings_sections(Wider)
    assert sections[docs_gen.OTHER_SETTINGS] == ["quote_staleness"]
    assert ("| `QUOTE_STALENESS` | number > 0 | `0.5` | Oldest quote trusted, in seconds. |"
            in docs_gen.render_settings(Wider))


def test_live_trading_refusal_is_stated_on_the_page(page: str) -> None:
    assert "`live` is refused unless `IBKR_LIVE_CONFIRM=yes`" in page
