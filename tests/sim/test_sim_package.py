"""The sim gateway as a package of its own: it imports nothing of the workers, the workers' command starts it."""

from __future__ import annotations

import ast
import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from ib_insync import IB

import ibkr_sim
import workers
from ibkr_sim.control import control_call
from tests.sim.helpers import until

pytestmark = pytest.mark.integration

SIM_DIR = Path(ibkr_sim.__file__).parent


def _imported_names(source: str) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_sim_module_imports_the_workers_even_lazily() -> None:
    modules = sorted(SIM_DIR.glob("*.py"))
    assert len(modules) > 15
    offending = {
        path.name: sorted(n for n in _imported_names(path.read_text("utf-8")) if n.partition(".")[0] == "workers")
        for path in modules
    }
    assert {name: found for name, found in offending.items() if found} == {}


def test_of_the_workers_only_the_demo_imports_the_sim() -> None:
    workers_dir = Path(workers.__file__).parent
    importers = sorted(
        str(path.relative_to(workers_dir))
        for path in workers_dir.rglob("*.py")
        if any(n.partition(".")[0] == "ibkr_sim" for n in _imported_names(path.read_text("utf-8")))
    )
    # The command line imports the sim by name (importlib), only when `sim-gateway` runs or lists its options.
    assert importers == ["entrypoints/demo.py"]


def _sim_imports(path: Path) -> set[str]:
    """The sim modules a module imports, wherever the import stands (type-checking blocks included)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module == "ibkr_sim":
            found.update(f"ibkr_sim.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ibkr_sim."):
            found.add(node.module or "")
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("ibkr_sim."))
    return found


def test_the_sim_modules_import_each_other_without_a_cycle() -> None:
    graph = {f"ibkr_sim.{path.stem}": _sim_imports(path) for path in SIM_DIR.glob("*.py")}
    assert "ibkr_sim.session" in graph["ibkr_sim.server"]
    assert "ibkr_sim.handlers" in graph["ibkr_sim.session"]
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join((*path[path.index(module):], module))}"
        if module in done:
            return
        for imported in sorted(graph.get(module, set())):
            visit(imported, (*path, module))
        done.add(module)

    for module in sorted(graph):
        visit(module, ())


def test_importing_every_sim_module_loads_nothing_of_the_workers() -> None:
    probe = (
        "import importlib, pkgutil, sys, ibkr_sim\n"
        "for info in pkgutil.walk_packages(ibkr_sim.__path__, 'ibkr_sim.'):\n"
        "    importlib.import_module(info.name)\n"
        "print(sum(name.startswith('ibkr_sim.') for name in sys.modules))\n"
        "print(sorted(n for n in sys.modules if n == 'workers' or n.startswith('workers.')))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    loaded, workers_modules = result.stdout.splitlines()
    assert int(loaded) > 15
    assert workers_modules == "[]"

# Run the workers' command line in a fresh interpreter where `import ibkr_sim` fails, as it does when only
# the ibkr-workers distribution is installed.
WITHOUT_THE_SIM = (
    "import sys; sys.modules['ibkr_sim'] = None; from workers.cli import main; sys.exit(main(sys.argv[1:]))"
)


def _workers_without_the_sim(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_THE_SIM, *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize(
    "args", [["sim-gateway"], ["sim-gateway", "--port", "4002", "--pacing", "off"], ["demo"]]
)
def test_commands_that_start_the_sim_say_what_to_install_when_it_is_missing(args: list[str]) -> None:
    result = _workers_without_the_sim(*args)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"ibkr-workers {args[0]}: the sim gateway is not installed; install it with: pip install 'ibkr-workers[sim]'"
    ]


@pytest.mark.parametrize("command", ["migrate", "sim-gateway"])
def test_unknown_options_are_still_refused_with_the_sim_installed(command: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "workers", command, "--no-such-option"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == "ibkr-workers: error: unrecognized arguments: --no-such-option"


def test_other_commands_work_without_the_sim() -> None:
    result = _workers_without_the_sim("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("ibkr-workers ")


@pytest.mark.parametrize(
    ("command", "args", "message"),
    [
        (["-m", "workers", "sim-gateway"], ["--accounts", "not an account"], "ibkr-workers sim-gateway: accounts: "),
        (["-m", "ibkr_sim"], ["--universe", "/nonexistent/universe.json"], "ibkr-sim: --universe: cannot load "),
        (["-m", "ibkr_sim"], ["--log-level", "loud"], "ibkr-sim: log level: 'LOUD' is not one of "),
    ],
)
def test_a_bad_setting_exits_2_with_one_line_under_the_command_name(
    command: list[str], args: list[str], message: str
) -> None:
    result = subprocess.run(
        [sys.executable, *command, "--port", "0", *args], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(message)


async def test_ibkr_workers_sim_gateway_starts_answers_and_logs_json(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers", "sim-gateway", "--port", "0", "--control-port", "0",
        "--accounts", "DU0000031,DU0000032", "--seed", "3", "--pacing", "off", "--tick-interval", "0",
        "--ready-file", str(ready),
        env={**os.environ, "LOG_LEVEL": "INFO"}, stderr=asyncio.subprocess.PIPE,
    )
    try:
        await until(ready.exists, timeout=15, what="ready file")
        ports = json.loads(ready.read_text())
        ib = IB()
        await ib.connectAsync(ports["host"], ports["port"], clientId=7, timeout=5)
        try:
            assert ib.managedAccounts() == ["DU0000031", "DU0000032"]
            assert await control_call(ports["control_host"], ports["control_port"], "ping") == "pong"
            stats = await control_call(ports["control_host"], ports["control_port"], "stats")
            assert stats["connected_client_ids"] == [7]
        finally:
            ib.disconnect()
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 10)
    assert process.returncode == 0
    events = [json.loads(line) for line in stderr.decode().splitlines()]
    started = [e for e in events if e["event"] == "sim gateway started"]
    assert started == [{
        "event": "sim gateway started", "host": ports["host"], "port": ports["port"],
        "control_host": "127.0.0.1", "control_port": ports["control_port"],
        "accounts": ["DU0000031", "DU0000032"], "level": "info",
        "logger": "ibkr_sim.cli", "timestamp": started[0]["timestamp"], "component": "sim-gateway",
    }]
