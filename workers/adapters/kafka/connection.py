"""How every aiokafka client of the project reaches the brokers: security settings from :class:`Settings`.

:func:`kafka_client_kwargs` returns only the security part; callers add ``bootstrap_servers`` (and their own
client options) themselves::

    AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, **kafka_client_kwargs(settings))

The same keywords are accepted by ``AIOKafkaProducer``, ``AIOKafkaConsumer`` and ``AIOKafkaAdminClient``.
"""

from __future__ import annotations

import ssl

from workers.settings import Settings, SettingsError


def kafka_client_kwargs(settings: Settings) -> dict[str, object]:
    """aiokafka keyword arguments for ``KAFKA_SECURITY_PROTOCOL`` / ``KAFKA_SASL_*``.

    - ``PLAINTEXT``: only ``security_protocol``.
    - ``SSL`` / ``SASL_SSL``: an ``ssl_context`` that verifies the brokers against the system's CAs.
    - ``SASL_PLAINTEXT`` / ``SASL_SSL``: ``sasl_mechanism`` (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) with the
      user name and password; both are required.

    Raises :class:`SettingsError` with a one-line message when a SASL credential is missing.
    """
    protocol = settings.kafka_security_protocol
    kwargs: dict[str, object] = {"security_protocol": protocol}
    if protocol in ("SSL", "SASL_SSL"):
        kwargs["ssl_context"] = ssl.create_default_context()
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
