"""The ``ibkr-workers`` console script (also ``python -m workers``).

Each sub-command is a thin entrypoint: parse arguments, build the settings once, hand over to
``workers.entrypoints``. Bad configuration exits non-zero with a one-line message.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from workers import __version__
from workers.settings import SettingsError

# command name -> "module:function"; the function is ``async def run(args) -> int``.
COMMANDS: dict[str, str] = {
    "order-consumer": "workers.entrypoints.order_consumer:run",
    "instrument-sync": "workers.entrypoints.instrument_sync:run",
    "sim-gateway": "workers.sim.cli:run",
    "migrate": "workers.entrypoints.admin:run_migrate",
    "topics": "workers.entrypoints.admin:run_topics",
    "demo": "workers.entrypoints.demo:run",
    "instruments": "workers.entrypoints.instruments:run",
}


class CommandUnavailable(Exception):
    """The command belongs to a part of the project that has not landed yet."""


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
    return parser


def _add_sim_arguments(parser: argparse.ArgumentParser) -> None:
    try:
        module = importlib.import_module("workers.sim.cli")
    except ImportError:
        return
    add_arguments: Callable[[argparse.ArgumentParser], None] = module.add_arguments
    add_arguments(parser)


def _resolve(command: str) -> Callable[[argparse.Namespace], Coroutine[Any, Any, int]]:
    module_name, _, function_name = COMMANDS[command].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise CommandUnavailable(f"'{command}' is not yet available in this version") from None
        raise
    function: Callable[[argparse.Namespace], Coroutine[Any, Any, int]] = getattr(module, function_name)
    return function


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line, run the command, return its exit code."""
    args = build_parser().parse_args(argv)
    try:
        handler = _resolve(args.command)
        result: Any = asyncio.run(handler(args))
    except (SettingsError, CommandUnavailable) as exc:
        print(f"ibkr-workers {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
