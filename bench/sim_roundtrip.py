"""Market-order round trips: one ib_insync client here, the sim gateway in another process.

Measures, per round trip (placeOrder sent → orderStatus Filled received), the CPU time of this client
process and of the sim process (read through the sim's control port), the rate and the latency, and
prints the ratio sim/client. Pacing is off in the sim and ib_insync's own throttle is switched off.

    .venv/bin/python bench/sim_roundtrip.py [--orders 3000] [--window 1] [--warmup 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from ib_insync import IB, Contract, MarketOrder, Trade

from ibkr_sim.control import ControlClient


def cpu_times() -> tuple[float, float]:
    times = os.times()
    return times.user, times.system


def ready_file_written(path: Path) -> bool:
    return path.exists()


async def start_sim(ready: Path) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ibkr_sim", "--port", "0", "--control-port", "0", "--pacing", "off",
        "--tick-interval", "0", "--ready-file", str(ready), "--log-level", "WARNING",
    )
    deadline = time.monotonic() + 20
    while not ready_file_written(ready):
        if time.monotonic() > deadline or process.returncode is not None:
            raise RuntimeError("the sim did not start")
        await asyncio.sleep(0.02)
    return process


async def run_orders(ib: IB, contract: Contract, count: int, window: int) -> list[float]:
    """Place ``count`` market orders keeping at most ``window`` in flight; return each latency."""
    latencies: list[float] = []
    in_flight: set[asyncio.Future[None]] = set()
    loop = asyncio.get_running_loop()

    def place(i: int) -> asyncio.Future[None]:
        done: asyncio.Future[None] = loop.create_future()
        started = time.perf_counter()

        def on_filled(trade: Trade) -> None:
            latencies.append(time.perf_counter() - started)
            if not done.done():
                done.set_result(None)

        trade = ib.placeOrder(contract, MarketOrder("BUY" if i % 2 == 0 else "SELL", 100))
        trade.filledEvent += on_filled
        return done

    for i in range(count):
        if len(in_flight) >= window:
            _, in_flight = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
        in_flight.add(place(i))
    if in_flight:
        await asyncio.wait(in_flight)
    return latencies


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        process = await start_sim(Path(tmp) / "ready.json")
        try:
            ports = json.loads((Path(tmp) / "ready.json").read_text())
            control = await ControlClient.connect(ports["host"], ports["control_port"])
            ib = IB()
            ib.client.MaxRequests = 0
            await ib.connectAsync(ports["host"], ports["port"], clientId=1, timeout=5)
            contract = Contract(conId=265598, exchange="SMART")
            await run_orders(ib, contract, args.warmup, args.window)

            sim_before = await control.call("cpu_times")
            client_before = cpu_times()
            wall_before = time.perf_counter()
            latencies = await run_orders(ib, contract, args.orders, args.window)
            wall = time.perf_counter() - wall_before
            client_after = cpu_times()
            sim_after = await control.call("cpu_times")

            ib.disconnect()
            await control.close()
        finally:
            process.terminate()
            await process.wait()

    n = args.orders
    client_user, client_sys = (after - before for after, before in zip(client_after, client_before, strict=True))
    sim_user, sim_sys = (after - before for after, before in zip(sim_after, sim_before, strict=True))
    client_cpu = client_user + client_sys
    sim_cpu = sim_user + sim_sys
    latencies.sort()
    print(f"market-order round trips: {n} (window {args.window}, warm-up {args.warmup})")
    print(f"  wall time          {wall:8.3f} s   rate {n / wall:8.0f} round trips/s")
    print(f"  latency            median {statistics.median(latencies) * 1e3:6.3f} ms"
          f"   p99 {latencies[int(0.99 * (n - 1))] * 1e3:6.3f} ms")
    print(f"  client CPU         {client_cpu / n * 1e3:8.4f} ms per round trip"
          f"   (user {client_user / n * 1e3:.4f}, system {client_sys / n * 1e3:.4f})")
    print(f"  sim CPU            {sim_cpu / n * 1e3:8.4f} ms per round trip"
          f"   (user {sim_user / n * 1e3:.4f}, system {sim_sys / n * 1e3:.4f})")
    print(f"  ratio sim/client   {sim_cpu / client_cpu:8.3f}   (target <= 0.333)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=3000)
    parser.add_argument("--window", type=int, default=1, help="orders in flight at once (default 1)")
    parser.add_argument("--warmup", type=int, default=300)
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(parser.parse_args()))
