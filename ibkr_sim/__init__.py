"""The sim gateway: a TWS-API-protocol server that the unmodified ib_insync talks to as to IB Gateway.

In a test::

    sim = SimGateway(SimConfig(accounts=("DU0000001",)))
    host, port = await sim.start("127.0.0.1", 0)
    ...                       # ib_insync.IB().connectAsync(host, port, clientId=1)
    sim.set_price(265598, 230.0); sim.hold_fills(); sim.drop_connections()
    await sim.stop()

From another process: ``ibkr-sim --control-port P`` (or ``ibkr-workers sim-gateway``, ``python -m ibkr_sim``)
and :func:`ibkr_sim.control.control_call` for the same operations.

Modules: ``framing`` (frames, field parsing), ``requests`` (client requests), ``messages`` (server
messages, field layouts of version 157 and up), ``universe``, ``market`` (prices), ``matching`` (pure
fill rules), ``admission`` (order acceptance), ``portfolio``, ``broker`` (orders and executions),
``reports`` (account messages), ``session`` and ``handlers`` (one connection), ``server``
(:class:`SimGateway`), ``control`` (control port), ``cli``, ``logs`` (structured logs).
"""

from ibkr_sim.config import SimConfig
from ibkr_sim.server import SimGateway

__all__ = ["SimConfig", "SimGateway"]
