"""``ibkr-workers modify ORDER_ID --account A [--qty N] [--limit P] [--stop P] [--tif DAY|GTC]``.

Asks the order-consumer to change a working order in place. With ``--wait`` the command waits for the
modification's outcome (the order's status carrying its ``modify_id``): exit 0 when applied, 1 when refused
or on ``--timeout``; 2 bad configuration (or nothing to change), 3 Kafka unreachable.
"""

from __future__ import annotations

import argparse
import sys

from workers.client import OrderClient, OrderTimeout
from workers.domain.modifications import REFUSED_PREFIX
from workers.entrypoints.submit import EXIT_CONFIG, EXIT_FAILED, EXIT_OK, event_line, with_client


async def run(args: argparse.Namespace) -> int:
    terms = (args.qty, args.limit, args.stop, args.tif, args.trailing_amount, args.trailing_percent,
             args.limit_offset)
    if all(term is None for term in terms):
        print("ibkr-workers modify: give at least one of --qty, --limit, --stop, --tif, --trailing-amount, "
              "--trailing-percent, --limit-offset", file=sys.stderr)
        return EXIT_CONFIG

    async def work(client: OrderClient) -> int:
        modify_id = await client.modify(args.order_id, account=args.account, quantity=args.qty,
                                        limit_price=args.limit, stop_price=args.stop, time_in_force=args.tif,
                                        modify_id=args.modify_id, trailing_amount=args.trailing_amount,
                                        trailing_percent=args.trailing_percent, limit_offset=args.limit_offset)
        print(f"modification {modify_id} requested for {args.order_id}", flush=True)
        if not args.wait:
            return EXIT_OK
        try:
            outcome = await client.wait_for_modification(args.order_id, modify_id, timeout=args.timeout)
        except OrderTimeout as exc:
            print(f"ibkr-workers: {exc}", file=sys.stderr)
            return EXIT_FAILED
        print(event_line(outcome), flush=True)
        return EXIT_FAILED if (outcome.reason or "").startswith(REFUSED_PREFIX) else EXIT_OK

    return await with_client("modify", args.wait, work)
