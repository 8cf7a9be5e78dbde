"""``ibkr-workers cancel ORDER_ID --account A``: ask the order-consumer to cancel an order.

The cancel may arrive before its order (it then cancels the order on arrival). With ``--wait`` the command
follows the order until it is final: exit 0 when it ends CANCELLED or FILLED (filled before the cancel
reached IBKR), 1 when REJECTED or on ``--timeout``; 2 bad configuration, 3 Kafka unreachable.
"""

from __future__ import annotations

import argparse

from workers.client import OrderClient
from workers.entrypoints.submit import EXIT_OK, follow, with_client


async def run(args: argparse.Namespace) -> int:
    async def work(client: OrderClient) -> int:
        await client.cancel(args.order_id, account=args.account, reason=args.reason)
        print(f"cancel requested for {args.order_id}", flush=True)
        if not args.wait:
            return EXIT_OK
        return await follow(client, args.order_id, args.timeout)

    return await with_client("cancel", args.wait, work)
