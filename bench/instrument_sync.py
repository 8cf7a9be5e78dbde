"""instrument-sync over a large universe: the sim gateway in another process, a real PostgreSQL.

Builds a universe of ``--entries`` stocks (the sim lists them from a generated universe file), runs a first
pass (every instrument CREATED, each with its outbox record) and a second, unchanged pass, and reports
entries/s for both and what the second pass wrote: rows rewritten (by ``xmin``) and outbox records (both
must be 0). Pacing off: the sim enforces no rate and our limiter is unbounded (the gateway switches
ib_insync's own throttle off). ``--pacing on`` runs at IBKR's real budget (45 requests/s): about four
minutes per pass for 10,000 entries.

    eval "$(scripts/dev-services up)"
    .venv/bin/python bench/instrument_sync.py [--entries 10000] [--concurrency 8] [--pacing off]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg

from workers.adapters.avro import AvroCodec
from workers.adapters.ibkr.contract_lookup import IbkrContractLookup
from workers.adapters.ibkr.pacing import PacingLimiter
from workers.adapters.ibkr.tws_connection import TwsConnection
from workers.adapters.kafka.instrument_events import InstrumentEventEncoder
from workers.adapters.postgres.instruments import InstrumentMapper
from workers.adapters.postgres.migrate import migrate
from workers.adapters.postgres.pool import Pool, close_pool, open_pool
from workers.adapters.postgres.universe import UniverseStore
from workers.domain.universe import entries_from_document
from workers.logs import configure_logging
from workers.service_layer.instrument_sync import InstrumentSync
from workers.service_layer.sync_records import PassSummary

FIRST_CON_ID = 60_000_000


def sim_universe(count: int) -> dict[str, Any]:
    """A sim universe file with ``count`` made-up stocks S0000000 ... (conIds from 60,000,000)."""
    return {"instruments": [
        {"conId": FIRST_CON_ID + n, "symbol": f"S{n:07d}", "secType": "STK", "exchange": "SMART",
         "primaryExchange": "NYSE" if n % 2 else "NASDAQ", "currency": "USD", "tradingClass": "NMS",
         "minTick": 0.01, "longName": f"SYNTHETIC {n}", "refPrice": 100.0}
        for n in range(count)
    ]}


async def start_sim(universe: Path, ready: Path, pacing: bool) -> asyncio.subprocess.Process:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ibkr_sim", "--port", "0", "--universe", str(universe),
        "--pacing", "on" if pacing else "off", "--tick-interval", "0", "--ready-file", str(ready),
        "--log-level", "WARNING",
    )
    deadline = time.monotonic() + 30
    while not is_file(ready):
        if time.monotonic() > deadline or process.returncode is not None:
            raise RuntimeError("the sim did not start")
        await asyncio.sleep(0.05)
    return process


def is_file(path: Path) -> bool:
    return path.exists()


def with_schema(url: str, schema: str) -> str:
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "options"] + [("options", f"-csearch_path={schema}")]
    return urlunsplit(parts._replace(query=urlencode(query)))


async def snapshot(pool: Pool) -> tuple[dict[str, str], int]:
    """(xmin of every instrument row, outbox records)."""
    async with pool.connection() as conn:
        cursor = await conn.execute("SELECT instrument_id, xmin::text FROM instruments")
        versions = {row[0]: row[1] for row in await cursor.fetchall()}
        cursor = await conn.execute("SELECT count(*) FROM outbox")
        record = await cursor.fetchone()
    return versions, int(record[0]) if record else 0


def rate(summary: PassSummary) -> float:
    return summary.entries_done / summary.seconds if summary.seconds else 0.0


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    base_url = os.environ.get("DATABASE_URL")
    if not base_url:
        raise SystemExit("DATABASE_URL is not set: eval \"$(scripts/dev-services up)\" first")
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    url = with_schema(base_url, schema)
    pacing = args.pacing == "on"
    with tempfile.TemporaryDirectory() as tmp:
        universe_file = Path(tmp) / "universe.json"
        universe_file.write_text(json.dumps(sim_universe(args.entries)))
        sim = await start_sim(universe_file, Path(tmp) / "ready.json", pacing)
        try:
            ports = json.loads((Path(tmp) / "ready.json").read_text())
            await migrate(url)
            pool = await open_pool(url, max_size=args.concurrency + 2)
            limiter = PacingLimiter(45.0) if pacing else PacingLimiter(1e9, burst=1e9)
            gateway = TwsConnection(ports["host"], ports["port"], 31, limiter=limiter, readonly=True)
            try:
                await gateway.connect()
                store = UniverseStore(pool)
                items = [{"instrument_id": f"STK:S{n:07d}:USD"} for n in range(args.entries)]
                loaded = time.monotonic()
                await store.replace(entries_from_document(items))
                load_seconds = time.monotonic() - loaded
                sync = InstrumentSync(store=store, mapper=InstrumentMapper(pool),
                                      lookup=IbkrContractLookup(gateway),
                                      events=InstrumentEventEncoder(AvroCodec(), "instruments.updated"),
                                      concurrency=args.concurrency, progress_every=5.0)
                first = await sync.run_pass()
                versions, outbox = await snapshot(pool)
                second = await sync.run_pass()
                versions_after, outbox_after = await snapshot(pool)
                # IB answers a pacing violation with error 100: count what the sim sent us.
                violations = gateway.errors_by_code.get(100, 0)
            finally:
                await gateway.close()
                await close_pool(pool)
        finally:
            sim.terminate()
            await sim.wait()
            if not args.keep_schema:
                with psycopg.connect(base_url, autocommit=True) as conn:
                    conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
    rewritten = sum(1 for key, version in versions_after.items() if versions.get(key) != version)
    return {
        "entries": args.entries, "concurrency": args.concurrency, "pacing": args.pacing,
        "load_seconds": round(load_seconds, 2), "pacing_violations": violations,
        "first_pass": {"seconds": round(first.seconds, 2), "entries_per_s": round(rate(first), 1),
                       "created": first.created, "failed": first.entries_failed, "outbox_records": outbox},
        "second_pass": {"seconds": round(second.seconds, 2), "entries_per_s": round(rate(second), 1),
                        "unchanged": second.entries_unchanged, "rows_rewritten": rewritten,
                        "outbox_records_added": outbox_after - outbox,
                        "created": second.created, "updated": second.updated},
        "schema": schema if args.keep_schema else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--pacing", choices=("on", "off"), default="off")
    parser.add_argument("--keep-schema", action="store_true", help="keep the bench schema for inspection")
    args = parser.parse_args()
    configure_logging("WARNING", worker="bench")
    sync_log = logging.getLogger("workers.service_layer.instrument_sync")
    sync_log.setLevel(logging.INFO)
    # Progress and pass summaries, not one line per created instrument.
    sync_log.addFilter(lambda r: not (isinstance(r.msg, dict) and r.msg.get("event") == "instrument changed"))
    result = asyncio.run(bench(args))
    print(json.dumps(result, indent=2))
    second = result["second_pass"]
    if second["rows_rewritten"] or second["outbox_records_added"] or result["first_pass"]["failed"]:
        raise SystemExit("the unchanged pass wrote rows or events, or entries failed")


if __name__ == "__main__":
    main()
