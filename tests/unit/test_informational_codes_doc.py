"""The IB codes the workers treat as notices are the ones docs/troubleshooting.md lists, and no others."""

from __future__ import annotations

import re
from pathlib import Path

from workers.ports.ibkr import INFORMATIONAL_CODES, IbError

TROUBLESHOOTING = Path(__file__).resolve().parents[2] / "docs" / "troubleshooting.md"


def documented_codes(text: str) -> set[int]:
    """The codes in the parenthesis after "informational codes", ranges (``2100–2199``) expanded."""
    match = re.search(r"informational codes\s*\(([^)]*)\)", text)
    assert match, "docs/troubleshooting.md no longer lists the informational codes"
    codes: set[int] = set()
    for part in match.group(1).split(","):
        low, _, high = part.strip().partition("–")
        codes.update(range(int(low), int(high or low) + 1))
    return codes


def test_the_troubleshooting_page_lists_exactly_the_informational_codes() -> None:
    assert documented_codes(TROUBLESHOOTING.read_text(encoding="utf-8")) == set(INFORMATIONAL_CODES)


def test_a_documented_range_is_read_as_every_code_in_it() -> None:
    assert documented_codes("the informational codes (202, 2100–2102): ...") == {202, 2100, 2101, 2102}


def test_every_21xx_code_is_a_notice_and_an_order_rejection_is_not() -> None:
    assert IbError(-1, 2176, "a warning").informational
    assert IbError(-1, 1102, "restored").informational
    assert not IbError(7, 201, "Order rejected").informational
    assert not IbError(7, 10243, "Fractional-sized order cannot be placed").informational
