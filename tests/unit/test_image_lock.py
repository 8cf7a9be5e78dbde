"""The image and ``make install`` install only what requirements/*.lock pins, each file checked by hash.

scripts/lock writes the locks (it needs PyPI); these tests read the files, so a pin changed in one place
and not the other fails here rather than in an image build.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
PROJECTS = (ROOT / "pyproject.toml", ROOT / "ibkr_sim" / "pyproject.toml")


def locked(name: str) -> dict[str, tuple[str, list[str]]]:
    """``requirements/<name>.lock`` as canonical name -> (version, sha256 hashes)."""
    text = (ROOT / "requirements" / f"{name}.lock").read_text(encoding="utf-8")
    entries = {}
    for block in re.split(r"\n(?=[A-Za-z])", text):
        pin = re.match(r"([A-Za-z0-9._-]+)==(\S+)", block)
        if pin:
            hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", block)
            entries[canonicalize_name(pin.group(1))] = (pin.group(2), hashes)
    return entries


def pinned() -> dict[str, str]:
    """constraints.txt as canonical name -> version."""
    lines = (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines()
    pins = (line.split("==") for line in lines if "==" in line and not line.startswith("#"))
    return {canonicalize_name(name): version.strip() for name, version in pins}


def project_table(key: str) -> list[Requirement]:
    requirements = []
    for path in PROJECTS:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
        table = data["project"]["dependencies"] if key == "dependencies" else data["build-system"]["requires"]
        requirements += [Requirement(text) for text in table]
    return requirements


@pytest.mark.parametrize("name", ["image", "build", "dev"])
def test_every_locked_package_is_pinned_with_hashes(name: str) -> None:
    entries = locked(name)
    assert entries
    assert [package for package, (_, hashes) in entries.items() if not hashes] == []


@pytest.mark.parametrize("name", ["image", "dev"])
def test_the_locks_pin_the_versions_constraints_pin(name: str) -> None:
    pins = pinned()
    differ = {package: (version, pins.get(package)) for package, (version, _) in locked(name).items()
              if pins.get(package) != version}
    assert differ == {}


def test_the_dev_lock_holds_every_pinned_package() -> None:
    assert set(locked("dev")) == set(pinned())


def test_make_install_takes_every_dependency_from_the_hashed_locks() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    installs = re.findall(r"pip install (.*)", makefile)
    assert "--quiet --require-hashes -r requirements/dev.lock" in installs
    assert "--quiet --require-hashes -r requirements/build.lock" in installs
    # The rest: pip itself, and the project without dependencies or an unchecked build backend.
    others = [line for line in installs if "--require-hashes" not in line]
    assert others == ["--quiet --upgrade pip", "--quiet --no-deps --no-build-isolation -e . -e ./ibkr_sim"]


def test_the_image_lock_holds_every_runtime_dependency_at_an_accepted_version() -> None:
    entries = locked("image")
    for requirement in project_table("dependencies"):
        name = canonicalize_name(requirement.name)
        assert name in entries, f"{requirement} is not in requirements/image.lock: run scripts/lock"
        assert Version(entries[name][0]) in requirement.specifier, requirement


def test_the_build_lock_holds_the_build_backend() -> None:
    entries = locked("build")
    for requirement in project_table("build-system"):
        name = canonicalize_name(requirement.name)
        assert name in entries and Version(entries[name][0]) in requirement.specifier, requirement


def test_the_dockerfile_installs_from_the_locks_with_hashes_only() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    commands = re.findall(r"pip (install|wheel) ([^\\\n&]*)", dockerfile)
    assert commands
    for verb, options in commands:
        if verb == "wheel":  # the project's own wheels, with the locked backend and nothing fetched
            assert "--no-deps" in options and "--no-build-isolation" in options, options
        elif "-r " in options:
            assert "--require-hashes" in options and re.search(r"-r \S+\.lock", options), options
        else:  # the wheels just built
            assert options.startswith("--no-deps /tmp/wheels/"), options
    assert "-r image.lock" in dockerfile and "-r build.lock" in dockerfile and "pip check" in dockerfile
