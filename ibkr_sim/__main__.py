"""``python -m ibkr_sim``: the sim gateway on its own (same options as ``ibkr-workers sim-gateway``)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from ibkr_sim.cli import add_arguments, run
from workers.settings import SettingsError


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and run the sim until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m ibkr_sim", description="TWS-API-protocol sim gateway")
    add_arguments(parser)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        return asyncio.run(run(args))
    except SettingsError as exc:
        sys.stderr.write(f"sim-gateway: {exc}\n")
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
