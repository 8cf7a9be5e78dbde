"""Soak benchmark: the order-consumer (and the sim) at a steady order rate for a long time; does memory stay flat?

Run (services from scripts/dev-services, exported):

    .venv/bin/python bench/soak.py --rate 40 --minutes 60 [--pacing on] [--tracemalloc DIR]

The sim gateway and the worker run in processes of their own (as in bench/order_consumer.py); this process
produces market orders at ``--rate`` per second and watches orders.status. Every ``--sample`` seconds it
prints one JSON line with the worker's and the sim's RSS; at the end, a summary (one figure a line): the RSS
series, the slope of each in MB per hour (least squares over the samples after ``--warmup`` minutes), the
worker's RSS after 5 minutes and at the end, and how many orders were not FILLED a minute after the last was
sent. ``--drop-at 7 20`` has the sim drop every connection at those minutes: the worker reconnects and
reconciles (IBKR's completed orders and executions of the day, all at once).

``--instrument-sync --entries N --passes P`` soaks the instrument-sync instead: P passes over a universe of N
instruments (pacing off, the sim in a process of its own), RSS of the sync (this process) after each pass.

With ``--tracemalloc DIR`` the worker runs under tracemalloc and writes a snapshot to DIR every sample;
``--diff DIR`` prints what grew the most between snapshot ``--diff-from`` and the last one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from aiokafka import AIOKafkaProducer

from bench.order_consumer import HISTORY, Setup, Watcher, market_order, prepare, wait_filled, worker_env
from workers.adapters.avro import AvroCodec
from workers.adapters.kafka.records import ORDER_REQUESTED, order_requested_record
from workers.domain.orders import OrderRequested


def rss_mb(pid: int) -> float:
    """The current resident set size of process ``pid``, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def slope_mb_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) points, in MB per hour."""
    if len(points) < 2:
        return float("nan")
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_m = sum(m for _, m in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    if not var:
        return float("nan")
    cov = sum((t - mean_t) * (m - mean_m) for t, m in points)
    return cov / var * 3600


async def produce_steadily(setup: Setup, codec: AvroCodec, rate: float, seconds: float,
                           sent: list[OrderRequested]) -> None:
    """Market orders to orders.requested at ``rate`` per second for ``seconds``, each appended to ``sent``."""
    producer = AIOKafkaProducer(bootstrap_servers=setup.bootstrap, linger_ms=1)
    await producer.start()
    try:
        await producer.partitions_for(setup.topics.orders_requested)
        started = time.perf_counter()
        i = 0
        while (elapsed := time.perf_counter() - started) < seconds:
            delay = i / rate - elapsed
            if delay > 0:
                await asyncio.sleep(delay)
            order = market_order()
            await producer.send(setup.topics.orders_requested,
                                codec.encode(ORDER_REQUESTED, order_requested_record(order)),
                                key=order.order_id.encode())
            sent.append(order)
            i += 1
        await producer.flush()
    finally:
        await producer.stop()


async def drop_connections_at(setup: Setup, minutes: list[float]) -> None:
    """Have the sim drop every connection at each of ``minutes`` (the worker reconnects and reconciles)."""
    started = time.monotonic()
    for at in sorted(minutes):
        await asyncio.sleep(max(0.0, started + at * 60 - time.monotonic()))
        await setup.sim.call("drop_connections")
        print(json.dumps({"t_s": round(time.monotonic() - started), "event": "sim dropped connections"}),
              flush=True)


async def start_worker(setup: Setup, pacing: float, trace_dir: Path | None,
                       every: float) -> asyncio.subprocess.Process:
    if trace_dir is None:
        command = ["-m", "workers", "order-consumer"]
    else:
        trace_dir.mkdir(parents=True, exist_ok=True)
        command = [str(Path(__file__)), "traced-worker", str(trace_dir), str(every)]
    return await asyncio.create_subprocess_exec(sys.executable, *command, env=worker_env(setup, pacing),
                                                cwd=REPO)


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    HISTORY.orders = args.history
    bootstrap = os.environ["KAFKA_BOOTSTRAP_SERVERS"]
    setup = await prepare(bootstrap, os.environ["DATABASE_URL"], pacing=args.pacing == "on")
    codec = AvroCodec()
    watcher = Watcher(setup, codec)
    watcher.task = asyncio.create_task(watcher.run())
    trace_dir = Path(args.tracemalloc) if args.tracemalloc else None
    worker = await start_worker(setup, 45 if args.pacing == "on" else 100_000, trace_dir, args.sample)
    assert setup.sim.process is not None
    sim_pid = setup.sim.process.pid
    sent: list[OrderRequested] = []
    seconds = args.minutes * 60
    producing = asyncio.create_task(produce_steadily(setup, codec, args.rate, seconds, sent))
    dropping = asyncio.create_task(drop_connections_at(setup, args.drop_at))
    started = time.monotonic()
    series: list[dict[str, float]] = []
    try:
        while not producing.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(producing), args.sample)
            at = time.monotonic() - started
            sample = {"t_s": round(at), "worker_mb": round(rss_mb(worker.pid), 1),
                      "sim_mb": round(rss_mb(sim_pid), 1), "sent": len(sent), "filled": len(watcher.filled)}
            series.append(sample)
            print(json.dumps(sample), flush=True)
        producing.result()
        with contextlib.suppress(SystemExit):  # what is left unfinished after a minute is reported
            await wait_filled(watcher, sent, timeout=60)
    finally:
        dropping.cancel()
        worker.terminate()
        await asyncio.wait_for(worker.wait(), 30)
        watcher.task.cancel()
        await setup.tear_down()
    warm = [s for s in series if s["t_s"] >= args.warmup * 60] or series
    at_5 = next((s for s in series if s["t_s"] >= 300), series[-1])
    return {
        "rate": args.rate, "minutes": args.minutes, "pacing": args.pacing, "sample_s": args.sample,
        "orders_sent": len(sent), "orders_unfinished": sum(o.order_id not in watcher.filled for o in sent),
        "worker_mb": [s["worker_mb"] for s in series], "sim_mb": [s["sim_mb"] for s in series],
        "worker_slope_mb_per_hour": round(slope_mb_per_hour([(s["t_s"], s["worker_mb"]) for s in warm]), 1),
        "sim_slope_mb_per_hour": round(slope_mb_per_hour([(s["t_s"], s["sim_mb"]) for s in warm]), 1),
        "worker_mb_at_5_min": at_5["worker_mb"], "worker_mb_at_end": series[-1]["worker_mb"],
        "worker_mb_max": max(s["worker_mb"] for s in series),
    }


async def soak_instrument_sync(args: argparse.Namespace) -> dict[str, Any]:
    """Run ``args.passes`` instrument-sync passes in this process; RSS after each."""
    import tempfile

    import psycopg

    from bench.instrument_sync import sim_universe, start_sim, with_schema
    from workers.adapters.ibkr.contract_lookup import IbkrContractLookup
    from workers.adapters.ibkr.pacing import PacingLimiter
    from workers.adapters.ibkr.tws_connection import TwsConnection
    from workers.adapters.kafka.instrument_events import InstrumentEventEncoder
    from workers.adapters.postgres.instruments import InstrumentMapper
    from workers.adapters.postgres.migrate import migrate
    from workers.adapters.postgres.pool import close_pool, open_pool
    from workers.adapters.postgres.universe import UniverseStore
    from workers.domain.universe import entries_from_document
    from workers.service_layer.instrument_sync import InstrumentSync

    base_url = os.environ["DATABASE_URL"]
    schema = f"soak_{os.getpid()}"
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = with_schema(base_url, schema)
    series: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        universe_file = Path(tmp) / "universe.json"
        universe_file.write_text(json.dumps(sim_universe(args.entries)))
        sim = await start_sim(universe_file, Path(tmp) / "ready.json", pacing=False)
        try:
            ports = json.loads((Path(tmp) / "ready.json").read_text())
            await migrate(url)
            pool = await open_pool(url, max_size=10)
            gateway = TwsConnection(ports["host"], ports["port"], 31, limiter=PacingLimiter(1e9, burst=1e9),
                                  readonly=True)
            try:
                await gateway.connect()
                store = UniverseStore(pool)
                await store.replace(entries_from_document(
                    [{"instrument_id": f"STK:S{n:07d}:USD"} for n in range(args.entries)]))
                sync = InstrumentSync(store=store, mapper=InstrumentMapper(pool), lookup=IbkrContractLookup(gateway),
                                      events=InstrumentEventEncoder(AvroCodec(), "instruments.updated"),
                                      concurrency=8, progress_every=60.0)
                started = time.monotonic()
                for n in range(args.passes):
                    summary = await sync.run_pass()
                    sample = {"pass": n + 1, "t_s": round(time.monotonic() - started),
                              "sync_mb": round(rss_mb(os.getpid()), 1), "sim_mb": round(rss_mb(sim.pid), 1),
                              "failed": summary.entries_failed}
                    series.append(sample)
                    print(json.dumps(sample), flush=True)
            finally:
                await gateway.close()
                await close_pool(pool)
        finally:
            sim.terminate()
            await sim.wait()
            with psycopg.connect(base_url, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    warm = series[len(series) // 5:] or series
    return {"entries": args.entries, "passes": args.passes, "sync_mb": [s["sync_mb"] for s in series],
            "sim_mb": [s["sim_mb"] for s in series],
            "sync_slope_mb_per_hour": round(slope_mb_per_hour([(s["t_s"], s["sync_mb"]) for s in warm]), 1),
            "sync_mb_after_first_fifth": warm[0]["sync_mb"], "sync_mb_at_end": series[-1]["sync_mb"]}


def print_summary(summary: dict[str, Any]) -> None:
    """One ``key: value`` JSON line per figure (the series on one line each)."""
    for key, value in summary.items():
        print(f"{key}: {json.dumps(value)}", flush=True)


def traced_worker(directory: str, every: float) -> int:
    """Run the order-consumer in this process under tracemalloc, a snapshot to ``directory`` every ``every`` s."""
    from workers.cli import main

    tracemalloc.start(12)
    out = Path(directory)

    def dump() -> None:
        n = 0
        while True:
            time.sleep(every)
            tracemalloc.take_snapshot().dump(str(out / f"snapshot-{n:04d}.bin"))
            n += 1

    threading.Thread(target=dump, daemon=True, name="tracemalloc-dump").start()
    return main(["order-consumer"])


def diff(directory: str, first: int, top: int) -> None:
    """Print the ``top`` allocation sites that grew the most from snapshot ``first`` to the last one."""
    snapshots = sorted(Path(directory).glob("snapshot-*.bin"))
    before = tracemalloc.Snapshot.load(str(snapshots[min(first, len(snapshots) - 1)]))
    after = tracemalloc.Snapshot.load(str(snapshots[-1]))
    ignore = [tracemalloc.Filter(False, tracemalloc.__file__)]
    before, after = before.filter_traces(ignore), after.filter_traces(ignore)
    total = sum(s.size for s in after.statistics("filename")) - sum(s.size for s in before.statistics("filename"))
    print(f"{snapshots[first].name} -> {snapshots[-1].name}: {total / 2**20:+.1f} MB traced")
    for stat in after.compare_to(before, "traceback")[:top]:
        print(f"\n{stat.size_diff / 2**20:+.2f} MB  {stat.count_diff:+d} blocks")
        for line in stat.traceback.format(limit=8):
            print("   ", line)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "traced-worker":
        sys.exit(traced_worker(sys.argv[2], float(sys.argv[3])))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=40.0, help="market orders per second")
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--pacing", choices=("on", "off"), default="on",
                        help="on: the sim enforces IBKR's 50 messages/s and the worker paces at 45")
    parser.add_argument("--sample", type=float, default=30.0, help="seconds between RSS samples")
    parser.add_argument("--warmup", type=float, default=5.0, help="minutes left out of the slope")
    parser.add_argument("--drop-at", type=float, nargs="*", default=[], metavar="MINUTES",
                        help="the sim drops every connection at these minutes (reconnect and reconciliation)")
    parser.add_argument("--history", type=int, default=0, help="finished orders in the ledger before the run")
    parser.add_argument("--instrument-sync", action="store_true", help="soak the instrument-sync instead")
    parser.add_argument("--entries", type=int, default=2000, help="instrument-sync: universe size")
    parser.add_argument("--passes", type=int, default=50, help="instrument-sync: passes")
    parser.add_argument("--tracemalloc", metavar="DIR", help="trace the worker; snapshots into DIR")
    parser.add_argument("--diff", metavar="DIR", help="only compare the snapshots in DIR")
    parser.add_argument("--diff-from", type=int, default=2, help="snapshot number to compare the last against")
    parser.add_argument("--top", type=int, default=25)
    arguments = parser.parse_args()
    if arguments.diff:
        diff(arguments.diff, arguments.diff_from, arguments.top)
    elif arguments.instrument_sync:
        print_summary(asyncio.run(soak_instrument_sync(arguments)))
    else:
        print_summary(asyncio.run(soak(arguments)))
