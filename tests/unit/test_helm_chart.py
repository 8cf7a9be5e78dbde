"""The Helm chart's values, schema and settings agree with each other and with the workers' settings.

Rendering and Kubernetes validation need the helm binary: ``make helm-check`` does those. These tests need
nothing but the files.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

import workers
from workers.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "ibkr-workers"
TEMPLATES = CHART / "templates"

# Objects whose content is a Kubernetes structure passed through as is (validated after rendering).
PASSTHROUGH = {"resources", "affinity", "podSecurityContext", "securityContext", "global"}
# Probe fields left to Kubernetes' defaults unless set.
OPTIONAL = {"initialDelaySeconds", "successThreshold"}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def values() -> dict[str, Any]:
    loaded: dict[str, Any] = load_yaml(CHART / "values.yaml")
    return loaded


def undeclared_keys(data: Any, node: dict[str, Any], path: str = "") -> list[str]:
    """Keys of ``data`` that the schema ``node`` does not declare, as dotted paths."""
    if not isinstance(data, dict) or "properties" not in node:
        return []
    missing = []
    for key, value in data.items():
        if key not in node["properties"]:
            missing.append(f"{path}{key}")
        else:
            missing += undeclared_keys(value, node["properties"][key], f"{path}{key}.")
    return missing


def closed_objects(node: dict[str, Any], path: str = "") -> list[tuple[str, bool]]:
    """Every schema object with declared properties, and whether it refuses unknown ones."""
    found = []
    if "properties" in node:
        found.append((path or "<root>", node.get("additionalProperties") is False))
        for key, child in node["properties"].items():
            found += closed_objects(child, f"{path}{key}.")
    return found


def test_schema_refuses_unknown_keys_at_every_level(schema: dict[str, Any]) -> None:
    objects = closed_objects(schema)
    assert len(objects) > 20
    assert [path for path, closed in objects if not closed] == []


def test_every_default_value_is_declared_in_the_schema(schema: dict[str, Any], values: dict[str, Any]) -> None:
    assert undeclared_keys(values, schema) == []


def test_every_schema_key_has_a_default_in_values_yaml(schema: dict[str, Any],
                                                       values: dict[str, Any]) -> None:
    def absent(node: dict[str, Any], data: Any, path: str = "") -> list[str]:
        if "properties" not in node or not isinstance(data, dict):
            return []
        result = []
        for key, child in node["properties"].items():
            if key in PASSTHROUGH | OPTIONAL and key not in data:
                continue
            if key not in data:
                result.append(f"{path}{key}")
            else:
                result += absent(child, data[key], f"{path}{key}.")
        return result

    assert absent(schema, values) == []


def test_all_options_values_are_declared_and_switch_every_option_on(schema: dict[str, Any]) -> None:
    every = load_yaml(CHART / "ci" / "all-options-values.yaml")
    assert undeclared_keys(every, schema) == []

    def flags(data: Any, path: str = "") -> list[tuple[str, Any]]:
        if not isinstance(data, dict):
            return []
        found = [(f"{path}enabled", data["enabled"])] if "enabled" in data else []
        for key, value in data.items():
            found += flags(value, f"{path}{key}.")
        return found

    switched = flags(every)
    assert len(switched) >= 8
    assert [path for path, on in switched if on is not True] == []


def chart_environment_names() -> set[str]:
    """Environment variable names the chart's templates give the workers."""
    helpers = (TEMPLATES / "_helpers.tpl").read_text(encoding="utf-8")
    # The settings dict: its initial entries (one per line) and the ones added with `set $s "NAME"`.
    names = set(re.findall(r'^\s+"([A-Z][A-Z0-9_]+)" ', helpers, re.MULTILINE))
    names |= set(re.findall(r'set \$s "([A-Z][A-Z0-9_]+)"', helpers))
    for template in [TEMPLATES / "_helpers.tpl", *TEMPLATES.glob("*.yaml")]:
        names |= set(re.findall(r"- name: ([A-Z][A-Z0-9_]+)", template.read_text(encoding="utf-8")))
    return names


def test_every_environment_variable_the_chart_sets_is_a_setting() -> None:
    settings = {name.upper() for name in Settings.model_fields}
    # Read by the container's shell, not by the workers: the StatefulSet's client id arithmetic.
    shell_only = {"POD_NAME", "IBKR_CLIENT_ID_BASE"}
    names = chart_environment_names()
    assert {"DATABASE_URL", "IBKR_HOST", "IBKR_ACCOUNTS", "KAFKA_SASL_PASSWORD", "IBKR_CLIENT_ID"} <= names
    assert sorted(names - settings - shell_only) == []


