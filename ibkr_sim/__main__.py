"""``ibkr-sim`` / ``python -m ibkr_sim``: the sim gateway on its own (the options of ``ibkr-workers sim-gateway``)."""

from __future__ import annotations

import argparse
import asyncio
import sys

from ibkr_sim.cli import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the sim until SIGTERM/SIGINT; return the exit code."""
    parser = argparse.ArgumentParser(prog="ibkr-sim", description="TWS-API-protocol sim gateway")
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
