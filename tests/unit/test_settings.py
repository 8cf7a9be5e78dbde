"""Settings: the contract's environment variables, typed, with safe defaults and one-line errors."""

from __future__ import annotations

import secrets
import subprocess
import sys
from decimal import Decimal

import pytest

from workers.logs import forget_secrets, mask_secrets
from workers.settings import DEFAULT_IBKR_PORTS, Settings, SettingsError, load_settings

CONTRACT_VARIABLES = [
    "KAFKA_BOOTSTRAP_SERVERS", "KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISM", "KAFKA_SASL_USERNAME",
    "KAFKA_SASL_PASSWORD", "KAFKA_CONSUMER_GROUP", "SCHEMA_REGISTRY_URL", "DATABASE_URL", "IBKR_HOST",
    "IBKR_PORT", "IBKR_CLIENT_ID", "IBKR_TRADING_MODE", "IBKR_LIVE_CONFIRM", "IBKR_ACCOUNTS",
    "IBKR_READONLY", "HEALTH_PORT", "LOG_LEVEL",
]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [*CONTRACT_VARIABLES, "IBKR_API"]:
        monkeypatch.delenv(name, raising=False)


def test_defaults_are_paper_gateway_and_hold_no_account() -> None:
    settings = load_settings()
    assert settings.ibkr_trading_mode == "paper"
    assert settings.ibkr_effective_port == 4002
    assert settings.ibkr_host == "127.0.0.1"
    assert settings.kafka_bootstrap_servers == "localhost:9092"
    assert settings.allowed_accounts == frozenset()
    assert settings.kafka_sasl_username is None and settings.kafka_sasl_password is None
    assert "@" not in settings.database_dsn  # no user name or password in the default URL


def test_every_contract_variable_is_a_setting() -> None:
    fields = {name.upper() for name in Settings.model_fields}
    assert set(CONTRACT_VARIABLES) <= fields


def test_live_mode_without_confirmation_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IBKR_TRADING_MODE", "live")
    with pytest.raises(SettingsError, match="IBKR_LIVE_CONFIRM=yes"):
        load_settings()
    monkeypatch.setenv("IBKR_LIVE_CONFIRM", "no")
    with pytest.raises(SettingsError):
        load_settings()


def test_live_mode_with_confirmation_uses_the_live_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IBKR_TRADING_MODE", "live")
    monkeypatch.setenv("IBKR_LIVE_CONFIRM", "yes")
    assert load_settings().ibkr_effective_port == 4001


@pytest.mark.parametrize("bad_port", ["0", "65536", "-1", "port"])
def test_bad_port_is_refused_naming_the_variable(monkeypatch: pytest.MonkeyPatch, bad_port: str) -> None:
    monkeypatch.setenv("IBKR_PORT", bad_port)
    with pytest.raises(SettingsError, match="IBKR_PORT") as caught:
        load_settings()
    assert "\n" not in str(caught.value)


def test_secrets_absent_from_repr_and_str(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("KAFKA_SASL_USERNAME", "svc-user")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "s3cr3t-kafka")
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:s3cr3t-db@db:5432/x")
    settings = load_settings()
    for text in (repr(settings), str(settings), str(settings.model_dump())):
        assert "s3cr3t-kafka" not in text
        assert "s3cr3t-db" not in text
    assert settings.kafka_sasl_password is not None
    assert settings.kafka_sasl_password.get_secret_value() == "s3cr3t-kafka"
    assert settings.database_dsn.endswith("@db:5432/x")


