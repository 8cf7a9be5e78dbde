"""A small async client for the Confluent Schema Registry endpoints the codec needs.

Spoken the same way to Confluent Schema Registry, Karapace and Apicurio Registry's ``/apis/ccompat/v7``.
Where they differ, the client reads what they share: an incompatible schema is HTTP 409 (Apicurio's
``error_code`` there is 0, Confluent's 409), an invalid one HTTP 422, an unknown subject or schema HTTP 404.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx

from workers.adapters.avro.errors import RegistryError, SchemaIncompatibleError, SchemaNotFoundError

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"
# The registry's error code for "schema not found" (HTTP 404 is also used for unknown subjects).
SCHEMA_NOT_FOUND = 40403
INCOMPATIBLE = 409
INVALID_SCHEMA = 422


class _NotFound(RegistryError):
    """HTTP 404 for something other than a schema id: an unknown subject, or a subject without its own config."""


class SchemaRegistryClient:
    """Register schemas, fetch them by id, and read or set a subject's compatibility over the REST API."""

    def __init__(self, url: str, *, timeout: float = 10.0, http: httpx.AsyncClient | None = None) -> None:
        self.url = url.rstrip("/")
        self._own_http = http is None
        self._http = http if http is not None else httpx.AsyncClient(timeout=timeout)

    async def register(self, subject: str, schema: str) -> int:
        """The id of ``schema`` (Avro JSON text) under ``subject``, registering it if new.

        Raises :class:`SchemaIncompatibleError` when the registry refuses it under the subject's rule.
        """
        path = f"/subjects/{quote(subject, safe='')}/versions"
        body = await self._request("POST", path, json={"schema": schema}, subject=subject)
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

    async def versions(self, subject: str) -> list[int]:
        """The version numbers registered under ``subject``, oldest first; empty for an unknown subject."""
        try:
            body = await self._request_any("GET", f"/subjects/{quote(subject, safe='')}/versions")
        except _NotFound:
            return []
        if not isinstance(body, list) or not all(isinstance(v, int) for v in body):
            raise RegistryError(f"GET versions of {subject}: not a list of version numbers: {body!r}")
        return sorted(body)

    async def compatibility(self, subject: str) -> str | None:
        """The compatibility rule that applies to ``subject`` (its own, else the registry's), if any is said."""
        try:
            body = await self._request("GET", f"/config/{quote(subject, safe='')}")
        except _NotFound:
            return None
        level = body.get("compatibilityLevel", body.get("compatibility"))
        return level if isinstance(level, str) else None

    async def set_compatibility(self, subject: str, level: str) -> None:
        """Give ``subject`` the compatibility rule ``level`` (``BACKWARD``, ``FULL`` ...)."""
        await self._request("PUT", f"/config/{quote(subject, safe='')}", json={"compatibility": level})

    async def _request(self, method: str, path: str, json: Any = None, subject: str | None = None) -> dict[str, Any]:
        body = await self._request_any(method, path, json, subject)
        if not isinstance(body, dict):
            raise RegistryError(f"{method} {path}: not a JSON object: {body!r}")
        return body

    async def _request_any(self, method: str, path: str, json: Any = None, subject: str | None = None) -> Any:
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
        if not response.is_error:
            if body is None:
                raise RegistryError(f"{method} {path}: HTTP {response.status_code}, not JSON")
            return body
        message = body.get("message", body) if isinstance(body, dict) else f"HTTP {response.status_code}"
        code = body.get("error_code") if isinstance(body, dict) else None
        if response.status_code == 404:
            if code == SCHEMA_NOT_FOUND and path.startswith("/schemas/ids/"):
                raise SchemaNotFoundError(f"{method} {path}: {message}")
            raise _NotFound(f"{method} {path}: {message}")
        if subject is not None and response.status_code in (INCOMPATIBLE, INVALID_SCHEMA):
            raise SchemaIncompatibleError(subject, str(message))
        raise RegistryError(f"{method} {path}: HTTP {response.status_code}: {message}")

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
