"""How every aiokafka client of the project reaches the brokers: security settings from :class:`Settings`.

:func:`kafka_client_kwargs` returns only the security part; callers add ``bootstrap_servers`` (and their own
client options) themselves::

    AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, **kafka_client_kwargs(settings))

The same keywords are accepted by ``AIOKafkaProducer``, ``AIOKafkaConsumer`` and ``AIOKafkaAdminClient``.

:func:`start_kafka_client` starts one of them; when the brokers cannot be reached it raises
:class:`KafkaUnreachable`, whose message is one line naming the setting to fix (aiokafka itself only says
"Unable to bootstrap" and logs the cause).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping
from typing import Any, Protocol

from aiokafka.conn import create_conn
from aiokafka.errors import (
    KafkaConnectionError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from workers.settings import Settings, SettingsError

# How long the diagnosis of a failed bootstrap waits for one broker: a silent peer must not hang a start.
DIAGNOSIS_TIMEOUT_MS = 10_000


class KafkaUnreachable(ConnectionError):
    """No broker could be reached; the message is one line naming the setting to fix.

    A ``ConnectionError`` (an ``OSError``), which the command-line tools already report in one line.
    """


class StartableClient(Protocol):
    """An aiokafka producer, consumer or admin client."""

    async def start(self) -> None: ...


def kafka_client_kwargs(settings: Settings) -> dict[str, object]:
    """aiokafka keyword arguments for ``KAFKA_SECURITY_PROTOCOL`` / ``KAFKA_SASL_*`` / ``KAFKA_SSL_*``.

    - ``PLAINTEXT``: only ``security_protocol``.
    - ``SSL`` / ``SASL_SSL``: an ``ssl_context`` that verifies the brokers against ``KAFKA_SSL_CAFILE`` (the
      system's CAs when unset) and presents ``KAFKA_SSL_CERTFILE`` / ``KAFKA_SSL_KEYFILE`` when set.
    - ``SASL_PLAINTEXT`` / ``SASL_SSL``: ``sasl_mechanism`` (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) with the
      user name and password; both are required.

    Raises :class:`SettingsError` with a one-line message when a SASL credential is missing or a TLS file
    cannot be used.
    """
    protocol = settings.kafka_security_protocol
    kwargs: dict[str, object] = {"security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        kwargs["ssl_context"] = _ssl_context(settings)
    if protocol.startswith("SASL"):
        if not settings.kafka_sasl_mechanism:
            raise SettingsError(
                "invalid configuration: KAFKA_SASL_MECHANISM is required "
                f"with KAFKA_SECURITY_PROTOCOL={protocol}"
            )
        if not settings.kafka_sasl_username or settings.kafka_sasl_password is None:
            raise SettingsError(
                "invalid configuration: KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD are required "
                f"with KAFKA_SECURITY_PROTOCOL={protocol}"
            )
        kwargs["sasl_mechanism"] = settings.kafka_sasl_mechanism
        kwargs["sasl_plain_username"] = settings.kafka_sasl_username
        kwargs["sasl_plain_password"] = settings.kafka_sasl_password.get_secret_value()
    return kwargs


def _ssl_context(settings: Settings) -> ssl.SSLContext:
    try:
        context = ssl.create_default_context(cafile=settings.kafka_ssl_cafile)
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(f"invalid configuration: KAFKA_SSL_CAFILE: cannot use "
                            f"{settings.kafka_ssl_cafile}: {_reason(exc)}") from None
    if settings.kafka_ssl_certfile and settings.kafka_ssl_keyfile:
        secret = settings.kafka_ssl_key_password
        # Never None: OpenSSL would then ask for an encrypted key's password on the terminal and wait.
        password = secret.get_secret_value() if secret is not None else ""
        try:
            context.load_cert_chain(settings.kafka_ssl_certfile, settings.kafka_ssl_keyfile, password)
        except OSError as exc:  # a missing or unreadable file (ssl.SSLError is an OSError too)
            if isinstance(exc, ssl.SSLError):
                raise SettingsError(
                    "invalid configuration: KAFKA_SSL_CERTFILE / KAFKA_SSL_KEYFILE / KAFKA_SSL_KEY_PASSWORD: "
                    f"the client certificate and key cannot be loaded ({_reason(exc)})"
                ) from None
            raise SettingsError(
                f"invalid configuration: KAFKA_SSL_CERTFILE / KAFKA_SSL_KEYFILE: {_reason(exc)}"
            ) from None
    return context


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return str(exc.verify_message)
    if isinstance(exc, ssl.SSLError) and exc.reason:
        return str(exc.reason)
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}{f': {exc.filename}' if exc.filename else ''}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


async def start_kafka_client(client: StartableClient, bootstrap_servers: str,
                             security: Mapping[str, Any]) -> None:
    """Start ``client``; when no broker answers, raise :class:`KafkaUnreachable` saying which setting to fix."""
    try:
        await client.start()
    except KafkaConnectionError as exc:
        # Stopped here, since no caller holds a client that failed to start (it would warn "Unclosed").
        stop = getattr(client, "stop", None) or getattr(client, "close", None)
        if stop is not None:
            with contextlib.suppress(Exception):
                await stop()
        raise KafkaUnreachable(await explain_unreachable(bootstrap_servers, security)) from exc


async def explain_unreachable(bootstrap_servers: str, security: Mapping[str, Any]) -> str:
    """Connect to the first bootstrap server as a client would and say, in one line, why it fails."""
    first = bootstrap_servers.split(",", maxsplit=1)[0].strip()
    host, _, port_text = first.rpartition(":")
    if not host or not port_text.isdigit():
        return f"KAFKA_BOOTSTRAP_SERVERS: {first!r} is not host:port"
    protocol = str(security.get("security_protocol", "PLAINTEXT"))
    options = {name: value for name, value in security.items() if name in _CONN_OPTIONS}
    where = f"Kafka at {first} ({protocol})"
    try:
        conn = await asyncio.wait_for(
            create_conn(host, int(port_text), request_timeout_ms=DIAGNOSIS_TIMEOUT_MS, **options),
            DIAGNOSIS_TIMEOUT_MS / 1000 + 1)
    except ssl.SSLCertVerificationError as exc:
        return (f"{where}: the broker's certificate is not trusted ({_reason(exc)}): set KAFKA_SSL_CAFILE to "
                "the PEM file of the CA that signed it (and name the brokers as their certificate does in "
                "KAFKA_BOOTSTRAP_SERVERS)")
    except ssl.SSLError as exc:
        if "ALERT" in str(exc.reason or "").upper():
            return (f"{where}: the broker refused the TLS handshake ({_reason(exc)}): check KAFKA_SSL_CERTFILE "
                    "and KAFKA_SSL_KEYFILE (the client certificate it expects)")
        return (f"{where}: no TLS on this port ({_reason(exc)}): check KAFKA_SECURITY_PROTOCOL and "
                "KAFKA_BOOTSTRAP_SERVERS")
    except SaslAuthenticationFailed:
        return (f"{where}: SASL authentication failed for user {security.get('sasl_plain_username')!r} "
                f"({security.get('sasl_mechanism')}): check KAFKA_SASL_PASSWORD and KAFKA_SASL_USERNAME")
    except UnsupportedSaslMechanismError:
        return f"{where}: the broker does not offer {security.get('sasl_mechanism')}: check KAFKA_SASL_MECHANISM"
    except KafkaConnectionError:
        # A broker drops a connection whose first bytes are not what its listener expects (a plaintext
        # request on a TLS port, for one).
        return (f"{where}: the broker closed the connection: check KAFKA_SECURITY_PROTOCOL (the port may "
                "expect TLS or SASL) and KAFKA_BOOTSTRAP_SERVERS")
    except (TimeoutError, OSError) as exc:
        return (f"{where}: cannot connect ({_reason(exc) if isinstance(exc, OSError) else 'timed out'}): "
                "check KAFKA_BOOTSTRAP_SERVERS and that the brokers run")
    except Exception as exc:  # anything else aiokafka raises: still one line
        return f"{where}: {type(exc).__name__}: {_reason(exc)}"
    conn.close()
    return (f"{where}: the first broker answers now, but the client could not bootstrap: check "
            "KAFKA_BOOTSTRAP_SERVERS (every broker listed, and those they advertise, must be reachable)")


_CONN_OPTIONS = frozenset({"security_protocol", "ssl_context", "sasl_mechanism", "sasl_plain_username",
                           "sasl_plain_password"})
