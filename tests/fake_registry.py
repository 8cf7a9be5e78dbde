"""An in-memory Confluent schema registry (the REST endpoints the codec uses) served over real HTTP.

For unit tests only: it checks no compatibility. The integration tests run a real registry.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FakeRegistry:
    """The REST endpoints the codec uses, kept in memory; counts every request it serves."""

    schemas: dict[int, str] = field(default_factory=dict)
    subjects: dict[str, list[int]] = field(default_factory=dict)
    compatibility: dict[str, str] = field(default_factory=dict)
    refuse: bool = False
    """Answer every registration as a real registry answers an incompatible schema (HTTP 409)."""
    requests: list[tuple[str, str]] = field(default_factory=list)

    def handle(self, method: str, path: str, body: bytes) -> tuple[int, Any]:
        self.requests.append((method, path))
        if method == "POST" and (match := re.fullmatch(r"/subjects/([^/]+)/versions", path)):
            if self.refuse:
                return 409, {"error_code": 409, "message": "Schema being registered is incompatible"}
            text = json.loads(body)["schema"]
            json.loads(text)  # a real registry refuses text that is not JSON
            schema_id = next((i for i, known in self.schemas.items() if known == text), len(self.schemas) + 1)
            self.schemas[schema_id] = text
            versions = self.subjects.setdefault(match.group(1), [])
            if schema_id not in versions:
                versions.append(schema_id)
            return 200, {"id": schema_id}
        if method == "GET" and (match := re.fullmatch(r"/subjects/([^/]+)/versions", path)):
            if match.group(1) not in self.subjects:
                return 404, {"error_code": 40401, "message": "Subject not found"}
            return 200, list(range(1, len(self.subjects[match.group(1)]) + 1))
        if match := re.fullmatch(r"/config/([^/]+)", path):
            if method == "PUT":
                self.compatibility[match.group(1)] = json.loads(body)["compatibility"]
                return 200, {"compatibility": self.compatibility[match.group(1)]}
            if match.group(1) not in self.compatibility:
                return 404, {"error_code": 40408, "message": "Subject does not have subject-level compatibility"}
            return 200, {"compatibilityLevel": self.compatibility[match.group(1)]}
        if method == "GET" and (match := re.fullmatch(r"/schemas/ids/(\d+)", path)):
            text = self.schemas.get(int(match.group(1)))
            if text is None:
                return 404, {"error_code": 40403, "message": "Schema not found"}
            return 200, {"schema": text}
        return 404, {"error_code": 404, "message": "HTTP 404 Not Found"}

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # HTTP/1.1 with keep-alive, just enough for httpx: one request after another on the connection.
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                request_line, *header_lines = head.decode("latin-1").split("\r\n")
                method, path, _ = request_line.split(" ", 2)
                headers = dict(line.split(": ", 1) for line in header_lines if ": " in line)
                length = int({k.lower(): v for k, v in headers.items()}.get("content-length", "0"))
                body = await reader.readexactly(length)
                status, answer = self.handle(method, path, body)
                payload = json.dumps(answer).encode()
                writer.write(
                    f"HTTP/1.1 {status} X\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\n"
                    f"Content-Length: {len(payload)}\r\n\r\n".encode()
                    + payload
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
