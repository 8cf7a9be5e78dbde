"""Reading a universe file (YAML or JSON) into universe entries."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from workers.domain.universe import UniverseEntry, UniverseError, entries_from_document

_BOOL_TAG = "tag:yaml.org,2002:bool"
# A universe of tens of thousands of entries is a few MiB; a larger file is refused before it is read.
MAX_UNIVERSE_FILE_BYTES = 16 * 1024 * 1024


class _UniverseLoader(yaml.SafeLoader):
    """Safe YAML without implicit booleans: tickers such as ON, Y or NO stay text."""


_UniverseLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def parse_universe(text: str, *, json_only: bool = False) -> list[UniverseEntry]:
    """The entries of a universe file's text; raises :class:`UniverseError`."""
    try:
        document: Any = json.loads(text) if json_only else yaml.load(text, Loader=_UniverseLoader)
    except (ValueError, yaml.YAMLError) as exc:
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UniverseError(f"not valid {'JSON' if json_only else 'YAML'}: {first_line}") from None
    return entries_from_document(document)


def read_universe_file(path: str | Path) -> list[UniverseEntry]:
    """The entries of universe file ``path`` (``.json``: JSON; otherwise YAML, which includes JSON).

    Raises :class:`UniverseError` (with the file name) for an unreadable or invalid file.
    """
    file = Path(path)
    try:
        size = file.stat().st_size
        if size > MAX_UNIVERSE_FILE_BYTES:
            raise UniverseError(f"{file}: {size} bytes, more than {MAX_UNIVERSE_FILE_BYTES}")
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise UniverseError(f"{file}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise UniverseError(f"{file}: not UTF-8 text (byte {exc.start})") from None
    try:
        return parse_universe(text, json_only=file.suffix.lower() == ".json")
    except UniverseError as exc:
        raise UniverseError(f"{file}: {exc}") from None