def test_no_secret_setting_is_written_into_the_config_map() -> None:
    helpers = (TEMPLATES / "_helpers.tpl").read_text(encoding="utf-8")
    settings_block = helpers.split('define "ibkr-workers.settings"')[1].split("{{- end -}}\n\n")[0]
    secret_env = helpers.split('define "ibkr-workers.secretEnv"')[1].split("{{- end -}}\n\n")[0]
    in_config_map = set(re.findall(r'"([A-Z][A-Z0-9_]+)"', settings_block))
    secrets = {name.upper() for name, field in Settings.model_fields.items() if "SecretStr" in str(field.annotation)}
    assert {"DATABASE_URL", "DATABASE_PASSWORD", "KAFKA_SASL_PASSWORD", "SCHEMA_REGISTRY_URL"} <= secrets
    # DATABASE_URL only as the chart builds it from database.*: a user and no password.
    assert in_config_map & secrets == {"DATABASE_URL"}
    assert 'printf "postgresql://%s@%s:%d/%s?sslmode=%s"' in settings_block
    assert secrets - {"DATABASE_URL"} <= set(re.findall(r"- name: ([A-Z][A-Z0-9_]+)", secret_env))


def test_topic_overrides_cover_every_topic_setting(values: dict[str, Any]) -> None:
    def camel_to_env(name: str) -> str:
        return "TOPIC_" + re.sub(r"(?<!^)(?=[A-Z])", "_", name).upper()

    chart_topics = {camel_to_env(key) for key in values["topics"]}
    setting_topics = {name.upper() for name in Settings.model_fields if name.startswith("topic_")}
    assert chart_topics == setting_topics


def test_defaults_are_paper_trading_with_no_account_and_no_secret(values: dict[str, Any]) -> None:
    assert values["ibkr"]["tradingMode"] == "paper"
    assert values["ibkr"]["liveConfirm"] is False
    assert values["ibkr"]["accounts"] == ""
    assert values["config"]["killSwitch"] is False
    text = (CHART / "values.yaml").read_text(encoding="utf-8")
    assert not re.search(r"(?i)password\s*:", text)
    assert not re.search(r"\b(?:DU|U)\d{6,}\b", text.replace("DU0000001", ""))


def test_default_pods_are_locked_down(values: dict[str, Any]) -> None:
    pod = values["podSecurityContext"]
    container = values["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] != 0
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"]["drop"] == ["ALL"]


def test_default_client_ids_do_not_overlap(values: dict[str, Any]) -> None:
    consumer = values["orderConsumer"]
    used = range(consumer["clientIdBase"], consumer["clientIdBase"] + consumer["replicas"])
    assert values["instrumentSync"]["clientId"] not in used


def test_order_consumer_derives_its_client_id_from_the_pod_ordinal() -> None:
    statefulset = (TEMPLATES / "order-consumer-statefulset.yaml").read_text(encoding="utf-8")
    assert "kind: StatefulSet" in statefulset
    assert 'ordinal="${POD_NAME##*-}"' in statefulset
    assert "export IBKR_CLIENT_ID=$((IBKR_CLIENT_ID_BASE + ordinal))" in statefulset
    assert "exec ibkr-workers order-consumer" in statefulset
    assert "fieldPath: metadata.name" in statefulset


def test_instrument_sync_never_runs_twice_during_an_update() -> None:
    deployment = (TEMPLATES / "instrument-sync-deployment.yaml").read_text(encoding="utf-8")
    assert "replicas: 1" in deployment
    assert "type: Recreate" in deployment


def test_instrument_sync_probes_are_on_by_default(values: dict[str, Any]) -> None:
    probes = values["instrumentSync"]["probes"]
    assert probes["enabled"] is True
    assert {"liveness", "readiness"} <= set(probes)
    deployment = (TEMPLATES / "instrument-sync-deployment.yaml").read_text(encoding="utf-8")
    assert "path: /healthz" in deployment and "path: /readyz" in deployment
    assert "containerPort: {{ .Values.config.healthPort }}" in deployment


def test_hooks_migrate_before_topics_before_the_workers() -> None:
    hooks = (TEMPLATES / "hooks.yaml").read_text(encoding="utf-8")
    assert '"helm.sh/hook": pre-install,pre-upgrade' in hooks
    weights = dict(re.findall(r'"name" "(\w+)" "weight" "(-?\d+)"', hooks))
    assert weights.keys() == {"migrate", "topics"}
    assert int(weights["migrate"]) < int(weights["topics"]) < 0


def test_chart_app_version_is_the_package_version() -> None:
    chart = load_yaml(CHART / "Chart.yaml")
    assert chart["apiVersion"] == "v2"
    assert chart["appVersion"] == workers.__version__
