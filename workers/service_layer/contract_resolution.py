"""Resolving one contract: the instrument for an IBKR contract, and on-demand resolution.

:func:`resolve_on_demand` maps an id in the id convention that no universe entry brought in (the
order-consumer may call it when its settings allow on-demand resolution; off by default).
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from workers.domain.contracts import ContractDetail, ContractSpec, ResolutionError, UnknownContract, choose_one
from workers.domain.instrument_ids import spec_for_instrument_id
from workers.domain.instruments import Instrument
from workers.logs import get_logger
from workers.ports.instruments import (
    ContractLookup,
    Deactivate,
    EventFactory,
    InstrumentChange,
    InstrumentMapper,
    InstrumentUpsert,
    InstrumentWrite,
    UniverseStore,
)

log = get_logger(__name__)


def utc_today() -> date:
    return datetime.now(UTC).date()


def instrument_from_detail(instrument_id: str, detail: ContractDetail, spec: ContractSpec) -> Instrument:
    """The active instrument ``instrument_id`` for IBKR's contract ``detail``."""
    if detail.min_tick <= 0:
        raise ResolutionError(spec, f"{spec.describe()}: IBKR gives no minimum tick for {detail.describe()}")
    is_option = detail.strike is not None
    return Instrument(
        instrument_id=instrument_id,
        con_id=detail.con_id,
        symbol=detail.symbol,
        sec_type=detail.sec_type,
        exchange=detail.exchange,
        currency=detail.currency,
        min_tick=detail.min_tick,
        primary_exchange=detail.primary_exchange,
        local_symbol=detail.local_symbol,
        trading_class=detail.trading_class,
        multiplier=detail.multiplier,
        last_trade_date=detail.last_trade_date,
        long_name=detail.long_name,
        active=True,
        strike=detail.strike if is_option else None,
        option_right=detail.right if is_option else None,
        size_increment=detail.size_increment,
    )


def differs(write: InstrumentWrite, current: Instrument | None) -> bool:
    """Whether applying ``write`` would change the mapper's instrument ``current``."""
    if isinstance(write, Deactivate):
        return current is not None and current.active
    if current is None:
        return True
    return bool(write.changed_fields(current))


async def resolve_on_demand(instrument_id: str, lookup: ContractLookup, mapper: InstrumentMapper, *,
                            today: date | None = None, store: UniverseStore | None = None,
                            events: EventFactory | None = None) -> InstrumentUpsert:
    """Map an id in the id convention that the mapper does not know yet, by asking IBKR.

    A known id is returned as it is (UNCHANGED, active or not). With ``store`` and ``events`` the new row
    is written together with its ``instruments.updated`` outbox record. Raises ``InvalidInstrumentId``,
    :class:`UnknownContract`, ``AmbiguousContract``, ``ConIdConflict``, :class:`LookupUnavailable` or
    :class:`LookupRejected`.
    """
    known = await mapper.get(instrument_id)
    if known is not None:
        return InstrumentUpsert(InstrumentChange.UNCHANGED, (), known)
    spec = spec_for_instrument_id(instrument_id)
    detail = choose_one(spec, await lookup.lookup(spec))
    if detail.expired(today or utc_today()):
        raise UnknownContract(spec, f"{detail.describe()} expired ({detail.last_trade_date})")
    instrument = instrument_from_detail(instrument_id, detail, spec)
    if store is not None and events is not None:
        (outcome,) = await store.commit_entry(None, None, [instrument], events)
    else:
        outcome = await mapper.upsert(instrument)
    log.info("instrument resolved on demand", instrument_id=instrument_id, con_id=detail.con_id,
             change=outcome.change.value)
    return outcome
