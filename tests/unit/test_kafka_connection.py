"""Kafka security settings become aiokafka keywords, and a failed bootstrap becomes one line naming a setting."""

from __future__ import annotations

import secrets
import socket
from pathlib import Path

import pytest

from workers.adapters.kafka.connection import explain_unreachable, kafka_client_kwargs
from workers.settings import SettingsError, load_settings

SASL_SSL = {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "SCRAM-SHA-512",
            "kafka_sasl_username": "svc", "kafka_sasl_password": "pw"}


def test_a_missing_ca_file_is_a_configuration_error_naming_it(tmp_path: Path) -> None:
    settings = load_settings(**SASL_SSL, kafka_ssl_cafile=str(tmp_path / "absent.pem"))
    with pytest.raises(SettingsError, match="KAFKA_SSL_CAFILE"):
        kafka_client_kwargs(settings)


def test_a_ca_file_that_is_not_pem_is_a_configuration_error_naming_it(tmp_path: Path) -> None:
    garbage = tmp_path / "ca.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(SettingsError, match="KAFKA_SSL_CAFILE"):
        kafka_client_kwargs(load_settings(**SASL_SSL, kafka_ssl_cafile=str(garbage)))


def test_a_client_certificate_without_its_key_is_refused() -> None:
    with pytest.raises(SettingsError, match="KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE"):
        load_settings(**SASL_SSL, kafka_ssl_certfile="/etc/client.pem")


def test_an_empty_path_means_unset_and_the_system_cas_are_used() -> None:
    settings = load_settings(**SASL_SSL, kafka_ssl_cafile="", kafka_ssl_certfile=" ", kafka_ssl_keyfile="")
    assert settings.kafka_ssl_cafile is None and settings.kafka_ssl_certfile is None
    kwargs = kafka_client_kwargs(settings)
    assert kwargs["security_protocol"] == "SASL_SSL" and kwargs["sasl_plain_username"] == "svc"


def test_the_key_password_is_secret() -> None:
    key = secrets.token_hex(8)
    settings = load_settings(**SASL_SSL, kafka_ssl_key_password=key)
    assert key not in repr(settings)


async def test_nothing_listening_names_the_bootstrap_servers() -> None:
    with socket.socket() as probe:  # a port nothing listens on once this closes
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    message = await explain_unreachable(f"127.0.0.1:{port},127.0.0.1:1", {"security_protocol": "PLAINTEXT"})
    assert message.startswith(f"Kafka at 127.0.0.1:{port} (PLAINTEXT): cannot connect")
    assert "KAFKA_BOOTSTRAP_SERVERS" in message and "\n" not in message


async def test_a_bootstrap_entry_that_is_not_host_and_port_is_named() -> None:
    message = await explain_unreachable("kafka.example", {"security_protocol": "PLAINTEXT"})
    assert message == "KAFKA_BOOTSTRAP_SERVERS: 'kafka.example' is not host:port"
