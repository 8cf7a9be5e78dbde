"""The ``ibkr-workers`` console script (also ``python -m workers``).

Each sub-command is a thin entrypoint: parse arguments, build the settings once, hand over to
``workers.entrypoints``. Bad configuration exits non-zero with a one-line message.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
import traceback
from collections.abc import Callable, Coroutine, Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from workers import __version__
from workers.domain.orders import Algo, AlgoPriority, OrderType, TimeInForce
from workers.logs import mask_secrets, masked_output
from workers.settings import SettingsError

# The sim gateway is a distribution of its own (ibkr-sim); `sim-gateway` and `demo` start it.
SIM_PACKAGE = "ibkr_sim"
SIM_MISSING = "the sim gateway is not installed; install it with: pip install 'ibkr-workers[sim]'"

# command name -> "module:function"; the function is ``async def run(args) -> int``.
COMMANDS: dict[str, str] = {
    "order-consumer": "workers.entrypoints.order_consumer:run",
    "instrument-sync": "workers.entrypoints.instrument_sync:run",
    "sim-gateway": f"{SIM_PACKAGE}.cli:run",
    "migrate": "workers.entrypoints.admin:run_migrate",
    "topics": "workers.entrypoints.admin:run_topics",
    "demo": "workers.entrypoints.demo:run",
    "instruments": "workers.entrypoints.instruments:run",
    "submit": "workers.entrypoints.submit:run",
    "cancel": "workers.entrypoints.cancel:run",
    "modify": "workers.entrypoints.modify:run",
    "tail": "workers.entrypoints.tail:run",
    "paper-check": "workers.entrypoints.paper_check:run",
    "trading-state": "workers.entrypoints.trading_state:run",
}


class CommandUnavailable(Exception):
    """The command needs a part of the project that is not installed (or has not landed yet)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ibkr-workers", description="Kafka-to-Interactive-Brokers execution bridge."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub.add_parser("order-consumer", help="consume orders.requested and place the orders at IBKR")

    sync = sub.add_parser("instrument-sync", help="keep the instruments table current from IBKR")
    sync.add_argument("--once", action="store_true", help="run one pass and exit")

    sim = sub.add_parser("sim-gateway", help="run the TWS-API-protocol sim gateway")
    _add_sim_arguments(sim)

    sub.add_parser("migrate", help="create or upgrade the PostgreSQL schema")

    topics = sub.add_parser("topics", help="create the Kafka topics of the contract")
    topics.add_argument("--partitions", type=int, default=6, help="partitions per topic (default 6)")
    topics.add_argument("--replication-factor", type=int, default=1)

    demo = sub.add_parser("demo", help="run the whole stack on the embedded default with sample orders")
    demo.add_argument("--orders", type=int, default=200, help="how many sample orders (default 200)")
    demo.add_argument("--rate", type=float, default=20.0, help="sample orders per second (default 20)")
    demo.add_argument("--headless", action="store_true", help="plain log lines instead of a live table")

    instruments = sub.add_parser("instruments", help="manage the instrument universe")
    inst_sub = instruments.add_subparsers(dest="instruments_command", required=True, metavar="ACTION")
    load = inst_sub.add_parser("load", help="load a universe file into instrument_universe")
    load.add_argument("file")

    _add_client_commands(sub)
    _add_paper_check(sub)
    _add_trading_state(sub)
    return parser


