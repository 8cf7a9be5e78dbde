"""Code the dead-code check (scripts/dead-code) must not report, each with why it is kept.

Vulture reads this file as code: each attribute named here counts as used.
"""

from ibkr_sim.control import control_call
from ibkr_sim.market import PriceProcess
from ibkr_sim.server import SimGateway
from ibkr_sim.session import ClientSession
from workers.adapters.avro.fingerprint import as_signed
from workers.adapters.postgres.fills import FillStore
from workers.adapters.postgres.instruments import InstrumentMapper
from workers.adapters.postgres.ledger import OrderLedger
from workers.adapters.postgres.outbox import Outbox
from workers.client.order_client import OrderClient
from workers.docs_gen import topic_attributes
from workers.domain.health import HealthMonitor
from workers.domain.instrument_ids import format_instrument_id, is_instrument_id
from workers.domain.orders import check_transition
from workers.domain.trading_state import TradingStateChange
from workers.entrypoints.admin import run_migrate, run_topics
from workers.logs import _MaskedStream, forget_secrets

# Commands the CLI finds by name ("workers.entrypoints.admin:run_migrate").
run_migrate, run_topics  # noqa: B018

# asyncio.Protocol callbacks, called by the event loop.
ClientSession.connection_made, ClientSession.eof_received  # noqa: B018
# A file-like stream's method, called by whoever writes to it.
_MaskedStream.writelines  # noqa: B018

# The public API of the OrderClient library, for upstream services.
OrderClient.last_status, OrderClient.wait_for_status, OrderClient.wait_for_final  # noqa: B018
OrderClient.wait_for_fills  # noqa: B018

# The sim's control and inspection API, for tests and the bench driving a sim.
control_call, SimGateway.orders_seen, PriceProcess.has_script  # noqa: B018

# The stores' single-row and inspection methods, for tests and operators' tools.
FillStore.insert, FillStore.mark_published, FillStore.set_commission  # noqa: B018
Outbox.mark_published, Outbox.set_aside_errors, InstrumentMapper.deactivate  # noqa: B018
OrderLedger.remembered, OrderLedger.remembers  # noqa: B018

# Domain and format helpers that state a rule or a spec's value on their own (tested as such).
as_signed, format_instrument_id, is_instrument_id, check_transition, topic_attributes  # noqa: B018
HealthMonitor.down_since, TradingStateChange.halts, forget_secrets  # noqa: B018
