"""A wheel built from the tree ships the example universe, and the demo finds it in the installed package."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from workers.adapters.universe_file import read_universe_file

ROOT = Path(__file__).resolve().parents[2]
PACKAGED_UNIVERSE = ROOT / "workers" / "data" / "universe.yaml"

# What the demo's loader sees, run by an interpreter whose `workers` is the installed wheel.
FIND_UNIVERSE = """
import json, workers
from workers.adapters.universe_file import read_universe_file
from workers.entrypoints.demo import example_universe
with example_universe() as path:
    print(json.dumps({"package": workers.__file__, "path": str(path), "entries": len(read_universe_file(path))}))
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built by pip from a copy of what the image's build copies (the checkout stays untouched)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "workers", source / "workers", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path_factory.mktemp("dist")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--quiet",
                             "--wheel-dir", str(dist)], capture_output=True, text=True, check=False, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    (built,) = dist.glob("ibkr_workers-*.whl")
    return built


def test_examples_universe_is_the_packaged_file() -> None:
    assert (ROOT / "examples" / "universe.yaml").resolve() == PACKAGED_UNIVERSE.resolve()


@pytest.mark.slow
def test_wheel_ships_the_example_universe(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        assert archive.read("workers/data/universe.yaml") == PACKAGED_UNIVERSE.read_bytes()


@pytest.mark.slow
def test_demo_finds_the_example_universe_in_the_installed_wheel_not_the_checkout(wheel: Path,
                                                                                 tmp_path: Path) -> None:
    site = tmp_path / "site-packages"
    with zipfile.ZipFile(wheel) as archive:  # a pure-Python wheel installs by unpacking it
        archive.extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run([sys.executable, "-c", FIND_UNIVERSE], capture_output=True, text=True, check=False,
                            cwd=elsewhere, env={**os.environ, "PYTHONPATH": str(site)}, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout)
    assert Path(found["package"]).is_relative_to(site)
    assert Path(found["path"]) == site / "workers" / "data" / "universe.yaml"
    assert found["entries"] == len(read_universe_file(PACKAGED_UNIVERSE)) > 0
