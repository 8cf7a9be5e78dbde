"""The one typed settings object, built from the environment once at start.

Nothing else in the project reads ``os.environ``: entrypoints call :func:`load_settings` and pass the
result (or parts of it) to whatever they build.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Literal
from urllib.parse import quote

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from workers.logs import register_secrets

TradingMode = Literal["paper", "live"]
IbkrApi = Literal["gateway", "tws"]
MarketDataType = Literal["live", "frozen", "delayed", "delayed-frozen"]
TradingStateName = Literal["ACTIVE", "REDUCING", "HALTED"]

# (api, mode) -> the port IB Gateway / TWS listen on by default.
DEFAULT_IBKR_PORTS: dict[tuple[IbkrApi, TradingMode], int] = {
    ("gateway", "paper"): 4002,
    ("gateway", "live"): 4001,
    ("tws", "paper"): 7497,
    ("tws", "live"): 7496,
}


class SettingsError(Exception):
    """A configuration value is missing or wrong; the message names the variable."""


@dataclass(frozen=True)
class TopicNames:
    """Kafka topic names: the contract's defaults, each overridable by a ``TOPIC_*`` variable."""

    orders_requested: str = "orders.requested"
    orders_cancel_requested: str = "orders.cancel-requested"
    orders_modify_requested: str = "orders.modify-requested"
    orders_status: str = "orders.status"
    fills_executed: str = "fills.executed"
    positions_updated: str = "positions.updated"
    instruments_updated: str = "instruments.updated"
    workers_health: str = "workers.health"
    orders_requested_dlq: str = "orders.requested.dlq"


