"""A small async client for the two Confluent Schema Registry endpoints the codec needs."""

from __future__ import annotations

from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from workers.adapters.avro.errors import RegistryError, SchemaNotFoundError

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
# The registry's error code for "schema not found" (HTTP 404 is also used for unknown subjects).
SCHEMA_NOT_FOUND = 40403


class SchemaRegistryClient:
    """Register schemas and fetch them by id over the registry's REST API."""

    def __init__(self, url: str, *, timeout: float = 10.0, http: httpx.AsyncClient | None = None) -> None:
        self.url = url.rstrip("/")
        self._own_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(timeout=timeout)

    async def register(self, subject: str, schema: str) -> int:
        """The id of ``schema`` (Avro JSON text) under ``subject``, registering it if new."""
        body = await self._request(
            "POST", f"/subjects/{quote(subject, safe='')}/versions", json={"schema": schema}
        )
        schema_id = body.get("id")
        if not isinstance(schema_id, int) or isinstance(schema_id, bool):
            raise RegistryError(f"registry answered without an id: {body!r}")
        return schema_id

    async def schema(self, schema_id: int) -> str:
        """The schema text with id ``schema_id``; raises :class:`SchemaNotFoundError` if there is none."""
        body = await self._request("GET", f"/schemas/ids/{schema_id}")
        text = body.get("schema")
        if not isinstance(text, str):
            raise RegistryError(f"registry answered without a schema: {body!r}")
        return text

    async def _request(self, method: str, path: str, json: Any = None) -> dict[str, Any]:
        headers = {"Accept": CONTENT_TYPE}
        if json is not None:
            headers["Content-Type"] = CONTENT_TYPE
        try:
            response = await self._http.request(method, self.url + path, json=json, headers=headers)
        except httpx.HTTPError as error:
            raise RegistryError(f"{method} {path}: {type(error).__name__}: {error}") from error
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise RegistryError(f"{method} {path}: HTTP {response.status_code}, not a JSON object")
        if response.status_code == 404 and body.get("error_code") == SCHEMA_NOT_FOUND:
            raise SchemaNotFoundError(f"{method} {path}: {body.get('message', 'schema not found')}")
        if response.is_error:
            raise RegistryError(f"{method} {path}: HTTP {response.status_code}: {body.get('message', body)}")
        return body

    async def aclose(self) -> None:
        """Close the HTTP connections (only those this client opened itself)."""
        if self._own_http:
            await self._http.aclose()

    async def __aenter__(self) -> SchemaRegistryClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
