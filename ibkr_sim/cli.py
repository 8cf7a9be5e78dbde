"""``ibkr-sim`` and ``ibkr-workers sim-gateway``: run the sim gateway (and its control port) until stopped."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import sys
from pathlib import Path

from ibkr_sim.config import DEFAULT_ACCOUNTS, SimConfig, SimConfigError, parse_accounts
from ibkr_sim.control import ControlServer
from ibkr_sim.logs import configure_logging, get_logger
from ibkr_sim.server import SimGateway
from ibkr_sim.universe import Universe

log = get_logger(__name__)

DEFAULT_PORT = 4002  # IB Gateway's paper port, so a worker with default settings finds the sim


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the sim-gateway options to ``parser``."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port to listen on (default {DEFAULT_PORT}; 0: any)"
    )
    parser.add_argument("--universe", metavar="FILE", help="universe JSON file (default: the bundled one)")
    parser.add_argument(
        "--accounts", help="comma-separated made-up paper accounts (env SIM_ACCOUNTS; default DU0000001)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the price process (default 0)")
    parser.add_argument("--pacing", choices=("on", "off"), default="on", help="enforce 50 msg/s (default on)")
    parser.add_argument("--control-port", type=int, help="serve the JSON control interface on this port")
    # Apart from --host: the control port injects faults and moves prices, so a sim listening for workers
    # on every interface still keeps it to this machine unless told otherwise.
    parser.add_argument("--control-host", default="127.0.0.1",
                        help="address of the control port (default 127.0.0.1, whatever --host is)")
    parser.add_argument("--server-version", type=int, default=157, help="API version to announce (157)")
    parser.add_argument(
        "--tick-interval", type=float, default=1.0, help="seconds between price steps; 0: prices stay put"
    )
    parser.add_argument("--clip-size", type=float, help="fill at most this quantity per matching pass")
    parser.add_argument("--master-client-id", type=int, help="clientId that sees and may cancel every order")
    parser.add_argument("--ready-file", metavar="PATH", help="write the bound ports here as JSON once up")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR (env LOG_LEVEL; default INFO)")
    # A bad setting is reported under the name the sim was started by (ibkr-sim, ibkr-workers sim-gateway).
    parser.set_defaults(sim_prog=parser.prog)


def build_config(args: argparse.Namespace) -> SimConfig:
    """The sim's settings from parsed arguments (and SIM_ACCOUNTS when --accounts is absent).

    Raises :class:`SimConfigError` naming the first bad setting.
    """
    accounts_text = args.accounts or os.environ.get("SIM_ACCOUNTS", "")
    accounts = parse_accounts(accounts_text) if accounts_text else DEFAULT_ACCOUNTS
    tick = getattr(args, "tick_interval", 1.0)
    config = SimConfig(
        accounts=accounts,
        server_version=args.server_version,
        seed=args.seed,
        pacing=args.pacing == "on",
        tick_interval=tick if tick and tick > 0 else None,
        clip_size=getattr(args, "clip_size", None),
        master_client_id=getattr(args, "master_client_id", None),
    )
    return config.validate()


def log_level(args: argparse.Namespace) -> str:
    """The log level from --log-level, else LOG_LEVEL, else INFO (:class:`SimConfigError` if unknown)."""
    level = (getattr(args, "log_level", None) or os.environ.get("LOG_LEVEL") or "INFO").upper()
    if level not in logging.getLevelNamesMapping():
        raise SimConfigError(f"log level: {level!r} is not one of DEBUG, INFO, WARNING, ERROR")
    return level


def load_universe(path: str | None) -> Universe:
    """The universe from ``path`` (the bundled one when None); :class:`SimConfigError` if unreadable."""
    try:
        return Universe.load(path)
    except (OSError, ValueError, KeyError) as exc:
        raise SimConfigError(f"--universe: cannot load {path}: {exc}") from None


def _write_ready_file(path: str, ports: dict[str, object]) -> None:
    # A few bytes once at start-up; written whole under a temporary name so readers never see half.
    tmp = Path(path + ".tmp")
    tmp.write_text(json.dumps(ports))
    tmp.replace(path)


async def run(args: argparse.Namespace) -> int:
    """Run until SIGTERM/SIGINT; return the exit code (2, with one line on stderr, for a bad setting)."""
    try:
        config = build_config(args)
        universe = load_universe(args.universe)
        level = log_level(args)
    except SimConfigError as exc:
        sys.stderr.write(f"{getattr(args, 'sim_prog', 'ibkr-sim')}: {exc}\n")
        return 2
    configure_logging(level)
    return await _serve(args, config, universe)


async def _serve(args: argparse.Namespace, config: SimConfig, universe: Universe) -> int:
    sim = SimGateway(config, universe)
    host, port = await sim.start(args.host, args.port)
    # The sim keeps every order and execution of the session: long-lived objects that the cyclic
    # collector would otherwise walk again and again (pauses of several ms under load).
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)
    control: ControlServer | None = None
    control_host = control_port = None
    if args.control_port is not None:
        control = ControlServer(sim)
        control_host, control_port = await control.start(args.control_host, args.control_port)
    log.info("sim gateway started", host=host, port=port, control_host=control_host, control_port=control_port,
             accounts=list(config.accounts))
    if args.ready_file:
        _write_ready_file(args.ready_file, {"host": host, "port": port, "control_host": control_host,
                                            "control_port": control_port})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        if control is not None:
            await control.stop()
        await sim.stop()
    return 0