def _decimal(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not a decimal number: {text!r}") from None
    if not value.is_finite():
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def _moment(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give the time zone (Z for UTC): {text!r}")
    return value


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _add_client_commands(sub: Any) -> None:
    """``submit``, ``cancel`` and ``tail``: the commands a person types to talk to the workers."""
    submit = sub.add_parser("submit", help="send one order (OrderRequested) to the order-consumer")
    submit.add_argument("--account", required=True, help="IBKR account (must be in the worker's IBKR_ACCOUNTS)")
    submit.add_argument("--instrument", required=True, metavar="ID", help="instrument id, e.g. STK:AAPL:USD")
    submit.add_argument("--side", required=True, type=str.upper, choices=["BUY", "SELL"])
    submit.add_argument("--qty", required=True, type=_decimal, help="quantity")
    submit.add_argument("--type", "--order-type", dest="type", type=str.upper, default="MARKET",
                        choices=[t.value for t in OrderType], help="order type (default MARKET)")
    submit.add_argument("--limit", type=_decimal, metavar="PRICE",
                        help="limit price (LIMIT, STOP_LIMIT, LIMIT_ON_CLOSE, LIMIT_IF_TOUCHED)")
    submit.add_argument("--stop", type=_decimal, metavar="PRICE",
                        help="stop or touch price (STOP, STOP_LIMIT, MARKET_IF_TOUCHED, LIMIT_IF_TOUCHED; "
                             "the initial stop of a trailing order)")
    submit.add_argument("--trailing-amount", type=_decimal, metavar="AMOUNT",
                        help="how far a trailing order's stop trails the market, in the instrument's currency")
    submit.add_argument("--trailing-percent", type=_decimal, metavar="PERCENT",
                        help="how far a trailing order's stop trails the market, in percent")
    submit.add_argument("--limit-offset", type=_decimal, metavar="AMOUNT",
                        help="TRAILING_STOP_LIMIT: the limit's distance from the stop")
    submit.add_argument("--tif", type=str.upper, default="DAY", choices=[t.value for t in TimeInForce],
                        help="time in force (default DAY)")
    submit.add_argument("--good-till", type=_moment, metavar="TIME",
                        help="GTD: when IBKR cancels the order, ISO 8601 with a time zone (2026-12-08T21:00Z)")
    submit.add_argument("--algo", type=str.upper, choices=[a.value for a in Algo],
                        help="IBKR algo (ADAPTIVE: stocks, MARKET or LIMIT orders)")
    submit.add_argument("--algo-priority", type=str.upper, choices=[p.value for p in AlgoPriority],
                        help="the algo's priority (default NORMAL)")
    submit.add_argument("--take-profit", type=_decimal, metavar="PRICE",
                        help="a bracket: the take-profit child's limit price")
    submit.add_argument("--stop-loss", type=_decimal, metavar="PRICE",
                        help="a bracket: the stop-loss child's stop price")
    submit.add_argument("--oca-group", metavar="NAME", help="a one-cancels-all group")
    submit.add_argument("--outside-rth", action="store_true", help="may execute outside regular hours")
    submit.add_argument("--order-id", help="the order id (a UUID; default: a new one)")
    _add_wait_arguments(submit)

    cancel = sub.add_parser("cancel", help="ask the order-consumer to cancel an order")
    cancel.add_argument("order_id", metavar="ORDER_ID")
    cancel.add_argument("--account", required=True, help="the order's account")
    cancel.add_argument("--reason", help="why (recorded with the cancel)")
    _add_wait_arguments(cancel)

    modify = sub.add_parser("modify", help="ask the order-consumer to change a working order in place")
    modify.add_argument("order_id", metavar="ORDER_ID")
    modify.add_argument("--account", required=True, help="the order's account")
    modify.add_argument("--qty", type=_decimal, help="new total quantity (filled included)")
    modify.add_argument("--limit", type=_decimal, metavar="PRICE", help="new limit price (LIMIT, STOP_LIMIT)")
    modify.add_argument("--stop", type=_decimal, metavar="PRICE", help="new stop price (STOP, STOP_LIMIT)")
    modify.add_argument("--tif", type=str.upper, choices=["DAY", "GTC"], help="new time in force")
    modify.add_argument("--trailing-amount", type=_decimal, metavar="AMOUNT", help="a trailing order's new amount")
    modify.add_argument("--trailing-percent", type=_decimal, metavar="PERCENT",
                        help="a trailing order's new percent")
    modify.add_argument("--limit-offset", type=_decimal, metavar="AMOUNT",
                        help="a trailing stop limit's new limit offset")
    modify.add_argument("--modify-id", help="the modification's id (a UUID; default: a new one)")
    modify.add_argument("--wait", action="store_true", help="wait for the outcome (applied or refused)")
    modify.add_argument("--timeout", type=_positive, default=30.0, metavar="S",
                        help="seconds to wait with --wait (default 30)")

    tail = sub.add_parser("tail", help="print a topic's records, decoded")
    tail.add_argument("topic", metavar="TOPIC",
                      help="a contract topic (orders.status, fills.executed, ..., orders.requested.dlq)")
    tail.add_argument("--from-beginning", action="store_true", help="start at the oldest record")
    tail.add_argument("--json", action="store_true", help="one JSON object per line")
    tail.add_argument("--max", type=int, metavar="N", help="stop after N records")
    tail.add_argument("--timeout", type=_positive, metavar="S", help="stop after S seconds")


def _add_paper_check(sub: Any) -> None:
    check = sub.add_parser(
        "paper-check",
        help="check a paper IB Gateway/TWS end to end: health, accounts, then a 1-share buy and sell",
    )
    check.add_argument("--yes", action="store_true", help="place the two test orders without asking")
    check.add_argument("--live", action="store_true",
                       help="allow a live port or live account (also needs IBKR_LIVE_CONFIRM=yes)")
    check.add_argument("--symbol", type=str.upper, default="AAPL",
                       help="a liquid US stock to buy and sell 1 share of (default AAPL)")
    check.add_argument("--timeout", type=_positive, default=30.0, metavar="S",
                       help="seconds to wait for the connection, each request and each fill (default 30)")


def _add_trading_state(sub: Any) -> None:
    trading = sub.add_parser("trading-state", help="show or change the deployment's trading state")
    actions = trading.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="the state in force and its latest changes")
    show.add_argument("--history", type=int, default=10, metavar="N", help="changes to list (default 10)")
    for action, help_text in (("halt", "no new orders; cancel every open order of the deployment"),
                              ("reduce", "only orders that reduce a position"),
                              ("resume", "back to ACTIVE")):
        parser = actions.add_parser(action, help=help_text)
        parser.add_argument("--reason", required=True, help="why (recorded with the change)")
        parser.add_argument("--by", help="who (recorded; default: the OS user)")


def _add_wait_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--wait", action="store_true",
                        help="print statuses and fills until the order is final")
    parser.add_argument("--timeout", type=_positive, default=60.0, metavar="S",
                        help="with --wait: give up after S seconds (default 60)")


