"""The sim gateway as a package of its own: started through the workers' command, or missing from it."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from ib_insync import IB

from ibkr_sim.control import control_call
from tests.sim.helpers import until

pytestmark = pytest.mark.integration

# Run the workers' command line in a fresh interpreter where `import ibkr_sim` fails, as it does when only
# the ibkr-workers distribution is installed.
WITHOUT_THE_SIM = (
    "import sys; sys.modules['ibkr_sim'] = None; from workers.cli import main; sys.exit(main(sys.argv[1:]))"
)


def _workers_without_the_sim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_THE_SIM, *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("args", [["sim-gateway"], ["sim-gateway", "--port", "4002", "--pacing", "off"], ["demo"]])
def test_commands_that_start_the_sim_say_what_to_install_when_it_is_missing(args: list[str]) -> None:
    result = _workers_without_the_sim(*args)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"ibkr-workers {args[0]}: the sim gateway is not installed; install it with: pip install 'ibkr-workers[sim]'"
    ]


def test_other_commands_work_without_the_sim() -> None:
    result = _workers_without_the_sim("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("ibkr-workers ")


async def test_ibkr_workers_sim_gateway_starts_and_answers(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers", "sim-gateway", "--port", "0", "--control-port", "0",
        "--accounts", "DU0000031,DU0000032", "--seed", "3", "--pacing", "off", "--tick-interval", "0",
        "--ready-file", str(ready),
        env={**os.environ, "LOG_LEVEL": "WARNING"},
    )
    try:
        await until(ready.exists, timeout=15, what="ready file")
        ports = json.loads(ready.read_text())
        ib = IB()
        await ib.connectAsync(ports["host"], ports["port"], clientId=7, timeout=5)
        try:
            assert ib.managedAccounts() == ["DU0000031", "DU0000032"]
            assert await control_call(ports["host"], ports["control_port"], "ping") == "pong"
            stats = await control_call(ports["host"], ports["control_port"], "stats")
            assert stats["connected_client_ids"] == [7]
        finally:
            ib.disconnect()
    finally:
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 10)
    assert code == 0
