"""The container files next to the chart: Dockerfile, .dockerignore and the compose files.

No Docker engine is needed: these read the files. `make helm-check` also lints the Dockerfile (hadolint)
and, where `docker compose` exists, runs `docker compose config`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from workers.cli import COMMANDS
from workers.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
WORKER_SERVICES = ("sim-gateway", "init", "order-consumer", "instrument-sync")


def load(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / name).read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    return load("docker-compose.kafka.yml")["services"]  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text(encoding="utf-8")


def default_of(value: str) -> str:
    """``${VAR:-default}`` -> ``default``; anything else as it is."""
    match = re.fullmatch(r"\$\{\w+:-([^}]*)\}", value)
    return match.group(1) if match else value


def final_stage(dockerfile: str) -> str:
    return re.split(r"^FROM ", dockerfile, flags=re.MULTILINE)[-1]


def test_stack_has_every_service(stack: dict[str, Any]) -> None:
    assert set(stack) == {"kafka", "postgres", *WORKER_SERVICES}


def test_no_password_is_written_in_a_compose_file() -> None:
    for name in ("docker-compose.kafka.yml", "docker-compose.paper.yml"):
        text = (ROOT / name).read_text(encoding="utf-8")
        # Every YAML key naming a password takes its value from the environment.
        for match in re.finditer(r"^\s*\w*PASSWORD\w*:\s*(\S+)", text, re.MULTILINE):
            assert match.group(1).startswith("${"), f"{name}: literal value in {match.group(0)}"
        # A password inside a URL too.
        for match in re.finditer(r"://[^:/\s]+:([^@\s]+)@", text):
            assert match.group(1).startswith("$"), f"{name}: literal password in {match.group(0)}"
    password = load("docker-compose.kafka.yml")["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert password.startswith("${POSTGRES_PASSWORD:?")


def test_the_workers_get_the_database_password_apart_from_the_url() -> None:
    stack = load("docker-compose.kafka.yml")
    environment = stack["x-worker-environment"]
    assert environment["DATABASE_PASSWORD"] == stack["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert "@" in environment["DATABASE_URL"] and ":" not in environment["DATABASE_URL"].split("//")[1].split("@")[0]


def test_worker_services_run_known_commands_as_the_same_image(stack: dict[str, Any]) -> None:
    images = {stack[name]["image"] for name in WORKER_SERVICES}
    assert len(images) == 1
    for name in ("sim-gateway", "order-consumer", "instrument-sync"):
        assert stack[name]["command"][0] in COMMANDS
    script = stack["init"]["command"][0]
    assert "ibkr-workers migrate && ibkr-workers topics" in script


def test_worker_environment_names_are_settings(stack: dict[str, Any]) -> None:
    settings = {name.upper() for name in Settings.model_fields}
    for name in ("init", "order-consumer", "instrument-sync"):
        unknown = set(stack[name]["environment"]) - settings
        assert unknown == set(), f"{name}: {unknown}"


def test_each_worker_has_its_own_client_id_and_the_sim_accounts(stack: dict[str, Any]) -> None:
    consumer = stack["order-consumer"]["environment"]
    sync = stack["instrument-sync"]["environment"]
    assert default_of(consumer["IBKR_CLIENT_ID"]) != default_of(sync["IBKR_CLIENT_ID"])
    assert default_of(consumer["IBKR_HOST"]) == "sim-gateway"
    assert default_of(consumer["IBKR_ACCOUNTS"]) in stack["sim-gateway"]["command"][-1]
    assert consumer["IBKR_TRADING_MODE"] == "paper"


def test_start_order_waits_for_healthy_services_then_the_init(stack: dict[str, Any]) -> None:
    assert stack["init"]["depends_on"] == {
        "kafka": {"condition": "service_healthy"},
        "postgres": {"condition": "service_healthy"},
    }
    for name in ("order-consumer", "instrument-sync"):
        depends = stack[name]["depends_on"]
        assert depends["init"] == {"condition": "service_completed_successfully"}
        assert depends["sim-gateway"]["condition"] == "service_healthy"
    for name in ("kafka", "postgres", "sim-gateway", "order-consumer", "instrument-sync"):
        assert "test" in stack[name]["healthcheck"]
    for name in ("order-consumer", "instrument-sync"):
        assert "/healthz" in " ".join(stack[name]["healthcheck"]["test"])
        assert not stack[name]["healthcheck"].get("disable", False)


def test_worker_containers_are_locked_down(stack: dict[str, Any]) -> None:
    for name in WORKER_SERVICES:
        service = stack[name]
        assert service["read_only"] is True
        assert service["cap_drop"] == ["ALL"]
        assert "no-new-privileges:true" in service["security_opt"]


def test_published_ports_are_on_loopback_only(stack: dict[str, Any]) -> None:
    for name, service in stack.items():
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name}: {port}"


def test_paper_override_drops_the_sim_and_needs_real_accounts() -> None:
    paper = load("docker-compose.paper.yml")["services"]
    assert paper["sim-gateway"]["profiles"] == ["sim"]
    for name in ("order-consumer", "instrument-sync"):
        environment = paper[name]["environment"]
        assert default_of(environment["IBKR_HOST"]) == "host.docker.internal"
        assert default_of(environment["IBKR_PORT"]) == "4002"
        assert environment["IBKR_ACCOUNTS"].startswith("${IBKR_ACCOUNTS:?")
        assert "host.docker.internal:host-gateway" in paper[name]["extra_hosts"]
        assert "IBKR_TRADING_MODE" not in environment


def test_dockerfile_builds_in_one_stage_and_runs_in_a_clean_one(dockerfile: str) -> None:
    assert re.search(r"^FROM python:\$\{PYTHON_VERSION\}-slim-\S+ AS builder$", dockerfile, re.MULTILINE)
    runtime = final_stage(dockerfile)
    assert runtime.startswith("python:${PYTHON_VERSION}-slim-")
    assert "COPY --from=builder /opt/venv /opt/venv" in runtime
    for tool in ("apt-get", "gcc", "build-essential", "pip install"):
        assert tool not in runtime


def test_dockerfile_runs_as_a_numeric_non_root_user(dockerfile: str) -> None:
    users = re.findall(r"^USER (\S+)$", final_stage(dockerfile), re.MULTILINE)
    assert users == ["10001:10001"]


def test_dockerfile_entrypoint_healthcheck_and_schemas(dockerfile: str) -> None:
    assert 'ENTRYPOINT ["ibkr-workers"]' in dockerfile
    assert re.search(r"^HEALTHCHECK .*\n\s+CMD .*/healthz.*HEALTH_PORT", dockerfile, re.MULTILINE)
    # The codec looks for schemas/ next to the installed package; the build proves it finds them.
    assert 'cp -r /tmp/schemas "$site/schemas"' in dockerfile
    assert "SchemaCatalog()" in dockerfile


def test_dockerignore_sends_only_what_the_build_copies(dockerfile: str) -> None:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    rules = [line for line in lines if line and not line.startswith("#")]
    assert rules[0] == "**"
    allowed = {line[1:].rstrip("/") for line in rules if line.startswith("!")}
    copied = set()
    for line in re.findall(r"^COPY (?!--from)(.+) \S+$", dockerfile, re.MULTILINE):
        copied |= set(line.split())
    assert copied == allowed