class InstrumentRiskLimits(BaseModel):
    """The limits of one instrument (each optional)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_quantity: Decimal | None = Field(default=None, gt=0)
    max_notional: Decimal | None = Field(default=None, gt=0)
    max_position: Decimal | None = Field(default=None, gt=0)
    price_band: Decimal | None = Field(default=Decimal("0.10"), gt=0)


class Settings(BaseSettings):
    """Every environment variable of the contract, typed and validated."""

    # The attribute docstrings are the fields' descriptions: docs/settings.md is generated from them.
    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore", frozen=True,
                                      use_attribute_docstrings=True)

    # Kafka
    kafka_bootstrap_servers: str = "localhost:9092"
    """Kafka brokers, comma-separated `host:port`."""
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """How the workers talk to the brokers."""
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    """SASL mechanism; required with a SASL protocol."""
    kafka_sasl_username: str | None = None
    """SASL user name."""
    kafka_sasl_password: SecretStr | None = None
    """SASL password."""
    kafka_ssl_cafile: str | None = None
    """With `SSL` / `SASL_SSL`: PEM file of the CA certificates the brokers' certificates are checked
    against; unset, the system's CAs."""
    kafka_ssl_certfile: str | None = None
    """With `SSL` / `SASL_SSL`: PEM file of the client certificate (chain) for mutual TLS; needs
    `KAFKA_SSL_KEYFILE`."""
    kafka_ssl_keyfile: str | None = None
    """PEM file of the client certificate's private key (mutual TLS)."""
    kafka_ssl_key_password: SecretStr | None = None
    """Password of `KAFKA_SSL_KEYFILE` when the key is encrypted."""
    kafka_consumer_group: str = "ibkr-order-consumer"
    """The order-consumer's consumer group; all its replicas share it."""
    kafka_session_timeout_ms: int = Field(default=10_000, ge=1_000, le=300_000)
    """How long the group waits for a silent member before rebalancing (the broker's minimum is 6000)."""
    schema_registry_url: SecretStr | None = None
    """When set: values use the Confluent framing, with schemas registered in this schema registry; secret,
    since it may hold a user and password (`https://user:password@host`, sent as HTTP basic auth)."""

    # PostgreSQL
    database_url: SecretStr = SecretStr("postgresql://localhost:5432/ibkr_workers")
    """PostgreSQL, as a libpq URL; secret, since it may hold the password."""
    database_password: SecretStr | None = None
    """The password of `DATABASE_URL`'s user, given apart from the URL (as it is, never percent-encoded);
    the URL then holds none."""
    database_pool_size: int = Field(default=5, ge=1, le=100)
    """PostgreSQL connections per process."""

    # IBKR
    ibkr_host: str = "127.0.0.1"
    """IB Gateway / TWS host."""
    ibkr_port: int | None = Field(default=None, ge=1, le=65535)
    """IB Gateway / TWS port; unset, it follows `IBKR_API` and `IBKR_TRADING_MODE`: gateway 4002 paper,
    4001 live; TWS 7497 paper, 7496 live."""
    ibkr_api: IbkrApi = "gateway"
    """Whether the workers talk to IB Gateway or TWS; chooses the default port."""
    ibkr_client_id: int = Field(default=1, ge=0, le=2_147_483_647)
    """API client id: a different one for every process, the same one after every restart (only the
    client id that placed an order may cancel it)."""
    ibkr_trading_mode: TradingMode = "paper"
    """`live` is refused unless `IBKR_LIVE_CONFIRM=yes`; each mode refuses the other's ports and accounts."""
    ibkr_live_confirm: str | None = None
    """Must be `yes` for live trading."""
    ibkr_accounts: str = ""
    """Comma-separated allowlist of accounts; orders for any other account are rejected, so empty means
    every order is rejected."""
    ibkr_readonly: bool = False
    """Consume, validate and record orders, never place them."""
    ibkr_connect_timeout: float = Field(default=10.0, gt=0)
    """Seconds for one connection attempt."""
    ibkr_heartbeat_interval: float = Field(default=30.0, gt=0)
    """Seconds between `reqCurrentTime` heartbeats."""
    ibkr_heartbeat_timeout: float = Field(default=10.0, gt=0)
    """Seconds a heartbeat may go unanswered before the connection is dropped and made again."""
    ibkr_order_answer_timeout: float = Field(default=5.0, gt=0)
    """Seconds a placed order may go unanswered before it is looked up among IBKR's orders and, if IBKR
    never got it (a message dropped over the pacing limit, error 100), placed again."""
    ibkr_pacing_per_second: float = Field(default=45.0, gt=0)
    """Outbound API messages per second per connection (IBKR allows 50)."""
    ibkr_market_data_type: MarketDataType = "live"
    """Market data asked of IBKR for reference prices (`reqMarketDataType`): `live`, `frozen` (the last
    quote while the market is closed), `delayed` or `delayed-frozen`. IBKR serves live data wherever the
    account has a subscription; without one, `live` gets nothing (error 354) and `delayed` gets data
    delayed by 15-20 minutes (paper accounts without subscriptions need it)."""
    ibkr_market_data_lines: int = Field(default=100, ge=1, le=10_000)
    """Instruments streamed at once for reference prices (IBKR's default allowance is 100 lines per
    account, shared with every other client of it); when full, the least recently used is released."""
    ibkr_market_data_idle: float = Field(default=600.0, gt=0)
    """Seconds a market-data line may go unused (no order asked for its price) before it is released."""

    # Guards
    trading_state: TradingStateName | None = None
    """The trading state a worker starts in, for the whole deployment: `ACTIVE`, `REDUCING` (only orders that
    reduce a position) or `HALTED` (no new orders; open orders cancelled). It only makes the stored state
    stricter, never looser: a restart does not resume a halted deployment (`ibkr-workers trading-state
    resume` does). Unset, the stored state holds."""
    kill_switch: bool = False
    """Same as `TRADING_STATE=HALTED`: start HALTED (kept for existing deployments)."""
    max_order_quantity: Decimal | None = Field(default=None, gt=0)
    """Largest quantity one order may have; unset, no limit."""
    max_order_notional: Decimal | None = Field(default=None, gt=0)
    """Largest notional one order may have: quantity × limit price (else stop price) × multiplier; a market
    order's at its reference price (`NO_REFERENCE_PRICE` without one). Unset, no limit."""
    max_order_age: float | None = Field(default=60.0, gt=0)
    """Seconds: an order whose `created_at` is older when it is consumed, or when it is placed after waiting
    for IBKR, is rejected `STALE_ORDER` (a backlog after an outage is not traded). `none` turns it off."""
    max_position: Decimal | None = Field(default=None, gt=0)
    """Largest absolute position an account may reach in one instrument: IBKR's position, plus the working
    orders on the order's side, plus the order (`MAX_POSITION_EXCEEDED`); orders that only reduce a position
    always pass. Unset, no limit."""
    max_orders_per_second: float | None = Field(default=None, gt=0)
    """Orders per second per account (a token bucket, bursts of `MAX_ORDER_BURST`), counted by each
    order-consumer process: orders over it are rejected `ORDER_RATE_EXCEEDED`, not delayed. Unset, no limit."""
    max_order_burst: float | None = Field(default=None, ge=1)
    """Orders an account may send at once within `MAX_ORDERS_PER_SECOND`; unset, twice the rate (at least 1)."""
    price_band: Decimal | None = Field(default=Decimal("0.10"), gt=0)
    """How far, as a fraction of the market price (ask for a BUY, bid for a SELL, else last, else close), a
    limit or stop price may be on the worse side; beyond it, or a stop on the wrong side of the market, is
    `PRICE_OUT_OF_BAND`. `none`: no band (except per security type or instrument)."""
    price_band_by_sec_type: dict[str, Decimal] = Field(default_factory=lambda: {"OPT": Decimal("0.50"),
                                                                                "FOP": Decimal("0.50")})
    """The price band of a security type, as JSON (`{"OPT": 0.5}`): options move more than their underlying."""
    reference_price_max_age: float = Field(default=300.0, gt=0)
    """Seconds since IBKR last sent a price for a contract after which it is no reference any more."""
    reference_price_required: bool = True
    """A rule that needs a reference price (the band; a market order's notional) and has none rejects the
    order `NO_REFERENCE_PRICE`; false lets it pass with a warning log (fail open: not for live trading)."""
    risk_limits_by_instrument: dict[str, InstrumentRiskLimits] = Field(default_factory=dict)
    """Limits of single instruments, as JSON by `instrument_id`: `{"STK:AAPL:USD": {"max_quantity": 500,
    "max_notional": 100000, "max_position": 2000, "price_band": 0.05}}`, each optional; they apply besides
    the global ones (the instrument's price band replaces the others)."""

    # Operations
    health_port: int = Field(default=8080, ge=0, le=65535)
    """HTTP port of `/healthz`, `/readyz` and `/metrics` (no authentication, nothing on it changes state)."""
    admin_token: SecretStr | None = None
    """Bearer token of the admin endpoints (`POST /kill-switch`, `/trading-state`, `POST /global-cancel`):
    requests must send `Authorization: Bearer <token>`. Unset, the admin endpoints answer 403 and change
    nothing."""
    admin_bind: str = "127.0.0.1"
    """Address the admin endpoints listen on: loopback by default (reach them with `kubectl port-forward` or
    from the pod); `0.0.0.0` to serve them to the network (then restrict who may reach `ADMIN_PORT`)."""
    admin_port: int = Field(default=8081, ge=0, le=65535)
    """HTTP port of the admin endpoints, a port of their own (0: a free one)."""
    health_interval: float = Field(default=10.0, gt=0)
    """Seconds between `workers.health` events (one is also sent on every status change)."""
    health_unhealthy_after: float = Field(default=60.0, gt=0)
    """Seconds a dependency may be down (the worker is DEGRADED meanwhile) before the worker is UNHEALTHY."""
    health_max_lag: int = Field(default=1000, ge=0)
    """Consumer lag, in records, above which the worker is DEGRADED."""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    """Lowest level logged."""
    instrument_sync_interval: float = Field(default=3600.0, gt=0)
    """Seconds between instrument-sync passes."""
    instrument_universe_file: str | None = None
    """A universe file instrument-sync loads at start, as `ibkr-workers instruments load` does."""
    instrument_resolve_on_demand: bool = False
    """Map an order's unknown instrument id (in the id convention) by asking IBKR; off, such orders are
    rejected `UNKNOWN_INSTRUMENT`."""

    # Topic overrides
    topic_orders_requested: str = TopicNames.orders_requested
    """Topic of new orders."""
    topic_orders_cancel_requested: str = TopicNames.orders_cancel_requested
    """Topic of cancel requests."""
    topic_orders_modify_requested: str = TopicNames.orders_modify_requested
    """Topic of modification requests (the same partition count as the topic of new orders)."""
    topic_orders_status: str = TopicNames.orders_status
    """Topic of order status changes."""
    topic_fills_executed: str = TopicNames.fills_executed
    """Topic of fills."""
    topic_positions_updated: str = TopicNames.positions_updated
    """Topic of positions (compacted)."""
    topic_instruments_updated: str = TopicNames.instruments_updated
    """Topic of instrument changes (compacted)."""
    topic_workers_health: str = TopicNames.workers_health
    """Topic of the workers' health events."""
    topic_orders_requested_dlq: str = TopicNames.orders_requested_dlq
    """Dead-letter topic of records the order-consumer cannot decode."""

    @field_validator("max_order_quantity", "max_order_notional", "max_order_age", "max_position",
                     "max_orders_per_second", "max_order_burst", "price_band", mode="before")
    @classmethod
    def _none_turns_off(cls, value: object) -> object:
        """``none`` or an empty value turns a limit off (also one whose default is on)."""
        if isinstance(value, str) and value.strip().lower() in ("", "none", "off"):
            return None
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("trading_state", mode="before")
    @classmethod
    def _upper_trading_state(cls, value: object) -> object:
        if isinstance(value, str):
            return value.strip().upper() or None
        return value

    @field_validator("ibkr_trading_mode", "ibkr_api", "ibkr_market_data_type", mode="before")
    @classmethod
    def _lower_choice(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile", mode="before")
    @classmethod
    def _empty_path_is_unset(cls, value: object) -> object:
        # A chart or compose file renders an unused path as an empty string: that means "not set".
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("ibkr_accounts")
    @classmethod
    def _normalise_accounts(cls, value: str) -> str:
        return ",".join(part.strip() for part in value.split(",") if part.strip())

    @model_validator(mode="after")
    def _one_database_password(self) -> Settings:
        if self.database_password is not None and _has_password(self.database_url.get_secret_value()):
            raise ValueError("DATABASE_PASSWORD is set and DATABASE_URL holds a password too: keep one")
        return self

    @model_validator(mode="after")
    def _live_needs_confirmation(self) -> Settings:
        if self.ibkr_trading_mode == "live" and (self.ibkr_live_confirm or "").lower() != "yes":
            raise ValueError(
                "IBKR_TRADING_MODE=live is refused unless IBKR_LIVE_CONFIRM=yes is also set"
            )
        if self.kafka_security_protocol.startswith("SASL") and not self.kafka_sasl_mechanism:
            raise ValueError("KAFKA_SASL_MECHANISM is required when KAFKA_SECURITY_PROTOCOL uses SASL")
        if bool(self.kafka_ssl_certfile) != bool(self.kafka_ssl_keyfile):
            raise ValueError("KAFKA_SSL_CERTFILE and KAFKA_SSL_KEYFILE are set together (mutual TLS) or not at all")
        return self

    @property
    def ibkr_effective_port(self) -> int:
        """``IBKR_PORT`` when set, else the default port of ``IBKR_API`` in ``IBKR_TRADING_MODE``."""
        if self.ibkr_port is not None:
            return self.ibkr_port
        return DEFAULT_IBKR_PORTS[(self.ibkr_api, self.ibkr_trading_mode)]

    @property
    def allowed_accounts(self) -> frozenset[str]:
        """The ``IBKR_ACCOUNTS`` allowlist; empty means no account may trade."""
        return frozenset(a for a in self.ibkr_accounts.split(",") if a)

    @property
    def topics(self) -> TopicNames:
        return TopicNames(
            orders_requested=self.topic_orders_requested,
            orders_cancel_requested=self.topic_orders_cancel_requested,
            orders_modify_requested=self.topic_orders_modify_requested,
            orders_status=self.topic_orders_status,
            fills_executed=self.topic_fills_executed,
            positions_updated=self.topic_positions_updated,
            instruments_updated=self.topic_instruments_updated,
            workers_health=self.topic_workers_health,
            orders_requested_dlq=self.topic_orders_requested_dlq,
        )

    @property
    def schema_registry(self) -> str | None:
        """``SCHEMA_REGISTRY_URL`` itself (credentials included), or None."""
        return self.schema_registry_url.get_secret_value() if self.schema_registry_url else None

    @property
    def schema_registry_shown(self) -> str:
        """``SCHEMA_REGISTRY_URL`` without its user and password, fit for a message."""
        url = self.schema_registry or ""
        return re.sub(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#]*@", r"\1", url)

    @property
    def database_dsn(self) -> str:
        """The libpq connection string: ``DATABASE_URL``, with ``DATABASE_PASSWORD`` added when set."""
        url = self.database_url.get_secret_value()
        if self.database_password is None:
            return url
        return with_password(url, self.database_password.get_secret_value())

    def secret_values(self) -> tuple[str, ...]:
        """The values of every secret setting that is set (the passwords inside them are the log's job)."""
        values = (getattr(self, name) for name in type(self).model_fields)
        return tuple(value.get_secret_value() for value in values
                     if isinstance(value, SecretStr) and value.get_secret_value())


def _has_password(dsn: str) -> bool:
    """Whether ``dsn`` names a password: in a URL's user info or query, or as a keyword."""
    if "://" in dsn:
        rest = dsn.split("://", 1)[1]
        authority = re.match(r"[^/?#]*", rest)
        userinfo, at, _ = (authority.group(0) if authority else "").rpartition("@")
        return (bool(at) and ":" in userinfo) or "password=" in dsn.partition("?")[2]
    return re.search(r"(^|\s)password\s*=", dsn) is not None


def with_password(dsn: str, password: str) -> str:
    """``dsn`` (a libpq URL or keyword/value string) with ``password`` added as libpq reads it."""
    if "://" in dsn:
        # A URL's query takes any connection keyword; percent-encoded, every character survives.
        return f"{dsn}{'&' if '?' in dsn else '?'}password={quote(password, safe='')}"
    escaped = password.replace("\\", "\\\\").replace("'", "\\'")
    return f"{dsn} password='{escaped}'"


def load_settings(**overrides: object) -> Settings:
    """Build the settings from the environment; raise :class:`SettingsError` with a one-line message.

    The secret values are registered with the log's mask (:func:`workers.logs.register_secrets`).
    """
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        location = "_".join(str(part) for part in first["loc"]).upper()
        message = first["msg"].removeprefix("Value error, ")
        if location:
            raise SettingsError(f"invalid configuration: {location}: {message}") from None
        raise SettingsError(f"invalid configuration: {message}") from None
    # From here on, no log line or masked output shows a secret value, whatever quotes it.
    register_secrets(settings.secret_values())
    return settings
