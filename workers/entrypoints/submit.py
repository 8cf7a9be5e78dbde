"""``ibkr-workers submit``: send one order to the order-consumer; with ``--wait``, follow it to the end.

Prints the order id on the first line (so a script can capture it), then, with ``--wait``, one line per
status change and fill as they arrive. Exit codes: 0 sent (with ``--wait``: FILLED or CANCELLED);
1 REJECTED, or ``--timeout`` passed first; 2 bad configuration or a missing topic; 3 Kafka unreachable.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Awaitable, Callable

from aiokafka.errors import KafkaError

from workers.adapters.kafka.connection import KafkaUnreachable
from workers.client import (
    ClientClosed,
    OrderClient,
    OrderStatusChanged,
    OrderTimeout,
    TopicMissing,
)
from workers.client.events import OrderEvent
from workers.domain.orders import OrderState
from workers.logs import configure_logging
from workers.settings import load_settings

SOURCE = "ibkr-workers-cli"
EXIT_OK, EXIT_FAILED, EXIT_CONFIG, EXIT_UNREACHABLE = 0, 1, 2, 3


def quiet_logging(level: str, command: str) -> None:
    """Structured logs on stderr, without aiokafka's own errors: the command reports them in one line."""
    configure_logging(level, worker=command)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)


def event_line(event: OrderEvent) -> str:
    """One line for people: the time the event happened, then what happened."""
    when = event.event_time if isinstance(event, OrderStatusChanged) else event.executed_at
    return f"{when:%H:%M:%S.%f}"[:-3] + f"  {event.describe()}"


async def follow(client: OrderClient, order_id: str, timeout: float) -> int:
    """Print the order's events until it is final with every fill; the exit code its outcome gives."""
    final: OrderStatusChanged | None = None
    try:
        async for event in client.events(order_id, timeout=timeout):
            print(event_line(event), flush=True)
            if isinstance(event, OrderStatusChanged) and event.is_final:
                final = event
    except OrderTimeout as exc:
        print(f"ibkr-workers: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if final is None or final.status is OrderState.REJECTED:
        return EXIT_FAILED
    return EXIT_OK


async def with_client(command: str, watch: bool,
                      work: Callable[[OrderClient], Awaitable[int]]) -> int:
    """Build the client from the environment, run ``work`` with it, map failures to exit codes."""
    settings = load_settings()
    quiet_logging(settings.log_level, command)
    try:
        async with OrderClient.from_settings(settings, watch=watch, source=SOURCE) as client:
            return await work(client)
    except TopicMissing as exc:
        print(f"ibkr-workers {command}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KafkaUnreachable as exc:  # its message names the brokers and the setting to fix
        print(f"ibkr-workers {command}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except (KafkaError, ClientClosed, OSError) as exc:
        print(f"ibkr-workers {command}: Kafka at {settings.kafka_bootstrap_servers}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE


async def run(args: argparse.Namespace) -> int:
    async def work(client: OrderClient) -> int:
        order_id = await client.submit(
            account=args.account, instrument_id=args.instrument, side=args.side, quantity=args.qty,
            order_type=args.type, limit_price=args.limit, stop_price=args.stop, tif=args.tif,
            outside_rth=args.outside_rth, order_id=args.order_id, trailing_amount=args.trailing_amount,
            trailing_percent=args.trailing_percent, limit_offset=args.limit_offset, good_till=args.good_till,
            algo=args.algo, algo_priority=args.algo_priority, take_profit_price=args.take_profit,
            stop_loss_price=args.stop_loss, oca_group=args.oca_group,
        )
        print(order_id, flush=True)
        if not args.wait:
            return EXIT_OK
        return await follow(client, order_id, args.timeout)

    return await with_client("submit", args.wait, work)
