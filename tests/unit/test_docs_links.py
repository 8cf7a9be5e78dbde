"""The README and the documents link only to files of the repository, by headings that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted([ROOT / "README.md", ROOT / "CHANGELOG.md", ROOT / "bench" / "NOTES.md",
                *(ROOT / "docs").glob("*.md")])
# [text](target) with a relative target: no scheme, not a bare anchor.
RELATIVE_LINK = re.compile(r"\]\((?![a-z][a-z0-9+.-]*:)([^)#\s]*)(?:#([\w-]+))?\)")
CODE_BLOCK = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def anchors(text: str) -> set[str]:
    """GitHub's anchors for the page's headings (outside code blocks)."""
    headings = re.findall(r"^#+ (.+)$", CODE_BLOCK.sub("", text), re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading).strip().lower().replace(" ", "-") for heading in headings}


def links(page: Path) -> list[tuple[str, str | None]]:
    return [(target, anchor or None) for target, anchor in RELATIVE_LINK.findall(page.read_text(encoding="utf-8"))]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(ROOT)))
def test_every_relative_link_reaches_a_file_of_the_repository_and_an_existing_heading(page: Path) -> None:
    for target, anchor in links(page):
        linked = (page.parent / target).resolve() if target else page
        assert linked.is_relative_to(ROOT), f"{page.name} links outside the repository: {target}"
        assert linked.exists(), f"{page.name} links to a missing file: {target}"
        if anchor is not None:
            assert anchor in anchors(linked.read_text(encoding="utf-8")), f"{page.name}: #{anchor} not in {target}"


def test_the_readme_links_to_every_document() -> None:
    linked = {target for target, _ in links(ROOT / "README.md")}
    documents = {f"docs/{path.name}" for path in (ROOT / "docs").glob("*.md")}
    assert documents <= linked, documents - linked


def test_deployment_doc_leaves_the_settings_table_to_the_generated_reference() -> None:
    text = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    assert "](settings.md)" in text
    assert "| variable |" not in text  # one table of settings: docs/settings.md, generated


def test_links_are_read_with_their_anchors_and_headings_outside_code(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("The contract is [there](../shared/design/contract.md#topics), see [us](#a-heading) and "
                    "[the web](https://example.com/x.md).\n\n## A heading\n\n```sh\n# not a heading\n```\n",
                    encoding="utf-8")
    assert links(page) == [("../shared/design/contract.md", "topics"), ("", "a-heading")]
    assert anchors(page.read_text(encoding="utf-8")) == {"a-heading"}
