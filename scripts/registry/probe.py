#!/usr/bin/env python3
"""Is a Confluent-compatible schema registry serving at URL? Used by ``scripts/dev-services``.

Standard library only. Ready means ``GET URL/subjects`` answers 200 with a JSON list: the API the workers
use answers, and the registry's storage is open.

    probe.py URL            one attempt; exit 0 ready (prints the number of subjects), 1 not ready
    probe.py URL --tcp      only: does anything accept a TCP connection at URL's host and port?
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import urllib.error
import urllib.request
from urllib.parse import urlsplit


def subjects(url: str) -> int:
    """The number of subjects the registry at ``url`` holds; raises OSError or ValueError if not ready."""
    request = urllib.request.Request(url.rstrip("/") + "/subjects",
                                     headers={"Accept": "application/vnd.schemaregistry.v1+json"})
    with urllib.request.urlopen(request, timeout=3) as response:  # noqa: S310 (a URL we built)
        body = json.load(response)
    if not isinstance(body, list):
        raise ValueError(f"GET /subjects answered {body!r}, not a list")
    return len(body)


def tcp_open(url: str) -> bool:
    """Does anything accept a TCP connection at ``url``'s host and port?"""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=2):
            return True
    except OSError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--tcp", action="store_true")
    args = parser.parse_args()
    if args.tcp:
        if tcp_open(args.url):
            print("tcp-open")
            return 0
        return 1
    try:
        print(subjects(args.url))
    except (OSError, ValueError, urllib.error.URLError):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
