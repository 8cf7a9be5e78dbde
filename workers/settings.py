"""The one typed settings object, built from the environment once at start.

Nothing else in the project reads ``os.environ``: entrypoints call :func:`load_settings` and pass the
result (or parts of it) to whatever they build.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

TradingMode = Literal["paper", "live"]
IbkrApi = Literal["gateway", "tws"]

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
    orders_status: str = "orders.status"
    fills_executed: str = "fills.executed"
    positions_updated: str = "positions.updated"
    instruments_updated: str = "instruments.updated"
    workers_health: str = "workers.health"
    orders_requested_dlq: str = "orders.requested.dlq"


class Settings(BaseSettings):
    """Every environment variable of the contract, typed and validated."""

    model_config = SettingsConfigDict(env_prefix="", case_sensitive=False, extra="ignore", frozen=True)

    # Kafka
    kafka_bootstrap_servers: str = "localhost:9092"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_consumer_group: str = "ibkr-order-consumer"
    # How long the group waits for a silent member before rebalancing (the broker's minimum is 6 s).
    kafka_session_timeout_ms: int = Field(default=10_000, ge=1_000, le=300_000)
    schema_registry_url: str | None = None

    # PostgreSQL: a libpq URL; it may carry a password, so it is a secret.
    database_url: SecretStr = SecretStr("postgresql://localhost:5432/ibkr_workers")
    database_pool_size: int = Field(default=5, ge=1, le=100)

    # IBKR
    ibkr_host: str = "127.0.0.1"
    ibkr_port: int | None = Field(default=None, ge=1, le=65535)
    ibkr_api: IbkrApi = "gateway"
    ibkr_client_id: int = Field(default=1, ge=0, le=2_147_483_647)
    ibkr_trading_mode: TradingMode = "paper"
    ibkr_live_confirm: str | None = None
    ibkr_accounts: str = ""
    ibkr_readonly: bool = False
    ibkr_connect_timeout: float = Field(default=10.0, gt=0)
    ibkr_heartbeat_interval: float = Field(default=30.0, gt=0)
    ibkr_heartbeat_timeout: float = Field(default=10.0, gt=0)
    # A placed order IBKR has not answered after this many seconds is looked up, and placed again if IB never got it.
    ibkr_order_answer_timeout: float = Field(default=5.0, gt=0)
    ibkr_pacing_per_second: float = Field(default=45.0, gt=0)

    # Guards
    kill_switch: bool = False
    max_order_quantity: Decimal | None = Field(default=None, gt=0)
    max_order_notional: Decimal | None = Field(default=None, gt=0)

    # Operations
    health_port: int = Field(default=8080, ge=0, le=65535)
    health_interval: float = Field(default=10.0, gt=0)
    # A dependency down longer than this makes a worker UNHEALTHY (DEGRADED before); lag above the limit
    # makes it DEGRADED.
    health_unhealthy_after: float = Field(default=60.0, gt=0)
    health_max_lag: int = Field(default=1000, ge=0)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    instrument_sync_interval: float = Field(default=3600.0, gt=0)
    instrument_universe_file: str | None = None
    # Map an unknown instrument id (in the id convention) by asking IBKR when an order names it.
    instrument_resolve_on_demand: bool = False

    # Topic overrides (TOPIC_ORDERS_REQUESTED, ...)
    topic_orders_requested: str = TopicNames.orders_requested
    topic_orders_cancel_requested: str = TopicNames.orders_cancel_requested
    topic_orders_status: str = TopicNames.orders_status
    topic_fills_executed: str = TopicNames.fills_executed
    topic_positions_updated: str = TopicNames.positions_updated
    topic_instruments_updated: str = TopicNames.instruments_updated
    topic_workers_health: str = TopicNames.workers_health
    topic_orders_requested_dlq: str = TopicNames.orders_requested_dlq

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_log_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    @field_validator("ibkr_trading_mode", "ibkr_api", mode="before")
    @classmethod
    def _lower_choice(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("ibkr_accounts")
    @classmethod
    def _normalise_accounts(cls, value: str) -> str:
        return ",".join(part.strip() for part in value.split(",") if part.strip())

    @model_validator(mode="after")
    def _live_needs_confirmation(self) -> Settings:
        if self.ibkr_trading_mode == "live" and (self.ibkr_live_confirm or "").lower() != "yes":
            raise ValueError(
                "IBKR_TRADING_MODE=live is refused unless IBKR_LIVE_CONFIRM=yes is also set"
            )
        if self.kafka_security_protocol.startswith("SASL") and not self.kafka_sasl_mechanism:
            raise ValueError("KAFKA_SASL_MECHANISM is required when KAFKA_SECURITY_PROTOCOL uses SASL")
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
            orders_status=self.topic_orders_status,
            fills_executed=self.topic_fills_executed,
            positions_updated=self.topic_positions_updated,
            instruments_updated=self.topic_instruments_updated,
            workers_health=self.topic_workers_health,
            orders_requested_dlq=self.topic_orders_requested_dlq,
        )

    @property
    def database_dsn(self) -> str:
        return self.database_url.get_secret_value()


def load_settings(**overrides: object) -> Settings:
    """Build the settings from the environment; raise :class:`SettingsError` with a one-line message."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        first = exc.errors()[0]
        location = "_".join(str(part) for part in first["loc"]).upper()
        message = first["msg"].removeprefix("Value error, ")
        if location:
            raise SettingsError(f"invalid configuration: {location}: {message}") from None
        raise SettingsError(f"invalid configuration: {message}") from None