def test_loaded_settings_mask_every_secret_value_and_the_database_password(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_SASL_MECHANISM", "PLAIN")
    monkeypatch.setenv("KAFKA_SASL_PASSWORD", "kafka-pw-" + "7f3a")
    monkeypatch.setenv("DATABASE_URL", "postgresql://app:db%pw-" + "91c2@db:5432/x")
    try:
        settings = load_settings()
        assert set(settings.secret_values()) == {"kafka-pw-7f3a", "postgresql://app:db%pw-91c2@db:5432/x"}
        line = 'SASL failed for kafka-pw-7f3a; invalid percent-encoded token: "db%pw-91c2"'
        assert mask_secrets(line) == 'SASL failed for **********; invalid percent-encoded token: "**********"'
    finally:
        forget_secrets()


def test_accounts_allowlist_is_split_and_trimmed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IBKR_ACCOUNTS", " DU111 ,DU222,, ")
    assert load_settings().allowed_accounts == frozenset({"DU111", "DU222"})


@pytest.mark.parametrize(("api", "mode", "port"), [(a, m, p) for (a, m), p in DEFAULT_IBKR_PORTS.items()])
def test_port_follows_api_and_mode_when_unset(monkeypatch: pytest.MonkeyPatch, api: str, mode: str,
                                              port: int) -> None:
    monkeypatch.setenv("IBKR_API", api)
    monkeypatch.setenv("IBKR_TRADING_MODE", mode)
    monkeypatch.setenv("IBKR_LIVE_CONFIRM", "yes")
    assert load_settings().ibkr_effective_port == port
    monkeypatch.setenv("IBKR_PORT", "4100")
    assert load_settings().ibkr_effective_port == 4100


def test_topic_names_default_to_the_contract_and_can_be_overridden(monkeypatch: pytest.MonkeyPatch) -> None:
    topics = load_settings().topics
    assert topics.orders_requested == "orders.requested"
    assert topics.fills_executed == "fills.executed"
    assert topics.orders_requested_dlq == "orders.requested.dlq"
    monkeypatch.setenv("TOPIC_FILLS_EXECUTED", "custom.fills")
    assert load_settings().topics.fills_executed == "custom.fills"


def test_cli_exits_non_zero_with_one_line_on_bad_configuration() -> None:
    env = {"PATH": "/usr/bin:/bin", "IBKR_TRADING_MODE": "live"}
    done = subprocess.run([sys.executable, "-m", "workers", "migrate"], env=env, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "IBKR_TRADING_MODE" in lines[0] or "IBKR_LIVE_CONFIRM" in lines[0]


@pytest.mark.parametrize("off", ["none", "", "OFF"])
def test_none_turns_off_a_risk_limit_that_is_on_by_default(off: str) -> None:
    settings = load_settings(database_url="postgresql://u@h/d", price_band=off, max_order_age=off)

    assert (settings.price_band, settings.max_order_age) == (None, None)
    assert load_settings(database_url="postgresql://u@h/d").price_band == Decimal("0.10")


def test_per_instrument_risk_limits_are_read_from_json_and_refuse_unknown_keys(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RISK_LIMITS_BY_INSTRUMENT", '{"STK:AAPL:USD": {"max_position": 200, "price_band": 0.05}}')
    settings = load_settings(database_url="postgresql://u@h/d")
    limits = settings.risk_limits_by_instrument["STK:AAPL:USD"]
    assert (limits.max_position, limits.price_band, limits.max_quantity) == (Decimal(200), Decimal("0.05"), None)
    monkeypatch.setenv("RISK_LIMITS_BY_INSTRUMENT", '{"X": {"max_postion": 1}}')  # a mistyped key
    with pytest.raises(SettingsError, match="RISK_LIMITS_BY_INSTRUMENT"):
        load_settings(database_url="postgresql://u@h/d")


def test_database_password_apart_from_the_url_reaches_libpq_unencoded_and_masked(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from psycopg.conninfo import conninfo_to_dict

    password = "p%zz@/:'\\" + secrets.token_hex(3)  # every character a URL or a keyword string trips over
    monkeypatch.setenv("DATABASE_PASSWORD", password)
    for url in ("postgresql://app@db:5432/x?sslmode=require", "host=db dbname=x user=app"):
        monkeypatch.setenv("DATABASE_URL", url)
        try:
            settings = load_settings()
            assert conninfo_to_dict(settings.database_dsn)["password"] == password
            assert password not in repr(settings)
            assert password not in mask_secrets(settings.database_dsn)
        finally:
            forget_secrets()


def test_an_at_sign_after_the_host_is_no_password_in_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_PASSWORD", "given-" + "apart")
    monkeypatch.setenv("DATABASE_URL", "postgresql://app@db:5432/x?application_name=orders@desk:1")
    try:
        assert load_settings().database_dsn.endswith("application_name=orders@desk:1&password=given-apart")
    finally:
        forget_secrets()


@pytest.mark.parametrize("url", ["postgresql://app:other@db/x", "postgresql://app@db/x?password=other",
                                 "host=db password=other"])
def test_a_database_password_in_both_places_is_refused(monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    monkeypatch.setenv("DATABASE_PASSWORD", "given-" + "apart")
    monkeypatch.setenv("DATABASE_URL", url)
    with pytest.raises(SettingsError, match="DATABASE_PASSWORD is set and DATABASE_URL holds a password"):
        load_settings()


def test_schema_registry_credentials_stay_out_of_repr_messages_and_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SCHEMA_REGISTRY_URL", "https://svc-user:" + "reg-pw-5d1e" + "@registry.example:8081/")
    try:
        settings = load_settings()
        assert "reg-pw-5d1e" not in repr(settings) and "reg-pw-5d1e" not in str(settings.model_dump())
        assert settings.schema_registry == "https://svc-user:reg-pw-5d1e@registry.example:8081/"
        assert settings.schema_registry_shown == "https://registry.example:8081/"
        assert mask_secrets("401 for svc-user:reg-pw-5d1e") == "401 for svc-user:**********"
    finally:
        forget_secrets()