def _missing_sim(exc: ModuleNotFoundError) -> bool:
    return (exc.name or "").partition(".")[0] == SIM_PACKAGE


def _add_sim_arguments(parser: argparse.ArgumentParser) -> None:
    try:
        module = importlib.import_module(f"{SIM_PACKAGE}.cli")
    except ModuleNotFoundError as exc:
        if not _missing_sim(exc):
            raise
        parser.description = SIM_MISSING
        return
    add_arguments: Callable[[argparse.ArgumentParser], None] = module.add_arguments
    add_arguments(parser)


def _resolve(command: str) -> Callable[[argparse.Namespace], Coroutine[Any, Any, int]]:
    module_name, _, function_name = COMMANDS[command].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if _missing_sim(exc):
            raise CommandUnavailable(SIM_MISSING) from None
        if exc.name and module_name.startswith(exc.name):
            raise CommandUnavailable(f"'{command}' is not yet available in this version") from None
        raise
    function: Callable[[argparse.Namespace], Coroutine[Any, Any, int]] = getattr(module, function_name)
    return function


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, run the command, return its exit code."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    # Whatever a command prints, a traceback included, shows no secret value of its settings.
    with masked_output():
        try:
            handler = _resolve(args.command)
            # Without the sim installed, its options are unknown: say what to install, not "unrecognized".
            if unknown:
                parser.error(f"unrecognized arguments: {' '.join(unknown)}")
            result: Any = asyncio.run(handler(args))
        except (SettingsError, CommandUnavailable) as exc:
            print(f"ibkr-workers {args.command}: {mask_secrets(str(exc))}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            return 130
        except Exception:
            # What the interpreter would print and exit with, but through the masked stream.
            traceback.print_exc()
            return 1
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
